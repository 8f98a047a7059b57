"""PeriodicChild: the base of every child of the Agent whose job is one duty done again and again.

The CancelWatcher's poll, the Heartbeat's beat, Recovery's round, the EventListener's session
and the QueueMatcher's reading of the queues have one shape, written here once:

- `tick` is the duty. It runs at start (unless the child's `begin` says otherwise) and then
  whenever it asked: it returns the seconds until the next tick, or None when the child
  schedules the next one itself (`schedule`), once the answer it waits for has come. A tick
  still pending when the child stops or fails is cancelled.
- Its node in the tree is its `phase` (set with `set_phase`, which dates it) and `detail()`.
  After every message that changed either, and only then, the Agent is told the node
  (`ChildStatus`): the Agent shows the tree from what it was told, never asking a child that
  may be waiting on the server. `Describe` is answered too.
- A restarted Dispatcher (`UseDispatcher`) is kept, and `dispatcher_changed` called.
- A message that neither this base nor the child's `handle` knows is warned about, here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pykka

from actors.runtime.clock import Timer
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.tree.permanent import PermanentChild
from messages.internal.lifecycle import ChildStatus, Describe, Tick, UseDispatcher
from messages.user.tree import ActorNode

log = logging.getLogger("prefect_actor_agent.tree")


class PeriodicChild(PermanentChild):
    """A permanent child whose duty comes round: its timer, its node, its inbox's routine."""

    def __init__(
        self,
        ctx: AgentContext,
        agent: pykka.ActorRef[Any],
        name: str,
        dispatcher: pykka.ActorRef[Any] | None = None,
    ) -> None:
        super().__init__(agent, name)
        self.ctx = ctx
        self.dispatcher = dispatcher
        self.phase = "starting"
        self.since = time.time()
        self.next_tick: Timer | None = None
        self._told: tuple[str, dict[str, str]] | None = None  # the node last told the Agent

    # -- what a child defines ----------------------------------------------------------------------

    def tick(self) -> float | None:
        """Do the duty once; the seconds until the next time, or None (the child schedules it)."""
        raise NotImplementedError

    def handle(self, message: object) -> bool:
        """Act on a message of the child's own; False when it is not one."""
        return False

    def detail(self) -> dict[str, str]:
        """The node's detail in the tree."""
        return {}

    def begin(self) -> None:
        """What the child does at start: by default, its first tick at once."""
        self.actor_ref.tell(Tick())

    def dispatcher_changed(self) -> None:
        """The Dispatcher was restarted: `self.dispatcher` is the new one."""

    # -- the routine -------------------------------------------------------------------------------

    def start_up(self) -> None:
        self.begin()
        self._report()

    def clean_up(self) -> None:
        self.cancel_tick()

    def on_receive(self, message: Any) -> Any:
        match message:
            case Tick():
                self.next_tick = None
                delay = self.tick()
                if delay is not None:
                    self.schedule(delay)
            case Describe():
                return self.describe()
            case UseDispatcher(dispatcher=ref) if isinstance(ref, pykka.ActorRef):
                self.dispatcher = ref
                self.dispatcher_changed()
            case _:
                if not self.handle(message):
                    log.warning("%s %r: unexpected message %r", self.KIND, self.name, message)
        self._report()
        return None

    def schedule(self, delay: float) -> None:
        """The next tick `delay` seconds from now (instead of any already pending)."""
        self.cancel_tick()
        self.next_tick = self.ctx.clock.tell_later(delay, self.actor_ref, Tick())

    def tick_now(self) -> None:
        """The next tick at once (instead of any already pending)."""
        self.cancel_tick()
        self.actor_ref.tell(Tick())

    def cancel_tick(self) -> None:
        if self.next_tick is not None:
            self.next_tick.cancel()
            self.next_tick = None

    def tell_dispatcher(self, message: object) -> bool:
        """Tell the Dispatcher, unless there is none alive (it is being restarted)."""
        return self.dispatcher is not None and tell_if_alive(self.dispatcher, message)

    # -- the node ----------------------------------------------------------------------------------

    def set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase, self.since = phase, time.time()

    def describe(self) -> ActorNode:
        return ActorNode(
            kind=self.KIND, name=self.name, state=self.phase, since=self.since, detail=self.detail()
        )

    def _report(self) -> None:
        node = self.describe()
        if (node.state, node.detail) != self._told:
            self._told = (node.state, node.detail)
            tell_if_alive(self.agent, ChildStatus(self.KIND, self.name, node))
