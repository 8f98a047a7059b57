"""Heartbeat: tells the server this agent lives, as Prefect's workers do, and keeps the lease
that says whether the agent may act for its runs (permanent child of the Agent).

Every `--heartbeat-seconds` it sends `POST /work_pools/{pool}/workers/heartbeat` for the pool
it serves (`--pool`, or on a 2.x server the `default-agent-pool` its plain queues live in), so
the server lists the agent as a worker by its name, turns a NOT_READY pool READY, and, once
the agent stops, marks it OFFLINE by its own rule. A heartbeat that fails is counted in
`/metrics` and tried again soon, never fatal.

Each answer renews or breaks the lease (`actors.rules.lease`), and each change of what the
lease says is told to the Agent (`LeaseChanged`), which passes it on: the Dispatcher takes no
run while it has lapsed, RunSupervisors start nothing, and Recovery checks the held runs when
a renewal ends a break. The lapse itself is a timer on the agent's clock, so the call is made
off the inbox on a worker of its own: a heartbeat the server holds through a partition never
delays the lapse, and never waits behind the other actors' calls. The beat is the tick of a
periodic child (`actors.tree.periodic`); the next is scheduled when the answer comes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pykka

from actors.edges.prefect_api import ApiError
from actors.rules.lease import Lease
from actors.rules.retry import ONCE, POLL_ERRORS
from actors.runtime.calls import CallPool
from actors.runtime.clock import Timer
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.tree.periodic import PeriodicChild
from messages.internal.lease import HeartbeatAnswered, LeaseChanged, LeaseExpiry
from messages.user.tree import ActorKind
from messages.wire.prefect import ApiDecodeError

log = logging.getLogger("prefect_actor_agent.heartbeat")



class Heartbeat(PeriodicChild):
    """Sends the worker heartbeat of one agent and tells what its lease allows."""

    KIND = ActorKind.HEARTBEAT
    NAME = "heartbeat"  # its name in the tree: there is one

    def __init__(self, ctx: AgentContext, agent: pykka.ActorRef[Any], lease: Lease) -> None:
        super().__init__(ctx, agent, self.NAME)
        # The next beat is the retry; a beat that hangs longer than the interval has failed.
        self.api = ctx.api.with_retry(ONCE).with_timeout(ctx.settings.heartbeat_seconds)
        self.lease = lease  # the Agent's, handed to each life of this actor in turn
        self.told: LeaseChanged | None = None
        self.failures = 0
        self.pool: str | None = None
        self.last_sent: float | None = None  # Unix time of the last accepted heartbeat
        self.expiry: Timer | None = None
        self.caller: CallPool | None = None

    def begin(self) -> None:
        self.caller = CallPool(workers=1, name="heartbeat-call")
        self._schedule_expiry()  # a restarted life goes on with the lease as it was
        super().begin()

    def clean_up(self) -> None:
        super().clean_up()
        if self.expiry is not None:
            self.expiry.cancel()
        if self.caller is not None:
            self.caller.stop()

    def tick(self) -> None:
        self._send()  # the next beat is scheduled when this one is answered

    def handle(self, message: object) -> bool:
        match message:
            case HeartbeatAnswered():
                self.schedule(self._answered(message))
            case LeaseExpiry(renewed_at=renewed_at) if renewed_at == self.lease.last_sent:
                self.expiry = None
                self._tell(self.lease.view(self.ctx.clock.monotonic()))
            case LeaseExpiry():
                pass  # outdated by a later renewal
            case _:
                return False
        return True

    def _interval(self) -> float:
        return self.ctx.settings.heartbeat_seconds

    def _send(self) -> None:
        """One heartbeat, made on the heartbeat's own worker; the answer comes as a message."""
        clock, api, ref = self.ctx.clock, self.api, self.actor_ref
        work_pool, name = self.ctx.settings.work_pool, self.ctx.identity.name
        interval = max(1, round(self._interval()))

        def beat() -> None:
            sent_at = clock.monotonic()
            pool: str | None = None
            error: str | None = None
            try:
                pool = api.server_profile().heartbeat_pool(work_pool)
                if pool is not None:
                    sent_at = clock.monotonic()
                    api.send_worker_heartbeat(pool, name, interval)
            except (ApiError, ApiDecodeError) as exc:
                error = str(exc)
            tell_if_alive(ref, HeartbeatAnswered(sent_at, clock.monotonic(), pool, error))

        if self.caller is not None:
            self.caller.submit(beat)

    def _answered(self, answer: HeartbeatAnswered) -> float:
        """Renew or break the lease; the seconds until the next heartbeat."""
        interval = self._interval()
        name = self.ctx.identity.name
        if answer.error is not None:
            self._tell(self.lease.broken(answer.answered_at))
            self.failures += 1
            self.ctx.metrics.heartbeats.labels(result="failed").inc()
            delay = min(interval, POLL_ERRORS.delay(self.failures))
            log.warning(
                "worker heartbeat of agent %r failed (%s); trying again in %.1fs",
                name,
                answer.error,
                delay,
            )
            self.set_phase(f"heartbeat failed {self.failures} time(s) in a row: {answer.error}")
            return delay
        pool = answer.pool
        if pool is None:
            self.set_phase("no work pool to heartbeat on this server")
            return interval
        if self.pool != pool or self.failures:
            log.info("heartbeating work pool %r as worker %r every %.0fs", pool, name, interval)
        self._tell(self.lease.renewed(answer.sent_at, answer.answered_at))
        self._schedule_expiry()
        self.pool, self.failures, self.last_sent = pool, 0, time.time()
        self.ctx.metrics.heartbeats.labels(result="sent").inc()
        self.set_phase(f"heartbeating work pool {pool!r} every {interval:g}s")
        return interval

    # -- the lease ---------------------------------------------------------------------------------

    def _schedule_expiry(self) -> None:
        """A timer for the moment the lease lapses unless a heartbeat renews it first."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        expires, renewed_at = self.lease.expires_at(), self.lease.last_sent
        if expires is None or renewed_at is None:
            return
        delay = expires - self.ctx.clock.monotonic()
        self.expiry = self.ctx.clock.tell_later(delay, self.actor_ref, LeaseExpiry(renewed_at))

    def _tell(self, view: LeaseChanged) -> None:
        """Tell the Agent what the lease says, when it says something new."""
        if view.reconnected:
            log.info(
                "agent %r reaches the server again after a break in its heartbeats: checking "
                "that the runs it holds are still its own",
                self.ctx.identity.name,
            )
        if view != self.told:
            self.told = view
            tell_if_alive(self.agent, view)

    # -- the tree ----------------------------------------------------------------------------------

    def detail(self) -> dict[str, str]:
        detail = {"worker": self.ctx.identity.name}
        if self.last_sent is not None:
            detail["last heartbeat"] = time.strftime("%H:%M:%S", time.localtime(self.last_sent))
        if not self.lease.holds(self.ctx.clock.monotonic()):
            detail["lease"] = "lapsed: taking no runs, starting nothing"
        return detail
