"""CancelWatcher: finds the runs of this agent's queues that the server wants cancelled.

One filter query per poll and pool served (its queues, in that pool) covers both forms a server
uses: state type CANCELLING (Prefect 2.8 and later) and state type CANCELLED named "Cancelling"
(older servers). Each run found becomes
a `Cancel` to the Dispatcher, which routes it to the run's supervisor, or finds the process of
a run it no longer holds. A run is not sent again for a while, so a slow kill is not repeated.

While the server's event stream is healthy (the Agent says so, `StreamHealth`), cancellations
come by event and this poll is the safety net, every `--stream-cancel-poll-interval` (four
times that while the agent holds no run: it has nothing of its own to stop); when the
stream is lost it polls at once, then every `--cancel-poll-interval` while the Dispatcher
holds runs (`HoldsRuns`). An agent that holds none has no process of its own to stop, and
polls at the safety net's pace (a Cancelling run whose process is not its own, left by an
earlier life or another agent on this host, is then found within that interval): an idle
fleet's cancellation polls were most of what it cost the server. A run taken brings the quick
polls back at once, before it can start. Its polls after the first
fall on slots of the wall clock of this agent's own (`actors.rules.spread`), so that a fleet
started together, or cut from the stream together by a server restart, does not poll in step.
Its poll is the tick of a periodic child (`actors.tree.periodic`), which waits on the server in
its own inbox.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pykka

from actors.edges.prefect_api import ApiError
from actors.rules.pools import queues_by_pool
from actors.rules.retry import ONCE
from actors.rules.spread import until_slot
from actors.runtime.context import AgentContext
from actors.runtime.request_purpose import requests_for
from actors.tree.periodic import PeriodicChild
from messages.internal.dispatch import Cancel, HoldsRuns
from messages.internal.events import StreamHealth
from messages.internal.lifecycle import WatchedQueue, WatchedQueues
from messages.user.tree import ActorKind
from messages.wire.prefect import (
    CANCELLED,
    CANCELLING,
    AnyOf,
    ApiDecodeError,
    FlowRunFilter,
    FlowRunStateFilter,
)

log = logging.getLogger("prefect_actor_agent.cancel_watcher")

RESEND_AFTER_SECONDS = 300.0
# With no run held, the net is this many times slower than the stream's safety net: an idle
# agent's cancellation polls were the largest part of its cost to a streaming server, and a
# sixth of 100 idle agents' requests to a 2.20 server (which streams nothing by default).
IDLE_NET_FACTOR = 4


def cancelling_runs_filter(queues: tuple[str, ...]) -> FlowRunFilter:
    """Runs of these queues in either form of 'please cancel'."""
    return FlowRunFilter(
        state=FlowRunStateFilter(
            type=AnyOf(any_=[CANCELLING, CANCELLED]), name=AnyOf(any_=["Cancelling"])
        ),
        work_queue_name=AnyOf(any_=list(queues)),
    )


class CancelWatcher(PeriodicChild):
    """Polls for cancellation requests (permanent child of the Agent)."""

    KIND = ActorKind.CANCEL_WATCHER
    NAME = "cancellations"  # its name in the tree: there is one

    def __init__(
        self,
        ctx: AgentContext,
        agent: pykka.ActorRef[Any],
        dispatcher: pykka.ActorRef[Any] | None,
        queues: tuple[WatchedQueue, ...] = (),
        *,
        stream_healthy: bool = False,
        holding: bool = False,
    ) -> None:
        super().__init__(ctx, agent, self.NAME, dispatcher)
        self.api = ctx.api.with_retry(ONCE)  # the next poll is the retry
        self.queues = queues
        self.stream_healthy = stream_healthy  # cancellations come by event: poll slowly
        self.holding = holding  # the Dispatcher holds runs: poll quickly (without the stream)
        self.sent: dict[str, float] = {}  # run id -> when its Cancel was sent (monotonic)

    def tick(self) -> float:
        with requests_for("cancellation_poll"):  # counted by kind in /metrics
            self._poll()
        # the next poll at this agent's own slot, not an interval after this one: a fleet's
        # polls stay spread across the interval (`actors.rules.spread`)
        return self._next_slot()

    def handle(self, message: object) -> bool:
        match message:
            case WatchedQueues(queues=queues):
                self.queues = queues
                if queues and self.phase == "no queues yet":
                    # the first look with queues at once: a cancellation asked for before
                    # the agent started is found now, not a (slow, when idle) interval later
                    self.set_phase("polling")
                    self.tick_now()
            case StreamHealth(healthy=healthy):
                self._stream_health(healthy)
            case HoldsRuns(holding=holding):
                self._holds_runs(holding)
            case _:
                return False
        return True

    def _interval(self) -> float:
        settings = self.ctx.settings
        if not self.holding:  # no run of its own (a run taken brings the pace back first)
            slowest = max(settings.cancel_poll_interval, settings.stream_cancel_poll_interval)
            return slowest * IDLE_NET_FACTOR
        if self.stream_healthy:
            return settings.stream_cancel_poll_interval
        return settings.cancel_poll_interval

    def _why_pace(self) -> str:
        if self.stream_healthy:
            held = "" if self.holding else ", no run held"
            return f" (the event stream is healthy{held})"
        if not self.holding and self._interval() > self.ctx.settings.cancel_poll_interval:
            return " (no run held)"
        return ""

    def _next_slot(self) -> float:
        """Seconds to this agent's next slot at the interval of now (`actors.rules.spread`)."""
        identity = f"{self.ctx.identity.name}\0{self.ctx.identity.instance}"
        return until_slot(time.time(), self._interval(), identity)

    def _holds_runs(self, holding: bool) -> None:
        """The Dispatcher came to hold runs (the next poll within the quick interval, on this
        agent's slots) or holds none any more (the polls after the next slow down)."""
        if holding == self.holding:
            return
        self.holding = holding
        if holding and self.next_tick is not None:
            self.schedule(self._next_slot())

    def _stream_health(self, healthy: bool) -> None:
        """The stream came (poll slowly from the next poll on) or went (poll now)."""
        if healthy == self.stream_healthy:
            return
        self.stream_healthy = healthy
        if not healthy:
            self.tick_now()

    def detail(self) -> dict[str, str]:
        return {
            "queues": ", ".join(
                self.ctx.settings.watcher_name(queue.pool, queue.name) for queue in self.queues
            ),
            "every": f"{self._interval():g}s" + self._why_pace(),
        }

    def _poll(self) -> None:
        if not self.queues:
            self.set_phase("no queues yet")
            return
        runs = []
        failed = False
        for pool, names in queues_by_pool(self.queues).items():
            try:
                runs += self.api.filter_flow_runs(cancelling_runs_filter(names), pool)
            except (ApiError, ApiDecodeError) as exc:  # the other pools are looked at still
                where = f" in work pool {pool!r}" if self.ctx.settings.several_pools else ""
                log.warning("could not look for runs to cancel%s: %s", where, exc)
                self.set_phase(f"error: {exc}")
                failed = True
        if not failed:
            self.set_phase("polling")
        now = time.monotonic()
        self.sent = {
            run_id: at for run_id, at in self.sent.items() if now - at < RESEND_AFTER_SECONDS
        }
        for run in runs:
            if run.id in self.sent:
                continue
            self.sent[run.id] = now
            log.info("flow run %s (%s) is to be cancelled", run.id, run.name)
            self.tell_dispatcher(Cancel(run.id, "cancellation requested on the server"))
