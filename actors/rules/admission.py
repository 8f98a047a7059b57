"""Which of the runs a poll found may start now: the Dispatcher's decision, kept pure.

Runs not admitted are not remembered: they stay Scheduled on the server and a later poll
brings them back, so nothing is buffered that the server does not also hold.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, datetime

from messages.wire.prefect import FlowRun

_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def _start_time(run: FlowRun) -> datetime:
    when = run.next_scheduled_start_time
    if when is None:
        return _FAR_FUTURE
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def free_slots(limit: int | None, held: int) -> int | None:
    """How many more runs may start; None means no limit."""
    return None if limit is None else max(0, limit - held)


def admit(found: Iterable[FlowRun], held: Collection[str], limit: int | None) -> list[FlowRun]:
    """Runs to start now: not held yet, each once, earliest scheduled first, within the limit."""
    seen = set(held)
    fresh: list[FlowRun] = []
    for run in found:
        if run.id not in seen:
            seen.add(run.id)
            fresh.append(run)
    fresh.sort(key=_start_time)
    room = free_slots(limit, len(held))
    return fresh if room is None else fresh[:room]
