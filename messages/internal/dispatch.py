"""Messages about flow runs that cross between actors (and between a host service and the agent).

Each message is a frozen Struct: it is shared between threads or greenlets without copying and
no receiver can change what another receiver sees.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from messages.wire.prefect import FlowRun


class RunsFound(msgspec.Struct, frozen=True):
    """Told to the Dispatcher by a QueueWatcher after each poll that returned runs (and, in a
    pool, after an empty one: lower priorities then learn this queue is drained).

    The Dispatcher drops runs it already holds, admits the rest in order of scheduled start
    as far as its limit allows, and leaves the others Scheduled on the server for a later poll.
    It tells `reply_to` how many it admitted (`Admitted`). A tell, not an ask: a bug in the
    Dispatcher fails the Dispatcher, not the watcher that brought the runs.
    """

    queue_name: str  # the queue the runs were read from, for log lines
    runs: tuple[FlowRun, ...]  # as the server returned them, in any order
    full_page: bool = False  # more may be due: wake the watcher once these runs are taken
    reply_to: object = None  # the watcher's pykka.ActorRef, told `Admitted`


class Admitted(msgspec.Struct, frozen=True):
    """Told to a QueueWatcher by the Dispatcher in answer to its `RunsFound`."""

    count: int  # how many of the runs it admitted
    full_page: bool  # the RunsFound was a full page


class FreeSlots(msgspec.Struct, frozen=True):
    """Told to the Dispatcher by a QueueWatcher before each poll; answered with `Room`.

    A watcher never asks the server for more runs than could be admitted right now. A watcher
    told 0 is sent `Poll` when a slot frees up.
    """

    queue_name: str  # who is asking, to be woken when a slot frees
    pool: str | None = None  # the queue's work pool, when the agent serves one (--pool)
    pool_limit: int | None = None  # the pool's concurrency limit, as last read
    priority: int | None = None  # the queue's priority in its pool (1 goes first)
    # The queue's next pages come by the cheap flow-run filter (`actors/rules/poll_route.py`), so
    # a smaller page costs a drain little and its runs wait less.
    cheap_pages: bool = False
    reply_to: object = None  # the watcher's pykka.ActorRef, told `Room`
    # Agents the queue is shared with, this one included (`actors/rules/share.py`): above 1, a
    # page's runs are not asked for again before all of them are taken.
    sharers: int = 1


class Room(msgspec.Struct, frozen=True):
    """Told to a QueueWatcher by the Dispatcher in answer to `FreeSlots`: ask the server for
    at most `count` runs now (0: none; the watcher is sent `Poll` when a slot frees)."""

    count: int
    # The live peers as the Recovery actor last read them (`Peers`), this agent among them;
    # empty until it has: the watcher then proposes as a lone agent does.
    peers: tuple[str, ...] = ()


class Peers(msgspec.Struct, frozen=True):
    """Told to the Dispatcher by the Recovery actor whenever the live workers of a pool it
    serves change (and to a new Dispatcher at once): the names of the agents that share that
    pool's queues, this one among them. The Dispatcher hands them to the pool's watchers with
    `Room`."""

    names: tuple[str, ...]
    pool: str | None = None  # the served pool (None: the plain queues of a pool-less agent)


class ReadPeers(msgspec.Struct, frozen=True):
    """Scheduled by the Recovery actor to itself: read the pool's live workers again (soon
    after they changed, else every heartbeat interval)."""


class PeersInDoubt(msgspec.Struct, frozen=True):
    """Told by a QueueWatcher to the Agent, which passes it on to Recovery, when every run due
    in a full window is a peer's, waiting its grace: Recovery reads the pools' worker rows
    again now (at most once a second), so that a peer that left (its row removed at a clean
    stop) is known gone at once and its runs are taken without the grace."""


class Cancel(msgspec.Struct, frozen=True):
    """Sent to the Dispatcher (by the CancelWatcher, the EventListener or a host service) to
    stop one run.

    The Dispatcher routes it to the run's RunSupervisor, which kills the run's process group
    and marks the run Cancelled. A run whose process has not started yet never starts.
    """

    flow_run_id: str
    reason: str = "cancellation requested"
    # Only a run the Dispatcher holds (the EventListener's): a run it does not hold is left to
    # the CancelWatcher's poll, which also finds the process of a run held by an earlier life.
    held_only: bool = False


class Subscribe(msgspec.Struct, frozen=True):
    """Sent to the Dispatcher: tell `listener` (a pykka.ActorRef) every run event."""

    listener: object


class Unsubscribe(msgspec.Struct, frozen=True):
    listener: object


class RunStatus(msgspec.Struct, frozen=True):
    """Sent by a RunSupervisor to the Dispatcher when its run changes phase.

    The Dispatcher keeps the latest per run, so the tree is answered without asking a
    supervisor that may be busy in an HTTP call; `pid` also feeds the RunStarted event.
    """

    flow_run_id: str
    state: str
    since: float
    pid: str | None = None  # the run's infrastructure pid, once known
    past_pending: bool = False  # the Pending proposal is settled (taken, or not ours)
    # The supervisor's pykka.ActorRef: a Dispatcher restarted since it admitted the run takes
    # the run back when it hears from its supervisor, so the run counts against the limit.
    supervisor: object = None


class CheckHeldRuns(msgspec.Struct, frozen=True):
    """Scheduled by Recovery to itself one heartbeat interval after this agent reached the
    server again: check the held runs once more, for a recovery a peer had under way."""


class HeldRunIds(msgspec.Struct, frozen=True):
    """Told to the Dispatcher by the Recovery actor after this agent was cut off from the
    server: which runs do you hold? Answered with `HeldRunsAre` to `reply_to`."""

    reply_to: object  # the asker's pykka.ActorRef


class HeldRunsAre(msgspec.Struct, frozen=True):
    """The Dispatcher's answer to `HeldRunIds`: the held runs past their Pending."""

    flow_run_ids: tuple[str, ...]


class Relinquish(msgspec.Struct, frozen=True):
    """Told to the Dispatcher (and routed to the run's supervisor) when the server says a run
    this agent holds is no longer its own: a peer recovered it while this agent was cut off.
    Its process group is killed at once (SIGKILL: it is running elsewhere, or ended there) and
    nothing is reported: the server already holds the truth. A run a peer adopted (its
    container runs on, watched by the peer: `kill` False) is let go untouched."""

    flow_run_id: str
    reason: str
    kill: bool = True


class HoldsRuns(msgspec.Struct, frozen=True):
    """Told to the Agent by the Dispatcher when it comes to hold runs or holds none any more
    (and by a new Dispatcher at its first count), and by the Agent to the CancelWatcher: an
    agent that holds no run has none of its own to cancel, and looks for cancellations less
    often (a run it takes brings the quick polls back before it can start)."""

    holding: bool


class DueAgain(msgspec.Struct, frozen=True):
    """Dispatcher -> QueueWatcher: a run of its queue that the server deferred (a concurrency
    slot taken) is due again at `at`; poll for it then rather than at the next safety-net
    look, which the event stream leaves far apart (the deferral announces no waking event)."""

    at: datetime
