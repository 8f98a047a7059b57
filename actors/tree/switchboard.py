"""Switchboard: how the Agent's children are wired together. Which children an agent has and
how a new life of each starts, knowing what it must of the others; and what they must hear of
each other afterwards, told when it changes.

The children do not know each other; the Agent tells each what it needs from the others, all
of it worked out from its table of children (`actors.tree.children`) and what they told of
themselves:

- the queues watched now (the QueueWatchers, each with its pool): to the CancelWatcher and
  Recovery, which look at their runs (`WatchedQueues`);
- the queues served whose ids are known (a watcher learns its queue's id when it reads it),
  with their watchers: to the EventListener, whose subscription names queues by id and which
  wakes their watchers (`ServedQueues`);
- whether the event stream is healthy (a running EventListener whose mode is `stream`): to the
  CancelWatcher, the PoolScouts and the QueueWatchers, which then look slowly (`StreamHealth`);
- whether the Dispatcher holds any run: to the CancelWatcher, which polls quickly only then
  (`HoldsRuns`);
- the watched queues of each pool, with their watchers: to the pool's PoolScout, which looks
  at them all in one request and wakes the watchers of those with runs (`ScoutedQueues`);
- what the Heartbeat's lease says: to the Dispatcher and Recovery (`LeaseChanged`);
- a new Dispatcher: to every other child (`UseDispatcher`);
- the listeners subscribed to run events: to the Dispatcher (`Subscribe`, and to each new one).

Each is told again only when it changed, and a new life of a child is started knowing what
was told last (`watched`, `stream_healthy`, `holding`, `lease_said`), or told it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import pykka

from actors.rules.lease import Lease
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.tree.cancel_watcher import CancelWatcher
from actors.tree.children import Child, Children
from actors.tree.dispatcher import Dispatcher
from actors.tree.event_listener import EventListener
from actors.tree.heartbeat import Heartbeat
from actors.tree.pool_scout import DEFAULT_AGENT_POOL, PoolScout
from actors.tree.queue_matcher import QueueMatcher
from actors.tree.queue_watcher import QueueWatcher
from actors.tree.recovery import Recovery
from messages.internal.dispatch import HoldsRuns, PeersInDoubt, Subscribe, Unsubscribe
from messages.internal.events import (
    ScoutedQueue,
    ScoutedQueues,
    ServedQueue,
    ServedQueues,
    StreamHealth,
)
from messages.internal.lease import LeaseChanged
from messages.internal.lifecycle import UseDispatcher, WatchedQueue, WatchedQueues
from messages.user.tree import ActorKind

WATCHER = ActorKind.QUEUE_WATCHER
SCOUT = ActorKind.POOL_SCOUT
CANCELS = (ActorKind.CANCEL_WATCHER, CancelWatcher.NAME)
RECOVERY = (ActorKind.RECOVERY, Recovery.NAME)
EVENTS = (ActorKind.EVENT_LISTENER, EventListener.NAME)
DISPATCHER = (ActorKind.DISPATCHER, Dispatcher.NAME)
HEARTBEAT = (ActorKind.HEARTBEAT, Heartbeat.NAME)


@dataclass(frozen=True)
class ChildActors:
    """The classes the Agent starts its children from: the tree's own, unless a test hands it
    a fake of one (as Mopidy's tests hand its core a dummy audio)."""

    queue_watcher: type[QueueWatcher] = QueueWatcher
    dispatcher: type[Dispatcher] = Dispatcher


class Switchboard:
    """Starts the Agent's children knowing what they must; tells them what changes."""

    def __init__(
        self,
        ctx: AgentContext,
        agent: pykka.ActorRef[Any],
        children: Children,
        actors: ChildActors | None = None,
    ) -> None:
        self.ctx = ctx
        self.agent = agent
        self.children = children
        self.actors = actors if actors is not None else ChildActors()
        self.listeners: list[pykka.ActorRef[Any]] = list(ctx.listeners)  # outlive a restart
        # The lease outlives a restart of the Heartbeat, which alone writes it.
        self.lease_kept = Lease(ctx.settings.lost_agent_seconds, ctx.settings.heartbeat_seconds)
        self.watched: tuple[WatchedQueue, ...] = ()  # told the CancelWatcher and Recovery
        self.watcher_queues: dict[str, WatchedQueue] = {}  # watcher name -> its pool and queue
        self.served: tuple[ServedQueue, ...] | None = None  # told the EventListener
        self.queue_ids: dict[str, str] = {}  # queue name -> id, as its watchers told it
        self.stream_healthy = False  # told the CancelWatcher, the scouts and the watchers
        self.scouted: dict[str, tuple[ScoutedQueue, ...]] = {}  # scout -> told it
        self.scout_pools: dict[str, str | None] = {}  # scout -> the pool it looks at (None: plain)
        self.holding = False  # told the CancelWatcher: the Dispatcher holds runs
        self.lease_said = LeaseChanged(holds=True, streak_since=None)  # without `reconnected`

    def first_children(self) -> list[Child]:
        """The children an agent starts with, but its watchers, in the order they start."""
        ctx, agent, settings = self.ctx, self.agent, self.ctx.settings
        rows = [
            Child(
                ActorKind.HEARTBEAT,
                Heartbeat.NAME,
                lambda: Heartbeat.start(ctx, agent, self.lease_kept),
            ),
            Child(
                *DISPATCHER,
                lambda: self.actors.dispatcher.start(
                    ctx, agent, tuple(self.listeners), self.lease_said
                ),
                started=self.dispatcher_started,
            ),
        ]
        if not settings.run_once:
            rows += [
                Child(
                    *CANCELS,
                    lambda: CancelWatcher.start(
                        ctx,
                        agent,
                        self.dispatcher(),
                        self.watched,
                        stream_healthy=self.stream_healthy,
                        holding=self.holding,
                    ),
                ),
                Child(
                    *RECOVERY,
                    lambda: Recovery.start(
                        ctx, agent, self.dispatcher(), self.watched, self.lease_said
                    ),
                ),
                Child(
                    *EVENTS,
                    lambda: EventListener.start(ctx, agent, self.dispatcher()),
                    started=self.listener_started,
                ),
            ]
            rows += [self._scout(pool) for pool in settings.work_pools or (None,)]
        if settings.follows_queues:
            matcher = (ActorKind.QUEUE_MATCHER, QueueMatcher.NAME)
            rows.append(Child(*matcher, lambda: QueueMatcher.start(ctx, agent)))
        return rows

    def _scout(self, pool: str | None) -> Child:
        """The row of a pool's PoolScout, started knowing the pool's watched queues; for plain
        queues (None), the scout of the server's default agent pool."""
        name = pool if pool is not None else DEFAULT_AGENT_POOL
        self.scout_pools[name] = pool
        return Child(
            SCOUT,
            name,
            lambda: PoolScout.start(
                self.ctx,
                self.agent,
                name,
                self.scouted.get(name, ()),
                self.stream_healthy,
                plain=pool is None,
            ),
        )

    def watcher(self, pool: str | None, queue: str, create_missing: bool) -> Child:
        """The row of the QueueWatcher of one queue of a pool (created if missing: a queue
        named by -q), named as `AgentSettings.watcher_name` says."""
        ctx = self.ctx
        name = ctx.settings.watcher_name(pool, queue)
        self.watcher_queues[name] = WatchedQueue(pool, queue)
        return Child(
            WATCHER,
            name,
            lambda: self.actors.queue_watcher.start(
                ctx, queue, self.dispatcher(), self.agent, create_missing, pool, name
            ),
            started=lambda: self.watcher_started(name),
        )

    def watcher_started(self, name: str) -> None:
        """A new watcher hears whether the stream is healthy; its pool's scout hears of it."""
        if self.stream_healthy:
            self._tell(self.children.ref(WATCHER, name), StreamHealth(True))
        self.update()

    def watcher_pool(self, name: str) -> str | None:
        """The pool of the queue a watcher watches."""
        known = self.watcher_queues.get(name)
        return known.pool if known is not None else None

    def subscribe(self, message: Subscribe | Unsubscribe) -> None:
        """A listener of run events (un)subscribed: kept for every later Dispatcher too."""
        if isinstance(message, Subscribe) and isinstance(message.listener, pykka.ActorRef):
            self.listeners.append(message.listener)
        else:
            self.listeners = [known for known in self.listeners if known != message.listener]
        self.tell_dispatcher(message)

    def dispatcher(self) -> pykka.ActorRef[Any] | None:
        return self.children.ref(*DISPATCHER)

    def tell_dispatcher(self, message: object) -> None:
        self._tell(self.dispatcher(), message)

    def update(self) -> None:
        """Work out again what the children must know; tell what changed."""
        names = self.children.names(WATCHER)
        watched = tuple(sorted(self.watcher_queues[name] for name in names))
        if watched != self.watched:
            self.watched = watched
            for key in (CANCELS, RECOVERY):
                self._tell(self.children.ref(*key), WatchedQueues(watched))
        watchers = self.children.of_kind(WATCHER)
        for watcher in watchers:  # a queue's id outlives the life of its watcher that told it
            if watcher.node is not None and (queue_id := watcher.node.detail.get("queue id")):
                self.queue_ids[watcher.name] = queue_id
        served = tuple(
            ServedQueue(self.queue_ids[watcher.name], watcher.name, watcher.ref)
            for watcher in watchers
            if watcher.ref is not None and watcher.name in self.queue_ids
        )
        listener = self.children.get(*EVENTS)
        if listener is not None and listener.ref is not None and served != self.served:
            self.served = served
            self._tell(listener.ref, ServedQueues(served))
        mode = listener.node if listener is not None and listener.ref is not None else None
        healthy = mode is not None and mode.state == "stream"
        if healthy != self.stream_healthy:
            self.stream_healthy = healthy
            self._tell(self.children.ref(*CANCELS), StreamHealth(healthy))
            for child in [*self.children.of_kind(SCOUT), *watchers]:
                self._tell(child.ref, StreamHealth(healthy))
        self._tell_scouts(watchers)

    def _tell_scouts(self, watchers: list[Child]) -> None:
        """Each pool's scout hears its watched queues (with their current watchers)."""
        for scout in self.children.of_kind(SCOUT):
            pool = self.scout_pools.get(scout.name)
            queues = tuple(
                ScoutedQueue(self.watcher_queues[watcher.name].name, watcher.ref)
                for watcher in watchers
                if watcher.ref is not None and self.watcher_queues[watcher.name].pool == pool
            )
            if scout.ref is not None and queues != self.scouted.get(scout.name):
                self.scouted[scout.name] = queues
                self._tell(scout.ref, ScoutedQueues(queues))

    def listener_started(self) -> None:
        """A new EventListener hears the queues served at once."""
        self.served = None
        self.update()

    def dispatcher_started(self) -> None:
        """Every other running child talks to the new Dispatcher now."""
        dispatcher = self.dispatcher()
        for ref in self.children.live():
            if ref is not dispatcher:
                self._tell(ref, UseDispatcher(dispatcher))

    def holds_runs(self, said: HoldsRuns) -> None:
        """The Dispatcher came to hold runs, or holds none any more: the CancelWatcher hears."""
        if said.holding != self.holding:
            self.holding = said.holding
            self._tell(self.children.ref(*CANCELS), said)

    def lease(self, said: LeaseChanged) -> None:
        """Those who act for runs hear what the lease says: the Dispatcher (and through it
        every RunSupervisor), and Recovery (its streak; the check after a reconnection). A
        child started later is given the last of it, without the check (told once)."""
        self.lease_said = msgspec.structs.replace(said, reconnected=False)
        self.tell_dispatcher(said)
        self._tell(self.children.ref(*RECOVERY), said)

    def peers_in_doubt(self) -> None:
        """A watcher waits on peers' runs: Recovery reads who is still there."""
        self._tell(self.children.ref(*RECOVERY), PeersInDoubt())

    @staticmethod
    def _tell(ref: pykka.ActorRef[Any] | None, message: object) -> None:
        if ref is not None:
            tell_if_alive(ref, message)
