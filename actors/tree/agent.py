"""Agent: the root of the tree. It starts its children, restarts them, and shows the tree.

Supervision is one-for-one with restart intensity (see `actors.rules.supervision`): a child that
fails is restarted alone, after a backoff. Too many failures in the window, or a failure of its
own, and the Agent gives up: it stops taking runs and tells its holder why (`AgentOutcome`; the
launcher then exits non-zero), and stays, so that the holder can still end the runs in flight
through it and stop it in order.

Its children are one table (`actors.tree.children`), which start, restart, stop and the tree
read; which children an agent has, how each starts and what they hear of each other is the
Switchboard's (`actors.tree.switchboard`), told whenever a child says something new of itself
(`ChildStatus`). An agent that follows queues (prefixes, or a whole pool) has a QueueMatcher
tell it which match now, and starts and stops watchers to follow.

It answers "show me the tree" from what its children told it and the Dispatcher's answer
(never blocked on the server), so `/tree` answers during an outage. Its own server call (the
server's version) is made off its inbox (`actors.runtime.calls`), as are those for the runs an
earlier life left (`EarlierLife`): a child's failure or a GetTree never waits behind the server.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pykka

from actors.rules.retry import SERVER_CALLS
from actors.rules.server_version import ServerProfile, unknown_version_warning
from actors.rules.supervision import RestartIntensityExceededError, RestartPolicy, Supervisor
from actors.runtime.calls import Calls
from actors.runtime.context import AgentContext
from actors.runtime.refs import ask, tell_if_alive
from actors.tree.children import Child, Children
from actors.tree.earlier_life import EARLIER_LIFE_SECOND_LOOK, EarlierLife
from actors.tree.switchboard import DISPATCHER, HEARTBEAT, WATCHER, ChildActors, Switchboard
from messages.internal.dispatch import HoldsRuns, PeersInDoubt, Subscribe, Unsubscribe
from messages.internal.lease import LeaseChanged, LeavePools
from messages.internal.lifecycle import (
    CallAnswered,
    ChildFailed,
    ChildStatus,
    Describe,
    DispatcherIdle,
    FindEarlierLifeRuns,
    GetDispatcher,
    GetTree,
    IdleCheck,
    MatchingQueues,
    PolledOnce,
    RegisterWatcher,
    RestartChild,
)
from messages.user.tree import ActorKind, ActorNode

log = logging.getLogger("prefect_actor_agent.agent")

DESCRIBE_TIMEOUT = 0.5  # the Dispatcher answers at once: it never waits on the server
# The children that outlive the intake when the agent stops: the Dispatcher ends the runs in
# flight, and the Heartbeat keeps the lease (and the worker ONLINE) while it does.
OUTLIVE_INTAKE = frozenset({ActorKind.DISPATCHER, ActorKind.HEARTBEAT})


class Agent(pykka.ThreadingActor):
    """Root actor: settings, the queues to watch, supervision of its children."""

    def __init__(self, ctx: AgentContext, actors: ChildActors | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        settings = ctx.settings
        self.supervisor = Supervisor(
            RestartPolicy(
                max_restarts=settings.max_restarts,
                window_seconds=settings.restart_window_seconds,
                backoff_base=settings.restart_backoff_seconds,
            )
        )
        self.children = Children()
        self.board = Switchboard(ctx, self.actor_ref, self.children, actors)
        self.polled_once: set[str] = set()
        self.pools_matched: set[str | None] = set()  # pools the QueueMatcher has read once
        self.calls = Calls(ctx.calls, self.actor_ref)
        self.earlier_life = EarlierLife(ctx, self.calls, self.board.dispatcher)
        self.state = "starting"
        self.since = time.time()

    def on_start(self) -> None:
        settings, me = self.ctx.settings, self.ctx.identity
        log.info(
            "agent %r (instance %s, host %s) starting against %s: %s",
            me.name,
            me.instance,
            me.host,
            settings.api_url,
            settings.describe_queues(),
        )
        api = self.ctx.api.with_retry(SERVER_CALLS)
        self.calls.start(api.server_profile, self._server_detected, self._no_version)
        for child in self.board.first_children():
            self._start(child)
        for pool in settings.pools:  # -q names a queue of every pool served
            for name in settings.work_queues:
                self._start(self.board.watcher(pool, name, create_missing=True))
            if settings.work_queues:
                self.actor_ref.tell(FindEarlierLifeRuns(settings.work_queues, pool))
        self.state, self.since = "running", time.time()

    def on_stop(self) -> None:
        """Every child still running stops, in the reverse of their start: the Heartbeat last
        (after a clean stop it has left the pools by then: `leave_pools`)."""
        self.stop_taking_runs()
        for ref in reversed(self.children.live()):
            ref.stop(block=False)

    def on_receive(self, message: Any) -> Any:
        match message:
            case GetTree():
                return self.tree()
            case GetDispatcher():
                return self.board.dispatcher()
        try:
            self._told(message)
        except RestartIntensityExceededError as exc:
            self._give_up(str(exc))
        except Exception as exc:
            log.exception("the Agent failed on %r", message)
            self._give_up(str(exc))
        return None

    def _told(self, message: Any) -> None:
        match message:
            case CallAnswered():
                self.calls.answered(message)
            case ChildStatus(kind=kind, name=name, node=node) if isinstance(node, ActorNode):
                child = self.children.get(kind, name)
                if child is not None:
                    child.node = node
                    self.board.update()
            case LeaseChanged():
                self.board.lease(message)
            case HoldsRuns():
                self.board.holds_runs(message)
            case Subscribe() | Unsubscribe():
                self.board.subscribe(message)
            case PeersInDoubt():
                self.board.peers_in_doubt()
            case MatchingQueues(names=names, pool=pool):
                self._matched(pool, set(names))
            case PolledOnce(queue_name=name):
                self.polled_once.add(name)
                self._check_run_once_done()
            case DispatcherIdle():
                self._check_run_once_done(idle=True)
            case ChildFailed(kind=kind, name=name, error=error):
                self._child_failed(kind, name, error)
            case RestartChild(kind=kind, name=name):
                self._restart(kind, name)
            case FindEarlierLifeRuns(queue_names=names, pool=pool, look_again=again):
                self.earlier_life.reconcile(names, pool)
                if again:
                    self.ctx.clock.tell_later(
                        EARLIER_LIFE_SECOND_LOOK,
                        self.actor_ref,
                        FindEarlierLifeRuns(names, pool, look_again=False),
                    )
            case _:
                log.warning("unexpected message %r", message)

    def _give_up(self, reason: str) -> None:
        """Escalate to the holder of the agent: no new runs are taken; it is told why."""
        if self.ctx.outcome.failed.is_set():
            return
        self.stop_taking_runs()
        self.ctx.outcome.failure = reason
        log.critical("agent giving up: %s", reason)
        self.state = "gave up"
        self.ctx.outcome.failed.set()

    def _no_version(self, exc: Exception) -> None:
        log.warning("could not read the server's version: %s", exc)

    def _server_detected(self, profile: ServerProfile) -> None:
        """Log which server this is; a server without work pools cannot serve `--pool`."""
        warning = unknown_version_warning(profile)
        if warning is not None:
            log.warning("%s", warning)
        else:
            log.info("serving %s", profile.describe())
        pools = self.ctx.settings.work_pools
        if pools and not profile.has_work_pools:
            flags = " ".join(f"--pool {pool!r}" for pool in pools)
            self._give_up(
                f"{flags}: {profile.describe()} has no work pools (they came with "
                "Prefect 2.10); serve its queues with -q instead"
            )

    # -- children: each new life, and whom it concerns ---------------------------------------------

    def _start(self, child: Child) -> None:
        """Add a child to the table and start its first life."""
        self.children.add(child)
        self._new_life(child)

    def _new_life(self, child: Child) -> None:
        child.ref, child.node = child.new_life(), None  # what the last life told is not its own
        self.supervisor.record(child.kind, child.name, child.restart)
        child.started()
        if child.key == DISPATCHER:
            self._check_run_once_done()  # a run-once IdleCheck told to a failed one is asked again

    def _drop(self, child: Child) -> None:
        """A child no longer wanted: out of the table and the tree, and stopped."""
        self.children.remove(child.kind, child.name)
        self.supervisor.forget(child.kind, child.name)
        if child.kind == WATCHER:
            self.board.tell_dispatcher(RegisterWatcher(child.name, None))  # not served now
        if child.ref is not None:
            child.ref.stop(block=False)

    def stop_taking_runs(self) -> None:
        """Take no new runs (the first step of stopping): stop every child but those that
        outlive the intake, in the reverse of their start."""
        for child in reversed(list(self.children)):
            if child.kind not in OUTLIVE_INTAKE:
                self._drop(child)
        self.state, self.since = "stopping", time.time()

    def leave_pools(self) -> threading.Event | None:
        """The last step of a clean stop, once the runs are reported: the Heartbeat beats no
        more and removes this agent's worker rows. The event is set when that is over; None
        when there is no Heartbeat to do it (it is being restarted)."""
        ref = self.children.ref(*HEARTBEAT)
        done = threading.Event()
        if ref is None or not tell_if_alive(ref, LeavePools(done)):
            return None
        return done

    # -- supervision -------------------------------------------------------------------------------

    def _child_failed(self, kind: ActorKind, name: str, error: str) -> None:
        """One-for-one: restart the failed child alone, after its backoff; or escalate."""
        self.ctx.metrics.restarts.labels(kind=kind).inc()
        child = self.children.get(kind, name)
        if child is None:
            return  # dropped meanwhile: no longer wanted
        child.ref = None  # pykka is stopping it; its row waits for the restart
        self.board.update()  # without an EventListener, cancellations come by poll
        delay = self.supervisor.child_failed(kind, name, error, time.monotonic())  # may escalate
        restarts = self.supervisor.record(kind, name).restarts
        log.error("%s %r failed (%s); restart %d in %.1fs", kind, name, error, restarts, delay)
        self.ctx.clock.tell_later(delay, self.actor_ref, RestartChild(kind, name))

    def _restart(self, kind: ActorKind, name: str) -> None:
        """Start the child again unless it runs already, is no longer wanted, or the agent
        takes no more runs."""
        child = self.children.get(kind, name)
        if self.state == "running" and child is not None and child.ref is None:
            log.info("restarting %s %r", kind, name)
            self._new_life(child)

    def tree(self) -> ActorNode:
        """The live tree: the Dispatcher asked (it never waits on the server, so a busy one is
        shown as such, not waited on), the others as they last told it."""
        answers: dict[tuple[ActorKind, str], ActorNode] = {}
        dispatcher = self.board.dispatcher()
        try:
            if dispatcher is not None:
                answers[DISPATCHER] = ask(dispatcher, Describe(), ActorNode, DESCRIBE_TIMEOUT)
        except pykka.Timeout:
            kind, name, busy = *DISPATCHER, "busy (no answer within 0.5s)"
            answers[DISPATCHER] = ActorNode(kind=kind, name=name, state=busy, since=time.time())
        except pykka.ActorDeadError:
            pass  # it failed: shown as starting until the Agent hears of it
        me = self.ctx.identity
        return ActorNode(
            kind=ActorKind.AGENT,
            name="agent",
            state=self.state,
            since=self.since,
            restarts=self.supervisor.total_restarts(),
            detail={
                "api": self.ctx.settings.api_url,
                "name": me.name,
                "instance": me.instance,
                "host": me.host,
            },
            children=self.children.shown(self.supervisor, answers, self.since),
        )

    # -- following queues, running once ------------------------------------------------------------

    def _matched(self, pool: str | None, matched: set[str]) -> None:
        """Start and stop the watchers of one pool's queues to follow those that match now
        (QueueMatcher); the other pools' watchers are theirs to follow."""
        if self.state != "running":
            return
        settings = self.ctx.settings
        fixed = set(settings.work_queues)
        mine = {
            known.name
            for name in self.children.names(WATCHER)
            if (known := self.board.watcher_queues.get(name)) is not None and known.pool == pool
        }
        dynamic = mine - fixed
        added, removed = sorted(matched - dynamic - fixed), sorted(dynamic - matched)
        where = f" of work pool {pool!r}" if settings.several_pools else ""
        if added:
            log.info("matched new work queues%s: %s", where, ", ".join(added))
            for name in added:
                self._start(self.board.watcher(pool, name, create_missing=False))
            self.actor_ref.tell(FindEarlierLifeRuns(tuple(added), pool))
        if removed:
            log.info("work queues%s no longer matched: %s", where, ", ".join(removed))
            gone = {settings.watcher_name(pool, name) for name in removed}
            for child in self.children.of_kind(WATCHER):
                if child.name in gone:
                    self._drop(child)
            self.board.update()
        self.pools_matched.add(pool)
        self._check_run_once_done()

    def _check_run_once_done(self, idle: bool = False) -> None:
        settings, outcome, dispatcher = self.ctx.settings, self.ctx.outcome, self.board.dispatcher()
        if not settings.run_once or outcome.finished.is_set() or dispatcher is None:
            return
        if settings.follows_queues and not self.pools_matched >= set(settings.pools):
            return
        if not set(self.children.names(WATCHER)) <= self.polled_once:
            return
        if not idle:
            tell_if_alive(dispatcher, IdleCheck())  # answered with DispatcherIdle
            return
        log.info("run once: every queue polled and every run taken has ended")
        outcome.finished.set()
