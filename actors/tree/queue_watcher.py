"""QueueWatcher: one per work queue; asks the server for due runs and hands them on.

Its rhythm is adaptive: a full page that brought new runs means more are probably waiting, so
the Dispatcher wakes it with `Poll` while the last of that page's runs are being taken (see
`actors/rules/paging.py`); an empty or partial page means the queue is drained, so it waits the
query interval. It never asks for more runs than the Dispatcher could admit right now, and is
woken too when a slot frees. A paused queue is noted once, not per poll. Between the polls
the server records (get_runs, once per query interval), a drain's pages come by the cheaper
flow-run filter where that answers the same (see `actors/rules/poll_route.py`).

A queue of a work pool (`--pool`) is read and polled through the pool's endpoints; the pool's
pause stops it like its own, and the pool's limit and the queue's priority travel with
`FreeSlots`, so that the Dispatcher can share the room between the pool's queues. An agent
that serves several pools has a watcher per pool and queue, named `pool/queue`; a pool of a
type no kind of this agent runs is refused by its watchers alone (the other pools are served).

Its idle pace (`actors/rules/scouting.py`): a watcher of a pool's queue has none of its own;
the pool's PoolScout looks at all the pool's queues in one request and wakes it when its queue
has a run. A watcher of a plain queue polls every query interval, or, while the event stream is
healthy (`StreamHealth`), every `STREAM_LOOK_SECONDS` as a safety net; when the stream is lost
it polls at once. Every poll asks for the runs due up to one safety-net period past the
prefetch horizon and proposes only those due within the prefetch: the earliest of the others
sets its next poll (a timer on the agent's clock) at that run's time less the prefetch, so a run
created for later is read once and taken when due, with no poll in between. A run the server
deferred (a concurrency slot taken) is polled for at the time the server gave it (`DueAgain`,
from the Dispatcher), a second later at the least.

A poll is three messages, never an ask: `Poll` (read the queue, tell the Dispatcher
`FreeSlots`), `Room` (ask the server for that many runs, tell `RunsFound`), `Admitted` (when to
poll next). A poll the Dispatcher never answers (it failed meanwhile) is followed by the next
one a query interval later all the same. The watcher registers with its Dispatcher (again
with a restarted one: `UseDispatcher`), and tells the Agent its phase (`ChildStatus`), so the
tree is shown without waiting on a watcher that is mid-poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka

from actors.edges.kinds import pool_refusal, probe_pool
from actors.edges.prefect_api import ApiError
from actors.rules.poll_route import filter_answers_like_get_runs, poll_by_filter
from actors.rules.request_kinds import RequestKind
from actors.rules.retry import ONCE, POLL_ERRORS
from actors.rules.scouting import STREAM_LOOK_SECONDS, due_split, look_interval
from actors.rules.share import Share, recorded_poll_interval
from actors.runtime.clock import Timer
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.runtime.request_purpose import requests_for
from actors.tree.permanent import PermanentChild
from messages.internal.dispatch import (
    Admitted,
    DueAgain,
    FreeSlots,
    PeersInDoubt,
    Room,
    RunsFound,
)
from messages.internal.events import EventWake, ScoutCovers, StreamHealth
from messages.internal.lifecycle import (
    ChildStatus,
    Describe,
    Poll,
    PolledOnce,
    RegisterWatcher,
    UseDispatcher,
)
from messages.user.tree import ActorKind, ActorNode
from messages.wire.prefect import ApiDecodeError, FlowRun, WorkPool, WorkQueue

FULL_PAGE_RECHECK_SECONDS = 0.25
SHARED_RECHECK_SECONDS = 1.0  # a window of peers' runs is read again at least this often
QUEUE_REREAD_SECONDS = 1.0  # a queue is read again (paused? deleted?) at most this often
IDLE = float("inf")  # a step's "poll again when idle": the idle pace, or never if scouted
DUE_MARGIN_SECONDS = 0.05  # a run due later is polled for this long after its time - prefetch
DEFERRED_MIN_WAIT_SECONDS = 1.0  # a deferred run is proposed again no sooner than this


class QueueWatcher(PermanentChild):
    """Polls one work queue (permanent child of the Agent)."""

    KIND = ActorKind.QUEUE_WATCHER

    def __init__(  # noqa: PLR0917 - pykka passes constructor arguments positionally
        self,
        ctx: AgentContext,
        queue_name: str,
        dispatcher: pykka.ActorRef[Any] | None,
        agent: pykka.ActorRef[Any],
        create_missing: bool,
        pool_name: str | None = None,
        name: str | None = None,
    ) -> None:
        # Its name (in the tree, to the Dispatcher): the queue's, or `pool/queue` when the
        # agent serves several pools (`AgentSettings.watcher_name`).
        super().__init__(agent, name or queue_name)
        self.ctx = ctx
        self.api = ctx.api.with_retry(ONCE)  # the next poll is the retry
        self.queue_name = queue_name
        self.pool_name = pool_name
        self.dispatcher = dispatcher
        self.create_missing = create_missing
        self.log = logging.getLogger(f"prefect_actor_agent.queue_watcher.{self.name}")
        self.queue: WorkQueue | None = None
        self.queue_read_at = 0.0
        self.paused = False
        self.pool: WorkPool | None = None  # as read by the poll under way
        self.filter_answers = False  # whether this poll's pages may come by the flow-run filter
        self.pool_missing = False
        self.refused: str | None = None  # why the pool's runs are not taken (its type)
        self.probed = False  # the pool's kind was asked to look for its infrastructure
        self.failures = 0
        self.share = Share(ctx.identity.name)  # which runs of the window are ours to propose
        self.polls = 0
        self.recorded_poll_at: float | None = None  # monotonic time of the last get_runs
        self.next_poll: Timer | None = None
        self.next_poll_at: float | None = None  # when `next_poll` fires, on the agent's clock
        self.poll_started = 0.0  # monotonic time of the poll under way
        self.poll_under_way = False  # from Poll to the poll's end (its next poll scheduled)
        self.woken = False  # an EventWake came during the poll under way: poll again after it
        # A pool's queue is looked at by the pool's PoolScout: no idle poll of its own; a plain
        # queue too, once the default agent pool's scout says it covers it (`ScoutCovers`).
        self.scouted = pool_name is not None and not ctx.settings.run_once
        self.scout_pool_id: str | None = None  # the default agent pool's, as its scout said
        self.stream_healthy = False  # as the Agent last said (`StreamHealth`)
        self.later_at: datetime | None = None  # the earliest run seen due after the prefetch
        self.deferred_at: datetime | None = None  # the earliest time a deferred run is due again
        self.purpose: RequestKind = "poll"  # what the poll under way counts as in /metrics
        self.phase = "starting"
        self.since = time.time()

    def start_up(self) -> None:
        self._register()
        self.actor_ref.tell(Poll())

    def clean_up(self) -> None:
        if self.next_poll is not None:
            self.next_poll.cancel()

    def on_receive(self, message: Any) -> Any:
        match message:
            case Poll():
                self._poll()
            case EventWake(by_event=by_event, queue_changed=changed, if_paused=if_paused):
                if changed:
                    self.queue_read_at = 0.0  # the change is read, not a copy from before it
                if self.paused or not if_paused:
                    self._event_wake(by_event)
            case StreamHealth(healthy=healthy):
                self._stream_health(healthy)
            case ScoutCovers(pool_id=pool_id):
                self.scout_pool_id = pool_id
                self._scout_covers()
            case Room(count=count, peers=peers):
                self.share.peers_are(peers)
                self._poll_step(lambda: self._take_room(count))
            case Admitted(count=count, full_page=full):
                self._admitted(count, full)
            case DueAgain(at=at):
                self._due_again(at)
            case Describe():
                return self._describe()
            case UseDispatcher(dispatcher=ref) if isinstance(ref, pykka.ActorRef):
                self.dispatcher = ref
                self._register()
            case _:
                self.log.warning("unexpected message %r", message)
        return None

    def _register(self) -> None:
        """Make itself known to the Dispatcher it works with (a new one after a restart of
        either), which wakes it when a slot frees or a page is taken."""
        self._tell_dispatcher(RegisterWatcher(self.name, self.actor_ref))

    def _tell_dispatcher(self, message: object) -> bool:
        return self.dispatcher is not None and tell_if_alive(self.dispatcher, message)

    def _set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            self.since = time.time()
            status = ChildStatus(ActorKind.QUEUE_WATCHER, self.name, self._describe())
            tell_if_alive(self.agent, status)

    def _schedule(self, delay: float | None) -> None:
        """The next poll `delay` seconds from now, or at the time of the earliest run seen due
        later (less the prefetch), or of a deferred run's new time, if that is sooner; None: no
        poll but those."""
        if self.next_poll is not None:
            self.next_poll.cancel()
            self.next_poll = None
        now = datetime.now(UTC)
        if self.later_at is not None:
            prefetch = self.ctx.settings.prefetch_seconds
            until = (self.later_at - now).total_seconds() - prefetch
            if until <= 0:
                self.later_at = None  # its time came and this poll has been: forgotten
            else:
                until += DUE_MARGIN_SECONDS
                delay = until if delay is None else min(delay, until)
        if self.deferred_at is not None:
            # Not less the prefetch: the server said "not before then", and a run proposed
            # sooner is only deferred again (at least a second apart, whatever it said).
            until = (self.deferred_at - now).total_seconds()
            self.deferred_at = None  # this poll or an earlier one takes it (or defers it again)
            until = max(until, DEFERRED_MIN_WAIT_SECONDS) + DUE_MARGIN_SECONDS
            delay = until if delay is None else min(delay, until)
        if delay is not None:
            self.next_poll_at = self.ctx.clock.monotonic() + delay
            self.next_poll = self.ctx.clock.tell_later(delay, self.actor_ref, Poll())
        else:
            self.next_poll_at = None

    def _due_again(self, at: datetime) -> None:
        """A run this watcher found was deferred by the server (a concurrency slot taken) and
        is due again at `at`: poll for it then, as for a run seen due later. Without this a
        queue idle by the stream would take it at its next safety-net look only."""
        if self.deferred_at is None or at < self.deferred_at:
            self.deferred_at = at
        if self.poll_under_way or (self.ctx.settings.run_once and self.polls > 0):
            return  # the poll's end schedules the next, the deferred run's time among them
        now = self.ctx.clock.monotonic()
        self._schedule(None if self.next_poll_at is None else max(0.0, self.next_poll_at - now))

    def _idle_interval(self) -> float | None:
        """How long an idle queue waits for its next regular poll; None: the pool's scout
        looks at it instead."""
        if self.scouted:
            return None
        return look_interval(self.ctx.settings.query_interval, self.stream_healthy)

    def _scout_covers(self) -> None:
        """A plain queue is left to the default agent pool's scout while its queue is of that
        pool and has no tag filter (only get_runs applies one); otherwise it polls itself."""
        if self.pool_name is not None or self.ctx.settings.run_once:
            return
        queue = self.queue
        covered = (
            self.scout_pool_id is not None
            and queue is not None
            and queue.work_pool_id == self.scout_pool_id
            and queue.filter is None
        )
        if covered == self.scouted:
            return
        self.scouted = covered
        if self.poll_under_way:
            return  # the poll's end schedules the next at the new pace
        if covered and self.next_poll is not None and not self.paused:
            # its own poll, due already, is the scout's; a paused queue keeps its own looks
            # (the scout's request leaves paused queues out, so it would never see a resume)
            self._schedule(self._idle_interval())
        elif not covered and self.next_poll is None:
            self._schedule(self._idle_interval())

    def _stream_health(self, healthy: bool) -> None:
        """Told when the stream comes or goes. Lost: what it would have announced is polled
        for at once (a scout does it for its pool's queues), then every query interval."""
        was, self.stream_healthy = self.stream_healthy, healthy
        if was and not healthy and not self.scouted and not self.poll_under_way:
            self._poll()

    def _poll(self, woken: bool = False) -> None:
        settings = self.ctx.settings
        if settings.run_once and self.polls > 0:
            return
        self.polls += 1
        self.purpose = "event_woken_poll" if woken else "poll"
        self.poll_under_way = True
        self.poll_started = time.monotonic()
        # Whatever becomes of this poll, the next comes a query interval later at the latest.
        self._schedule(settings.query_interval)
        self._poll_step(self._ask_for_room)

    def _poll_step(self, step: Callable[[], float | None]) -> None:
        """Run one step of a poll; a server error ends the poll, and the next one comes after
        the retry policy's delay. A step returns when to poll next, or None when it waits for
        the Dispatcher's answer."""
        try:
            with requests_for(self.purpose):  # counted by kind in /metrics
                next_poll = step()
            self.failures = 0
        except (ApiError, ApiDecodeError) as exc:
            self.failures += 1
            retry_after = exc.retry_after if isinstance(exc, ApiError) else None
            next_poll = POLL_ERRORS.delay(self.failures, retry_after)
            self.log.warning(
                "polling work queue %r failed (%s); trying again in %.1fs",
                self.name,
                exc,
                next_poll,
            )
            self._set_phase(f"error: {exc}")
            self._polled(next_poll)
            return
        if next_poll is not None:
            self._polled(next_poll)

    def _polled(self, next_poll: float | None) -> None:
        """The poll is over: the run-once agent hears of it; others poll again later."""
        self.ctx.metrics.poll_latency.observe(time.monotonic() - self.poll_started)
        if self.ctx.settings.run_once:
            if self.next_poll is not None:
                self.next_poll.cancel()
            self.agent.tell(PolledOnce(self.name))
        else:
            self._schedule(self._idle_interval() if next_poll == IDLE else next_poll)
        self.poll_under_way = False
        if self.woken:  # announced while that poll was under way: it may have missed the run
            self.woken = False
            self._event_wake()

    def _event_wake(self, by_event: bool = True) -> None:
        """The event stream announced a run of this queue that may be due (or the pool's
        scout found one): poll now, or once the poll under way is over (however many wakes
        come meanwhile, one more poll)."""
        if self.poll_under_way:
            self.woken = True
            return
        if by_event:
            self.ctx.metrics.event_wakes.inc()
        self._poll(woken=by_event)

    def _ask_for_room(self) -> float | None:
        """The first step: is the queue there and not paused? Then ask for room."""
        interval = IDLE
        pool: WorkPool | None = None
        if self.pool_name is not None:
            pool = self._read_pool(self.pool_name)
            if pool is None:
                return interval
            refusal = pool_refusal(pool, self.ctx.infrastructures)
            if refusal is not None:
                self.pool = pool
                self._refuse(refusal)
                return interval
            if not self.probed:  # its kind looks for its infrastructure (a daemon) at start
                self.probed = True
                self.ctx.infra_calls.submit(lambda: probe_pool(pool, self.ctx.infrastructures))
        queue = self._read_queue()
        if queue is None:
            self._set_phase("queue does not exist")
            self._nothing_due()
            return interval
        paused = self._paused_by(queue, pool)
        if paused:
            self._nothing_due()
            if not self.paused:
                self.log.info("%s is paused; not taking its runs until it resumes", paused)
            else:
                self.log.debug("%s is still paused", paused)
            self.paused = True
            self._set_phase("paused")
            # Looked at every query interval while paused, scout or stream or not: a resume
            # (of its pool too, which the stream does not announce) applies within one.
            return self.ctx.settings.query_interval
        if self.paused:
            self.log.info("work queue %r resumed", self.queue_name)
            self.paused = False
        self.pool = pool
        self.filter_answers = self._filter_answers(queue)
        ask_room = FreeSlots(
            self.name,
            pool=self.pool_name,
            pool_limit=pool.concurrency_limit if pool is not None else None,
            priority=queue.priority,
            cheap_pages=self.filter_answers,
            reply_to=self.actor_ref,
            sharers=len(self.share.sharers()),
        )
        if not self._tell_dispatcher(ask_room):
            self._set_phase("waiting for the Dispatcher")
            return self.ctx.settings.query_interval
        return None

    def _take_room(self, room: int) -> float | None:
        """The second step, with the Dispatcher's answer: ask the server for `room` runs (of
        a window as many times larger as there are peers sharing the queue, which says
        which of its runs to propose: `actors/rules/share.py`)."""
        interval = IDLE
        queue = self.queue
        if room == 0 or queue is None:
            self._set_phase("waiting for a free slot")
            return interval
        self._set_phase("polling")
        now = time.monotonic()
        window = self.share.window(room)
        horizon = datetime.now(UTC) + timedelta(seconds=self.ctx.settings.prefetch_seconds)
        look_ahead = max(self.ctx.settings.query_interval, STREAM_LOOK_SECONDS)
        route, found = self._due_runs(
            queue, window, self.filter_answers, horizon + timedelta(seconds=look_ahead)
        )
        due, self.later_at = due_split(found, horizon)
        full = len(due) >= window
        runs = self.share.pick(due, room, full, now)
        self._set_phase(f"idle, last poll found {len(due)} run(s), {len(runs)} to propose")
        if not due:
            self._nothing_due()
            return interval
        if not runs:  # every run due is a peer's, within its grace: look again once one is not
            tell_if_alive(self.agent, PeersInDoubt())  # is each of them still there?
            return self._recheck_delay(interval)
        self.log.debug(
            "found %d run(s) in work queue %r (%s), %d to propose",
            len(due),
            self.queue_name,
            route,
            len(runs),
        )
        if not self._tell_dispatcher(RunsFound(self.name, tuple(runs), full, self.actor_ref)):
            return interval
        return None

    def _admitted(self, count: int, full: bool) -> None:
        """The last step: the Dispatcher took `count` of the runs found (or heard that a
        paused queue, or one with nothing due, has none)."""
        interval = self.ctx.settings.query_interval if self.paused else IDLE
        if full and count == 0:
            # A full page of runs we already hold, whose Pending has not landed yet: more
            # runs may wait behind them, so look again soon rather than a whole interval later.
            self._polled(self._recheck_delay(interval))
            return
        # After a full page, the Dispatcher sends Poll while its last runs are being taken.
        self._polled(interval)

    def _recheck_delay(self, interval: float) -> float:
        """When to read a full window again that brought nothing new to propose: soon; where
        peers' runs wait in it, once the first of them reaches its grace, or within a second
        (as peers take theirs, runs of ours come into the window)."""
        overdue_in = self.share.next_overdue(time.monotonic())
        if overdue_in is None:
            return min(FULL_PAGE_RECHECK_SECONDS, interval)
        return min(max(FULL_PAGE_RECHECK_SECONDS, overdue_in), SHARED_RECHECK_SECONDS, interval)

    def _nothing_due(self) -> None:
        """In a pool, said even when there is nothing: a queue with no runs due (or paused)
        lets the queues of lower priority have the room. Elsewhere nobody needs to hear it."""
        if self.pool_name is not None:
            self._tell_dispatcher(RunsFound(self.name, (), False, self.actor_ref))

    def _due_runs(
        self, queue: WorkQueue, room: int, filter_answers: bool, before: datetime
    ) -> tuple[str, list[FlowRun]]:
        """The request used (named in the log) and the runs due before `before` it brought."""
        if self.pool_name is not None:
            pool_runs = self.api.get_pool_runs(self.pool_name, [self.queue_name], before, room)
            return "get_scheduled_flow_runs", pool_runs
        now = time.monotonic()
        since = None if self.recorded_poll_at is None else now - self.recorded_poll_at
        recorder = self.share.records_polls(queue.name)  # in a fleet, one peer records
        by_filter = poll_by_filter(
            filter_answers=filter_answers,
            since_recorded_poll=since,
            query_interval=recorded_poll_interval(self.ctx.settings.query_interval, recorder),
        )
        if by_filter:
            return "flow-run filter", self.api.scheduled_runs(queue.name, before, room)
        runs = self.api.get_runs(queue.id, before, room)
        self.recorded_poll_at = now
        return "get_runs", runs

    def _filter_answers(self, queue: WorkQueue) -> bool:
        """Until the Agent has read the server's version, every poll is a get_runs."""
        profile = self.ctx.api.known_profile()
        return filter_answers_like_get_runs(
            queue,
            in_pool=self.pool_name is not None,
            filters_alike=profile is not None and profile.filters_runs_like_get_runs,
        )

    def _paused_by(self, queue: WorkQueue, pool: WorkPool | None) -> str:
        """What pauses this queue, in words, or '' when nothing does."""
        if pool is not None and pool.is_paused:
            return f"work pool {pool.name!r}"
        if queue.is_paused:
            return f"work queue {self.queue_name!r}"
        return ""

    def _refuse(self, refusal: str) -> None:
        """A pool of a type this agent cannot run: none of its runs is taken, ever (a run must
        never execute on infrastructure other than the one its deployment names)."""
        if self.refused is None:
            self.log.warning("%s: not taking the runs of its queue %r", refusal, self.queue_name)
        self.refused = refusal
        self._nothing_due()
        self._set_phase("refused: this agent cannot run the work pool's type")

    def _read_pool(self, name: str) -> WorkPool | None:
        pool = self.api.read_work_pool(name)
        if pool is None:
            if not self.pool_missing:
                self.log.warning(
                    "work pool %r does not exist; create it (prefect work-pool create %s "
                    "--type prefect-agent) and this agent starts taking its runs",
                    name,
                    name,
                )
            self.pool_missing = True
            self._set_phase("work pool does not exist")
        elif self.pool_missing:
            self.log.info("work pool %r exists now", name)
            self.pool_missing = False
        return pool

    def _read_queue_once(self) -> WorkQueue | None:
        if self.pool_name is None:
            return self.api.read_work_queue_by_name(self.queue_name)
        return self.api.read_pool_queue(self.pool_name, self.queue_name)

    def _create_queue(self) -> WorkQueue:
        if self.pool_name is None:
            return self.api.create_work_queue(self.queue_name)
        return self.api.create_pool_queue(self.pool_name, self.queue_name)

    def _read_queue(self) -> WorkQueue | None:
        now = time.monotonic()
        if self.queue is not None and now - self.queue_read_at < QUEUE_REREAD_SECONDS:
            return self.queue  # polling again at once during a drain: it was read just now
        self.queue_read_at = now
        queue = self._read_queue_once()
        where = f" in work pool {self.pool_name!r}" if self.pool_name is not None else ""
        if queue is None and self.create_missing:
            try:
                queue = self._create_queue()
                self.log.info("created work queue %r%s", self.queue_name, where)
            except ApiError as exc:
                # Another agent may have created it at the same moment: read it again.
                queue = self._read_queue_once()
                if queue is None:
                    raise ApiError(
                        f"could not create work queue {self.queue_name!r}: {exc}"
                    ) from exc
        if queue is None and self.queue is not None:
            self.log.warning("work queue %r no longer exists", self.queue_name)
        if queue is not None and self.queue is None:
            self.log.info("watching work queue %r%s (%s)", queue.name, where, queue.id)
        self.queue = queue
        self._scout_covers()  # its pool or its filter may have changed
        return queue

    def _describe(self) -> ActorNode:
        detail = {"queue id": self.queue.id} if self.queue is not None else {}
        if self.pool_name is not None:
            detail["work pool"] = self.pool_name
        if self.pool is not None and self.pool.type:
            detail["work pool type"] = self.pool.type
        if self.refused is not None:
            detail["refused"] = self.refused
        sharers = len(self.share.sharers())
        if sharers > 1 or self.share.overdue_taken:
            detail["shared with"] = f"{sharers - 1} live peer(s)"
            detail["peers' runs taken after their grace"] = str(self.share.overdue_taken)
        return ActorNode(
            kind=ActorKind.QUEUE_WATCHER,
            name=self.name,
            state=self.phase,
            since=self.since,
            detail=detail,
        )
