"""Agent: the root of the tree. It owns the watchers and the Dispatcher and restarts them.

Supervision is one-for-one with restart intensity (see `actors.rules.supervision`): a QueueWatcher,
the CancelWatcher, the EventListener or the Dispatcher that fails is restarted alone, after a
backoff, and goes on; too many failures in the window and the Agent gives up, stops taking
runs and reports the failure to whoever holds it (the launcher then exits non-zero). In prefix
mode it re-reads which queues match every `rematch_interval` and starts and stops watchers to
follow. It also answers "show me the tree" from what its watchers told it (`ChildStatus`)
and the Dispatcher's answer (never blocked on the server), so `/tree` answers during an outage.
The queues' ids the watchers tell go on to the EventListener (`ServedQueues`), and its mode
to the CancelWatcher (`StreamHealth`).

Its own server calls (the server's version, the runs an earlier life left, the queues that
match) are made off its inbox (`actors.runtime.calls`); their answers come back as messages,
so a child's failure or a GetTree never waits behind the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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
from actors.tree import cancel_watcher, dispatcher, event_listener, heartbeat, recovery
from actors.tree.cancel_watcher import CancelWatcher
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
        self.dispatcher: pykka.ActorRef[Any] | None = None
        self.watchers: dict[str, pykka.ActorRef[Any]] = {}
        self.cancel_watcher: pykka.ActorRef[Any] | None = None
        self.heartbeat: pykka.ActorRef[Any] | None = None
        self.recovery: pykka.ActorRef[Any] | None = None
        self.event_listener: pykka.ActorRef[Any] | None = None
        self.queue_ids: dict[str, str] = {}  # queue name -> id, as its watcher told it
        self.served_told: tuple[ServedQueue, ...] | None = None  # to the EventListener
        self.stream_healthy = False  # as the EventListener last said; told the CancelWatcher
        self.polled_once: set[str] = set()
        self.child_status: dict[tuple[str, str], ActorNode] = {}  # as the watchers told it
        self.listeners: list[pykka.ActorRef[Any]] = list(ctx.listeners)  # outlive a restart
        # The lease outlives a restart of the Heartbeat, which alone writes it; what it says
        # last is given to every child (re)started that acts on it.
        self.lease = Lease(settings.lost_agent_seconds, settings.heartbeat_seconds)
        self.lease_said = LeaseChanged(holds=True, streak_since=None)
        self.calls: Calls | None = None
        self.earlier_life: EarlierLife | None = None  # what its earlier life left on this host
        self.api = ctx.api.with_retry(SERVER_CALLS)  # its version and what an earlier life left
        self.rematch_api = ctx.api.with_retry(ONCE)  # the next rematch is the retry
        self.matched_once = False
        self.state = "starting"
        self.since = time.time()

    def on_start(self) -> None:
        self.calls = Calls(self.ctx.calls, self.actor_ref)
        self.earlier_life = EarlierLife(self.ctx, self.calls, lambda: self.dispatcher)
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
        self._start_heartbeat()
        self._start_dispatcher()
        if not settings.run_once:
            self._start_cancel_watcher()
            self._start_recovery()
            self._start_event_listener()
        for name in settings.work_queues:
            self._start_watcher(name, create_missing=True)
        if settings.follows_queues:
            self.actor_ref.tell(RematchQueues())
        if settings.work_queues:
            self.actor_ref.tell(Reconcile(settings.work_queues))
        self.state, self.since = "running", time.time()

    def on_stop(self) -> None:
        self.stop_watchers()
        if self.heartbeat is not None:  # the last thing: the server's rule takes it OFFLINE
            self.heartbeat.stop(block=False)
            self.heartbeat = None

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
                if kind == ActorKind.QUEUE_WATCHER:
                    self._learn_queue_id(name, node)
                elif kind == ActorKind.EVENT_LISTENER:
                    self._stream_health(node.state == "stream")
            case LeaseChanged():
                self._lease_changed(message)
            case Subscribe(listener=ref) if isinstance(ref, pykka.ActorRef):
                self.listeners.append(ref)
                if self.dispatcher is not None:
                    tell_if_alive(self.dispatcher, message)
            case Unsubscribe(listener=ref):
                self.listeners = [known for known in self.listeners if known != ref]
                if self.dispatcher is not None:
                    tell_if_alive(self.dispatcher, message)
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

    # -- children ----------------------------------------------------------------------------------

    def _calls(self) -> Calls:
        if self.calls is None:
            raise RuntimeError("the Agent has not started")
        return self.calls

    def _earlier(self) -> EarlierLife:
        if self.earlier_life is None:
            raise RuntimeError("the Agent has not started")
        return self.earlier_life

    def _start_dispatcher(self) -> None:
        self.dispatcher = self.actors.dispatcher.start(
            self.ctx, self.actor_ref, tuple(self.listeners), self.lease_said
        )
        self._check_run_once_done()  # a run-once IdleCheck told to a failed one is asked again
        self.outcome.dispatcher = self.dispatcher
        self.supervisor.record(ActorKind.DISPATCHER, dispatcher.NAME)
        for name, watcher in self.watchers.items():
            tell_if_alive(self.dispatcher, RegisterWatcher(name, watcher))
            tell_if_alive(watcher, UseDispatcher(self.dispatcher))
        for other in (self.cancel_watcher, self.recovery, self.event_listener):
            if other is not None:
                tell_if_alive(other, UseDispatcher(self.dispatcher))

    def _the_dispatcher(self) -> pykka.ActorRef[Any]:
        if self.dispatcher is None:
            raise RuntimeError("the Dispatcher is not running")
        return self.dispatcher

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

    def _start_watcher(self, name: str, create_missing: bool) -> None:
        dispatcher = self._the_dispatcher()
        ref = self.actors.queue_watcher.start(
            self.ctx, name, dispatcher, self.actor_ref, create_missing, self.ctx.settings.work_pool
        )
        self.watchers[name] = ref
        self.supervisor.record(ActorKind.QUEUE_WATCHER, name)
        tell_if_alive(dispatcher, RegisterWatcher(name, ref))
        self._tell_cancel_watcher()

    def _start_heartbeat(self) -> None:
        self.heartbeat = Heartbeat.start(self.ctx, self.actor_ref, self.lease)
        self.supervisor.record(ActorKind.HEARTBEAT, heartbeat.NAME)

    def _start_recovery(self) -> None:
        self.recovery = Recovery.start(
            self.ctx,
            self.actor_ref,
            self._the_dispatcher(),
            tuple(sorted(self.watchers)),
            self.lease_said,
        )
        self.supervisor.record(ActorKind.RECOVERY, recovery.NAME)

    def _start_cancel_watcher(self) -> None:
        self.cancel_watcher = CancelWatcher.start(
            self.ctx,
            self.actor_ref,
            self._the_dispatcher(),
            tuple(sorted(self.watchers)),
            self.stream_healthy,
        )
        self.supervisor.record(ActorKind.CANCEL_WATCHER, cancel_watcher.NAME)

    def _start_event_listener(self) -> None:
        self.event_listener = EventListener.start(self.ctx, self.actor_ref, self._the_dispatcher())
        self.supervisor.record(ActorKind.EVENT_LISTENER, event_listener.NAME)
        self.served_told = None
        self._tell_event_listener()

    def _lease_changed(self, said: LeaseChanged) -> None:
        """Those who act for runs hear what the lease says: the Dispatcher (and through it
        every RunSupervisor), and Recovery (its streak; the check after a reconnection)."""
        self.lease_said = msgspec.structs.replace(said, reconnected=False)  # told once
        for ref in (self.dispatcher, self.recovery):
            if ref is not None:
                tell_if_alive(ref, said)

    def _tell_cancel_watcher(self) -> None:
        """The CancelWatcher and Recovery look at the runs of the queues served now."""
        for ref in (self.cancel_watcher, self.recovery):
            if ref is not None:
                tell_if_alive(ref, WatchedQueues(tuple(sorted(self.watchers))))
        self._tell_event_listener()

    def _learn_queue_id(self, name: str, node: ActorNode) -> None:
        """Events name a queue by its id, which its watcher learns when it reads the queue."""
        queue_id = node.detail.get("queue id")
        if queue_id and self.queue_ids.get(name) != queue_id:
            self.queue_ids[name] = queue_id
            self._tell_event_listener()

    def _tell_event_listener(self) -> None:
        """The EventListener subscribes to the queues served now whose ids are known (and
        wakes their watchers): told again whenever that changes."""
        if self.event_listener is None:
            return
        served = tuple(
            ServedQueue(self.queue_ids[name], name, ref)
            for name, ref in sorted(self.watchers.items())
            if name in self.queue_ids
        )
        if served != self.served_told:
            self.served_told = served
            tell_if_alive(self.event_listener, ServedQueues(served))

    def _stream_health(self, healthy: bool) -> None:
        """The CancelWatcher polls slowly while the event stream is healthy."""
        if healthy != self.stream_healthy:
            self.stream_healthy = healthy
            if self.cancel_watcher is not None:
                tell_if_alive(self.cancel_watcher, StreamHealth(healthy))

    def _stop_watcher(self, name: str) -> None:
        ref = self.watchers.pop(name, None)
        self.supervisor.forget(ActorKind.QUEUE_WATCHER, name)
        if self.dispatcher is not None:
            tell_if_alive(self.dispatcher, RegisterWatcher(name, None))
        if ref is not None:
            ref.stop(block=False)
        self._tell_cancel_watcher()

    def stop_watchers(self) -> None:
        """Take no new runs (the first step of stopping): stop every watcher."""
        for name in list(self.watchers):
            self._stop_watcher(name)
        for ref in (self.cancel_watcher, self.recovery, self.event_listener):
            if ref is not None:
                ref.stop(block=False)
        self.cancel_watcher = self.recovery = self.event_listener = None
        self.state, self.since = "stopping", time.time()

    def _child_failed(self, kind: ActorKind, name: str, error: str) -> None:
        """One-for-one: restart the failed child alone, after its backoff; or escalate."""
        self.ctx.metrics.restarts.labels(kind=kind).inc()
        self._forget_child(kind, name)
        delay = self.supervisor.child_failed(kind, name, error, time.monotonic())  # may escalate
        restarts = self.supervisor.record(kind, name).restarts
        log.error("%s %r failed (%s); restart %d in %.1fs", kind, name, error, restarts, delay)
        self.ctx.clock.tell_later(delay, self.actor_ref, RestartChild(kind, name))

    def _forget_child(self, kind: ActorKind, name: str) -> None:
        """Drop the ref of a child that failed (it is being stopped by pykka)."""
        if kind == ActorKind.QUEUE_WATCHER:
            self.watchers.pop(name, None)
        elif kind == ActorKind.CANCEL_WATCHER:
            self.cancel_watcher = None
        elif kind == ActorKind.HEARTBEAT:
            self.heartbeat = None
        elif kind == ActorKind.RECOVERY:
            self.recovery = None
        elif kind == ActorKind.EVENT_LISTENER:
            self.event_listener = None
            self._stream_health(False)  # until a new one is subscribed, cancels come by poll
        elif kind == ActorKind.DISPATCHER:
            self.dispatcher = None

    def _restart(self, kind: ActorKind, name: str) -> None:
        """Start the child again unless it runs already (or the agent is stopping)."""
        if self.state == "stopping":
            return
        starters: dict[ActorKind, tuple[bool, Callable[[], None]]] = {
            ActorKind.DISPATCHER: (self.dispatcher is None, self._start_dispatcher),
            ActorKind.CANCEL_WATCHER: (self.cancel_watcher is None, self._start_cancel_watcher),
            ActorKind.HEARTBEAT: (self.heartbeat is None, self._start_heartbeat),
            ActorKind.RECOVERY: (self.recovery is None, self._start_recovery),
            ActorKind.EVENT_LISTENER: (self.event_listener is None, self._start_event_listener),
            ActorKind.QUEUE_WATCHER: (
                name not in self.watchers,
                lambda: self._start_watcher(name, name in self.ctx.settings.work_queues),
            ),
        }
        missing, start = starters[kind]
        if missing:
            log.info("restarting %s %r", kind, name)
            start()

    # -- the tree ----------------------------------------------------------------------------------

    def tree(self) -> ActorNode:
        """The live tree: every child asked at once, a busy one shown as such, not waited on."""
        restarting = {n for k, n in self.supervisor.children if k == ActorKind.QUEUE_WATCHER}
        children: list[tuple[ActorKind, str, pykka.ActorRef[Any] | None]] = [
            (ActorKind.QUEUE_WATCHER, name, self.watchers.get(name))
            for name in sorted(set(self.watchers) | restarting)
        ]
        children.append((ActorKind.CANCEL_WATCHER, cancel_watcher.NAME, self.cancel_watcher))
        children.append((ActorKind.EVENT_LISTENER, event_listener.NAME, self.event_listener))
        children.append((ActorKind.HEARTBEAT, heartbeat.NAME, self.heartbeat))
        children.append((ActorKind.RECOVERY, recovery.NAME, self.recovery))
        children.append((ActorKind.DISPATCHER, dispatcher.NAME, self.dispatcher))
        asked = [
            (kind, name, ref, self._ask_dispatcher(ref) if kind == ActorKind.DISPATCHER else None)
            for kind, name, ref in children
            if ref is not None or (kind, name) in self.supervisor.children
        ]
        deadline = time.monotonic() + DESCRIBE_TIMEOUT
        nodes = []
        for kind, name, ref, future in asked:
            node = self.child_status.get((kind, name)) if ref is not None else None
            if future is not None:
                try:
                    node = future.get(timeout=max(0.0, deadline - time.monotonic()))
                except pykka.Timeout:
                    node = ActorNode(
                        kind=kind,
                        name=name,
                        state="busy (no answer within 0.5s)",
                        since=time.time(),
                    )
                except pykka.ActorDeadError:
                    node = None
            if node is None and ref is not None:
                node = ActorNode(kind=kind, name=name, state="starting", since=self.since)
            if node is None:
                node = ActorNode(kind=kind, name=name, state="restarting", since=time.time())
            record = self.supervisor.record(kind, name)
            nodes.append(
                ActorNode(
                    kind=node.kind,
                    name=node.name,
                    state=node.state,
                    since=node.since,
                    restart=record.restart,
                    restarts=record.restarts,
                    last_failure=record.last_failure,
                    detail=node.detail,
                    children=node.children,
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

    def _ask_dispatcher(self, ref: pykka.ActorRef[Any] | None) -> Any:
        """The Dispatcher's subtree, asked with a deadline: it holds the RunSupervisors' last
        status and never waits on the server, so it answers within the deadline."""
        return ref.ask(Describe(), block=False) if ref is not None else None

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
            dynamic = set(self.watchers) - set(settings.work_queues)
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
        if not settings.run_once or self.outcome.finished.is_set() or self.dispatcher is None:
            return
        if settings.follows_queues and not self.matched_once:
            return
        if not set(self.watchers) <= self.polled_once:
            return
        if not idle:
            tell_if_alive(self.dispatcher, IdleCheck())  # answered with DispatcherIdle
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
