"""The containers part (`--parts containers`): flow runs in Docker containers, ours beside
Prefect 2.20's agent running a `DockerContainer` block and Prefect 3's docker worker, on the
same daemon and image, in one run.

    python -m examples.benchmark --parts containers [--containers-contenders ...]

Per contender (containers_setup.py says how each is started), with one agent each time:

1. **Pending to running**: `--containers-latency-runs` held runs created one at a time, each
   once the one before runs. A figure is the daemon's `State.StartedAt` of the run's
   container minus the server's timestamp of the run's first Pending state; the script's own
   start (its first sign of life, `.start`) is kept beside it.
2. **Cancel**: those runs, all running, are set Cancelling (as the UI does) one after another
   at gaps of 0.3-1.0 s. To SIGTERM: the time the script's handler wrote (`.term`) minus the
   Cancelling state's timestamp; to stopped: the container's `State.FinishedAt` minus it.
   Prefect 3.9's docker worker cancels only runs it is still submitting (a submitted run is
   its engine's to cancel, from inside the container, and the script has no engine), so its
   row shows none: the part waits for its stops only briefly.
3. **In flight and drain**: the agent is stopped, `--containers-inflight` held runs are made due
   at once, and a new agent of the contender starts. While their containers start, the
   agent's RSS (its whole process tree, from /proc: a container's processes are the daemon's,
   never the agent's) is read each second; the figure is the median of three readings once
   every run's container runs (or the reading while the most ran, with the count reached).
   The drain is from the first Pending (server) to the last container's `StartedAt` (daemon):
   until every container has started, not until the runs complete (the command is the marker
   script, not the engine, for every contender).

The server's, the daemon's and the script's clocks are this machine's one clock.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actors.launcher.prefect_objects import parse_time
from examples.benchmark.containers_setup import (
    ENTRANTS,
    NAMES,
    Containers,
    Place,
    containers_of,
    launch,
    make_place,
    tree_cpu_ticks,
    tree_rss_kib,
)
from examples.benchmark.contenders import Agent, ContenderError
from examples.benchmark.pickup import Spread, write_script
from examples.benchmark.pickup_agents import (
    EVENTS_2,
    Entrant,
    Target,
    given_server,
    start_server,
    wait_ready,
)
from examples.benchmark.pickup_agents import Place as PickupPlace
from examples.benchmark.procs import CLOCK_TICKS, ProcessGuard
from examples.benchmark.server import BenchServer
from examples.harness import prefect3
from examples.harness.docker_daemon import DockerDaemon
from examples.harness.flow_image import ensure_flow_image

Say = Callable[[str], None]
CANCEL_GAP = (0.3, 1.0)
LOOK = 0.1  # seconds between looks at the daemon while a run starts or a container stops
STALL_SECONDS = 60.0  # the in-flight phase ends when no container started for this long
STATE_WAIT = 5.0  # for a cancelled run's final state, once its container stopped
FINAL_STATES = ("CANCELLED", "CRASHED", "FAILED", "COMPLETED")


@dataclass
class ContainerFigures:
    """One contender's figures (seconds, MiB); None where it gave none."""

    contender: str
    describe: str
    pending_to_running: Spread = field(default_factory=lambda: Spread.of([]))
    pending_to_script: Spread = field(default_factory=lambda: Spread.of([]))
    latency_runs: int = 0
    latency_missed: int = 0
    cancel_to_sigterm: Spread = field(default_factory=lambda: Spread.of([]))
    cancel_to_stopped: Spread = field(default_factory=lambda: Spread.of([]))
    cancels: int = 0
    cancel_missed: int = 0
    cancelled_states: dict[str, int] = field(default_factory=dict)
    inflight_target: int = 0
    inflight_reached: int = 0
    rss_mib: float | None = None
    rss_mib_max: float | None = None
    agent_cpu_seconds: float | None = None
    drain_seconds: float | None = None  # first Pending -> last StartedAt
    drain_runs_per_second: float | None = None
    from_start_seconds: float | None = None  # the agent's start -> last StartedAt
    inflight_timed_out: bool = False
    seconds: float = 0.0  # the contender's whole turn
    samples: dict[str, list[float]] = field(default_factory=dict)
    # Per run of step 1, epoch seconds: first Pending, StartedAt, the script's start (to set
    # beside the contender's own log when asking where the time went).
    latency_detail: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class ContainerResults:
    settings: dict[str, Any]
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: list[ContainerFigures] = field(default_factory=list)
    daemon: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "containers",
        "--parts containers: flow runs in Docker containers (2.20 agent, 3.x docker worker)",
    )
    group.add_argument("--containers-contenders", default=",".join(NAMES), help=",".join(NAMES))
    group.add_argument(
        "--containers-latency-runs", type=int, default=20,
        help="runs started one at a time (Pending to running), then cancelled",
    )  # fmt: skip
    group.add_argument(
        "--containers-inflight", type=int, default=100,
        help="runs due at once: the drain, and the agent's RSS while they run",
    )  # fmt: skip
    group.add_argument("--containers-timeout", type=float, default=600.0, metavar="SECONDS")
    group.add_argument(
        "--containers-api2", default=None, metavar="URL",
        help="an existing 2.20 server (with PREFECT_EXPERIMENTAL_EVENTS for ours' stream)",
    )  # fmt: skip
    group.add_argument("--containers-api3", default=None, metavar="URL")
    group.add_argument(
        "--containers-query-interval", type=float, default=None, metavar="S",
        help="every contender's poll (the official agent's cancel check is 2 of them); "
        "default: each one's own (for quick checks only)",
    )  # fmt: skip
    group.add_argument("--containers-seed", type=int, default=None)


def _first_pending(bench: BenchServer, run_id: str) -> float | None:
    states = bench.api.state_history(run_id)
    pending = sorted(parse_time(s["timestamp"]) for s in states if s["type"] == "PENDING")
    return pending[0].timestamp() if pending else None


def _marker(path: Path) -> float | None:
    try:
        return float(path.read_text())
    except (OSError, ValueError):
        return None


def _wait_started(
    containers: Containers, agent: Agent, run_id: str, markers: Path, timeout: float
) -> tuple[float | None, float | None]:
    """(StartedAt, the script's start) of the run's container, once both are known."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agent.check_alive(" while its run started")
        times = containers.times({run_id}).get(run_id)
        script = _marker(markers / f"{run_id}.start")
        if times is not None and times.started is not None and script is not None:
            return times.started, script
        time.sleep(LOOK)
    return None, None


def _latency_and_cancel(
    bench: BenchServer,
    agent: Agent,
    containers: Containers,
    *,
    place: Place,
    markers: Path,
    figures: ContainerFigures,
    runs: int,
    run_timeout: float,
    cancel_timeout: float,
    rng: random.Random,
) -> None:
    running: list[str] = []
    to_running: list[float] = []
    to_script: list[float] = []
    for _ in range(runs):
        run_id = bench.api.create_run(place.deployment_id)
        started, script = _wait_started(containers, agent, run_id, markers, run_timeout)
        pending = _first_pending(bench, run_id)
        if started is None or script is None or pending is None:
            figures.latency_missed += 1
            continue
        running.append(run_id)
        figures.latency_detail.append(
            {"run_id": run_id, "pending": pending, "started": started, "script": script}
        )
        to_running.append(started - pending)
        to_script.append(script - pending)
    figures.latency_runs = runs
    figures.pending_to_running = Spread.of(to_running)
    figures.pending_to_script = Spread.of(to_script)
    figures.samples["pending_to_running"] = to_running
    figures.samples["pending_to_script"] = to_script

    order = list(running)
    rng.shuffle(order)
    cancelled: dict[str, float] = {}
    for run_id in order:
        time.sleep(rng.uniform(*CANCEL_GAP))
        answer = bench.api.cancel_run(run_id)
        stamp = (answer.get("state") or {}).get("timestamp")
        cancelled[run_id] = parse_time(stamp).timestamp() if stamp else time.time()
    deadline = time.monotonic() + cancel_timeout
    stopped: dict[str, float] = {}
    while len(stopped) < len(cancelled) and time.monotonic() < deadline:
        agent.check_alive(" while its runs were cancelled")
        for run_id, times in containers.times(set(cancelled)).items():
            if not times.running and times.finished is not None:
                stopped[run_id] = times.finished
        time.sleep(LOOK * 5)
    terms = {r: t for r in cancelled if (t := _marker(markers / f"{r}.term")) is not None}
    to_term = [terms[r] - cancelled[r] for r in cancelled if r in terms]
    to_stop = [stopped[r] - cancelled[r] for r in cancelled if r in stopped]
    figures.cancels = len(cancelled)
    figures.cancel_missed = len(cancelled) - len(stopped)
    figures.cancel_to_sigterm = Spread.of(to_term)
    figures.cancel_to_stopped = Spread.of(to_stop)
    figures.samples["cancel_to_sigterm"] = to_term
    figures.samples["cancel_to_stopped"] = to_stop
    # The runs' states once the contender reported them (a few seconds at most, and none
    # when it stopped no container): its own account of the cancellations.
    deadline = time.monotonic() + (STATE_WAIT if stopped else 0.0)
    states = bench.api.read_states(sorted(cancelled)) if cancelled else {}
    while states and time.monotonic() < deadline:
        if all(state in FINAL_STATES for state in states.values()):
            break
        time.sleep(LOOK * 5)
        states = bench.api.read_states(sorted(cancelled))
    for state in states.values():
        figures.cancelled_states[state] = figures.cancelled_states.get(state, 0) + 1


def _in_flight(  # noqa: PLR0915 - one loop of readings, kept together to be read as one
    bench: BenchServer,
    start_agent: Callable[[], Agent],
    guard: ProcessGuard,
    *,
    containers: Containers,
    place: Place,
    figures: ContainerFigures,
    runs: int,
    timeout: float,
) -> None:
    run_ids = bench.create_runs(place.deployment_id, runs)
    wanted = set(run_ids)
    agent = start_agent()
    began_wall = time.time()
    began = time.monotonic()
    cpu_before = tree_cpu_ticks(agent.process.pid)
    last_new = time.monotonic()
    started: dict[str, float] = {}
    rss_max = 0
    rss_at_most = 0  # the reading while the most containers ran
    most = -1
    try:
        while time.monotonic() - began < timeout:
            agent.check_alive(" while its runs started")
            times = containers.times(wanted)
            fresh = {r: t.started for r, t in times.items() if t.started is not None}
            if len(fresh) > len(started):
                last_new = time.monotonic()
            started.update({r: s for r, s in fresh.items() if s is not None})
            running = sum(1 for t in times.values() if t.running)
            rss = tree_rss_kib(agent.process.pid)
            rss_max = max(rss_max, rss)
            if running >= most:
                most, rss_at_most = running, rss
            if len(started) == runs and running == runs:
                break
            if started and time.monotonic() - last_new > STALL_SECONDS:
                break
            time.sleep(1.0)
        else:
            figures.inflight_timed_out = True
        if len(started) == runs:  # the plateau: a few readings more, their median
            readings = []
            for _ in range(3):
                time.sleep(0.5)
                readings.append(tree_rss_kib(agent.process.pid))
            rss_at_most = int(statistics.median(readings))
            rss_max = max(rss_max, *readings)
        figures.agent_cpu_seconds = (tree_cpu_ticks(agent.process.pid) - cpu_before) / CLOCK_TICKS
    finally:
        # The containers go first: Prefect's agent and worker wait for theirs when stopped.
        containers.remove_all()
        guard.stop(agent.process)
    figures.inflight_target = runs
    figures.inflight_reached = max(most, 0)
    figures.rss_mib = rss_at_most / 1024 if rss_at_most else None
    figures.rss_mib_max = rss_max / 1024 if rss_max else None
    if started:
        pendings = [p for r in run_ids if (p := _first_pending(bench, r)) is not None]
        last = max(started.values())
        figures.from_start_seconds = last - began_wall
        if pendings and len(started) == runs:
            figures.drain_seconds = last - min(pendings)
            if figures.drain_seconds > 0:
                figures.drain_runs_per_second = runs / figures.drain_seconds


def _one(
    args: argparse.Namespace,
    name: str,
    *,
    target: Target,
    daemon: DockerDaemon,
    image: str,
    guard: ProcessGuard,
    work_dir: Path,
    rng: random.Random,
    say: Say,
) -> ContainerFigures:
    entrant = ENTRANTS[name]
    figures = ContainerFigures(entrant.label, entrant.describe)
    began = time.monotonic()
    bench = BenchServer(target.api_url)
    script = write_script(work_dir)
    markers = work_dir / f"markers-containers-{name}"
    markers.mkdir(exist_ok=True)
    place = make_place(
        bench, entrant, name=name, image=image, script=script, work_dir=work_dir,
        markers=markers, daemon_labels=daemon.labels,
    )  # fmt: skip
    interval = args.containers_query_interval
    poll = interval if interval is not None else (10.0 if name == "worker" else 15.0)
    # Prefect 3.9's worker cancels only a run it is still submitting; past that, a run is
    # its engine's to cancel, in the container (the marker script has none): a short look.
    cancel_timeout = 1.0 + 2 * poll if name == "worker" else 60.0 + 4 * poll

    def start_agent(phase: str) -> Agent:
        return launch(
            guard, entrant, api_url=target.api_url, place=place, daemon=daemon,
            work_dir=work_dir, log_name=f"containers-{name}-{phase}", query_interval=interval,
        )  # fmt: skip

    try:
        with containers_of(daemon, place.label) as containers:
            agent = start_agent("latency")
            try:
                wait_ready(bench, agent, entrant, _pickup_place(place), stream_timeout=15.0)
                _latency_and_cancel(
                    bench, agent, containers, place=place, markers=markers, figures=figures,
                    runs=args.containers_latency_runs, run_timeout=60.0 + 2 * poll,
                    cancel_timeout=cancel_timeout, rng=rng,
                )  # fmt: skip
            finally:
                containers.remove_all()  # first: Prefect's agent waits for its containers
                guard.stop(agent.process)
            say(_latency_line(figures))
            _in_flight(
                bench, lambda: start_agent("inflight"), guard, containers=containers,
                place=place, figures=figures,
                runs=args.containers_inflight, timeout=args.containers_timeout,
            )  # fmt: skip
            say(_inflight_line(figures))
    finally:
        if target.server is None:
            bench.delete_everything()
        bench.close()
        figures.seconds = time.monotonic() - began
        say(f"  took {figures.seconds:.1f}s")
    return figures


def _pickup_place(place: Place) -> PickupPlace:
    """The place as `wait_ready` reads it (its first queue's last poll)."""
    return PickupPlace(place.pool, [place.queue])


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _latency_line(f: ContainerFigures) -> str:
    return (
        f"  Pending->running median {_s(f.pending_to_running.median)} p95 "
        f"{_s(f.pending_to_running.p95)} ({f.pending_to_running.samples}/{f.latency_runs}); "
        f"cancel->SIGTERM median {_s(f.cancel_to_sigterm.median)}, ->stopped median "
        f"{_s(f.cancel_to_stopped.median)} ({f.cancel_to_stopped.samples}/{f.cancels}); "
        f"states {f.cancelled_states}"
    )


def _inflight_line(f: ContainerFigures) -> str:
    rate = "-" if f.drain_runs_per_second is None else f"{f.drain_runs_per_second:.2f}"
    rss = "-" if f.rss_mib is None else f"{f.rss_mib:.1f}"
    return (
        f"  in flight {f.inflight_reached}/{f.inflight_target}: RSS {rss} MiB; drain {rate} "
        f"runs/s" + (" (timed out)" if f.inflight_timed_out else "")
    )


def run_containers(
    args: argparse.Namespace, work_dir: Path, say: Say, guard: ProcessGuard
) -> ContainerResults:
    names = [n.strip() for n in args.containers_contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise ContenderError(f"unknown or no contenders {unknown}: choose from {NAMES}")
    results = ContainerResults(
        settings={
            "contenders": names,
            "latency_runs": args.containers_latency_runs,
            "inflight": args.containers_inflight,
            "timeout": args.containers_timeout,
            "query_interval": args.containers_query_interval,
            "seed": args.containers_seed,
        }
    )
    rng = random.Random(args.containers_seed)  # noqa: S311 - gaps, not secrets
    majors = sorted({ENTRANTS[n].major for n in names})
    with contextlib.ExitStack() as stack:
        if "3" in majors:
            say("containers: prefect-docker in the Prefect 3 environment...")
            prefect3.ensure_docker_worker(work_dir / "prefect3-install.log")
        daemon = stack.enter_context(DockerDaemon())
        results.daemon = {"base_url": daemon.base_url, "private": daemon.private}
        say(f"containers: Docker daemon at {daemon.base_url}; the flow image...")
        client = daemon.client(timeout=1800)
        try:
            build = ensure_flow_image(client)
            results.daemon["version"] = client.version().get("Version")
        finally:
            client.close()
        results.daemon["image"] = build.tag
        targets: dict[str, Target] = {}
        for major in majors:
            given = args.containers_api2 if major == "2" else args.containers_api3
            if given:
                targets[major] = given_server(given)
            else:
                say(f"containers: starting a Prefect {major} server (SQLite)...")
                targets[major] = start_server(major, stack)  # type: ignore[arg-type]
            target = targets[major]
            results.targets[major] = {
                "version": target.version,
                "api_url": target.api_url,
                "events_setting": (
                    " ".join(f"{k}={v}" for k, v in EVENTS_2.items())
                    if major == "2" and target.server is not None
                    else ""
                ),
            }
        for name in names:
            entrant: Entrant = ENTRANTS[name]
            say(f"containers: {entrant.label} ({entrant.describe})...")
            try:
                figures = _one(
                    args, name, target=targets[entrant.major], daemon=daemon, image=build.tag,
                    guard=guard, work_dir=work_dir, rng=rng, say=say,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - reported, the other contenders go on
                message = f"{entrant.label}: {type(exc).__name__}: {exc}"[:3000]
                results.failures.append(message)
                say(f"  failed: {message[:1500]}")
                continue
            results.figures.append(figures)
    results.settings["finished"] = datetime.now(UTC).isoformat()
    return results
