"""Which runs an earlier life of this agent left behind on this host: the pure half of the
Agent's `FindEarlierLifeRuns` (the /proc look-up that tells a live agent's process is passed in)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from actors.rules.infrastructure_pid import parse_infrastructure_pid
from messages.wire.prefect import FlowRun


def left_behind(
    runs: Iterable[FlowRun], hostname: str, owned_by_live_agent: Callable[[int], bool]
) -> list[FlowRun]:
    """Runs whose recorded process is on `hostname` and is no live agent's child: nobody
    watches them. A run with no pid or another host's is left alone here."""
    found = []
    for run in runs:
        if not run.infrastructure_pid:
            continue
        try:
            host, pid = parse_infrastructure_pid(run.infrastructure_pid)
        except ValueError:
            continue
        if host == hostname and not owned_by_live_agent(pid):
            found.append(run)
    return found
