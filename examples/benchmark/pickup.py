"""Pickup latency, measured on one idle contender: "run now" to Pending and to the run's
process start, and Cancelling to SIGTERM, as a user at the UI feels them.

Every run's command is a tiny stdlib script (`MARKER_SCRIPT`, no Prefect engine) that writes
the time it started, and in `hold` mode the time SIGTERM reached it, to a marker file named
by the flow run id from its environment: the process's own account, on the host's clock.
The server's timestamps stand for the user's side: the run's Scheduled state (created due
now) and its first Pending state, and the Cancelling state the benchmark sets as the UI does
(`POST /flow_runs/{id}/set_state`, CANCELLING, forced). Server and contenders share one host
and one clock.

Runs are created one at a time, each after a random gap spanning one poll interval of the
contender, so a run lands at any phase of a poll (a gap shorter than the interval, counted
from the last pickup, would always land just after a poll and read as the worst case).
Cancellations come one at a time too, at random gaps of 0.5-2.5 s (ours' cancel poll is 2 s),
while every run to cancel is running.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from actors.launcher.prefect_objects import parse_time
from examples.benchmark.contenders import Agent
from examples.benchmark.procs import ProcessGuard
from examples.benchmark.server import BenchServer

MARKER_SCRIPT = '''"""A benchmark run's command: when it started and, held, when SIGTERM came."""
import time
began = time.time()
import os, signal, sys

def mark(suffix, at):
    path = os.path.join(os.environ["MARKER_DIR"], os.environ["PREFECT__FLOW_RUN_ID"] + suffix)
    with open(path + ".tmp", "w") as out:
        out.write(repr(at))
    os.replace(path + ".tmp", path)

if sys.argv[1:2] == ["hold"]:
    def on_term(signum, frame):
        mark(".term", time.time())
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
mark(".start", began)
if sys.argv[1:2] == ["hold"]:
    time.sleep(float(sys.argv[2]))
'''
HOLD_SECONDS = 600.0  # a held run ends by itself after this, whatever happens to the benchmark
CANCEL_GAP = (0.5, 2.5)
LOOK = 0.02  # seconds between looks for a marker file (the file system, not the server)


def marker_command(script: Path, *, hold: bool) -> list[str]:
    """`python -I -S script [hold S]`: no site packages, so it starts in about 10 ms."""
    argv = [sys.executable, "-I", "-S", str(script)]
    return argv + (["hold", f"{HOLD_SECONDS:g}"] if hold else ["exit"])


def write_script(work_dir: Path) -> Path:
    script = work_dir / "pickup_marker.py"
    script.write_text(MARKER_SCRIPT)
    return script


@dataclass
class Spread:
    """Median and p95 (seconds) of a list of samples, as the other parts compute them."""

    samples: int
    median: float | None
    p95: float | None

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if not values:
            return cls(0, None, None)
        ordered = sorted(values)
        p95 = ordered[0]
        if len(ordered) > 1:
            p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18]
        return cls(len(ordered), statistics.median(ordered), p95)


@dataclass
class RunNowSample:
    run_id: str
    gap_seconds: float  # waited before creating it
    to_pending: float | None  # server: first Pending - Scheduled state's timestamp
    to_start: float | None  # the process's own start time - Scheduled state's timestamp


@dataclass
class RunNowResult:
    contender: str
    runs: int
    events_mode: str | None
    pending: Spread
    start: Spread
    missed: int  # runs that had not started by the deadline
    samples: list[RunNowSample] = field(default_factory=list)
    event_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class CancelResult:
    contender: str
    runs: int
    events_mode: str | None
    sigterm: Spread  # SIGTERM received - Cancelling state's timestamp
    missed: int  # cancelled runs whose process saw no SIGTERM by the deadline
    not_started: int  # runs that never ran, so were never cancelled
    samples: list[float] = field(default_factory=list)
    event_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _read_marker(path: Path) -> float | None:
    try:
        return float(path.read_text())
    except (OSError, ValueError):
        return None


def _wait_marker(path: Path, deadline: float, agent: Agent) -> float | None:
    while True:
        found = _read_marker(path)
        if found is not None:
            return found
        agent.check_alive(" while a run waited for it")
        if time.monotonic() >= deadline:
            return None
        time.sleep(LOOK)


def create_now(bench: BenchServer, deployment_id: str) -> tuple[str, datetime]:
    """A run due now; its id and the server's timestamp of its Scheduled state."""
    body = {
        "state": {
            "type": "SCHEDULED",
            "name": "Scheduled",
            "state_details": {"scheduled_time": datetime.now(UTC).isoformat()},
        }
    }
    run = bench.api.call("POST", f"deployments/{deployment_id}/create_flow_run", json=body)
    stamp = (run.get("state") or {}).get("timestamp") or run["created"]
    return str(run["id"]), parse_time(stamp)


def first_pending(bench: BenchServer, run_id: str) -> datetime | None:
    stamps = [
        parse_time(s["timestamp"])
        for s in bench.api.state_history(run_id)
        if s["type"] == "PENDING"
    ]
    return min(stamps) if stamps else None


def run_now(
    bench: BenchServer,
    agent: Agent,
    deployment_id: str,
    markers: Path,
    *,
    runs: int,
    gap_span: float,
    gap_min: float = 1.0,
    deadline_seconds: float = 60.0,
    events_mode: str | None = None,
    rng: random.Random | None = None,
) -> RunNowResult:
    """`runs` runs created one at a time on the idle contender, each after a gap of
    `gap_min` + U(0, `gap_span`) seconds and once the one before started (or missed)."""
    rng = rng or random.Random()  # noqa: S311 - gaps, not secrets
    began = time.monotonic()
    samples: list[RunNowSample] = []
    missed = 0
    for _ in range(runs):
        gap = gap_min + rng.uniform(0.0, gap_span)
        time.sleep(gap)
        run_id, scheduled = create_now(bench, deployment_id)
        started = _wait_marker(
            markers / f"{run_id}.start", time.monotonic() + deadline_seconds, agent
        )
        if started is None:
            missed += 1
            samples.append(RunNowSample(run_id, gap, None, None))
            continue
        pending = first_pending(bench, run_id)
        samples.append(
            RunNowSample(
                run_id,
                gap,
                (pending - scheduled).total_seconds() if pending else None,
                started - scheduled.timestamp(),
            )
        )
    return RunNowResult(
        contender=agent.contender.name,
        runs=runs,
        events_mode=events_mode,
        pending=Spread.of([s.to_pending for s in samples if s.to_pending is not None]),
        start=Spread.of([s.to_start for s in samples if s.to_start is not None]),
        missed=missed,
        samples=samples,
        seconds=time.monotonic() - began,
    )


def _with_pids(bench: BenchServer, run_ids: list[str]) -> set[str]:
    return {
        run_id
        for run_id, run in bench.api.read_runs(run_ids).items()
        if run.get("infrastructure_pid")
    }


def cancel_latency(
    bench: BenchServer,
    agent: Agent,
    guard: ProcessGuard,
    deployment_id: str,
    markers: Path,
    *,
    runs: int,
    start_timeout: float = 120.0,
    term_timeout: float = 75.0,
    events_mode: str | None = None,
    rng: random.Random | None = None,
) -> CancelResult:
    """`runs` held runs started together; once each runs (its start marker) and the server
    has its pid (the contender knows its process), each is set Cancelling in turn, at random
    gaps; SIGTERM's arrival (the process's own clock) - the Cancelling state's timestamp."""
    rng = rng or random.Random()  # noqa: S311 - gaps, not secrets
    began = time.monotonic()
    run_ids = [create_now(bench, deployment_id)[0] for _ in range(runs)]
    deadline = time.monotonic() + start_timeout
    running: set[str] = set()
    while time.monotonic() < deadline:
        agent.check_alive(" while its runs started")
        started = {r for r in run_ids if (markers / f"{r}.start").exists()}
        running = _with_pids(bench, sorted(started)) if started else set()
        if len(running) == len(run_ids):
            break
        time.sleep(0.5)
    guard.remember_descendants(agent.process)
    order = [r for r in run_ids if r in running]
    rng.shuffle(order)
    cancelled: dict[str, datetime] = {}
    for run_id in order:
        time.sleep(rng.uniform(*CANCEL_GAP))
        answer = bench.api.cancel_run(run_id)
        stamp = (answer.get("state") or {}).get("timestamp")
        cancelled[run_id] = parse_time(stamp) if stamp else datetime.now(UTC)
    deadline = time.monotonic() + term_timeout
    terms: dict[str, float] = {}
    while len(terms) < len(cancelled) and time.monotonic() < deadline:
        for run_id in cancelled:
            if run_id not in terms:
                found = _read_marker(markers / f"{run_id}.term")
                if found is not None:
                    terms[run_id] = found
        time.sleep(0.1)
    samples = [terms[r] - cancelled[r].timestamp() for r in cancelled if r in terms]
    return CancelResult(
        contender=agent.contender.name,
        runs=runs,
        events_mode=events_mode,
        sigterm=Spread.of(samples),
        missed=len(cancelled) - len(terms),
        not_started=len(run_ids) - len(order),
        samples=samples,
        seconds=time.monotonic() - began,
    )
