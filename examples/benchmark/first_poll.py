"""First-poll latency: a few runs due now, an agent started once they exist, nothing else on
its queue; how long the runs its first poll found wait for their Pending, with no backlog of
the agent's own ahead of them (during a drain they queue behind its earlier runs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from examples.benchmark.agent_logs import found_times_official
from examples.benchmark.contenders import Contender, launch, local_pids
from examples.benchmark.latency import NO_DATA, Latency, official_latency, ours_latency
from examples.benchmark.procs import ProcessGuard
from examples.benchmark.progress import wait_for_pids
from examples.benchmark.server import BenchServer

# One round of ours' Pending proposals, and within the official agent's 10 runs a poll: every
# run comes with the first poll of either.
FIRST_POLL_RUNS = 8


@dataclass
class FirstPollResult:
    contender: str
    runs: int
    runs_with_pid: int
    timed_out: bool
    seconds: float  # contender start -> every run has a pid (or the timeout)
    median_ms: float | None
    p95_ms: float | None
    samples: int
    latency_source: str
    latency_no_data: str
    log_path: str | None


def first_poll_agent(
    server: BenchServer,
    guard: ProcessGuard,
    contender: Contender,
    *,
    runs: int,
    timeout: float,
    work_dir: Path,
) -> FirstPollResult:
    """poll->Pending of the runs of the agent's first poll: ours' whole pending-latency
    histogram (every run it took came with that poll when `runs` fits one page), the official
    agent's first block of "Submitting flow run" lines."""
    label = f"{contender.name}-firstpoll"
    queue = f"bench-{server.tag}-{label}"
    deployment = server.deployment(f"{label}-{server.tag}", queue, ["true"])
    run_ids = server.create_runs(deployment, runs)
    day = datetime.now().date()  # the official agent logs local time
    began = datetime.now(UTC)
    agent = launch(guard, contender, server.api_url, queue, work_dir)
    latency: Latency | None = None
    try:
        progress = wait_for_pids(server, queue, run_ids, timeout=timeout, agent=agent, cheap=True)
        if contender.kind == "ours":
            latency = ours_latency(agent)
        guard.remember_flows(local_pids(pid for pid, _ in progress.pids.values()))
        guard.remember_descendants(agent.process)
    finally:
        guard.stop(agent.process)
        guard.kill_flows()
    if latency is None:
        pending = server.pending_times(list(progress.pids))
        found = found_times_official(agent.log, day)
        latency = official_latency(found, pending, first_poll_only=True)
    return FirstPollResult(
        contender=contender.name,
        runs=runs,
        runs_with_pid=len(progress.pids),
        timed_out=progress.timed_out,
        seconds=(progress.started_wall - began).total_seconds() + progress.observed_seconds,
        median_ms=latency.median_ms,
        p95_ms=latency.p95_ms,
        samples=latency.samples,
        latency_source=latency.source,
        latency_no_data=latency.no_data and f"{NO_DATA}: {latency.no_data}",
        log_path=str(agent.log),
    )
