"""Messages of the event listener: what the stream's thread tells it, what the Agent tells it,
and what it tells the watchers.

The stream's receive loop blocks, so it runs on a thread of its own (a greenlet under gevent)
and tells the EventListener what happened; each such message carries the number of the
session it comes from, so that what a closed session still says is recognised and dropped.
"""

from __future__ import annotations

import msgspec

from messages.wire.events import Event


class ServedQueue(msgspec.Struct, frozen=True):
    """One queue the agent serves, as the EventListener needs it."""

    queue_id: str  # the server's id of the work queue (events name queues by id)
    name: str
    watcher: object  # the QueueWatcher's pykka.ActorRef, woken by an event of this queue


class ServedQueues(msgspec.Struct, frozen=True):
    """Told to the EventListener by the Agent whenever the queues served, their ids (learnt
    from the watchers' `ChildStatus`) or their watchers change. A new set of ids is a new
    subscription."""

    queues: tuple[ServedQueue, ...]


class StreamOpened(msgspec.Struct, frozen=True):
    """Told by a session's thread: connected, authenticated, subscribed."""

    session: int


class StreamEvent(msgspec.Struct, frozen=True):
    """Told by a session's thread for each event the server sent."""

    session: int
    event: Event


class StreamClosed(msgspec.Struct, frozen=True):
    """Told by a session's thread when the session could not open or has ended."""

    session: int
    reason: str  # in words, for the log and the tree
    no_events: bool = False  # the server has no event stream at all (2.x without events)


class EventWake(msgspec.Struct, frozen=True):
    """Told to a QueueWatcher by the EventListener: the server announced a run of its queue
    that may be due (or a change of the queue: resumed, reprioritised). The watcher polls now,
    or once the poll under way is over: however many arrive meanwhile, one more poll. Its
    pool's PoolScout tells it too (`by_event=False`) when its look found a run of the queue."""

    by_event: bool = True  # counted as an event-woken poll
    queue_changed: bool = False  # announced by the queue's own event: read it afresh
    if_paused: bool = False  # the queue left PAUSED, maybe: poll only if it was seen paused


class StreamHealth(msgspec.Struct, frozen=True):
    """Told to the CancelWatcher by the Agent when the event mode changes (a restarted one is
    started knowing it): while the stream is healthy, cancellations come by event and the
    filter poll is the safety net, at `--stream-cancel-poll-interval`."""

    healthy: bool


class ScoutedQueue(msgspec.Struct, frozen=True):
    """One queue of a work pool as its PoolScout needs it: its name in the pool, its watcher."""

    name: str
    watcher: object  # the QueueWatcher's pykka.ActorRef, woken when a run of its queue is due


class ScoutedQueues(msgspec.Struct, frozen=True):
    """Told to a PoolScout by the Agent whenever the watched queues of its pool change."""

    queues: tuple[ScoutedQueue, ...]


class ScoutCovers(msgspec.Struct, frozen=True):
    """Told to the watchers of plain queues by the PoolScout of the server's default agent pool
    (where 2.x keeps the queues made without a pool): the id of that pool, whose looks cover
    every queue of it without a tag filter; None: it cannot look (the watchers poll on their
    own, as before)."""

    pool_id: str | None
