"""Heartbeat: tells the server this agent lives, as Prefect's workers do, and keeps the lease
that says whether the agent may act for its runs (permanent child of the Agent).

Every `--heartbeat-seconds` it sends `POST /work_pools/{pool}/workers/heartbeat` for each pool
it serves (every `--pool`, or on a 2.x server the `default-agent-pool` its plain queues live
in), so the server lists the agent as a worker by its name in each, turns a NOT_READY pool
READY, and, once the agent stops, marks it OFFLINE by its own rule. A heartbeat that fails is
counted in `/metrics` and tried again soon, never fatal.

One round is the heartbeats of every pool served, and it renews the lease only when each pool
that exists took its heartbeat. There is one server, but peers judge this agent pool by pool,
by its row in the pool they share (`Recovery`): a row left stale in one pool lets that pool's
peers declare it lost and recover its runs there, so the lease, the promise that no peer may
do so, lasts no longer than the stalest row. A pool the server says does not exist is left out
(it holds no run, nor a row any peer reads), so one mistyped `-p` does not stop the others;
when none exists the round has failed. A pool of a type no kind of this agent runs is not
heartbeated at all: the agent takes none of its runs, and its row would show the pool READY.

Each round renews or breaks the lease (`actors.rules.lease`), and each change of what the
lease says is told to the Agent (`LeaseChanged`), which passes it on: the Dispatcher takes no
run while it has lapsed, RunSupervisors start nothing, and Recovery checks the held runs when
a renewal ends a break. The lapse itself is a timer on the agent's clock, so the call is made
off the inbox on a worker of its own: a heartbeat the server holds through a partition never
delays the lapse, and never waits behind the other actors' calls. The beat is the tick of a
periodic child (`actors.tree.periodic`); the next is scheduled when the answer comes.

A clean stop ends with `LeavePools`: no more beats, and the agent's worker row is removed from
each pool (`DELETE /work_pools/{pool}/workers/{name}`), on the same worker, so after any beat
still in flight. Its peers then see it gone at their next reading of the rows and take its
share of a contested queue without waiting their grace for its runs (`actors.rules.share`). A
name holding a `/` cannot be removed (the server routes the name as a path): said once in the
log, and its row goes OFFLINE by the server's rule as before. A crashed agent removes nothing:
its stale heartbeat tells its peers, as ever.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pykka

from actors.edges.prefect_api import ApiError, NotFoundError
from actors.edges.served_pools import refused
from actors.rules.identity import removable_worker_name
from actors.rules.lease import Lease
from actors.rules.retry import LEAVING, ONCE, POLL_ERRORS
from actors.runtime.calls import CallPool
from actors.runtime.clock import Timer
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.tree.periodic import PeriodicChild
from messages.internal.lease import HeartbeatAnswered, LeaseChanged, LeaseExpiry, LeavePools
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
        self.pools: tuple[str, ...] | None = None  # heartbeated in the last round that went through
        self.last_sent: float | None = None  # Unix time of the last accepted heartbeat
        self.expiry: Timer | None = None
        self.caller: CallPool | None = None
        self.leaving = False  # told to leave the pools: no more beats

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
        if not self.leaving:
            self._send()  # the next beat is scheduled when this one is answered

    def handle(self, message: object) -> bool:
        match message:
            case HeartbeatAnswered():
                delay = self._answered(message)
                if not self.leaving:
                    self.schedule(delay)
            case LeavePools(done=done) if isinstance(done, threading.Event):
                self._leave(done)
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
        """One round, made on the heartbeat's own worker; the answer comes as a message."""
        clock, api, ref = self.ctx.clock, self.api, self.actor_ref
        served, name = self.ctx.settings.pools, self.ctx.identity.name
        kinds = self.ctx.infrastructures
        interval = max(1, round(self._interval()))

        def beat() -> None:
            sent_at = clock.monotonic()
            pools: tuple[str, ...] = ()
            sent: list[str] = []
            missing: list[str] = []
            errors: list[str] = []
            skipped: list[str] = []
            try:
                pools = api.server_profile().heartbeat_pools(served)
            except (ApiError, ApiDecodeError) as exc:
                errors.append(str(exc))
            sent_at = clock.monotonic()  # before the first send: no later than any record
            for pool in pools:  # every pool, even after one failed: the others' rows stay fresh
                if pool in served and refused(api, pool, kinds):  # not default-agent-pool
                    skipped.append(pool)
                    continue
                try:
                    api.send_worker_heartbeat(pool, name, interval)
                    sent.append(pool)
                except NotFoundError as exc:
                    missing.append(pool)
                    if len(pools) == 1:
                        errors.append(str(exc))
                except (ApiError, ApiDecodeError) as exc:
                    errors.append(f"work pool {pool!r}: {exc}" if len(pools) > 1 else str(exc))
            if pools and not sent and not errors and missing:
                errors.append(f"no work pool served exists: {', '.join(map(repr, missing))}")
            error = "; ".join(errors) or None
            answered_at = clock.monotonic()
            answer = HeartbeatAnswered(
                sent_at, answered_at, tuple(sent), error, tuple(missing), tuple(skipped)
            )
            tell_if_alive(ref, answer)

        if self.caller is not None:
            self.caller.submit(beat)

    def _leave(self, done: threading.Event) -> None:
        """Beat no more, and remove the worker row from each pool, after any beat in flight
        (the same single worker makes both, in order); `done` is set once that is over."""
        self.leaving = True
        self.cancel_tick()
        api = self.ctx.api.with_retry(LEAVING).with_timeout(self.ctx.settings.heartbeat_seconds)
        served, name = self.ctx.settings.pools, self.ctx.identity.name
        self.set_phase("leaving the work pools: heartbeats stopped")

        def leave() -> None:
            try:
                pools = api.server_profile().heartbeat_pools(served)
            except (ApiError, ApiDecodeError) as exc:
                log.warning("could not remove worker %r from its work pools: %s", name, exc)
                pools = ()
            if pools and not removable_worker_name(name):
                log.warning(
                    "worker %r cannot be removed from work pool(s) %s: the server cannot route "
                    "a worker name holding a '/'; it stays listed until its last heartbeat is "
                    "three intervals old, and peers wait their grace for its runs meanwhile "
                    "(name the agent without '/' with -n to leave at once)",
                    name,
                    ", ".join(map(repr, pools)),
                )
                pools = ()
            for pool in pools:
                try:
                    if api.delete_worker(pool, name):
                        log.info("worker %r left work pool %r (its row removed)", name, pool)
                except (ApiError, ApiDecodeError) as exc:
                    log.warning(
                        "could not remove worker %r from work pool %r (%s); it stays listed "
                        "until its last heartbeat is three intervals old",
                        name,
                        pool,
                        exc,
                    )
            done.set()

        if self.caller is None:
            done.set()
        else:
            self.caller.submit(leave)

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
        pools = answer.pools
        if not pools:
            refused = ", ".join(map(repr, answer.refused))
            self.set_phase(
                f"not heartbeating work pools this agent refuses: {refused}"
                if refused
                else "no work pool to heartbeat on this server"
            )
            return interval
        named = ", ".join(repr(pool) for pool in pools)
        what = f"work pool {named}" if len(pools) == 1 else f"work pools {named}"
        if self.pools != pools or self.failures:
            log.info("heartbeating %s as worker %r every %.0fs", what, name, interval)
            for pool in answer.missing:
                log.warning(
                    "work pool %r does not exist: not heartbeating it (the other pools are "
                    "served; create it and its heartbeats start at the next round)",
                    pool,
                )
        self._tell(self.lease.renewed(answer.sent_at, answer.answered_at))
        self._schedule_expiry()
        self.pools, self.failures, self.last_sent = pools, 0, time.time()
        self.ctx.metrics.heartbeats.labels(result="sent").inc()
        missing = f"; missing: {', '.join(map(repr, answer.missing))}" if answer.missing else ""
        if answer.refused:
            missing += f"; refused (no worker of): {', '.join(map(repr, answer.refused))}"
        self.set_phase(f"heartbeating {what} every {interval:g}s{missing}")
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
