"""CancelWatcher: finds the runs of this agent's queues that the server wants cancelled.

One filter query per poll covers both forms a server uses: state type CANCELLING (Prefect 2.8
and later) and state type CANCELLED named "Cancelling" (older servers). Each run found becomes
a `Cancel` to the Dispatcher, which routes it to the run's supervisor, or finds the process of
a run it no longer holds. A run is not sent again for a while, so a slow kill is not repeated.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pykka

from actors.edges.prefect_api import ApiError
from actors.runtime.clock import Timer
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from messages.internal.dispatch import Cancel
from messages.internal.lifecycle import ChildFailed, Describe, Poll, UseDispatcher, WatchedQueues
from messages.user.tree import ActorNode
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


def cancelling_runs_filter(queues: tuple[str, ...]) -> FlowRunFilter:
    """Runs of these queues in either form of 'please cancel'."""
    return FlowRunFilter(
        state=FlowRunStateFilter(
            type=AnyOf(any_=[CANCELLING, CANCELLED]), name=AnyOf(any_=["Cancelling"])
        ),
        work_queue_name=AnyOf(any_=list(queues)),
    )


class CancelWatcher(pykka.ThreadingActor):
    """Polls for cancellation requests (permanent child of the Agent)."""

    def __init__(
        self,
        ctx: AgentContext,
        dispatcher: pykka.ActorRef[Any],
        agent: pykka.ActorRef[Any],
        queues: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.dispatcher = dispatcher
        self.agent = agent
        self.queues = queues
        self.sent: dict[str, float] = {}  # run id -> when its Cancel was sent (monotonic)
        self.next_poll: Timer | None = None
        self.phase = "starting"
        self.since = time.time()

    def on_start(self) -> None:
        self.actor_ref.tell(Poll())

    def on_stop(self) -> None:
        if self.next_poll is not None:
            self.next_poll.cancel()

    def on_failure(self, *exc_info: Any) -> None:
        tell_if_alive(self.agent, ChildFailed("CancelWatcher", "cancellations", repr(exc_info[1])))

    def on_receive(self, message: Any) -> Any:
        match message:
            case WatchedQueues(names=names):
                self.queues = names
                if names and self.phase == "no queues yet":
                    self.phase, self.since = "polling", time.time()
            case Describe():
                return ActorNode(
                    kind="CancelWatcher",
                    name="cancellations",
                    state=self.phase,
                    since=self.since,
                    detail={"queues": ", ".join(self.queues)},
                )
            case UseDispatcher(dispatcher=ref) if isinstance(ref, pykka.ActorRef):
                self.dispatcher = ref
            case Poll():
                self._poll()
                self.next_poll = self.ctx.clock.tell_later(
                    self.ctx.settings.cancel_poll_interval, self.actor_ref, Poll()
                )
            case _:
                log.warning("unexpected message %r", message)
        return None

    def _poll(self) -> None:
        if not self.queues:
            self.phase = "no queues yet"
            return
        try:
            runs = self.ctx.api.filter_flow_runs(
                cancelling_runs_filter(self.queues), self.ctx.settings.work_pool
            )
        except (ApiError, ApiDecodeError) as exc:
            log.warning("could not look for runs to cancel: %s", exc)
            self.phase = f"error: {exc}"
            return
        if self.phase != "polling":
            self.phase, self.since = "polling", time.time()
        now = time.monotonic()
        self.sent = {
            run_id: at for run_id, at in self.sent.items() if now - at < RESEND_AFTER_SECONDS
        }
        for run in runs:
            if run.id in self.sent:
                continue
            self.sent[run.id] = now
            log.info("flow run %s (%s) is to be cancelled", run.id, run.name)
            self.dispatcher.tell(Cancel(run.id, "cancellation requested on the server"))
