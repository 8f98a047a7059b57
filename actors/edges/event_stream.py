"""The websocket edge: one session of the Prefect server's event stream (`/api/events/out`).

`EventStream.open` connects, authenticates (the `prefect` subprotocol and an `auth` message
carrying the API key, as both the 2.20 and 3.x servers want it) and sends the subscription's
filter; `receive` then blocks until the next event and returns it decoded
(`messages.wire.events`). A socket that stays quiet for `ping_seconds` is pinged, and one
that does not answer within as long again is given up: a silent socket (a dead peer, a
proxy that stopped forwarding) is found within two ping intervals. Anything that ends the
session raises `StreamError` with the reason in words; `close` ends it from any thread.

The client is the `websockets` package's synchronous one: plain sockets and threads, so it
runs unchanged on threads and under gevent's monkey patching (where its reader thread is a
greenlet), and it is already installed beside Prefect. Its reader thread is a daemon: it never
keeps the interpreter alive.

A server that has no event stream (Prefect 2.x without `PREFECT_EXPERIMENTAL_EVENTS`, which
answers the websocket with HTTP 500, or a server older than events) is told apart from a
refusal by `POST /events/filter`, which such a server answers 404; `streams_no_events` asks
that. Nothing here logs the API key; the URL shown (`shown_url`) has no credentials.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from messages.wire.events import (
    AuthMessage,
    Event,
    EventDecodeError,
    FilterMessage,
    decode_message,
    encode,
)

log = logging.getLogger("prefect_actor_agent.events")
# The websockets library logs every frame at DEBUG, the auth message (the API key) included:
# its logger for our connections never goes below INFO, whatever the host configures.
_socket_log = logging.getLogger("prefect_actor_agent.events.websocket")
_socket_log.setLevel(logging.INFO)

OPEN_TIMEOUT = 10.0  # seconds for the TCP, TLS and websocket handshakes, and for the auth answer
CLOSE_TIMEOUT = 1.0  # seconds a close waits for the server's answer before dropping the socket
NO_EVENTS = (
    "the server streams no events: a Prefect 2.x server streams them only with "
    "PREFECT_EXPERIMENTAL_EVENTS=true"
)


class StreamError(Exception):
    """The stream could not be opened, or it ended; `reason` says why, in words.
    `no_events`: the server has no event stream at all (not a fault: polling is the mode)."""

    def __init__(self, reason: str, *, no_events: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.no_events = no_events


def events_url(api_url: str) -> str:
    """The stream's URL for an API URL: http -> ws, https -> wss, then `/events/out`."""
    parts = urlsplit(api_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path + "/events/out", parts.query, ""))


def shown_url(url: str) -> str:
    """A URL as it may be shown or logged: without a user or password."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


class EventStream:
    """One session of the stream; `open` once, `receive` until it raises, `close` any time."""

    def __init__(
        self,
        api_url: str,
        api_key: str | None,
        *,
        ping_seconds: float,
        open_timeout: float = OPEN_TIMEOUT,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.url = events_url(api_url)
        self._key = api_key
        self.ping_seconds = ping_seconds
        self.open_timeout = open_timeout
        self._lock = threading.Lock()
        self._socket: ClientConnection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"EventStream({shown_url(self.url)!r})"

    def open(self, subscription: FilterMessage, *, ask_first: bool = False) -> None:
        """Connect, authenticate, subscribe; `StreamError` if any of it fails. `ask_first`
        (the server had no events last time): ask whether it has events before connecting,
        so a server without them is not made to fail a websocket every retry."""
        if ask_first and self.streams_no_events():
            raise StreamError(NO_EVENTS, no_events=True)
        try:
            socket = connect(
                self.url,
                subprotocols=[Subprotocol("prefect")],
                open_timeout=self.open_timeout,
                close_timeout=CLOSE_TIMEOUT,
                user_agent_header="prefect-actor-agent",
                logger=_socket_log,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if self.streams_no_events():
                raise StreamError(NO_EVENTS, no_events=True) from exc
            raise StreamError(f"the server refused the websocket (HTTP {status})") from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise StreamError(f"could not connect: {_describe(exc)}") from exc
        with self._lock:
            if self._closed:
                socket.close()
                raise StreamError("closed")
            self._socket = socket
        try:
            socket.send(encode(AuthMessage(token=self._key)))
            answer = decode_message(socket.recv(timeout=self.open_timeout))
            if answer.type != "auth_success":
                why = f": {answer.reason}" if answer.reason else ""
                raise StreamError(f"the server did not accept the stream's authentication{why}")
            socket.send(encode(subscription))
        except ConnectionClosed as exc:
            raise StreamError(_closed_reason(exc)) from exc
        except (OSError, TimeoutError, WebSocketException, EventDecodeError) as exc:
            raise StreamError(f"the stream's opening failed: {_describe(exc)}") from exc

    def receive(self) -> Event:
        """The next event (blocking); a quiet socket is pinged. `StreamError` when it ends."""
        socket = self._socket
        if socket is None:
            raise StreamError("the stream is not open")
        while True:
            try:
                raw = socket.recv(timeout=self.ping_seconds)
            except TimeoutError:
                self._ping(socket)
                continue
            except ConnectionClosed as exc:
                raise StreamError(_closed_reason(exc)) from exc
            except (OSError, WebSocketException) as exc:
                raise StreamError(f"the stream failed: {_describe(exc)}") from exc
            try:
                message = decode_message(raw)
            except EventDecodeError as exc:
                log.warning("ignored a message of the event stream: %s", exc)
                continue
            if message.type == "event" and message.event is not None:
                return message.event
            log.debug("event stream message of type %r ignored", message.type)

    def _ping(self, socket: ClientConnection) -> None:
        """No message for a ping interval: the server must answer a ping within another."""
        try:
            pong = socket.ping()
        except ConnectionClosed as exc:
            raise StreamError(_closed_reason(exc)) from exc
        except (OSError, WebSocketException) as exc:
            raise StreamError(f"the stream failed: {_describe(exc)}") from exc
        if not pong.wait(self.ping_seconds):
            raise StreamError(
                f"the server answered no ping within {self.ping_seconds:g} s (a silent socket)"
            )

    def close(self) -> None:
        """End the session (from any thread); a `receive` under way raises `StreamError`."""
        with self._lock:
            self._closed = True
            socket = self._socket
        if socket is not None:
            socket.close()

    def streams_no_events(self) -> bool:
        """Whether the server says it has no events at all: `POST /events/filter` answered
        404 (a 2.x server without events, or one older than events). Any other answer, or
        none, is not that."""
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        try:
            answer = httpx.post(
                f"{self.api_url}/events/filter",
                json={"limit": 0},
                headers=headers,
                timeout=self.open_timeout,
            )
        except httpx.HTTPError:
            return False
        return answer.status_code == 404


def _closed_reason(exc: ConnectionClosed) -> str:
    frame = exc.rcvd
    if frame is None:
        return "the connection was lost"
    reason = f": {frame.reason}" if frame.reason else ""
    return f"the server closed the stream (code {frame.code}{reason})"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
