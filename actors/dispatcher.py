"""Dispatcher: the one place that decides which runs this agent takes, and holds them.

It alone knows which runs are in flight, so de-duplication (by flow run id, across every
queue and poll) and the limit need no locks: they are decisions made in one inbox. It spawns
a RunSupervisor per admitted run and frees the slot when that supervisor says the run is over,
whatever the outcome. Runs it does not admit are forgotten: the server still holds them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import pykka

from actors.admission import admit, free_slots
from actors.context import AgentContext
from actors.run_supervisor import RunSupervisor
from messages.control import (
    DispatcherIdle,
    HeldRuns,
    Interrupt,
    InterruptRuns,
    Poll,
    RegisterWatcher,
)
from messages.runs import Cancel, FreeSlots, RunFinished, RunsFound

log = logging.getLogger("prefect_actor_agent.dispatcher")

UNLIMITED_PAGE = 200  # the most runs a watcher asks for at once when there is no limit
RECENTLY_FINISHED = 2048  # finished run ids remembered, so a stale poll cannot start one again


class Dispatcher(pykka.ThreadingActor):
    """Limit and de-duplication; parent of every RunSupervisor (permanent child of the Agent)."""

    def __init__(self, ctx: AgentContext, agent: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.ctx = ctx
        self.agent = agent
        self.held: dict[str, pykka.ActorRef[Any]] = {}
        self.recently_finished: OrderedDict[str, None] = OrderedDict()
        self.watchers: dict[str, pykka.ActorRef[Any]] = {}
        self.starved: set[str] = set()  # queues told "no free slot", woken when one frees

    def on_receive(self, message: Any) -> Any:
        match message:
            case FreeSlots(queue_name=queue):
                return self._free_slots(queue)
            case RunsFound(queue_name=queue, runs=runs):
                return self._admit(queue, runs)
            case RunFinished():
                self._finished(message)
            case Cancel(flow_run_id=run_id):
                self._cancel(message, run_id)
            case RegisterWatcher(queue_name=queue, watcher=ref):
                self._register(queue, ref)
            case HeldRuns():
                return len(self.held)
            case InterruptRuns(grace_seconds=grace):
                return self._interrupt_all(grace)
            case _:
                log.warning("unexpected message %r", message)
        return None

    def _free_slots(self, queue: str) -> int:
        room = free_slots(self.ctx.settings.limit, len(self.held))
        if room == 0:
            self.starved.add(queue)
        return UNLIMITED_PAGE if room is None else min(room, UNLIMITED_PAGE)

    def _admit(self, queue: str, runs: tuple[Any, ...]) -> int:
        fresh = [run for run in runs if run.id not in self.recently_finished]
        admitted = admit(fresh, self.held.keys(), self.ctx.settings.limit)
        for run in admitted:
            log.info("submitting flow run %s (%s) from queue %r", run.id, run.name, queue)
            self.held[run.id] = RunSupervisor.start(self.ctx, run.id, self.actor_ref, flow_run=run)
        new = {run.id for run in fresh} - set(self.held) - {run.id for run in admitted}
        if new and self.ctx.settings.limit is not None:
            log.info(
                "flow run limit of %d reached: %d run(s) from queue %r wait on the server",
                self.ctx.settings.limit,
                len(new),
                queue,
            )
        return len(admitted)

    def _finished(self, message: RunFinished) -> None:
        if self.held.pop(message.flow_run_id, None) is None:
            return
        self.recently_finished[message.flow_run_id] = None
        while len(self.recently_finished) > RECENTLY_FINISHED:
            self.recently_finished.popitem(last=False)
        log.info(
            "flow run %s finished: %s%s",
            message.flow_run_id,
            message.outcome,
            f" ({message.detail})" if message.detail else "",
        )
        self._wake_starved()
        if not self.held:
            self.agent.tell(DispatcherIdle())

    def _wake_starved(self) -> None:
        for queue in self.starved:
            watcher = self.watchers.get(queue)
            if watcher is not None:
                watcher.tell(Poll())
        self.starved.clear()

    def _cancel(self, message: Cancel, run_id: str) -> None:
        supervisor = self.held.get(run_id)
        if supervisor is not None:
            supervisor.tell(message)
            return
        # Not held: started by an earlier life of this agent, or by another agent on this host.
        log.info(
            "cancel for flow run %s, which this agent does not hold: looking for its process",
            run_id,
        )
        self.held[run_id] = RunSupervisor.start(self.ctx, run_id, self.actor_ref, cancel=message)

    def _register(self, queue: str, ref: object) -> None:
        if isinstance(ref, pykka.ActorRef):
            self.watchers[queue] = ref
        else:
            self.watchers.pop(queue, None)
            self.starved.discard(queue)

    def _interrupt_all(self, grace: float) -> list[pykka.ActorRef[Any]]:
        refs = list(self.held.values())
        for ref in refs:
            ref.tell(Interrupt(grace))
        return refs
