"""The drain: N runs due now whose command is `true`, an agent started once they exist; how
fast it gives every run a pid, and how long a run it found waits for its Pending."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from examples.benchmark.agent_logs import found_times_official
from examples.benchmark.contenders import Contender, launch, local_pids
from examples.benchmark.latency import NO_DATA, Latency, official_latency, ours_latency
from examples.benchmark.procs import CLOCK_TICKS, ProcessGuard, proc_stat
from examples.benchmark.progress import steady_rate, wait_for_pids
from examples.benchmark.server import BenchServer


@dataclass
class DrainResult:
    """How fast one contender took N due runs; `elapsed` ends at the last recorded pid."""

    contender: str
    runs: int
    runs_with_pid: int
    elapsed_seconds: float
    runs_per_second: float  # from the contender's start (its start-up included)
    timed_out: bool
    first_pid_seconds: float | None  # contender start -> first pid recorded
    agent_cpu_seconds: float | None  # CPU the agent process used from its start to the end
    log_path: str | None
    ceiling_retries: int | None = None  # 503s (SQLite locked) the ceiling's client retried
    # The drain itself, on the server's clock: runs after the first / (last pid - first Pending)
    steady_runs_per_second: float | None = None
    # poll->Pending over the drain's runs: ours from its metrics, the official agent's by log
    median_poll_to_pending_ms: float | None = None
    p95_poll_to_pending_ms: float | None = None
    latency_samples: int = 0
    latency_source: str | None = None  # "metrics" (bucket resolution) or "log" (1 ms)
    latency_no_data: str = ""  # why there is no figure, when there is none

    def set_latency(self, latency: Latency) -> None:
        self.median_poll_to_pending_ms = latency.median_ms
        self.p95_poll_to_pending_ms = latency.p95_ms
        self.latency_samples = latency.samples
        self.latency_source = latency.source
        self.latency_no_data = latency.no_data and f"{NO_DATA}: {latency.no_data}"


def drain_queue(
    server: BenchServer, contender: str, round_index: int, runs: int
) -> tuple[str, list[str]]:
    """A fresh queue of `runs` due runs whose command is `true`, for one contender's round
    (names are unique per round: a server keeps the deployments and blocks of earlier ones)."""
    label = f"{contender}-drain{round_index + 1}"
    queue = f"bench-{server.tag}-{label}"
    deployment = server.deployment(f"{label}-{server.tag}", queue, ["true"])
    return queue, server.create_runs(deployment, runs)


def drain_agent(
    server: BenchServer,
    guard: ProcessGuard,
    contender: Contender,
    *,
    runs: int,
    timeout: float,
    work_dir: Path,
    round_index: int = 0,
) -> DrainResult:
    """Runs/s from the agent's start to its last pid; poll->Pending from ours' metrics (read
    before it stops) or the official agent's log.

    The runs exist before the agent starts, so its start-up counts as users feel it.
    """
    queue, run_ids = drain_queue(server, contender.name, round_index, runs)
    day = datetime.now().date()  # the official agent logs local time
    started_wall = datetime.now(UTC)
    agent = launch(guard, contender, server.api_url, queue, work_dir)
    cpu_seconds: float | None = None
    latency: Latency | None = None
    try:
        progress = wait_for_pids(server, queue, run_ids, timeout=timeout, agent=agent, cheap=True)
        if progress.timed_out:  # what it managed by then, read once the clock stopped
            progress.pids.update(server.runs_with_pid(queue, run_ids))
        stat = proc_stat(agent.process.pid)
        if stat is not None:
            cpu_seconds = stat.cpu_ticks / CLOCK_TICKS
        if contender.kind == "ours":
            latency = ours_latency(agent)
        guard.remember_flows(local_pids(pid for pid, _ in progress.pids.values()))
        guard.remember_descendants(agent.process)
    finally:
        guard.stop(agent.process)
        guard.kill_flows()
    done = len(progress.pids)
    if progress.timed_out or not done:
        elapsed = (progress.started_wall - started_wall).total_seconds() + progress.observed_seconds
    else:
        # The server's `updated` of the run whose pid came last: the PATCH itself, not the
        # benchmark's next look (--poll-interval later at worst).
        last = max(updated for _, updated in progress.pids.values())
        elapsed = (last - started_wall).total_seconds()
        observed = (progress.started_wall - started_wall).total_seconds()
        elapsed = min(max(elapsed, 1e-3), observed + progress.observed_seconds)
    first = (
        (min(updated for _, updated in progress.pids.values()) - started_wall).total_seconds()
        if progress.pids
        else None
    )
    pending = server.pending_times(list(progress.pids))
    result = DrainResult(
        contender=contender.name,
        steady_runs_per_second=steady_rate(pending, progress.pids),
        runs=runs,
        runs_with_pid=done,
        elapsed_seconds=elapsed,
        runs_per_second=done / elapsed if elapsed > 0 else 0.0,
        timed_out=progress.timed_out,
        first_pid_seconds=first,
        agent_cpu_seconds=cpu_seconds,
        log_path=str(agent.log),
    )
    if latency is None:
        latency = official_latency(found_times_official(agent.log, day), pending)
    result.set_latency(latency)
    return result
