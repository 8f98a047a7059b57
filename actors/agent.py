"""Agent: the root of the tree. It owns the watchers and the Dispatcher and restarts them.

Supervision here is one-for-one: a QueueWatcher that fails is restarted alone, after an
exponential backoff, and polling resumes; nothing else is touched. In prefix mode it re-reads
which queues match every `rematch_interval` and starts and stops watchers to follow.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pykka

from actors.api_client import ApiError
from actors.cancel_watcher import CancelWatcher
from actors.context import AgentContext
from actors.dispatcher import Dispatcher
from actors.queue_watcher import QueueWatcher
from actors.refs import ask, tell_if_alive
from messages.api import ApiDecodeError
from messages.control import (
    ChildFailed,
    DispatcherIdle,
    HeldRuns,
    PolledOnce,
    RegisterWatcher,
    RematchQueues,
    RestartChild,
    WatchedQueues,
)

log = logging.getLogger("prefect_actor_agent.agent")

RESTART_BACKOFF_BASE = 1.0
RESTART_BACKOFF_MAX = 60.0


class Agent(pykka.ThreadingActor):
    """Root actor: settings, the queues to watch, supervision of its children."""

    def __init__(self, ctx: AgentContext, finished: threading.Event) -> None:
        super().__init__()
        self.ctx = ctx
        self.finished = finished  # set when a run-once agent has nothing left to do
        self.dispatcher: pykka.ActorRef[Any] | None = None
        self.watchers: dict[str, pykka.ActorRef[Any]] = {}
        self.cancel_watcher: pykka.ActorRef[Any] | None = None
        self.polled_once: set[str] = set()
        self.restarts: dict[str, int] = {}
        self.matched_once = False
        self.started_at = time.time()

    def on_start(self) -> None:
        settings = self.ctx.settings
        log.info("agent starting against %s: %s", settings.api_url, _describe_queues(settings))
        self.dispatcher = Dispatcher.start(self.ctx, self.actor_ref)
        if not settings.run_once:
            self._start_cancel_watcher()
        for name in settings.work_queues:
            self._start_watcher(name, create_missing=True)
        if settings.queue_prefixes:
            self.actor_ref.tell(RematchQueues())

    def on_stop(self) -> None:
        for name in list(self.watchers):
            self._stop_watcher(name)
        if self.cancel_watcher is not None:
            self.cancel_watcher.stop(block=False)
            self.cancel_watcher = None

    def on_receive(self, message: Any) -> Any:
        match message:
            case RematchQueues():
                self._rematch()
            case PolledOnce(queue_name=name):
                self.polled_once.add(name)
                self._check_run_once_done()
            case DispatcherIdle():
                self._check_run_once_done()
            case ChildFailed(kind=kind, name=name, error=error):
                self._child_failed(kind, name, error)
            case RestartChild(kind="QueueWatcher", name=name):
                if name not in self.watchers:
                    self._start_watcher(name, create_missing=name in self.ctx.settings.work_queues)
            case RestartChild(kind="CancelWatcher"):
                self._start_cancel_watcher()
            case _:
                log.warning("unexpected message %r", message)
        return None

    # -- children ----------------------------------------------------------------------------------

    def _start_watcher(self, name: str, create_missing: bool) -> None:
        if self.dispatcher is None:
            raise RuntimeError("the Dispatcher must start before any QueueWatcher")
        ref = QueueWatcher.start(self.ctx, name, self.dispatcher, self.actor_ref, create_missing)
        self.watchers[name] = ref
        self.dispatcher.tell(RegisterWatcher(name, ref))
        self._tell_cancel_watcher()

    def _start_cancel_watcher(self) -> None:
        if self.dispatcher is None:
            raise RuntimeError("the Dispatcher must start before the CancelWatcher")
        self.cancel_watcher = CancelWatcher.start(
            self.ctx, self.dispatcher, self.actor_ref, tuple(sorted(self.watchers))
        )

    def _tell_cancel_watcher(self) -> None:
        if self.cancel_watcher is not None:
            tell_if_alive(self.cancel_watcher, WatchedQueues(tuple(sorted(self.watchers))))

    def _stop_watcher(self, name: str) -> None:
        ref = self.watchers.pop(name, None)
        if self.dispatcher is not None:
            self.dispatcher.tell(RegisterWatcher(name, None))
        if ref is not None:
            ref.stop(block=False)
        self._tell_cancel_watcher()

    def _child_failed(self, kind: str, name: str, error: str) -> None:
        count = self.restarts.get(name, 0) + 1
        self.restarts[name] = count
        delay = min(RESTART_BACKOFF_BASE * 2 ** (count - 1), RESTART_BACKOFF_MAX)
        log.error("%s %r failed (%s); restart %d in %.0fs", kind, name, error, count, delay)
        if kind == "QueueWatcher":
            self.watchers.pop(name, None)
        elif kind == "CancelWatcher":
            self.cancel_watcher = None
        self.ctx.clock.tell_later(delay, self.actor_ref, RestartChild(kind, name))

    # -- prefix mode -------------------------------------------------------------------------------

    def _rematch(self) -> None:
        settings = self.ctx.settings
        try:
            matched = {
                queue.name for queue in self.ctx.api.match_work_queues(settings.queue_prefixes)
            }
        except (ApiError, ApiDecodeError) as exc:
            log.warning(
                "could not read the work queues matching %s: %s",
                _prefixes(settings.queue_prefixes),
                exc,
            )
            matched = None
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
            for name in removed:
                self._stop_watcher(name)
            if not self.matched_once and not matched:
                log.info("no work queue matches %s yet", _prefixes(settings.queue_prefixes))
            self.matched_once = True
        if settings.run_once:
            self._check_run_once_done()
        else:
            self.ctx.clock.tell_later(settings.rematch_interval, self.actor_ref, RematchQueues())

    # -- run once ----------------------------------------------------------------------------------

    def _check_run_once_done(self) -> None:
        settings = self.ctx.settings
        if not settings.run_once or self.finished.is_set() or self.dispatcher is None:
            return
        if settings.queue_prefixes and not self.matched_once:
            return
        if not set(self.watchers) <= self.polled_once:
            return
        if ask(self.dispatcher, HeldRuns(), int) == 0:
            log.info("run once: every queue polled and every run taken has ended")
            self.finished.set()


def _prefixes(prefixes: tuple[str, ...]) -> str:
    return ", ".join(f"{p!r}*" for p in prefixes)


def _describe_queues(settings: Any) -> str:
    parts = [f"queue {name!r}" for name in settings.work_queues]
    parts += [f"queues matching {p!r}*" for p in settings.queue_prefixes]
    limit = f", limit {settings.limit}" if settings.limit is not None else ""
    return ", ".join(parts) + limit
