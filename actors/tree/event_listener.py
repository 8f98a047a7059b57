"""EventListener: the server's event stream, for runs and cancellations as they are announced
(permanent child of the Agent).

It subscribes to the flow-run events of the queues the agent serves (a filter the server
applies: `actors.rules.event_filter`) and turns each event into at most one tell: `EventWake`
to the QueueWatcher of a run that may be due, `Cancel` (held runs only) to the Dispatcher for
a run the server wants cancelled. Events only wake: the watchers' polls stay the authority on
what runs, so an event lost, doubled or early costs latency or one poll, never a wrong run.

Its modes, shown in the tree and on /healthz, and logged once per switch:
- `connecting`: the first session is being opened (or the queues' ids are not known yet);
- `stream`: a session is open and subscribed;
- `polling`: no session (the reason is kept): the watchers poll as they always do, and a new
  session is tried after a backoff (1 s doubling to `event_reconnect_max_seconds`); a server
  with no event stream at all (Prefect 2.x without events) is asked again every 5 minutes;
- `off`: `--events off`, nothing is ever opened.

The blocking side is a session: an `EventStream` (`actors.edges.event_stream`) driven by a
daemon thread of its own (a greenlet under gevent), which tells this actor `StreamOpened`,
each `StreamEvent` and finally `StreamClosed`, each numbered with its session so that what an
abandoned session still says is dropped. The inbox never blocks on the socket, except for
`close` (at most a second, when the server does not answer a close). When the served queues
change, a new session subscribes to the new set; each session that opens wakes every watcher
once, for what was announced while none was subscribed. The Agent hears the mode through
`ChildStatus` and tells the CancelWatcher whether the stream is healthy.

It is a periodic child (`actors.tree.periodic`) whose tick opens a session: the first once the
served queues have settled, each later one after its backoff. Its mode is its phase.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pykka

from actors.edges.event_stream import EventStream, StreamError, events_url, shown_url
from actors.rules.event_filter import (
    CancelRun,
    Ignore,
    QueueChanged,
    RecentEvents,
    WakeWatcher,
    decide,
    subscription,
)
from actors.rules.retry import RetryPolicy
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.tree.periodic import PeriodicChild
from messages.internal.dispatch import Cancel
from messages.internal.events import (
    EventWake,
    ServedQueue,
    ServedQueues,
    StreamClosed,
    StreamEvent,
    StreamOpened,
)
from messages.user.tree import ActorKind
from messages.wire.events import Event, FilterMessage

log = logging.getLogger("prefect_actor_agent.events")

SETTLE_SECONDS = 0.2  # queues learnt within this long are subscribed to in one session
RECONNECT_BASE_SECONDS = 1.0
# A server that said it has no events at all (2.x without them) is asked again this rarely:
# only a restart with events turned on changes its answer, and at the backoff's slow end the
# question was a sixth of 100 idle agents' requests to a 2.20 server.
NO_EVENTS_RETRY_SECONDS = 300.0


class EventListener(PeriodicChild):
    """Listens to the server's event stream; wakes watchers, cancels held runs."""

    KIND = ActorKind.EVENT_LISTENER
    NAME = ActorKind.EVENT_LISTENER.value  # its name in the tree: its kind's (there is one)

    def __init__(
        self,
        ctx: AgentContext,
        agent: pykka.ActorRef[Any],
        dispatcher: pykka.ActorRef[Any] | None,
    ) -> None:
        super().__init__(ctx, agent, self.NAME, dispatcher)
        settings = ctx.settings
        self.url = shown_url(events_url(settings.api_url))
        self.backoff = RetryPolicy(
            base_delay=RECONNECT_BASE_SECONDS,
            max_delay=settings.event_reconnect_max_seconds,
            jitter=False,
        )
        self.served: dict[str, ServedQueue] = {}  # queue id -> the queue and its watcher
        self.session = 0  # the number of the latest session
        self.stream: EventStream | None = None  # the session open or opening, if any
        self.subscribed: frozenset[str] = frozenset()  # the queue ids of that session
        self.failures = 0  # sessions in a row that did not open, or ended soon after opening
        self.opened_at: float | None = None  # monotonic time the current session opened
        self.no_events = False  # the server said it has no event stream
        self.connect_due: float | None = None  # monotonic time of the next session's tick
        self.recent = RecentEvents()
        self.phase = "off" if settings.events == "off" else "connecting"  # its mode
        self.reason = ""

    # -- lifecycle ---------------------------------------------------------------------------------

    def begin(self) -> None:
        """No session until the Agent tells which queues are served (`ServedQueues`)."""
        self.ctx.metrics.set_event_mode(self.phase)
        if self.phase == "off":
            log.info(
                "event stream off (--events off): polling every %g s",
                self.ctx.settings.query_interval,
            )

    def clean_up(self) -> None:
        super().clean_up()
        self.connect_due = None
        self._end_session()

    def tick(self) -> None:
        self._connect()  # the next session is scheduled when this one ends

    def handle(self, message: object) -> bool:
        match message:
            case StreamEvent(session=session, event=event) if session == self.session:
                self._event(event)
            case StreamOpened(session=session) if session == self.session:
                self._opened()
            case StreamClosed(session=session, reason=reason, no_events=no_events) if (
                session == self.session
            ):
                self._closed(reason, no_events)
            case StreamEvent() | StreamOpened() | StreamClosed():
                pass  # from a session given up since (resubscribed or stopped)
            case ServedQueues(queues=queues):
                self._served(queues)
            case _:
                return False
        return True

    # -- sessions ----------------------------------------------------------------------------------

    def _served(self, queues: tuple[ServedQueue, ...]) -> None:
        self.served = {queue.queue_id: queue for queue in queues}
        if self.phase == "off":
            return
        ids = frozenset(self.served)
        if self.stream is not None:
            if ids != self.subscribed:
                self._connect_in(SETTLE_SECONDS)  # subscribe again, to the new set
        elif ids and self.next_tick is None:
            self._connect_in(SETTLE_SECONDS)  # the first session (or the first since no queue)

    def _connect_in(self, delay: float) -> None:
        """Open a session `delay` seconds from now, unless one is due sooner already."""
        due = time.monotonic() + delay
        if self.next_tick is not None and self.connect_due is not None and self.connect_due <= due:
            return
        self.connect_due = due
        self.schedule(delay)

    def _connect(self) -> None:
        self.connect_due = None
        ids = frozenset(self.served)
        if self.phase == "off" or not ids:
            return  # no queue id known yet: the next ServedQueues brings one
        if self.stream is not None:
            if ids == self.subscribed:
                return
            log.debug("event stream: subscribing again, to %d queue(s)", len(ids))
            self._end_session()
        settings = self.ctx.settings
        self.session += 1
        stream = EventStream(
            settings.api_url, settings.api_key, ping_seconds=settings.event_ping_seconds
        )
        self.stream, self.subscribed = stream, ids
        thread = threading.Thread(
            target=_run_session,
            args=(
                stream,
                subscription(ids, datetime.now(UTC)),
                self.actor_ref,
                self.session,
                self._ask_first(),
            ),
            name=f"event-stream-{self.session}",
            daemon=True,  # never keeps the interpreter alive; closed on stop
        )
        thread.start()

    def _ask_first(self) -> bool:
        """Whether to ask the server if it has events before opening the websocket: after it
        said it had none, and on any 2.x server (which, without events, fails the websocket
        with an error in its own log)."""
        profile = self.ctx.api.known_profile()
        return self.no_events or (profile is not None and profile.major < 3)

    def _end_session(self) -> None:
        """Give up the current session: what its thread still says is dropped."""
        stream, self.stream = self.stream, None
        self.session += 1
        if stream is not None:
            stream.close()

    def _opened(self) -> None:
        self.no_events = False
        self.opened_at = time.monotonic()
        self.ctx.metrics.event_connects.inc()
        if self.phase != "stream":
            log.info(
                "event stream connected (%s): runs and cancellations are picked up as the "
                "server announces them",
                self.url,
            )
        self._set_mode("stream", "")
        self._wake_all()  # what was announced while no session was subscribed

    def _closed(self, reason: str, no_events: bool) -> None:
        """The session could not open or has ended: poll, and try again after the backoff. A
        session that lasted a ping interval resets the backoff; one dropped sooner does not,
        so a server (or proxy) that drops every socket at once is not retried every second."""
        self.stream = None
        opened, self.opened_at = self.opened_at, None
        if opened is not None and time.monotonic() - opened >= self.ctx.settings.event_ping_seconds:
            self.failures = 0
        self.failures += 1
        self.no_events = no_events
        delay = (
            max(NO_EVENTS_RETRY_SECONDS, self.ctx.settings.event_reconnect_max_seconds)
            if no_events
            else self.backoff.delay(self.failures)
        )
        if self.phase != "polling":
            log.log(
                logging.INFO if no_events else logging.WARNING,
                "event stream unavailable (%s): polling every %g s and retrying the stream",
                reason,
                self.ctx.settings.query_interval,
            )
        else:
            log.debug("event stream still unavailable (%s); next try in %g s", reason, delay)
        self._set_mode("polling", reason)
        self._connect_in(delay)

    # -- events ------------------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        self.ctx.metrics.events_received.inc()
        if not self.recent.first_time(event.id):
            log.debug("event %s (%s) seen before: ignored", event.id, event.event)
            return
        decision = decide(event, {queue_id: q.name for queue_id, q in self.served.items()})
        match decision:
            case WakeWatcher(queue_name=queue, flow_run_id=run_id):
                log.debug("flow run %s announced in queue %r: polling it now", run_id, queue)
                self._wake(queue)
            case QueueChanged(queue_name=queue, change=change):
                log.debug("work queue %r announced %s", queue, change)
                wake = EventWake(queue_changed=True, if_paused=decision.resumed_maybe)
                self._wake(queue, wake)
            case CancelRun(flow_run_id=run_id):
                log.info("flow run %s is to be cancelled (announced by the event stream)", run_id)
                cancel = Cancel(run_id, "cancellation requested on the server", held_only=True)
                self.tell_dispatcher(cancel)
            case Ignore(reason=why):
                log.debug("event %s ignored: %s", event.event, why)

    def _wake(self, queue_name: str, wake: EventWake | None = None) -> None:
        for queue in self.served.values():
            if queue.name == queue_name and isinstance(queue.watcher, pykka.ActorRef):
                tell_if_alive(queue.watcher, wake or EventWake())

    def _wake_all(self) -> None:
        for queue in self.served.values():
            if isinstance(queue.watcher, pykka.ActorRef):
                tell_if_alive(queue.watcher, EventWake())

    # -- status ------------------------------------------------------------------------------------

    def _set_mode(self, mode: str, reason: str) -> None:
        """The mode is the node's state, the reason its detail: the Agent hears both, and tells
        the CancelWatcher whether the stream is healthy."""
        if (mode, reason) != (self.phase, self.reason):
            self.set_phase(mode)
            self.reason = reason
            self.ctx.metrics.set_event_mode(mode)

    def detail(self) -> dict[str, str]:
        detail = {"mode": self.phase, "url": self.url}
        if self.reason:
            detail["reason"] = self.reason
        if self.phase != "off":
            detail["queues"] = str(len(self.served))
        return detail


def _run_session(
    stream: EventStream,
    subscribe: FilterMessage,
    listener: pykka.ActorRef[Any],
    session: int,
    ask_first: bool,
) -> None:
    """The body of a session's thread: open, then tell every event, until the stream ends or
    the listener is gone; the listener hears how it ended."""
    ended = "the stream ended"
    no_events = False
    try:
        stream.open(subscribe, ask_first=ask_first)
        if tell_if_alive(listener, StreamOpened(session)):
            while tell_if_alive(listener, StreamEvent(session, stream.receive())):
                pass
    except StreamError as exc:
        ended, no_events = exc.reason, exc.no_events
    except Exception as exc:  # a bug here must end the session, not the thread silently
        log.exception("the event stream's reader failed")
        ended = f"the stream's reader failed: {exc!r}"
    try:  # told first: closing a socket whose peer is silent waits for the close timeout
        tell_if_alive(listener, StreamClosed(session, ended, no_events))
    finally:
        stream.close()
