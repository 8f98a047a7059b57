"""Messages that drive the actors themselves: timers, supervision, lifecycle.

None of these leave the process; they are how an actor asks itself or its parent to act later
without ever sleeping or blocking in `on_receive`.
"""

from __future__ import annotations

import msgspec

from messages.user.tree import ActorKind


class Poll(msgspec.Struct, frozen=True):
    """Scheduled by a QueueWatcher to itself, or told to it by the Dispatcher when a slot
    frees or a page is taken: time to ask the server for due runs again."""


class Tick(msgspec.Struct, frozen=True):
    """Scheduled by a periodic child to itself (`actors.tree.periodic`): time for its duty
    again (a cancellation poll, a heartbeat, a recovery round, an event session)."""


class MatchingQueues(msgspec.Struct, frozen=True):
    """Told by the QueueMatcher to the Agent after each read of the queues that got through
    (an agent that follows queues: prefixes, or whole pools), one per pool read: the queues
    of that pool to serve now. The Agent starts a watcher for each new one and stops those of
    the pool's queues no longer matched; a pool whose read failed keeps its watchers."""

    names: tuple[str, ...]
    pool: str | None = None  # the work pool read (None: plain queues matching the prefixes)


class PolledOnce(msgspec.Struct, frozen=True):
    """Sent by a QueueWatcher to the Agent after its first poll when the agent runs once.

    Its RunsFound (if any) was sent to the Dispatcher before this, so the Dispatcher has
    already seen those runs when the Agent next asks it how many it holds.
    """

    queue_name: str


class CountHeldRuns(msgspec.Struct, frozen=True):
    """Asked of the Dispatcher by the AgentHandle (outside the tree, with a timeout: a host
    waiting for the agent to be idle); the answer is the number of runs it holds (`HeldRunIds`
    is the list, told to Recovery)."""


class IdleCheck(msgspec.Struct, frozen=True):
    """Told to the Dispatcher by the Agent (run once: every queue was polled once): tell
    `DispatcherIdle` now if no run is held, else when the last one ends."""


class DispatcherIdle(msgspec.Struct, frozen=True):
    """Sent by the Dispatcher to the Agent whenever the last run it held has finished."""


class ChildFailed(msgspec.Struct, frozen=True):
    """Sent by a permanent child of the Agent to it from `on_failure`.

    The parent restarts the child with exponential backoff (one-for-one).
    """

    kind: ActorKind
    name: str  # the queue name, or the singleton's own name
    error: str  # the exception, as a user would read it


class RestartChild(msgspec.Struct, frozen=True):
    """Scheduled by a parent to itself: the backoff for a failed child is over."""

    kind: ActorKind
    name: str


class RegisterWatcher(msgspec.Struct, frozen=True):
    """Sent by a QueueWatcher to its Dispatcher when it starts and when it is handed a new
    Dispatcher; sent by the Agent, with no watcher, when it stops serving the queue.

    A watcher that found no free slot is sent `Poll` as soon as a slot frees up, so a run
    waiting behind the limit starts when the slot frees, not a whole query interval later.
    """

    queue_name: str
    watcher: object  # the watcher's pykka.ActorRef, or None to forget the queue


class InterruptRuns(msgspec.Struct, frozen=True):
    """Asked of the Dispatcher when the agent stops; the answer is the supervisors' refs.

    Each supervisor ends its run (see `Interrupt`) and stops; the caller waits for them.
    """

    grace_seconds: float


class Interrupt(msgspec.Struct, frozen=True):
    """Sent by the Dispatcher to a RunSupervisor when the agent stops.

    A run not started yet is handed back (Scheduled); a running one is terminated (SIGTERM,
    then SIGKILL after the grace period) and proposed Crashed with a message saying why.
    """

    grace_seconds: float


class WatchedQueue(msgspec.Struct, frozen=True, order=True):
    """One queue served: its work pool (None: a plain queue) and its name in that pool."""

    pool: str | None
    name: str


class WatchedQueues(msgspec.Struct, frozen=True):
    """Sent by the Agent to the CancelWatcher and Recovery whenever the set of served queues
    changes (a restarted one is started knowing it)."""

    queues: tuple[WatchedQueue, ...]


class SupervisorFailed(msgspec.Struct, frozen=True):
    """Sent by a RunSupervisor that failed (a bug) while its run's infrastructure was running.

    The Dispatcher starts a replacement supervisor that watches it by its pid, so the
    run is neither orphaned nor killed, and its state tells the truth when it ends.
    """

    flow_run_id: str
    pid: str  # the run's infrastructure pid
    error: str


class UseDispatcher(msgspec.Struct, frozen=True):
    """Sent by the Agent to every other running child after the Dispatcher was restarted:
    talk to this one from now on (a QueueWatcher registers with it)."""

    dispatcher: object  # pykka.ActorRef of the new Dispatcher


class Rehome(msgspec.Struct, frozen=True):
    """Told by a restarted Dispatcher to every live RunSupervisor: the ones of the same agent
    (`agent_id`) take it as their Dispatcher and tell it their `RunStatus` (and anything
    they could not tell its predecessor); others ignore it. Never awaited: a supervisor
    busy elsewhere is taken back when its answer comes."""

    dispatcher: object  # pykka.ActorRef of the new Dispatcher
    agent_id: int


class FindEarlierLifeRuns(msgspec.Struct, frozen=True):
    """Scheduled by the Agent to itself at start (and for newly matched queues): find runs of
    these queues that an earlier life of this agent left Pending or Running on this host.

    The first look is followed by one more (`look_again`), `EARLIER_LIFE_SECOND_LOOK` seconds
    later: a state proposal the killed life sent just before it died can still be applied by a
    busy server after the first look, and a run it left Pending then would be nobody's."""

    queue_names: tuple[str, ...]
    pool: str | None = None  # the work pool of these queues (None: plain queues)
    look_again: bool = True


class SuperviseLeftRun(msgspec.Struct, frozen=True):
    """Sent to the Dispatcher for a run found by `FindEarlierLifeRuns`, or adopted from a lost
    peer by the Recovery: supervise it by its recorded infrastructure pid to its end, or report
    it Crashed if it is gone."""

    flow_run_id: str
    pid: str | None = None  # found by the run's id when none was recorded
    peer: str | None = None  # adopted from this lost agent (None: an earlier life's run)


class GetTree(msgspec.Struct, frozen=True):
    """Asked of the Agent; the answer is the root `ActorNode`."""


class GetDispatcher(msgspec.Struct, frozen=True):
    """Asked of the Agent by the AgentHandle (to cancel a run, wait for the runs in flight,
    end them when stopping); the answer is the Dispatcher's ref now, or None while it is being
    restarted."""


class Describe(msgspec.Struct, frozen=True):
    """Asked of a child by its supervisor; the answer is the child's `ActorNode`."""


class CallAnswered(msgspec.Struct, frozen=True):
    """Sent to an actor by the pool worker that made a server call for it (see
    `actors.runtime.calls`): the call's value or its error. The actor runs the call's
    continuation in its own inbox, in order with the other messages it receives."""

    token: int  # which of the actor's calls this answers
    value: object  # what the call returned (None when it raised)
    error: object  # the exception it raised, or None


class ChildStatus(msgspec.Struct, frozen=True):
    """Sent by a child of the Agent (every one but the Dispatcher, which is asked) to the Agent
    whenever its node changes, so that the Agent answers "show me the tree" from what it was
    told, never waiting on a child that is mid-poll."""

    kind: ActorKind
    name: str
    node: object  # the child's ActorNode (messages.user.tree)
