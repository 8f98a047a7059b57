"""Watching a contender's runs on the server until each has a pid, and the pace it kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from examples.benchmark.contenders import Agent
from examples.benchmark.server import BenchServer, Pids


@dataclass
class Progress:
    """What the benchmark saw of a contender's runs while it waited for their pids."""

    pids: Pids
    started_wall: datetime
    observed_seconds: float
    timed_out: bool


def wait_for_pids(
    server: BenchServer,
    queue: str,
    run_ids: list[str],
    *,
    timeout: float,
    agent: Agent | None,
    on_poll: Callable[[Pids], None] | None = None,
    cheap: bool = False,
) -> Progress:
    """Look every `server.poll_seconds` until every run has a pid, the timeout, or the agent's
    death. `cheap`: count the runs taken (one COUNT) until all are, and only then read their
    pids, so that the benchmark's looking costs the server next to nothing during a drain."""
    started_wall = datetime.now(UTC)
    began = time.monotonic()
    pids: Pids = {}
    timed_out = False
    while len(pids) < len(run_ids):
        if agent is not None:
            agent.check_alive()
        if time.monotonic() - began >= timeout:
            timed_out = True
            break
        tick = time.monotonic()
        if not cheap or server.taken(queue) >= len(run_ids):
            pids.update(server.runs_with_pid(queue, [r for r in run_ids if r not in pids]))
        if on_poll is not None:
            on_poll(pids)
        if len(pids) == len(run_ids):
            break
        time.sleep(max(0.0, server.poll_seconds - (time.monotonic() - tick)))
    return Progress(pids, started_wall, time.monotonic() - began, timed_out)


def steady_rate(pending: dict[str, datetime], pids: Pids) -> float | None:
    """Runs per second from the first Pending to the last pid, both as the server recorded
    them: the pace of the drain once the contender is taking runs, start-up left out (it is
    reported on its own), the same clock and the same events for every contender."""
    if len(pids) < 2 or not pending:
        return None
    first = min(pending.values())
    last = max(updated for _, updated in pids.values())
    seconds = (last - first).total_seconds()
    return (len(pids) - 1) / seconds if seconds > 0 else None
