"""The latency part (`--parts latency`): pickup and cancel latency, idle cost and the drain,
side by side on a Prefect 3 server and a 2.20 server with events on, in one run.

    python -m examples.benchmark --parts latency [--latency-servers 3,2] [--latency-api URL]

Per server, in this order: each contender alone on a fresh queue for "run now" (`pickup`)
and then cancellation on the same agent; all its contenders idle at once on 10 queues each
(`pickup_cost.idle_requests`); the drains, ours in `--latency-drain-rounds` rounds (the order
turned each round), the official contenders in the first (their poll sets their pace).
"""

from __future__ import annotations

import argparse
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from examples.benchmark.contenders import Agent, ContenderError
from examples.benchmark.pickup import (
    CancelResult,
    RunNowResult,
    cancel_latency,
    marker_command,
    run_now,
    write_script,
)
from examples.benchmark.pickup_agents import (
    ENTRANTS,
    EVENTS_2,
    POLL_DEFAULTS,
    Entrant,
    Major,
    Target,
    deployment,
    event_metrics,
    given_server,
    launch,
    make_place,
    ours_has_events_flag,
    start_server,
    wait_ready,
)
from examples.benchmark.pickup_cost import DrainRound, IdleResult, drain, idle_requests
from examples.benchmark.procs import ProcessGuard
from examples.benchmark.server import BenchServer

Say = Callable[[str], None]
T = TypeVar("T")
Timed = TypeVar("Timed", RunNowResult, CancelResult)
PROBES = ("run-now", "cancel", "idle", "drain")
# Which contenders each probe measures on each server; ours-off on 2.20 only where it costs
# little (idle at once with the others, drains of seconds): today's figures beside the stream.
PLAN: dict[Major, dict[str, tuple[str, ...]]] = {
    "3": {probe: ("ours", "ours-off", "worker") for probe in PROBES},
    "2": {
        "run-now": ("ours", "official"),
        "cancel": ("ours", "official"),
        "idle": ("ours", "ours-off", "official"),
        "drain": ("ours", "ours-off", "official"),
    },
}
ALL_NAMES = ("ours", "ours-off", "worker", "official")


@dataclass
class LatencyResults:
    settings: dict[str, Any]
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_now: list[RunNowResult] = field(default_factory=list)
    cancels: list[CancelResult] = field(default_factory=list)
    idle: list[IdleResult] = field(default_factory=list)
    drains: list[DrainRound] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    events_flag: bool = True

    def __post_init__(self) -> None:
        self.on_step: Callable[[LatencyResults], None] | None = None  # not a field: no JSON


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "latency", "--parts latency: run-now and cancel latency, idle cost, drain (3.x, 2.20)"
    )
    group.add_argument("--latency-servers", default="3,2", help="3, 2 or 3,2 (in that order)")
    group.add_argument(
        "--latency-api", default=None, metavar="URL",
        help="one existing server instead (its major version from /admin/version)",
    )  # fmt: skip
    group.add_argument("--latency-contenders", default=",".join(ALL_NAMES))
    group.add_argument("--latency-probes", default=",".join(PROBES))
    group.add_argument("--latency-runs", type=int, default=20, help="run-now runs per contender")
    group.add_argument("--latency-cancels", type=int, default=20, help="runs cancelled each")
    group.add_argument("--latency-idle-seconds", type=float, default=180.0)
    group.add_argument("--latency-idle-warmup", type=float, default=30.0)
    group.add_argument("--latency-drain-runs", type=int, default=100)
    group.add_argument("--latency-drain-rounds", type=int, default=3)
    group.add_argument("--latency-drain-timeout", type=float, default=400.0)
    group.add_argument(
        "--latency-gap-span", type=float, default=None, metavar="S",
        help="run-now gaps are 1 s + U(0, S) (default: the contender's poll interval)",
    )  # fmt: skip
    group.add_argument(
        "--latency-query-interval", type=float, default=None, metavar="S",
        help="ours' --query-interval (default: its own; for quick checks only)",
    )  # fmt: skip
    group.add_argument("--latency-seed", type=int, default=None)


def _csv(text: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ContenderError(f"unknown or no {what} {unknown}: choose from {', '.join(known)}")
    return names


def _attempt(results: LatencyResults, what: str, say: Say, step: Callable[[], T]) -> T | None:
    """One step's figures, or a line saying why there are none (the others go on); what
    was measured so far is handed to `results.on_step` first (a long run keeps its figures
    if it is cut short)."""
    if results.on_step is not None:
        results.on_step(results)
    try:
        return step()
    except ContenderError as exc:
        message = f"{what}: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported in the notes, the rest goes on
        message = f"{what}: {type(exc).__name__}: {exc}"
    results.failures.append(message[:3000])
    say(f"  failed: {message[:1500]}")
    return None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _credited(result: Timed, entrant: Entrant, agent: Agent) -> Timed:
    """A probe names its contender by kind (`ours`); the report needs the entrant's label
    (`3.x ours-off`) to tell the two ours apart, and ours' event counters as they stand right
    after the probe, to show whether the stream or a poll did the work."""
    result.contender = entrant.label
    result.event_metrics = event_metrics(agent)
    return result


def _run_now_line(now: RunNowResult) -> str:
    return (
        f"  run now: to Pending median {_fmt(now.pending.median)} p95 "
        f"{_fmt(now.pending.p95)}, to start median {_fmt(now.start.median)} p95 "
        f"{_fmt(now.start.p95)} over {now.pending.samples}/{now.runs}"
        + (f", {now.missed} missed" if now.missed else "")
    )


def _cancel_line(cancel: CancelResult) -> str:
    return (
        f"  cancel: to SIGTERM median {_fmt(cancel.sigterm.median)} p95 "
        f"{_fmt(cancel.sigterm.p95)} over {cancel.sigterm.samples}/{cancel.runs}"
        + (f", {cancel.missed} saw no SIGTERM" if cancel.missed else "")
        + (f", {cancel.not_started} never ran" if cancel.not_started else "")
    )


def _latency_one(
    args: argparse.Namespace,
    bench: BenchServer,
    *,
    target: Target,
    guard: ProcessGuard,
    entrant: Entrant,
    probes: list[str],
    work_dir: Path,
    rng: random.Random,
    results: LatencyResults,
    say: Say,
) -> None:
    """Run-now, then cancellation, on one agent of `entrant` alone on a fresh queue."""
    script = write_script(work_dir)
    markers = work_dir / f"markers-{target.major}-{entrant.name}"
    markers.mkdir(exist_ok=True)
    env = {"MARKER_DIR": str(markers)}
    place = make_place(bench, target, f"{entrant.name}-latency", 1)
    now_dep, hold_dep = (
        deployment(
            bench,
            target=target,
            place=place,
            name=f"{entrant.name}-{mode}-{bench.tag}",
            command=marker_command(script, hold=mode == "hold"),
            env=env,
        )
        for mode in ("now", "hold")
    )
    agent = launch(
        guard, entrant, api_url=target.api_url, place=place, work_dir=work_dir,
        log_name=f"{target.major}-{entrant.name}-latency",
        query_interval=args.latency_query_interval,
    )  # fmt: skip
    try:
        mode = wait_ready(bench, agent, entrant, place)
        say(f"  {entrant.label} ready" + (f" (events: {mode})" if mode else ""))
        if "run-now" in probes:
            span = args.latency_gap_span
            if span is None:
                span = args.latency_query_interval or POLL_DEFAULTS[entrant.name]
            now = run_now(
                bench, agent, now_dep, markers, runs=args.latency_runs, gap_span=span,
                events_mode=mode, rng=rng,
            )  # fmt: skip
            results.run_now.append(_credited(now, entrant, agent))
            say(_run_now_line(now))
        if "cancel" in probes:
            cancel = cancel_latency(
                bench, agent, guard, hold_dep, markers, runs=args.latency_cancels,
                events_mode=mode, rng=rng,
            )  # fmt: skip
            results.cancels.append(_credited(cancel, entrant, agent))
            say(_cancel_line(cancel))
    finally:
        guard.remember_descendants(agent.process)
        guard.stop(agent.process)
        guard.kill_flows()


def _server_part(
    args: argparse.Namespace,
    target: Target,
    *,
    guard: ProcessGuard,
    names: list[str],
    probes: list[str],
    work_dir: Path,
    rng: random.Random,
    results: LatencyResults,
    say: Say,
) -> None:
    bench = BenchServer(target.api_url)
    try:
        plan = PLAN[target.major]

        def chosen(probe: str) -> list[Entrant]:
            if probe not in probes:
                return []
            return [ENTRANTS[target.major][n] for n in plan[probe] if n in names]

        latency = [
            e for e in ENTRANTS[target.major].values() if e in chosen("run-now") + chosen("cancel")
        ]
        for entrant in latency:
            say(f"latency: {entrant.label} (run now, cancel)...")
            _attempt(
                results, f"{entrant.label} latency", say,
                lambda e=entrant: _latency_one(  # type: ignore[misc]
                    args, bench, target=target, guard=guard, entrant=e, probes=probes,
                    work_dir=work_dir, rng=rng, results=results, say=say,
                ),
            )  # fmt: skip
        idle = chosen("idle")
        if idle:
            say(f"latency: idle cost on {target.version}: {', '.join(e.name for e in idle)}...")
            found = _attempt(
                results, f"{target.version} idle", say,
                lambda: idle_requests(
                    bench, target, guard, idle, work_dir, window=args.latency_idle_seconds,
                    warmup=args.latency_idle_warmup, say=say,
                ),
            )  # fmt: skip
            for result in found or []:
                results.idle.append(result)
                say(
                    f"  {result.contender}: {result.per_minute:.1f} requests/min "
                    f"({result.per_queue_per_minute:.2f} per queue), events {result.events_mode}"
                )
        drainers = chosen("drain")
        for index in range(args.latency_drain_rounds):
            shift = index % max(1, len(drainers))
            for entrant in drainers[shift:] + drainers[:shift]:
                if entrant.name in ("official", "worker") and index > 0:
                    continue
                runs = args.latency_drain_runs
                say(f"latency: drain {index + 1}: {entrant.label} ({runs} runs)...")
                measured = _attempt(
                    results, f"{entrant.label} drain {index + 1}", say,
                    lambda e=entrant, i=index: drain(  # type: ignore[misc]
                        bench, target, guard, e, work_dir, runs=args.latency_drain_runs,
                        round_index=i, timeout=args.latency_drain_timeout,
                        query_interval=args.latency_query_interval,
                    ),
                )  # fmt: skip
                if measured is not None:
                    results.drains.append(measured)
                    steady = measured.steady_runs_per_second
                    say(
                        f"  {measured.runs_with_pid}/{measured.runs}: "
                        f"{'-' if steady is None else f'{steady:.1f}'} runs/s steady, "
                        f"{measured.runs_per_second:.1f} from start"
                        + (" (timed out)" if measured.timed_out else "")
                    )
    finally:
        if args.latency_api:
            bench.delete_everything()
        bench.close()


def run_latency(
    args: argparse.Namespace,
    work_dir: Path,
    say: Say,
    guard: ProcessGuard,
    on_step: Callable[[LatencyResults], None] | None = None,
) -> LatencyResults:
    names = _csv(args.latency_contenders, ALL_NAMES, "contenders")
    probes = _csv(args.latency_probes, PROBES, "probes")
    majors = _csv(args.latency_servers, ("3", "2"), "servers")
    rng = random.Random(args.latency_seed)  # noqa: S311 - gaps, not secrets
    results = LatencyResults(
        settings={
            "servers": majors,
            "api": args.latency_api,
            "contenders": names,
            "probes": probes,
            "runs": args.latency_runs,
            "cancels": args.latency_cancels,
            "idle_seconds": args.latency_idle_seconds,
            "idle_warmup": args.latency_idle_warmup,
            "drain_runs": args.latency_drain_runs,
            "drain_rounds": args.latency_drain_rounds,
            "gap_span": args.latency_gap_span,
            "query_interval": args.latency_query_interval,
            "seed": args.latency_seed,
        },
        events_flag=ours_has_events_flag(),
    )
    results.on_step = on_step
    if not results.events_flag:
        say("  this agent has no --events flag: ours and ours-off both run without it (polling)")
    for major in majors if args.latency_api is None else ["given"]:
        with contextlib.ExitStack() as stack:
            if args.latency_api:
                target = given_server(args.latency_api)
            else:
                say(f"latency: starting a Prefect {major} server (SQLite)...")
                target = start_server(major, stack)  # type: ignore[arg-type]
            results.targets[target.major] = {
                "version": target.version, "api_url": target.api_url,
                "start_seconds": target.start_seconds,
                "events_setting": (
                    " ".join(f"{k}={v}" for k, v in EVENTS_2.items())
                    if target.major == "2" and target.server is not None
                    else ""
                ),
            }  # fmt: skip
            say(f"  Prefect {target.version} at {target.api_url}")
            _server_part(
                args, target, guard=guard, names=names, probes=probes, work_dir=work_dir,
                rng=rng, results=results, say=say,
            )  # fmt: skip
    return results
