"""How often a queue is looked at, and which runs of a look ahead are due: pure.

Where the server streams events, a run is announced as it is created or rescheduled, so the
regular look at the queues is a safety net, not the pulse: it catches what the stream missed
(a run the scheduler wrote ahead of time without an event, an event lost in a reconnection)
and keeps the server's record of the queues being polled. `STREAM_LOOK_SECONDS` is that net's
period: under the minute after which a 2.20 or 3.x server marks a queue (and its deployments)
NOT_READY, the status the UI shows and automations watch, with room for one late answer.
Without a stream the query interval stays the pace.

Every look asks for the runs due within the look's own period past the prefetch horizon, not
just within the prefetch: a run due later than the prefetch but before the next look is seen
now, read once, and a timer on the agent's clock brings its watcher to it when it is due
(less the prefetch), with no poll in between (`due_split`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime

from messages.wire.prefect import FlowRun

STREAM_LOOK_SECONDS = 45.0
SEEN_LATER_RUNS = 4096  # runs due later already handed to their watcher (bounded memory)
SCOUT_PAGE_PER_QUEUE = 2  # rows a pool scout's look reads for each queue it looks at
SCOUT_PAGE_MIN = 10
SCOUT_PAGE_MAX = 100


def scout_page(queues: int) -> int:
    """Rows one look of a pool scout asks for, for `queues` queues.

    A look only says which watchers to wake: those of the queues with a run due (or due
    before the next look), and every one of them when the page comes back full, as a backlog
    does. So a page need not hold a backlog, only more rows than its queues would have when
    each has a run or two: in a fleet's drain, ten agents' looks at a 100-row page of full
    runs (a recorded poll, the dearest read) cost the server 1.5 ms per run taken.
    """
    return max(SCOUT_PAGE_MIN, min(SCOUT_PAGE_MAX, SCOUT_PAGE_PER_QUEUE * queues))


def look_interval(query_interval: float, stream_healthy: bool) -> float:
    """Seconds between two regular looks at a queue (or a pool's queues)."""
    return max(query_interval, STREAM_LOOK_SECONDS) if stream_healthy else query_interval


def start_time(run: FlowRun) -> datetime | None:
    """When the run is due: its next scheduled start, else its expected start."""
    return run.next_scheduled_start_time or run.expected_start_time


def due_split(runs: Iterable[FlowRun], horizon: datetime) -> tuple[list[FlowRun], datetime | None]:
    """The runs due by `horizon` (now + prefetch), in their order, and the earliest start of
    those due later (None: none). A run without a start time counts as due."""
    due: list[FlowRun] = []
    later: datetime | None = None
    for run in runs:
        start = start_time(run)
        if start is None or start <= horizon:
            due.append(run)
        elif later is None or start < later:
            later = start
    return due, later


class SeenLater:
    """The ids of runs due later whose watcher was woken for them once already: its own look
    ahead then set the timer that brings it back when they are due. Bounded: oldest first."""

    def __init__(self, size: int = SEEN_LATER_RUNS) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, run_id: str) -> bool:
        if run_id in self._ids:
            self._ids.move_to_end(run_id)
            return False
        self._ids[run_id] = None
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True
