"""CancelWatcher: finds the runs of this agent's queues that the server wants cancelled.

One filter query per poll covers both forms a server uses: state type CANCELLING (Prefect 2.8
and later) and state type CANCELLED named "Cancelling" (older servers). Each run found becomes
a `Cancel` to the Dispatcher, which routes it to the run's supervisor, or finds the process of
a run it no longer holds. A run is not sent again for a while, so a slow kill is not repeated.

While the server's event stream is healthy (the Agent says so, `StreamHealth`), cancellations
come by event and this poll is the safety net, every `--stream-cancel-poll-interval`; when the
stream is lost it polls at once, then every `--cancel-poll-interval`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pykka

from actors.edges.prefect_api import ApiError
from actors.rules.retry import ONCE
from actors.runtime.clock import Timer
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.tree.permanent import PermanentChild
from messages.internal.dispatch import Cancel
from messages.internal.events import StreamHealth
from messages.internal.lifecycle import (
    ChildStatus,
    Describe,
    Poll,
    UseDispatcher,
    WatchedQueues,
)
from messages.user.tree import ActorKind, ActorNode
from messages.wire.prefect import (
    CANCELLED,
    CANCELLING,
    AnyOf,
    ApiDecodeError,
    FlowRunFilter,
    FlowRunStateFilter,
)

log = logging.getLogger("prefect_actor_agent.cancel_watcher")

NAME = "cancellations"
RESEND_AFTER_SECONDS = 300.0


def cancelling_runs_filter(queues: tuple[str, ...]) -> FlowRunFilter:
    """Runs of these queues in either form of 'please cancel'."""
    return FlowRunFilter(
        state=FlowRunStateFilter(
            type=AnyOf(any_=[CANCELLING, CANCELLED]), name=AnyOf(any_=["Cancelling"])
        ),
        work_queue_name=AnyOf(any_=list(queues)),
    )


class CancelWatcher(PermanentChild):
    """Polls for cancellation requests (permanent child of the Agent)."""

    KIND = ActorKind.CANCEL_WATCHER

    def __init__(
        self,
        ctx: AgentContext,
        dispatcher: pykka.ActorRef[Any],
        agent: pykka.ActorRef[Any],
        queues: tuple[str, ...] = (),
        stream_healthy: bool = False,
    ) -> None:
        super().__init__(agent, NAME)
        self.ctx = ctx
        self.api = ctx.api.with_retry(ONCE)  # the next poll is the retry
        self.dispatcher = dispatcher
        self.queues = queues
        self.stream_healthy = stream_healthy  # cancellations come by event: poll slowly
        self.sent: dict[str, float] = {}  # run id -> when its Cancel was sent (monotonic)
        self.next_poll: Timer | None = None
        self.phase = "starting"
        self.since = time.time()

    def start_up(self) -> None:
        self.actor_ref.tell(Poll())

    def clean_up(self) -> None:
        if self.next_poll is not None:
            self.next_poll.cancel()

    def on_receive(self, message: Any) -> Any:
        match message:
            case WatchedQueues(names=names):
                self.queues = names
                if names and self.phase == "no queues yet":
                    self._set_phase("polling")
                self._report_status()
            case Describe():
                return self._describe()
            case UseDispatcher(dispatcher=ref) if isinstance(ref, pykka.ActorRef):
                self.dispatcher = ref
            case Poll():
                self._poll()
                self.next_poll = self.ctx.clock.tell_later(
                    self._interval(), self.actor_ref, Poll()
                )
            case StreamHealth(healthy=healthy):
                self._stream_health(healthy)
            case _:
                log.warning("unexpected message %r", message)
        return None

    def _interval(self) -> float:
        settings = self.ctx.settings
        if self.stream_healthy:
            return settings.stream_cancel_poll_interval
        return settings.cancel_poll_interval

    def _stream_health(self, healthy: bool) -> None:
        """The stream came (poll slowly from the next poll on) or went (poll now)."""
        if healthy == self.stream_healthy:
            return
        self.stream_healthy = healthy
        if not healthy:
            if self.next_poll is not None:
                self.next_poll.cancel()
            self.actor_ref.tell(Poll())
        self._report_status()

    def _describe(self) -> ActorNode:
        return ActorNode(
            kind=ActorKind.CANCEL_WATCHER,
            name=NAME,
            state=self.phase,
            since=self.since,
            detail={
                "queues": ", ".join(self.queues),
                "every": f"{self._interval():g}s"
                + (" (the event stream is healthy)" if self.stream_healthy else ""),
            },
        )

    def _set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase, self.since = phase, time.time()
            self._report_status()

    def _report_status(self) -> None:
        """The Agent shows the tree from what it is told, never waiting on a poll."""
        tell_if_alive(self.agent, ChildStatus(ActorKind.CANCEL_WATCHER, NAME, self._describe()))

    def _poll(self) -> None:
        if not self.queues:
            self._set_phase("no queues yet")
            return
        try:
            runs = self.api.filter_flow_runs(
                cancelling_runs_filter(self.queues), self.ctx.settings.work_pool
            )
        except (ApiError, ApiDecodeError) as exc:
            log.warning("could not look for runs to cancel: %s", exc)
            self._set_phase(f"error: {exc}")
            return
        self._set_phase("polling")
        now = time.monotonic()
        self.sent = {
            run_id: at for run_id, at in self.sent.items() if now - at < RESEND_AFTER_SECONDS
        }
        for run in runs:
            if run.id in self.sent:
                continue
            self.sent[run.id] = now
            log.info("flow run %s (%s) is to be cancelled", run.id, run.name)
            tell_if_alive(self.dispatcher, Cancel(run.id, "cancellation requested on the server"))
