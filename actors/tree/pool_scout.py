"""PoolScout: one per work pool served; one request looks at all of the pool's watched queues.

An idle agent's cost to the server is its looks at queues that have nothing to run. Instead of
each QueueWatcher asking for its own queue's runs every query interval (and reading its queue
and pool first), the pool's scout asks once for all of them:
`POST /work_pools/{pool}/get_scheduled_flow_runs` with every watched queue's name, for the
runs due before the prefetch horizon plus one look's period. The server answers for the pool's
paused state and limits, records every named queue polled (so the queues and their deployments
stay READY), and the scout wakes only the watchers of the queues that have something:

- a run due now (within the prefetch): its watcher polls now, and takes it as it always did
  (it reads its queue and pool then, so a pause or a priority set meanwhile applies);
- a run due later, seen for the first time: its watcher is woken once; its own look ahead
  finds the run and sets the timer that brings it back at the run's time, less the prefetch;
- a full page: every watcher polls (more may hide behind it).

An agent of plain queues (`-q` or `-m` without `-p`) has one scout too, of the pool where a
2.10+ server keeps them (`default-agent-pool`): it reads the pool's id and tells the watchers
(`ScoutCovers`); a watcher whose queue is of that pool and has no tag filter (which only
get_runs applies) leaves its idle looks to the scout, the others poll on their own as before.
Where the server has no such pool, or the look fails, the watchers are told so and poll.

Its pace (`actors/rules/scouting.py`): the query interval without the event stream; with it
(`StreamHealth`), the stream announces runs as they come, so the scout is the safety net, every
`STREAM_LOOK_SECONDS`. When the stream is lost it looks at once, then every query interval.
It waits on the server in its own inbox, as a watcher does; a failed look is tried again after
the polls' retry delay.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka

from actors.edges.prefect_api import ApiError, NotFoundError
from actors.edges.served_pools import refused
from actors.rules.retry import ONCE, POLL_ERRORS
from actors.rules.scouting import SeenLater, due_split, look_interval, scout_page
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.tree.periodic import PeriodicChild
from messages.internal.events import (
    EventWake,
    ScoutCovers,
    ScoutedQueue,
    ScoutedQueues,
    StreamHealth,
)
from messages.user.tree import ActorKind
from messages.wire.prefect import ApiDecodeError

DEFAULT_AGENT_POOL = "default-agent-pool"  # where 2.10+ servers keep the queues of no pool
POOL_ID_SECONDS = 600.0  # how old a read of the default agent pool may be for its id


class PoolScout(PeriodicChild):
    """Looks at all of a pool's watched queues in one request (permanent child of the Agent)."""

    KIND = ActorKind.POOL_SCOUT

    def __init__(
        self,
        ctx: AgentContext,
        agent: pykka.ActorRef[Any],
        pool: str,
        queues: tuple[ScoutedQueue, ...],
        stream_healthy: bool,
        *,
        plain: bool = False,
    ) -> None:
        super().__init__(ctx, agent, pool)
        self.api = ctx.api.with_retry(ONCE)  # the next look is the retry
        self.pool = pool
        self.log = logging.getLogger(f"prefect_actor_agent.pool_scout.{pool}")
        self.queues: dict[str, Any] = {queue.name: queue.watcher for queue in queues}
        self.stream_healthy = stream_healthy
        self.seen_later = SeenLater()
        self.failures = 0
        self.looks = 0
        self.plain = plain  # the default agent pool's scout, for plain queues

    def begin(self) -> None:
        """Each watcher polls once as it starts; the scout's first look is a period later."""
        self.schedule(self._interval())

    def _interval(self) -> float:
        return look_interval(self.ctx.settings.query_interval, self.stream_healthy)

    def handle(self, message: object) -> bool:
        match message:
            case ScoutedQueues(queues=queues):
                self.queues = {queue.name: queue.watcher for queue in queues}
            case StreamHealth(healthy=healthy):
                if healthy != self.stream_healthy:
                    self.stream_healthy = healthy
                    if healthy:  # the stream's opening woke every watcher: the net can wait
                        self.schedule(self._interval())
                    else:  # what the stream would have announced is looked for at once
                        self.tick_now()
            case _:
                return False
        return True

    def tick(self) -> float | None:
        interval = self._interval()
        if not self.queues:
            self.set_phase("no queue watched yet")
            return interval
        if self.plain and not self._covering():
            return interval if self.phase != "not available" else None
        if not self.plain and refused(self.api, self.pool, self.ctx.infrastructures):
            # Its watchers refuse its runs; a look would mark its queues READY for nothing.
            self.set_phase("refused: this agent cannot run the work pool's type")
            return interval
        now = datetime.now(UTC)
        horizon = now + timedelta(seconds=self.ctx.settings.prefetch_seconds)
        names = sorted(self.queues)
        page = scout_page(len(names))  # a full page wakes every watcher
        try:
            runs = self.api.get_pool_runs(
                self.pool, names, horizon + timedelta(seconds=interval), page
            )
        except NotFoundError as exc:
            # The pool, or one of the queues named, does not exist (yet, or any more): every
            # watcher polls on its own, which creates a queue named by -q or says what is
            # missing; the next look comes a period later.
            self.log.info("work pool %r: %s; its watchers poll on their own", self.pool, exc)
            self.set_phase(f"error: {exc}")
            if self.plain:
                self._cover(None)  # they poll on their own timers again
            else:
                self._wake(set(names))
            return interval
        except (ApiError, ApiDecodeError) as exc:
            self.failures += 1
            retry_after = exc.retry_after if isinstance(exc, ApiError) else None
            delay = min(POLL_ERRORS.delay(self.failures, retry_after), interval)
            self.log.warning(
                "looking at the queues of work pool %r failed (%s); trying again in %.1fs",
                self.pool,
                exc,
                delay,
            )
            self.set_phase(f"error: {exc}")
            return delay
        self.failures = 0
        self.looks += 1
        due, _ = due_split(runs, horizon)
        due_ids = {run.id for run in due}
        if len(runs) >= page:
            woken = set(names)
        else:
            woken = {run.work_queue_name for run in due if run.work_queue_name}
            woken |= {
                run.work_queue_name
                for run in runs
                if run.work_queue_name
                and run.id not in due_ids
                and self.seen_later.first_time(run.id)
            }
        self._wake(woken)
        self.set_phase(
            f"idle, last look found {len(due)} run(s) due, {len(runs) - len(due)} later"
        )
        return interval

    def _covering(self) -> bool:
        """For plain queues: whether the default agent pool can be looked at, its id told to
        the watchers (which then leave their idle looks to this scout)."""
        profile = self.ctx.api.known_profile()
        if profile is not None and not profile.has_work_pools:
            self.set_phase("not available")  # a server older than work pools: never
            self._cover(None)
            return False
        try:
            pool = self.api.read_work_pool(self.pool, max_age=POOL_ID_SECONDS)
        except (ApiError, ApiDecodeError) as exc:
            pool = None
            self.set_phase(f"error: {exc}")
        else:
            if pool is None:
                self.set_phase(f"no work pool {self.pool!r}: the watchers poll on their own")
        self._cover(pool.id if pool is not None else None)
        return pool is not None

    def _cover(self, pool_id: str | None) -> None:
        if not self.plain:
            return
        for watcher in self.queues.values():
            if isinstance(watcher, pykka.ActorRef):
                tell_if_alive(watcher, ScoutCovers(pool_id))

    def _wake(self, names: set[str]) -> None:
        for name in sorted(names):
            watcher = self.queues.get(name)
            if isinstance(watcher, pykka.ActorRef):
                tell_if_alive(watcher, EventWake(by_event=False))

    def detail(self) -> dict[str, str]:
        pace = f"{self._interval():g}s"
        if self.stream_healthy:
            pace += " (the event stream is healthy)"
        return {"work pool": self.pool, "queues": str(len(self.queues)), "every": pace}
