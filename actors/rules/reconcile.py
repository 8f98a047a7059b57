"""Which runs an earlier life of this agent left behind within its reach: the pure half of
the Agent's `FindEarlierLifeRuns` (whether a pid is within reach, and whether a live agent
still watches it, are the infrastructure kinds' to say: passed in)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from messages.wire.prefect import FlowRun


def left_behind(
    runs: Iterable[FlowRun], here: Callable[[str], bool], watched: Callable[[str], bool]
) -> list[FlowRun]:
    """Runs whose recorded infrastructure is `here` (within this agent's reach: this host's
    process, this daemon's container) and that no live agent watches: nobody does. A run with
    no pid, or one out of reach, is left alone here."""
    return [
        run
        for run in runs
        if run.infrastructure_pid
        and here(run.infrastructure_pid)
        and not watched(run.infrastructure_pid)
    ]
