"""Dispatcher: the one place that decides which runs this agent takes, and holds them.

It alone knows which runs are in flight, so de-duplication (by flow run id, across every
queue and poll) and the limit need no locks: they are decisions made in one inbox. It spawns
a RunSupervisor per admitted run (temporary children: never restarted, a run is not submitted
twice), frees the slot when that supervisor says the run is over, whatever the outcome, and
tells subscribed host actors about each run's events. Runs it does not admit are forgotten:
the server still holds them.

A restarted Dispatcher rebuilds what it holds from the RunSupervisors still alive: it tells
each `Rehome` and takes a run back when its supervisor answers (a supervisor busy at the
moment is taken back when it next speaks), so no slot leaks and no run is started twice.

The watchers tell it (`FreeSlots`, `RunsFound`) and it tells them back (`Room`, `Admitted`):
a bug here fails the Dispatcher, which is restarted, not the watcher that asked.

Serving a work pool, it also shares the room between the pool's queues as the pool says: no
more runs than the pool's concurrency limit, and, when a limit leaves room for only some runs,
a queue gets room only once every queue of higher priority has found no more runs due. Serving
several, it does so pool by pool (each pool's limit counts the runs taken from its queues,
priorities rank the queues of one pool), under the one `--limit` of the agent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pykka

from actors.rules.admission import admit, free_slots
from actors.rules.finished_runs import FinishedRuns
from actors.rules.paging import PageTracker
from actors.rules.share import Contests
from actors.rules.supervision import TEMPORARY
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.tree.permanent import PermanentChild
from actors.tree.run_supervisor import RunSupervisor
from messages.internal.dispatch import (
    Admitted,
    Cancel,
    DueAgain,
    FreeSlots,
    HeldRunIds,
    HeldRunsAre,
    HoldsRuns,
    Peers,
    PeersInDoubt,
    Relinquish,
    Room,
    RunsFound,
    RunStatus,
    Subscribe,
    Unsubscribe,
)
from messages.internal.lease import LeaseChanged
from messages.internal.lifecycle import (
    CountHeldRuns,
    Describe,
    DispatcherIdle,
    IdleCheck,
    Interrupt,
    InterruptRuns,
    Poll,
    RegisterWatcher,
    Rehome,
    SuperviseLeftRun,
    SupervisorFailed,
)
from messages.internal.run_steps import (
    CancelUnheld,
    LeftByEarlierLife,
    LeftByFailedSupervisor,
    RunPlan,
    SubmitRun,
)
from messages.user.events import RunFinished, RunStarted, RunSubmitted
from messages.user.tree import ActorKind, ActorNode
from messages.wire.prefect import FlowRun

log = logging.getLogger("prefect_actor_agent.dispatcher")

class Dispatcher(PermanentChild):
    """Limit and de-duplication; parent of every RunSupervisor (permanent child of the Agent)."""

    KIND = ActorKind.DISPATCHER
    NAME = "dispatcher"  # its name in the tree: there is one

    def __init__(
        self,
        ctx: AgentContext,
        agent: pykka.ActorRef[Any],
        listeners: tuple[pykka.ActorRef[Any], ...] = (),
        lease: LeaseChanged | None = None,
    ) -> None:
        super().__init__(agent, self.NAME)
        self.ctx = ctx
        self.held: dict[str, pykka.ActorRef[Any]] = {}
        self.told_holding: bool | None = None  # what the Agent was last told (`HoldsRuns`)
        self.status: dict[str, RunStatus] = {}
        self.finished_runs = FinishedRuns()  # so a stale poll cannot start one again
        self.watchers: dict[str, pykka.ActorRef[Any]] = {}
        self.starved: set[str] = set()  # queues told "no free slot", woken when one frees
        # What the Heartbeat's lease says, as the Agent told it: while it has lapsed this agent
        # takes no run (its heartbeats do not get through).
        self.lease = lease if lease is not None else LeaseChanged(holds=True, streak_since=None)
        # Runs of full pages whose Pending has not settled: when to poll for the next page.
        self.pages = PageTracker()
        self.priorities: dict[str, int] = {}  # pool queue -> its priority (1 goes first)
        self.drained: set[str] = set()  # pool queues whose last poll found no more runs due
        self.listeners: list[pykka.ActorRef[Any]] = list(listeners)  # kept by the Agent
        self.peers: dict[str | None, tuple[str, ...]] = {}  # pool -> its live agents (`Peers`)
        self.queue_pools: dict[str, str | None] = {}  # watcher (queue) name -> its pool
        self.run_queues: dict[str, str] = {}  # held run id -> the watcher it came from
        self.contests = Contests()  # the queues another agent took a run of first
        self.since = time.time()

    def start_up(self) -> None:
        self._rebuild_from_live_supervisors()

    def on_receive(self, message: Any) -> Any:
        match message:
            case FreeSlots(reply_to=ref):
                _reply(ref, Room(self._free_slots(message), self._sharing(message.queue_name)))
            case LeaseChanged():
                self._lease_changed(message)
            case Peers(names=names, pool=pool):
                self.peers[pool] = names
            case RunsFound(queue_name=queue, runs=runs, full_page=full, reply_to=ref):
                self._note_drained(queue, full)
                count = self._admit(queue, runs, full) if runs else 0
                _reply(ref, Admitted(count, full))
            case RunStatus():
                self._run_status(message)
            case RunFinished():
                self._finished(message)
            case SupervisorFailed():
                self._supervisor_failed(message)
            case SuperviseLeftRun(flow_run_id=run_id, pid=pid, peer=peer) if (
                run_id not in self.held
            ):
                self._supervise(run_id, LeftByEarlierLife(pid, peer))
            case Cancel(flow_run_id=run_id):
                self._cancel(message, run_id)
            case Relinquish(flow_run_id=run_id):
                supervisor = self.held.get(run_id)
                if supervisor is not None:
                    tell_if_alive(supervisor, message)
            case HeldRunIds(reply_to=ref):
                _reply(ref, HeldRunsAre(self._settled_runs()))
            case RegisterWatcher(queue_name=queue, watcher=ref):
                self._register(queue, ref)
            case Subscribe(listener=ref) if isinstance(ref, pykka.ActorRef):
                self.listeners.append(ref)
            case Unsubscribe(listener=ref):
                self.listeners = [known for known in self.listeners if known != ref]
            case CountHeldRuns():
                return len(self.held)
            case IdleCheck():
                if not self.held:
                    self.agent.tell(DispatcherIdle())
            case Describe():
                return self._describe()
            case InterruptRuns(grace_seconds=grace):
                return self._interrupt_all(grace)
            case _:
                log.warning("unexpected message %r", message)
        return None

    # -- admission ---------------------------------------------------------------------------------

    def _free_slots(self, asked: FreeSlots) -> int:
        """How many runs a watcher may ask for now: the free slots, at most one page, plus the
        runs of the queue's last page that are still Scheduled on the server (the answer
        repeats them; admission leaves them out).

        A page is small, so that a run a poll brings is proposed at once rather than behind
        hundreds of others: one round of the Pending proposals the API edge makes at once
        when the queue's next pages come by the cheap flow-run filter, two rounds when every
        poll is a get_runs (the dearest call a drain makes: a page of one round doubled those
        and drained slower in the benchmark). The watcher is woken for the next page while
        the last half of this one is still with the server (see `actors/rules/paging.py`);
        on a queue shared with peers, once all of it is taken (`actors/rules/share.py`).
        """
        queue = asked.queue_name
        self.queue_pools[queue] = asked.pool
        if not self.lease.holds:
            self.starved.add(queue)
            return 0
        room = free_slots(self.ctx.settings.limit, len(self.held))
        if asked.pool is not None:
            room = self._pool_room(queue, asked, room)
        if room == 0:
            self.starved.add(queue)
            return 0
        page = (1 if asked.cheap_pages else 2) * self.ctx.settings.api_concurrency
        self.pages.sized(queue, page, shared=asked.sharers > 1)
        return (page if room is None else min(room, page)) + self.pages.repeated(queue)

    def _sharing(self, queue: str) -> tuple[str, ...]:
        """The peers a queue's watcher shares its runs with: the pool's live agents, only once
        the queue is contested (`actors/rules/share.py`, `Contests`)."""
        pool_peers = self._peers_of(queue)
        peers, lapsed = self.contests.sharers(queue, pool_peers, time.monotonic())
        if lapsed and len(pool_peers) > 1:
            log.info(
                "queue %r: no run taken by another agent for %gs; proposing as a lone agent",
                queue,
                self.contests.lasts,
            )
        return peers

    def _peers_of(self, queue: str) -> tuple[str, ...]:
        """The live agents of the pool of a queue's watcher."""
        return self.peers.get(self.queue_pools.get(queue), ())

    def _lease_changed(self, lease: LeaseChanged) -> None:
        """Whether this agent may take runs: not while its heartbeats do not get through
        (its lease lapsed, `actors/rules/lease.py`). It could not start them (its
        RunSupervisors wait for the lease), peers may soon declare it lost and hand back
        whatever it holds, and each run it took would wait Pending here for nothing: left
        Scheduled, a peer whose heartbeats get through takes it. Every RunSupervisor hears it
        too; the watchers it gave no room are woken as soon as the lease holds again."""
        was, self.lease = self.lease.holds, lease
        if lease.holds == was:
            return
        for supervisor in self.held.values():
            tell_if_alive(supervisor, lease)
        if lease.holds:
            log.info("this agent's heartbeats get through again: taking runs")
            self._wake_starved(by_priority=False)
        else:
            log.warning(
                "this agent's heartbeats do not get through (its lease lapsed): taking no "
                "runs until they do; peers that reach the server take them"
            )

    def _pool_room(self, queue: str, asked: FreeSlots, room: int | None) -> int | None:
        """The room left by the pool's limit and, when room is scarce, by queue priority.

        Every run this agent took from the pool's queues counts against the pool, and so does
        every run whose pool it does not know (one taken over after a restart): with a single
        pool, every run it holds. The server counts other agents' runs once they are Pending,
        and leaves them out of its answer.
        """
        self.priorities[queue] = asked.priority if asked.priority is not None else 1
        if asked.pool_limit is not None:
            pool_room = max(0, asked.pool_limit - self._held_in(asked.pool))
            room = pool_room if room is None else min(room, pool_room)
        if room is not None and room > 0 and self._outranked(queue):
            return 0
        return room

    def _held_in(self, pool: str | None) -> int:
        """The runs held that count against a pool's limit (see `_pool_room`)."""
        pools = self.queue_pools
        return sum(
            1
            for run_id in self.held
            if (queue := self.run_queues.get(run_id)) is None
            or queue not in pools
            or pools[queue] == pool
        )

    def _outranked(self, queue: str) -> bool:
        """Whether a queue of higher priority of its pool (or one not heard from yet) may
        still have runs."""
        mine, pool = self.priorities[queue], self.queue_pools.get(queue)
        for other in self.watchers:
            if other == queue or other in self.drained:
                continue
            if other in self.queue_pools and self.queue_pools[other] != pool:
                continue  # another pool's queue: its priority ranks only its own pool
            theirs = self.priorities.get(other)
            if theirs is None or theirs < mine:
                return True
        return False

    def _note_drained(self, queue: str, full_page: bool) -> None:
        """A queue whose poll was not full has no more runs due: lower priorities may go."""
        if full_page:
            self.drained.discard(queue)
        elif queue not in self.drained:
            self.drained.add(queue)
            if self.starved:
                self._wake_starved(by_priority=False)

    def _admit(self, queue: str, runs: tuple[FlowRun, ...], full_page: bool = False) -> int:
        now = self.ctx.clock.monotonic()
        fresh = [run for run in runs if not self.finished_runs.blocks(run.id, now)]
        admitted = admit(fresh, self.held.keys(), self.ctx.settings.limit)
        for run in admitted:
            log.info("submitting flow run %s (%s) from queue %r", run.id, run.name, queue)
            self._supervise(run.id, SubmitRun(run, self.queue_pools.get(queue)))
            self.run_queues[run.id] = queue
            self.ctx.metrics.runs_submitted.inc()
            self._emit(RunSubmitted(run.id, run.name, queue))
        waiting = {run.id for run in fresh} - set(self.held)
        if waiting and self.ctx.settings.limit is not None:
            log.info(
                "flow run limit of %d reached: %d run(s) from queue %r wait on the server",
                self.ctx.settings.limit,
                len(waiting),
                queue,
            )
        self._held_changed()
        self.pages.found(queue, (run.id for run in admitted), full_page)
        return len(admitted)

    def _held_changed(self) -> None:
        """The gauge of runs in flight, and the Agent told when this Dispatcher comes to hold
        runs or holds none any more (`HoldsRuns`: the CancelWatcher polls quickly only then)."""
        self.ctx.metrics.runs_in_flight.set(len(self.held))
        holding = bool(self.held)
        if holding != self.told_holding:
            self.told_holding = holding
            self.agent.tell(HoldsRuns(holding))

    # -- what the supervisors report ---------------------------------------------------------------

    def _supervise(self, run_id: str, plan: RunPlan) -> None:
        self.held[run_id] = RunSupervisor.start(
            self.ctx, run_id, self.actor_ref, plan, self.lease.holds
        )
        self._held_changed()

    def _run_status(self, status: RunStatus) -> None:
        if status.flow_run_id not in self.held and not self._take_back(status):
            return
        if status.past_pending:
            self._taken(status.flow_run_id)
        previous = self.status.get(status.flow_run_id)
        self.status[status.flow_run_id] = status
        if status.pid is not None and (previous is None or previous.pid != status.pid):
            self._emit(RunStarted(status.flow_run_id, status.pid))

    def _take_back(self, status: RunStatus) -> bool:
        """A supervisor this Dispatcher did not start speaks (it was busy when this one
        started, after a restart): its run counts against the limit and shows in the tree."""
        ref = status.supervisor
        if not isinstance(ref, pykka.ActorRef) or self.finished_runs.known(status.flow_run_id):
            return False
        log.info("took back flow run %s from its supervisor", status.flow_run_id)
        self.held[status.flow_run_id] = ref
        tell_if_alive(ref, self.lease)  # it may have missed a change while no one held it
        self._held_changed()
        return True

    def _finished(self, message: RunFinished) -> None:
        if self.held.pop(message.flow_run_id, None) is None and (
            self.finished_runs.known(message.flow_run_id)
        ):
            return  # told twice (a message kept for a new Dispatcher, and this one)
        self.status.pop(message.flow_run_id, None)
        # The watcher it came from (its queue's name, or `pool/queue` when serving several pools).
        queue = self.run_queues.pop(message.flow_run_id, None) or message.queue
        if message.contested:  # someone else serves the queue: who is alive to share with?
            tell_if_alive(self.agent, PeersInDoubt())
        starts_share = bool(
            message.contested and queue and self.contests.lost(queue, time.monotonic())
        )
        if starts_share and queue and len(self._peers_of(queue)) > 1:
            log.info(
                "queue %r: another agent took flow run %s first; sharing the queue's runs "
                "with the pool's %d live agents",
                queue,
                message.flow_run_id,
                len(self._peers_of(queue)),
            )
        self._taken(message.flow_run_id)
        if message.outcome != "deferred":  # a deferred run comes back, Scheduled, when due
            self.finished_runs.finished(
                message.flow_run_id, message.outcome, self.ctx.clock.monotonic()
            )
        elif message.rescheduled_for is not None and queue:
            watcher = self.watchers.get(queue)  # polls for it then, whatever its idle pace
            if watcher is not None:
                tell_if_alive(watcher, DueAgain(message.rescheduled_for))
        log.info(
            "flow run %s finished: %s%s",
            message.flow_run_id,
            message.outcome,
            f" ({message.detail})" if message.detail else "",
        )
        self.ctx.metrics.runs_finished.labels(outcome=message.outcome).inc()
        self._held_changed()
        self._emit(message)
        self._wake_starved()
        if not self.held:
            self.agent.tell(DispatcherIdle())

    def _settled_runs(self) -> tuple[str, ...]:
        """The held runs whose Pending the server has accepted: those a check after a cut-off
        may read back. A run whose Pending is still with the server reads Scheduled, with no
        claim of ours yet; that answer, not a read, says whether it is ours (relinquished on
        such a read, it would be left Pending with no process once the Pending landed)."""
        return tuple(
            sorted(
                run_id
                for run_id in self.held
                if (status := self.status.get(run_id)) is not None and status.past_pending
            )
        )

    def _supervisor_failed(self, message: SupervisorFailed) -> None:
        """Hand the still-running infrastructure to a replacement that watches it by pid."""
        log.error(
            "the supervisor of flow run %s failed (%s); a replacement watches %s",
            message.flow_run_id,
            message.error,
            message.pid,
        )
        self.ctx.metrics.restarts.labels(kind=ActorKind.RUN_SUPERVISOR).inc()
        self._supervise(message.flow_run_id, LeftByFailedSupervisor(message.pid, message.error))

    def _taken(self, run_id: str) -> None:
        """A run's Pending is settled; a draining queue may be due its next page."""
        for queue in self.pages.taken(run_id):
            watcher = self.watchers.get(queue)
            if watcher is not None:
                tell_if_alive(watcher, Poll())

    def _wake_starved(self, by_priority: bool = True) -> None:
        if by_priority and self.priorities and self.starved:
            # Room in a pool goes by priority: every queue says again whether it has runs due,
            # the highest first, rather than the first to ask taking the slot.
            self.drained.clear()
            self.starved.update(self.priorities)
        for queue in sorted(self.starved, key=lambda name: self.priorities.get(name, 0)):
            watcher = self.watchers.get(queue)
            if watcher is not None:
                tell_if_alive(watcher, Poll())
        self.starved.clear()

    def _emit(self, event: object) -> None:
        for listener in list(self.listeners):
            if not tell_if_alive(listener, event):
                self.listeners.remove(listener)

    # -- cancellation and shutdown -----------------------------------------------------------------

    def _cancel(self, message: Cancel, run_id: str) -> None:
        supervisor = self.held.get(run_id)
        if supervisor is not None:
            supervisor.tell(message)
            return
        if message.held_only:
            log.debug("cancel for flow run %s, which this agent does not hold: ignored", run_id)
            return
        # Not held: started by an earlier life of this agent, or by another agent on this host.
        log.info(
            "cancel for flow run %s, which this agent does not hold: looking for its process",
            run_id,
        )
        self._supervise(run_id, CancelUnheld(message))

    def _interrupt_all(self, grace: float) -> list[pykka.ActorRef[Any]]:
        refs = list(self.held.values())
        for ref in refs:
            tell_if_alive(ref, Interrupt(grace))
        return refs

    def _register(self, queue: str, ref: object) -> None:
        if isinstance(ref, pykka.ActorRef):
            self.watchers[queue] = ref
        else:
            self.watchers.pop(queue, None)
            self.pages.forget(queue)
            self.starved.discard(queue)
            self.priorities.pop(queue, None)
            self.drained.discard(queue)
            self.queue_pools.pop(queue, None)

    # -- restart and inspection --------------------------------------------------------------------

    def _rebuild_from_live_supervisors(self) -> None:
        """After a restart, tell every live supervisor of this agent to report here; each run
        is taken back when its supervisor's `RunStatus` arrives (see `_take_back`)."""
        supervisors = pykka.ActorRegistry.get_by_class(RunSupervisor)
        for ref in supervisors:
            tell_if_alive(ref, Rehome(self.actor_ref, id(self.ctx)))
        if supervisors:
            log.info("asked %d live run supervisor(s) to report here", len(supervisors))

    def _describe(self) -> ActorNode:
        limit = self.ctx.settings.limit
        children = tuple(
            ActorNode(
                kind=ActorKind.RUN_SUPERVISOR,
                name=run_id,
                state=status.state if status else "starting",
                since=status.since if status else self.since,
                restart=TEMPORARY,
                detail={"pid": status.pid} if status and status.pid else {},
            )
            for run_id in sorted(self.held)
            for status in [self.status.get(run_id)]
        )
        held = f"{len(self.held)} run(s) in flight" + (f", limit {limit}" if limit else "")
        if not self.lease.holds:
            held += "; taking no runs (heartbeat lease lapsed)"
        return ActorNode(
            kind=self.KIND, name=self.name, state=held, since=self.since, children=children
        )


def _reply(ref: object, message: object) -> None:
    if isinstance(ref, pykka.ActorRef):
        tell_if_alive(ref, message)
