"""The ceiling: no agent, only the two calls every agent must make per run (Pending, then the
pid), by 8 threads: the least work per run, so the most the server can take."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from examples.benchmark.drain import DrainResult, drain_queue
from examples.benchmark.progress import steady_rate
from examples.benchmark.server import BenchServer

CEILING_THREADS = 8
FAKE_PID = "host:123"  # not this host's: nothing is started, so nothing is remembered to stop


def drain_ceiling(server: BenchServer, runs: int, round_index: int = 0) -> DrainResult:
    """Propose Pending and record a pid for each run, at bounded concurrency."""
    queue, run_ids = drain_queue(server, "ceiling", round_index, runs)
    api = server.api

    def take(run_id: str) -> bool:
        if not api.propose_pending(run_id):
            return False
        api.set_infrastructure_pid(run_id, FAKE_PID)
        return True

    retries_before = api.retried
    began = time.monotonic()
    with ThreadPoolExecutor(CEILING_THREADS) as pool:
        taken = sum(pool.map(take, run_ids))
    elapsed = time.monotonic() - began
    retries = api.retried - retries_before
    pids = server.runs_with_pid(queue, run_ids)
    steady = steady_rate(server.pending_times(list(pids)), pids)
    return DrainResult(
        contender="ceiling",
        steady_runs_per_second=steady,
        runs=runs,
        runs_with_pid=taken,
        elapsed_seconds=elapsed,
        runs_per_second=taken / elapsed,
        timed_out=False,
        first_pid_seconds=None,
        agent_cpu_seconds=None,
        log_path=None,
        ceiling_retries=retries,
    )
