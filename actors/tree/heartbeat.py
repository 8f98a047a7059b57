"""Heartbeat: tells the server this agent lives, as Prefect's workers do (permanent child of
the Agent).

Every `--heartbeat-seconds` it sends `POST /work_pools/{pool}/workers/heartbeat` for the pool
it serves (`--pool`, or on a 2.x server the `default-agent-pool` its plain queues live in), so
the server lists the agent as a worker by its name, turns a NOT_READY pool READY, and, once
the agent stops, marks it OFFLINE by its own rule. A heartbeat that fails is counted in
`/metrics` and tried again soon, never fatal.

It has an actor of its own, and its request goes before the others in the API edge's request
slots (as a Pending proposal does), so a heartbeat never waits behind a drain: a peer must not
take a busy agent for a lost one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pykka

from actors.edges.prefect_api import ApiError
from actors.rules.retry import ONCE, POLL_ERRORS
from actors.runtime.clock import Timer
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from messages.internal.lifecycle import ChildFailed, Describe, Poll, WatcherStatus
from messages.user.tree import ActorNode
from messages.wire.prefect import ApiDecodeError

log = logging.getLogger("prefect_actor_agent.heartbeat")

NAME = "heartbeat"


class Heartbeat(pykka.ThreadingActor):
    """Sends the worker heartbeat of one agent."""

    def __init__(self, ctx: AgentContext, agent: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.ctx = ctx
        # The next beat is the retry; a beat that hangs longer than the interval has failed.
        self.api = ctx.api.with_retry(ONCE).with_timeout(ctx.settings.heartbeat_seconds)
        self.agent = agent
        self.failures = 0
        self.pool: str | None = None
        self.last_sent: float | None = None  # Unix time of the last accepted heartbeat
        self.next_beat: Timer | None = None
        self.phase = "starting"
        self.since = time.time()

    def on_start(self) -> None:
        self.actor_ref.tell(Poll())

    def on_stop(self) -> None:
        if self.next_beat is not None:
            self.next_beat.cancel()

    def on_failure(self, *exc_info: Any) -> None:
        tell_if_alive(self.agent, ChildFailed("Heartbeat", NAME, repr(exc_info[1])))

    def on_receive(self, message: Any) -> Any:
        match message:
            case Poll():
                delay = self._beat()
                self.next_beat = self.ctx.clock.tell_later(delay, self.actor_ref, Poll())
            case Describe():
                return self._describe()
            case _:
                log.warning("unexpected message %r", message)
        return None

    def _interval(self) -> float:
        return self.ctx.settings.heartbeat_seconds

    def _beat(self) -> float:
        """One heartbeat; the seconds until the next."""
        interval = self._interval()
        name = self.ctx.identity.name
        try:
            pool = self.api.server_profile().heartbeat_pool(self.ctx.settings.work_pool)
            if pool is None:
                self._set_phase("no work pool to heartbeat on this server")
                return interval
            sent_at = time.monotonic()
            self.api.send_worker_heartbeat(pool, name, max(1, round(interval)))
        except (ApiError, ApiDecodeError) as exc:
            self.ctx.lease.broken()
            self.failures += 1
            self.ctx.metrics.heartbeats.labels(result="failed").inc()
            delay = min(interval, POLL_ERRORS.delay(self.failures))
            log.warning(
                "worker heartbeat of agent %r failed (%s); trying again in %.1fs",
                name,
                exc,
                delay,
            )
            self._set_phase(f"heartbeat failed {self.failures} time(s) in a row: {exc}")
            return delay
        if self.pool != pool or self.failures:
            log.info("heartbeating work pool %r as worker %r every %.0fs", pool, name, interval)
        self.ctx.lease.renewed(sent_at)
        self.pool, self.failures, self.last_sent = pool, 0, time.time()
        self.ctx.metrics.heartbeats.labels(result="sent").inc()
        self._set_phase(f"heartbeating work pool {pool!r} every {interval:g}s")
        return interval

    def _set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase, self.since = phase, time.time()
        tell_if_alive(self.agent, WatcherStatus("Heartbeat", NAME, self._describe()))

    def _describe(self) -> ActorNode:
        detail = {"worker": self.ctx.identity.name}
        if self.last_sent is not None:
            detail["last heartbeat"] = time.strftime("%H:%M:%S", time.localtime(self.last_sent))
        return ActorNode(
            kind="Heartbeat", name=NAME, state=self.phase, since=self.since, detail=detail
        )
