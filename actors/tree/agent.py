"""Agent: the root of the tree. It starts its children, restarts them, and shows the tree.

Supervision is one-for-one with restart intensity (see `actors.rules.supervision`): a child that
fails is restarted alone, after a backoff, and goes on; too many failures in the window and the
Agent gives up, stops taking runs and reports the failure to whoever holds it (the launcher then
exits non-zero). Its children are one table (`actors.tree.children`): each row says how a new
life of the child starts and whom to tell of it. In prefix mode it re-reads which queues match
every `rematch_interval` and starts and stops watchers to follow.

It answers "show me the tree" from what its children told it (`ChildStatus`) and the
Dispatcher's answer (never blocked on the server), so `/tree` answers during an outage. From
the same statuses it tells the EventListener the queues served and their ids (`ServedQueues`),
and the CancelWatcher whether the event stream is healthy (`StreamHealth`).

Its own server calls (the server's version, the queues that match) are made off its inbox
(`actors.runtime.calls`), as are those of the runs an earlier life left (`EarlierLife`); their
answers come back as messages, so a child's failure or a GetTree never waits behind the server.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import msgspec
import pykka

from actors.rules.lease import Lease
from actors.rules.retry import ONCE, SERVER_CALLS
from actors.rules.server_version import ServerProfile, unknown_version_warning
from actors.rules.supervision import RestartPolicy, Supervisor
from actors.runtime.calls import Calls
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.tree.cancel_watcher import CancelWatcher
from actors.tree.children import Child, Children
from actors.tree.dispatcher import Dispatcher
from actors.tree.earlier_life import EarlierLife
from actors.tree.event_listener import EventListener
from actors.tree.heartbeat import Heartbeat
from actors.tree.queue_watcher import QueueWatcher
from actors.tree.recovery import Recovery
from messages.internal.dispatch import Subscribe, Unsubscribe
from messages.internal.events import ServedQueue, ServedQueues, StreamHealth
from messages.internal.lease import LeaseChanged
from messages.internal.lifecycle import (
    CallAnswered,
    ChildFailed,
    ChildStatus,
    Describe,
    DetectServer,
    DispatcherIdle,
    GetTree,
    IdleCheck,
    PolledOnce,
    Reconcile,
    RegisterWatcher,
    RematchQueues,
    RestartChild,
    UseDispatcher,
    WatchedQueues,
)
from messages.user.tree import ActorKind, ActorNode

log = logging.getLogger("prefect_actor_agent.agent")

DESCRIBE_TIMEOUT = 0.5  # the Dispatcher answers at once: it never waits on the server
WATCHER = ActorKind.QUEUE_WATCHER
# The children that outlive the intake when the agent stops: the Dispatcher ends the runs in
# flight, and the Heartbeat keeps the lease (and the worker ONLINE) while it does.
OUTLIVE_INTAKE = frozenset({ActorKind.DISPATCHER, ActorKind.HEARTBEAT})


@dataclass(frozen=True)
class ChildActors:
    """The classes the Agent starts its children from: the tree's own, unless a test hands it
    a fake of one (as Mopidy's tests hand its core a dummy audio)."""

    queue_watcher: type[QueueWatcher] = QueueWatcher
    dispatcher: type[Dispatcher] = Dispatcher


class Agent(pykka.ThreadingActor):
    """Root actor: settings, the queues to watch, supervision of its children."""

    def __init__(self, ctx: AgentContext, actors: ChildActors | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.actors = actors if actors is not None else ChildActors()
        self.outcome = ctx.outcome
        settings = ctx.settings
        self.supervisor = Supervisor(
            RestartPolicy(
                max_restarts=settings.max_restarts,
                window_seconds=settings.restart_window_seconds,
                backoff_base=settings.restart_backoff_seconds,
            )
        )
        self.children = Children()
        self.child_status: dict[tuple[str, str], ActorNode] = {}  # as the children told it
        self.listeners: list[pykka.ActorRef[Any]] = list(ctx.listeners)  # outlive a restart
        # What each child that hears of the others was told last (told again on a change).
        self.watched_told: tuple[str, ...] | None = None  # to the CancelWatcher and Recovery
        self.served_told: tuple[ServedQueue, ...] | None = None  # to the EventListener
        self.stream_healthy = False  # told the CancelWatcher
        # The lease outlives a restart of the Heartbeat, which alone writes it; what it says
        # last is given to every child (re)started that acts on it.
        self.lease = Lease(settings.lost_agent_seconds, settings.heartbeat_seconds)
        self.lease_said = LeaseChanged(holds=True, streak_since=None)
        self.polled_once: set[str] = set()
        self.calls: Calls | None = None
        self.earlier_life: EarlierLife | None = None  # what its earlier life left on this host
        self.api = ctx.api.with_retry(SERVER_CALLS)  # its version
        self.rematch_api = ctx.api.with_retry(ONCE)  # the next rematch is the retry
        self.matched_once = False
        self.state = "starting"
        self.since = time.time()

    def on_start(self) -> None:
        self.calls = Calls(self.ctx.calls, self.actor_ref)
        self.earlier_life = EarlierLife(self.ctx, self.calls, self._dispatcher)
        settings = self.ctx.settings
        me = self.ctx.identity
        log.info(
            "agent %r (instance %s, host %s) starting against %s: %s",
            me.name,
            me.instance,
            me.host,
            settings.api_url,
            _describe_queues(settings),
        )
        self.actor_ref.tell(DetectServer())
        self._start(Child(ActorKind.HEARTBEAT, Heartbeat.NAME, self._new_heartbeat))
        self._start(
            Child(
                ActorKind.DISPATCHER,
                Dispatcher.NAME,
                self._new_dispatcher,
                started=self._dispatcher_started,
            )
        )
        if not settings.run_once:
            self._start(Child(ActorKind.CANCEL_WATCHER, CancelWatcher.NAME, self._new_canceller))
            self._start(Child(ActorKind.RECOVERY, Recovery.NAME, self._new_recovery))
            self._start(
                Child(
                    ActorKind.EVENT_LISTENER,
                    EventListener.NAME,
                    self._new_event_listener,
                    started=self._event_listener_started,
                )
            )
        for name in settings.work_queues:
            self._start_watcher(name, create_missing=True)
        if settings.follows_queues:
            self.actor_ref.tell(RematchQueues())
        if settings.work_queues:
            self.actor_ref.tell(Reconcile(settings.work_queues))
        self.state, self.since = "running", time.time()

    def on_stop(self) -> None:
        """Every child still running stops, in the reverse of their start: the Heartbeat last,
        so the server's rule takes the worker OFFLINE only once the rest has stopped."""
        self.stop_watchers()
        for child in reversed(self.children.live()):
            if child.ref is not None:
                child.ref.stop(block=False)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """The root gives up: no new runs are taken; the holder of the agent is told why."""
        self.stop_watchers()
        self.outcome.failure = f"{exception_value}"
        log.critical("agent giving up: %s", exception_value)
        self.outcome.failed.set()

    def on_receive(self, message: Any) -> Any:
        match message:
            case CallAnswered():
                self._calls().answered(message)
            case ChildStatus(kind=kind, name=name, node=node) if isinstance(node, ActorNode):
                self.child_status[(kind, name)] = node
                self._tell_served()
                self._tell_stream_health()
            case LeaseChanged():
                self._lease_changed(message)
            case Subscribe(listener=ref) if isinstance(ref, pykka.ActorRef):
                self.listeners.append(ref)
                self._tell_dispatcher(message)
            case Unsubscribe(listener=ref):
                self.listeners = [known for known in self.listeners if known != ref]
                self._tell_dispatcher(message)
            case DetectServer():
                self._detect_server()
            case RematchQueues():
                self._rematch()
            case PolledOnce(queue_name=name):
                self.polled_once.add(name)
                self._check_run_once_done()
            case DispatcherIdle():
                self._check_run_once_done(idle=True)
            case ChildFailed(kind=kind, name=name, error=error):
                self._child_failed(kind, name, error)
            case RestartChild(kind=kind, name=name):
                self._restart(kind, name)
            case GetTree():
                return self.tree()
            case Reconcile(queue_names=names):
                self._earlier().reconcile(names)
            case _:
                log.warning("unexpected message %r", message)
        return None

    def _calls(self) -> Calls:
        if self.calls is None:
            raise RuntimeError("the Agent has not started")
        return self.calls

    def _earlier(self) -> EarlierLife:
        if self.earlier_life is None:
            raise RuntimeError("the Agent has not started")
        return self.earlier_life

    # -- the server --------------------------------------------------------------------------------

    def _detect_server(self) -> None:
        """Log which server this is; a server without work pools cannot serve `--pool`."""
        self._calls().start(self.api.server_profile, self._server_detected, self._no_version)

    def _no_version(self, exc: Exception) -> None:
        log.warning("could not read the server's version: %s", exc)

    def _server_detected(self, profile: ServerProfile) -> None:
        warning = unknown_version_warning(profile)
        if warning is not None:
            log.warning("%s", warning)
        else:
            log.info("serving %s", profile.describe())
        pool = self.ctx.settings.work_pool
        if pool is not None and not profile.has_work_pools:
            raise RuntimeError(
                f"--pool {pool!r}: {profile.describe()} has no work pools (they came with "
                "Prefect 2.10); serve its queues with -q instead"
            )

    # -- children: each new life, and whom it concerns ---------------------------------------------

    def _start(self, child: Child) -> None:
        """Start a new life of a child (the first, or after a failure)."""
        self.children.add(child)
        child.ref = child.new_life()
        self.supervisor.record(child.kind, child.name, child.restart)
        child.started()

    def _dispatcher(self) -> pykka.ActorRef[Any] | None:
        return self.children.ref(ActorKind.DISPATCHER, Dispatcher.NAME)

    def _tell_dispatcher(self, message: object) -> None:
        dispatcher = self._dispatcher()
        if dispatcher is not None:
            tell_if_alive(dispatcher, message)

    def _new_heartbeat(self) -> pykka.ActorRef[Any]:
        return Heartbeat.start(self.ctx, self.actor_ref, self.lease)

    def _new_dispatcher(self) -> pykka.ActorRef[Any]:
        return self.actors.dispatcher.start(
            self.ctx, self.actor_ref, tuple(self.listeners), self.lease_said
        )

    def _dispatcher_started(self) -> None:
        """Every watcher registers with the new Dispatcher; every child talks to it now."""
        dispatcher = self._dispatcher()
        self.outcome.dispatcher = dispatcher
        for child in self.children.live():
            if child.kind == WATCHER:
                self._tell_dispatcher(RegisterWatcher(child.name, child.ref))
            if child.ref is not dispatcher and child.ref is not None:
                tell_if_alive(child.ref, UseDispatcher(dispatcher))
        self._check_run_once_done()  # a run-once IdleCheck told to a failed one is asked again

    def _new_canceller(self) -> pykka.ActorRef[Any]:
        self.watched_told = self.children.names(WATCHER)
        return CancelWatcher.start(
            self.ctx, self.actor_ref, self._dispatcher(), self.watched_told, self.stream_healthy
        )

    def _new_recovery(self) -> pykka.ActorRef[Any]:
        self.watched_told = self.children.names(WATCHER)
        return Recovery.start(
            self.ctx, self.actor_ref, self._dispatcher(), self.watched_told, self.lease_said
        )

    def _new_event_listener(self) -> pykka.ActorRef[Any]:
        return EventListener.start(self.ctx, self.actor_ref, self._dispatcher())

    def _event_listener_started(self) -> None:
        self.served_told = None
        self._tell_served()

    def _start_watcher(self, name: str, create_missing: bool) -> None:
        def new_life() -> pykka.ActorRef[Any]:
            return self.actors.queue_watcher.start(
                self.ctx,
                name,
                self._dispatcher(),
                self.actor_ref,
                create_missing,
                self.ctx.settings.work_pool,
            )

        def started() -> None:
            self._tell_dispatcher(RegisterWatcher(name, self.children.ref(WATCHER, name)))
            self._tell_watched()
            self._tell_served()

        self._start(Child(WATCHER, name, new_life, started=started))

    def _stop_watcher(self, name: str) -> None:
        child = self.children.remove(WATCHER, name)
        self.supervisor.forget(WATCHER, name)
        self._tell_dispatcher(RegisterWatcher(name, None))
        if child is not None and child.ref is not None:
            child.ref.stop(block=False)
        self._tell_watched()
        self._tell_served()

    def stop_watchers(self) -> None:
        """Take no new runs (the first step of stopping): stop every child but those that
        outlive the intake, in the reverse of their start."""
        for child in reversed(list(self.children)):
            if child.kind not in OUTLIVE_INTAKE:
                self.children.remove(child.kind, child.name)
                self.supervisor.forget(child.kind, child.name)
                if child.kind == WATCHER:
                    self._tell_dispatcher(RegisterWatcher(child.name, None))
                if child.ref is not None:
                    child.ref.stop(block=False)
        self.state, self.since = "stopping", time.time()

    # -- what the children hear of each other ------------------------------------------------------

    def _lease_changed(self, said: LeaseChanged) -> None:
        """Those who act for runs hear what the lease says: the Dispatcher (and through it
        every RunSupervisor), and Recovery (its streak; the check after a reconnection)."""
        self.lease_said = msgspec.structs.replace(said, reconnected=False)  # told once
        self._tell_dispatcher(said)
        recovery = self.children.ref(ActorKind.RECOVERY, Recovery.NAME)
        if recovery is not None:
            tell_if_alive(recovery, said)

    def _tell_watched(self) -> None:
        """The CancelWatcher and Recovery look at the runs of the queues served now."""
        names = self.children.names(WATCHER)
        if names == self.watched_told:
            return
        self.watched_told = names
        for ref in (
            self.children.ref(ActorKind.CANCEL_WATCHER, CancelWatcher.NAME),
            self.children.ref(ActorKind.RECOVERY, Recovery.NAME),
        ):
            if ref is not None:
                tell_if_alive(ref, WatchedQueues(names))

    def _tell_served(self) -> None:
        """The EventListener subscribes to the queues served now whose ids are known (events
        name a queue by its id, which its watcher learns when it reads the queue), and wakes
        their watchers: told again whenever that changes."""
        listener = self.children.ref(ActorKind.EVENT_LISTENER, EventListener.NAME)
        if listener is None:
            return
        served = tuple(
            ServedQueue(queue_id, watcher.name, watcher.ref)
            for watcher in self.children.of_kind(WATCHER)
            if watcher.ref is not None
            and (node := self.child_status.get(watcher.key)) is not None
            and (queue_id := node.detail.get("queue id"))
        )
        if served != self.served_told:
            self.served_told = served
            tell_if_alive(listener, ServedQueues(served))

    def _tell_stream_health(self) -> None:
        """The CancelWatcher polls slowly while the event stream is healthy: while a running
        EventListener last said its mode is `stream`."""
        key = (ActorKind.EVENT_LISTENER, EventListener.NAME)
        node = self.child_status.get(key)
        healthy = (
            self.children.ref(*key) is not None and node is not None and node.state == "stream"
        )
        if healthy != self.stream_healthy:
            self.stream_healthy = healthy
            canceller = self.children.ref(ActorKind.CANCEL_WATCHER, CancelWatcher.NAME)
            if canceller is not None:
                tell_if_alive(canceller, StreamHealth(healthy))

    # -- supervision -------------------------------------------------------------------------------

    def _child_failed(self, kind: ActorKind, name: str, error: str) -> None:
        """One-for-one: restart the failed child alone, after its backoff; or escalate."""
        self.ctx.metrics.restarts.labels(kind=kind).inc()
        child = self.children.get(kind, name)
        if child is not None:
            child.ref = None  # pykka is stopping it
        self._tell_stream_health()  # until a new EventListener is subscribed, cancels come by poll
        delay = self.supervisor.child_failed(kind, name, error, time.monotonic())  # may escalate
        restarts = self.supervisor.record(kind, name).restarts
        log.error("%s %r failed (%s); restart %d in %.1fs", kind, name, error, restarts, delay)
        self.ctx.clock.tell_later(delay, self.actor_ref, RestartChild(kind, name))

    def _restart(self, kind: ActorKind, name: str) -> None:
        """Start the child again unless it runs already, is no longer wanted, or the agent is
        stopping."""
        child = self.children.get(kind, name)
        if self.state == "stopping" or child is None or child.ref is not None:
            return
        log.info("restarting %s %r", kind, name)
        self._start(child)

    # -- the tree ----------------------------------------------------------------------------------

    def tree(self) -> ActorNode:
        """The live tree: every child asked at once, a busy one shown as such, not waited on."""
        dispatcher = self._dispatcher()
        asked = dispatcher.ask(Describe(), block=False) if dispatcher is not None else None
        deadline = time.monotonic() + DESCRIBE_TIMEOUT
        nodes = []
        for child in self.children.in_tree_order():
            kind, name = child.key
            node = self.child_status.get(child.key) if child.ref is not None else None
            if child.kind == ActorKind.DISPATCHER and child.ref is not None and asked is not None:
                try:
                    node = asked.get(timeout=max(0.0, deadline - time.monotonic()))
                except pykka.Timeout:
                    node = ActorNode(
                        kind=kind,
                        name=name,
                        state="busy (no answer within 0.5s)",
                        since=time.time(),
                    )
                except pykka.ActorDeadError:
                    node = None
            if node is None and child.ref is not None:
                node = ActorNode(kind=kind, name=name, state="starting", since=self.since)
            if node is None:
                node = ActorNode(kind=kind, name=name, state="restarting", since=time.time())
            record = self.supervisor.record(kind, name)
            nodes.append(
                msgspec.structs.replace(
                    node,
                    restart=record.restart,
                    restarts=record.restarts,
                    last_failure=record.last_failure,
                )
            )
        return ActorNode(
            kind=ActorKind.AGENT,
            name="agent",
            state=self.state,
            since=self.since,
            restarts=self.supervisor.total_restarts(),
            detail={
                "api": self.ctx.settings.api_url,
                "name": self.ctx.identity.name,
                "instance": self.ctx.identity.instance,
                "host": self.ctx.identity.host,
            },
            children=tuple(nodes),
        )

    # -- prefix mode -------------------------------------------------------------------------------

    def _matching_queues(self) -> set[str]:
        """The queues to watch now: those of the pool (matching the prefixes, if any), or every
        queue matching the prefixes."""
        settings = self.ctx.settings
        if settings.work_pool is None:
            matching = self.rematch_api.match_work_queues(settings.queue_prefixes)
            return {queue.name for queue in matching}
        names = {queue.name for queue in self.rematch_api.pool_queues(settings.work_pool)}
        if settings.queue_prefixes:
            names = {n for n in names if n.startswith(settings.queue_prefixes)}
        return names

    def _rematch(self) -> None:
        if self.state == "stopping":
            return
        self._calls().start(
            self._matching_queues,
            self._rematched,
            self._rematch_failed,
        )

    def _rematch_failed(self, exc: Exception) -> None:
        log.warning("could not read the work queues of %s: %s", _followed(self.ctx.settings), exc)
        self._rematched(None)

    def _rematched(self, matched: set[str] | None) -> None:
        """Start and stop watchers to follow the queues that match now (None: unknown)."""
        settings = self.ctx.settings
        if self.state == "stopping":
            return
        if matched is not None:
            dynamic = set(self.children.names(WATCHER)) - set(settings.work_queues)
            added = sorted(matched - dynamic - set(settings.work_queues))
            removed = sorted(dynamic - matched)
            if added:
                log.info("matched new work queues: %s", ", ".join(added))
            if removed:
                log.info("work queues no longer matched: %s", ", ".join(removed))
            for name in added:
                self._start_watcher(name, create_missing=False)
            if added:
                self.actor_ref.tell(Reconcile(tuple(added)))
            for name in removed:
                self._stop_watcher(name)
            if not self.matched_once and not matched:
                if settings.queue_prefixes:
                    pool = settings.work_pool
                    where = f" in work pool {pool!r}" if pool is not None else ""
                    log.info(
                        "no work queue matches %s%s yet", _prefixes(settings.queue_prefixes), where
                    )
                else:
                    log.info("%s has no queues yet", _followed(settings))
            self.matched_once = True
        if settings.run_once:
            self._check_run_once_done()
        else:
            self.ctx.clock.tell_later(settings.rematch_interval, self.actor_ref, RematchQueues())

    # -- run once ----------------------------------------------------------------------------------

    def _check_run_once_done(self, idle: bool = False) -> None:
        settings = self.ctx.settings
        dispatcher = self._dispatcher()
        if not settings.run_once or self.outcome.finished.is_set() or dispatcher is None:
            return
        if settings.follows_queues and not self.matched_once:
            return
        if not set(self.children.names(WATCHER)) <= self.polled_once:
            return
        if not idle:
            tell_if_alive(dispatcher, IdleCheck())  # answered with DispatcherIdle
            return
        log.info("run once: every queue polled and every run taken has ended")
        self.outcome.finished.set()


def _prefixes(prefixes: tuple[str, ...]) -> str:
    return ", ".join(f"{p!r}*" for p in prefixes)


def _followed(settings: Any) -> str:
    """The queues followed by re-reading, in words: 'work pool 'p'', 'queues matching 'a'*'."""
    where = f"work pool {settings.work_pool!r}" if settings.work_pool is not None else ""
    if settings.queue_prefixes:
        matching = f"queues matching {_prefixes(settings.queue_prefixes)}"
        return f"{matching} in {where}" if where else matching
    return where


def _describe_queues(settings: Any) -> str:
    parts = [f"queue {name!r}" for name in settings.work_queues]
    if settings.follows_queues:
        parts.append(
            _followed(settings)
            if settings.queue_prefixes
            else f"every queue of {_followed(settings)}"
        )
    elif settings.work_pool is not None:
        parts = [f"{part} of work pool {settings.work_pool!r}" for part in parts]
    limit = f", limit {settings.limit}" if settings.limit is not None else ""
    return ", ".join(parts) + limit
