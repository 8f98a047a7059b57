"""What the agent asks of the server's event stream, and what one event makes it do: pure.

The subscription is a filter the server applies (`subscription`): the flow-run state changes
that can matter to this agent (a run Scheduled or Late, a run Cancelling) of the work queues
it serves, named by their ids. The queues of a work pool are named the same way, so one rule
serves `-q`, `-m` and `-p`; when the served set changes the agent subscribes again.

One event then decides one thing (`decide`): wake the watcher of the run's queue, ask the
Dispatcher to cancel the run, or nothing. Events only wake: the watcher's poll still decides
what runs (it takes only what is due within the prefetch, within the limit, and the Pending
proposal is still the lock), and the Dispatcher cancels only a run it holds. So an event that
is lost, doubled or out of order costs a poll or some latency, never a wrong action.

The 2.20 and 3.x servers put no scheduled time in a state-change event (their payload holds
the state's type, name and message), so a Scheduled event always wakes: the poll it causes
asks the server for the runs due before now + prefetch, which is the prefetch check. Runs a
deployment's schedule creates ahead of time are written by the scheduler without
orchestration and announce nothing; they are due long after they exist, and the regular poll
takes them in time.

A served queue's own changes wake its watcher too: resumed (`prefect.work-queue.ready` or
`not-ready`, the statuses a queue leaves PAUSED for; the same events come when the server
marks a queue polled or stale, so these wake a watcher only if it saw its queue paused) or
changed (`prefect.work-queue.updated`: its priority, limit or name), as Prefect 3 announces
them; the poll that follows reads the queue again. So a queue that is idle by the stream, polled
only as a safety net, still takes its runs as soon as it is resumed. (A pause needs no event: a
poll reads its queue before it takes a run.)

Left out on purpose: `AwaitingRetry` (a run the engine retries in its own process; a poll
then could take it twice) and `AwaitingConcurrencySlot` (a run the server itself just refused;
waking at once would only be refused again: the agent polls for it at the time the server gave
it, see `DueAgain`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import msgspec

from messages.wire.events import (
    FLOW_RUN_PREFIX,
    WORK_QUEUE_PREFIX,
    AnyResourceFilter,
    Event,
    EventFilter,
    EventNameFilter,
    FilterMessage,
    OccurredFilter,
)
from messages.wire.prefect import CANCELLED, CANCELLING, SCHEDULED

WAKING_STATES = ("Scheduled", "Late")  # a run that may be due: its queue is polled at once
CANCELLING_STATES = ("Cancelling",)  # type CANCELLING (2.8+), or CANCELLED named so (older)
QUEUE_CHANGES = ("ready", "not-ready", "updated")  # a served queue's events that wake its watcher
SUBSCRIBED_EVENTS = tuple(
    f"{FLOW_RUN_PREFIX}{name}" for name in WAKING_STATES + CANCELLING_STATES
) + tuple(f"{WORK_QUEUE_PREFIX}{change}" for change in QUEUE_CHANGES)
# The window of the subscription: the server drops events outside it. Its start lies before
# now so that a server whose clock is behind the agent's still sends what happens next.
CLOCK_SLACK = timedelta(hours=1)
SUBSCRIPTION_SPAN = timedelta(days=3650)
RECENT_EVENTS = 4096  # event ids remembered, so an event sent twice acts once


class WakeWatcher(msgspec.Struct, frozen=True):
    """Poll this queue now: a run of it may be due."""

    queue_name: str
    flow_run_id: str


class QueueChanged(msgspec.Struct, frozen=True):
    """A served queue was resumed or changed: poll it now (its poll reads it again); for a
    status (`resumed_maybe`), only if its watcher saw it paused."""

    queue_name: str
    change: str

    @property
    def resumed_maybe(self) -> bool:
        return self.change != "updated"


class CancelRun(msgspec.Struct, frozen=True):
    """The server wants this run cancelled: the Dispatcher cancels it if it holds it."""

    flow_run_id: str
    queue_name: str


class Ignore(msgspec.Struct, frozen=True):
    """Nothing to do; `reason` is for the debug log."""

    reason: str


Decision = WakeWatcher | QueueChanged | CancelRun | Ignore


def subscription(queue_ids: Iterable[str], now: datetime) -> FilterMessage:
    """The filter the server applies to the stream: the subscribed state changes of the runs
    of these work queues, from now on (no replay of past events)."""
    return FilterMessage(
        filter=EventFilter(
            occurred=OccurredFilter(since=now - CLOCK_SLACK, until=now + SUBSCRIPTION_SPAN),
            event=EventNameFilter(name=list(SUBSCRIBED_EVENTS)),
            any_resource=AnyResourceFilter(
                id=[f"{WORK_QUEUE_PREFIX}{queue_id}" for queue_id in sorted(set(queue_ids))]
            ),
        )
    )


def decide(event: Event, served: Mapping[str, str]) -> Decision:
    """What one event makes the agent do. `served`: work queue id -> its name, the queues
    this agent serves now (an event of any other queue is ignored, whatever the filter let
    through)."""
    resource_id = event.label("prefect.resource.id") or ""
    if resource_id.startswith(WORK_QUEUE_PREFIX) and event.event.startswith(WORK_QUEUE_PREFIX):
        queue_id = resource_id.removeprefix(WORK_QUEUE_PREFIX)
        change = event.event.removeprefix(WORK_QUEUE_PREFIX)
        if queue_id not in served:
            return Ignore(f"work queue {queue_id} is not served by this agent")
        if change not in QUEUE_CHANGES:
            return Ignore(f"work queue {served[queue_id]!r}: {change} asks nothing of the agent")
        return QueueChanged(served[queue_id], change)
    if not resource_id.startswith(FLOW_RUN_PREFIX) or not event.event.startswith(FLOW_RUN_PREFIX):
        return Ignore(f"not a flow run's event: {event.event}")
    run_id = resource_id.removeprefix(FLOW_RUN_PREFIX)
    queue = next(
        (
            served[queue_id]
            for related in event.related_ids("work-queue")
            for queue_id in [related.removeprefix(WORK_QUEUE_PREFIX)]
            if queue_id in served
        ),
        None,
    )
    if queue is None:
        return Ignore(f"flow run {run_id} is not in a queue this agent serves")
    state_name = event.event.removeprefix(FLOW_RUN_PREFIX)
    state_type = event.label("prefect.state-type")
    if state_name in CANCELLING_STATES and state_type in (CANCELLING, CANCELLED, None):
        return CancelRun(run_id, queue)
    if state_name in WAKING_STATES and state_type in (SCHEDULED, None):
        return WakeWatcher(queue, run_id)
    return Ignore(f"flow run {run_id}: {state_name} ({state_type}) asks nothing of the agent")


class RecentEvents:
    """The ids of the last events seen, so that one sent twice (a server that repeats, a
    stream that replays) acts once. Bounded: the oldest id is forgotten first."""

    def __init__(self, size: int = RECENT_EVENTS) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        """True the first time an id is seen (and remembers it), False after."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True
