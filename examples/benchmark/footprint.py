"""The footprint: N runs in flight whose command is `sleep`; the agent's own RSS and CPU while
they run, then a stop that must leave no flow process behind."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from examples.benchmark.contenders import Contender, launch, local_pids
from examples.benchmark.procs import CLOCK_TICKS, ProcessGuard, descendants, proc_stat, rss_kib
from examples.benchmark.progress import wait_for_pids
from examples.benchmark.server import BenchServer, Pids
from examples.harness.agent_logs import count_problems
from examples.harness.agent_status import StatusUnavailableError, counter_total, read_metrics


@dataclass
class FootprintResult:
    """What one agent costs while N runs are in flight."""

    contender: str
    target: int
    in_flight: int
    wait_seconds: float  # contender start -> all runs in flight (or the timeout)
    timed_out: bool
    rss_mib: float
    cpu_percent: float  # of one core, over the sampling window
    window_seconds: float
    agent_processes: int  # the agent's own processes measured (flow processes excluded)
    stop_seconds: float
    leftover_processes: int  # flow processes still alive after the stop, killed here
    log_path: str | None
    log_problems: int = 0  # WARNING, ERROR or CRITICAL lines the agent logged meanwhile
    # Ours only, from its /metrics before the stop: failed API attempts and actor restarts
    api_errors: int | None = None
    actor_restarts: int | None = None


def agent_processes(process: subprocess.Popen[bytes], flows: set[int]) -> list[int]:
    """The agent and whatever it runs besides flow processes (and their children)."""
    below = descendants(process.pid)
    by_parent: dict[int, list[int]] = {}
    for stat in below:
        by_parent.setdefault(stat.ppid, []).append(stat.pid)
    excluded: set[int] = set()
    todo = [pid for pid in flows if proc_stat(pid) is not None]
    while todo:
        pid = todo.pop()
        if pid not in excluded:
            excluded.add(pid)
            todo.extend(by_parent.get(pid, []))
    return [process.pid] + [stat.pid for stat in below if stat.pid not in excluded]


def footprint_agent(
    server: BenchServer,
    guard: ProcessGuard,
    contender: Contender,
    *,
    runs: int,
    timeout: float,
    window: float,
    work_dir: Path,
) -> FootprintResult:
    """RSS and CPU of the agent alone while it holds many runs, then a stop that leaks nothing.

    The flow processes are excluded: they are the same `sleep` for every contender, and what
    a user pays for the agent is its own process.
    """
    queue = f"bench-{server.tag}-{contender.name}-footprint"
    # The sleeps must outlast the wait and the window, or runs would end while measured.
    sleep_seconds = max(120, int(timeout + window + 60))
    command = ["sleep", str(sleep_seconds)]
    deployment = server.deployment(f"{contender.name}-footprint-{server.tag}", queue, command)
    run_ids = server.create_runs(deployment, runs)
    began = time.monotonic()
    agent = launch(guard, contender, server.api_url, queue, work_dir, limit=runs)
    process = agent.process

    def remember(pids: Pids) -> None:
        # From /proc, not the server: while runs are being taken the benchmark only counts
        # them (reading up to N runs a second held a 1,000-run wait to a third of its pace).
        guard.remember_descendants(process)
        guard.remember_flows(local_pids(pid for pid, _ in pids.values()))

    stop_seconds = 0.0
    leftovers = 0
    problems_before_stop = 0
    api_errors = restarts = None
    try:
        progress = wait_for_pids(
            server, queue, run_ids, timeout=timeout, agent=agent, on_poll=remember, cheap=True
        )
        waited = time.monotonic() - began
        if progress.timed_out:  # counted, not read, while it waited: the pids taken so far
            progress.pids.update(server.runs_with_pid(queue, run_ids))
        guard.remember_descendants(process)
        flows = set(local_pids(pid for pid, _ in progress.pids.values()))
        measured = agent_processes(process, flows)
        before = {pid: stat for pid in measured if (stat := proc_stat(pid)) is not None}
        window_began = time.monotonic()
        time.sleep(window)
        window_seconds = time.monotonic() - window_began
        after = {pid: stat for pid in measured if (stat := proc_stat(pid)) is not None}
        ticks = sum(
            after[pid].cpu_ticks - before[pid].cpu_ticks
            for pid in after
            if pid in before and after[pid].start_ticks == before[pid].start_ticks
        )
        rss = sum(rss_kib(pid) for pid in after)
        agent.check_alive(" while measured")
        # Counted before the stop: a stop's own lines (runs left to reconcile) are no error.
        problems_before_stop = count_problems(agent.log)
        if agent.status_url is not None:
            try:
                text = read_metrics(agent.status_url)
            except StatusUnavailableError:
                pass
            else:
                api_errors = counter_total(text, "prefect_agent_api_errors")
                restarts = counter_total(text, "prefect_agent_actor_restarts")
    finally:
        guard.remember_descendants(process)
        if contender.kind == "official":
            # It waits for its flows to end before it exits: end them first.
            guard.kill_flows()
        stop_seconds = guard.stop(process)
        leftovers = len(guard.live_flows())
        guard.kill_flows()
    return FootprintResult(
        contender=contender.name,
        target=runs,
        in_flight=len(progress.pids),
        wait_seconds=waited,
        timed_out=progress.timed_out,
        rss_mib=rss / 1024,
        cpu_percent=100.0 * ticks / CLOCK_TICKS / window_seconds,
        window_seconds=window_seconds,
        agent_processes=len(after),
        stop_seconds=stop_seconds,
        leftover_processes=leftovers,
        log_path=str(agent.log),
        log_problems=problems_before_stop,
        api_errors=api_errors,
        actor_restarts=restarts,
    )
