"""A loopback HTTP/1.1 proxy that injects faults between the agent and a real Prefect server.

Why a proxy and not a mock transport: the faults the agent must survive (refused connects,
resets, 503 storms with Retry-After, responses that never come) happen below httpx, in sockets
and in the HTTP framing, and they must reach an agent that runs in another process too (the
gevent launcher). So this sits on a real TCP port, speaks just enough HTTP/1.1 to act per
request (keep-alive, Content-Length request bodies, Content-Length or chunked response bodies),
and forwards everything else byte for byte.

Stdlib only: one daemon thread accepts, one daemon thread serves each client connection, and
each client connection keeps its own upstream connection. `stop()` wakes every blocked thread
(it shuts their sockets down) so no test leaves a thread behind that could block interpreter
exit.

Modes (`set_mode`), read afresh for every request, so a change reaches connections that are
already open:

- ``pass``: forward each request and relay its response.
- ``reset``: accept, then abort with a TCP RST (an existing connection is reset at its next
  request): the client sees "connection reset" / "server disconnected".
- ``refuse``: stop listening, so connects are refused, and drop every open connection: the
  server is down. Leaving ``refuse`` listens on the same port again.
- ``http_status`` (``status=503``, ``retry_after=None``): answer every request with that status
  and an empty body, keeping the connection alive.
- ``delay`` (``seconds=...``): hold each request that long, then forward it. The request still
  reaches the server after a client that timed out gave up, as with a slow real server.
- ``blackhole``: read requests, never answer.
- ``hold``: read requests and hold them, unanswered, until the mode changes; then each is dealt
  with by the new mode (``pass`` forwards it, late, and relays the answer if its client is
  still there). A partition that buffers and delivers when it heals.

`drop_connections()` resets every open client connection at once (a heal that loses them).

Websockets (the agent's event stream, ``/api/events/out``): an upgrade request is forwarded
like any other, and once the server answers 101 the connection becomes a tunnel that relays
bytes both ways, unparsed. Three modes act on websockets only, plain HTTP passing meanwhile,
because the agent must fall back to polling while its REST calls still succeed:

- ``ws_refuse`` (``status=503``, ``retry_after=None``): answer every upgrade request with that
  status, as a proxy or load balancer without websocket support does; tunnels already open
  stay open.
- ``ws_drop`` (``seconds=0``): upgrades pass, and each tunnel is cut (RST both ways) once it is
  ``seconds`` old: an open tunnel older than that is cut at once (the socket dropped mid-way),
  a new one that long after its 101.
- ``ws_silent``: upgrades pass (the 101 reaches the client), then nothing more is forwarded
  either way, pings and pongs included, and the connection stays open: a half-dead network
  path. Tunnels already open go silent too.

A tunnel ignores the other modes, except ``refuse``, which drops every connection.

`fail_next(n, status)` answers only the next n requests with an error, whatever the mode, then
the mode applies again.
"""

from __future__ import annotations

import collections
import contextlib
import http
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

MODES = frozenset(
    {
        "pass",
        "reset",
        "refuse",
        "http_status",
        "delay",
        "blackhole",
        "hold",
        "ws_refuse",
        "ws_drop",
        "ws_silent",
    }
)

_MAX_HEAD = 64 * 1024  # a request or response head larger than this is not HTTP we expect
_RELAY_CHUNK = 64 * 1024
_ACCEPT_POLL = 0.05  # how quickly the accept loop notices stop() and mode changes


class ProxyProtocolError(Exception):
    """Bytes on a connection that are not the HTTP/1.1 this proxy understands."""


@dataclass(frozen=True)
class _Mode:
    """One immutable mode, swapped atomically so a request sees a consistent set of params."""

    name: str = "pass"
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    """A request as a client sent it: what a test reads to tell one kind from another."""

    method: str
    path: str  # without the query string
    body: bytes


@dataclass(frozen=True)
class _Request:
    """A parsed request: the raw bytes to forward plus what the proxy decides on."""

    method: str
    path: str
    raw: bytes  # head and body exactly as received
    close: bool  # the client asked to close after this request
    upgrade: bool  # a websocket upgrade request


class _Stream:
    """A buffered reader over a socket: HTTP framing needs lines and exact byte counts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(_RELAY_CHUNK)
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self) -> bytes | None:
        """Bytes up to and including the blank line; None on a clean EOF before any byte."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[: end + 4])
                del self.buf[: end + 4]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise ProxyProtocolError("head too large")
            if not self._fill():
                if self.buf:
                    raise ProxyProtocolError("connection closed inside a head")
                return None

    def read_line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[: end + 2])
                del self.buf[: end + 2]
                return line
            if len(self.buf) > _MAX_HEAD:
                raise ProxyProtocolError("line too long")
            if not self._fill():
                raise ProxyProtocolError("connection closed inside a line")

    def read_exact(self, count: int) -> bytes:
        while len(self.buf) < count:
            if not self._fill():
                raise ProxyProtocolError("connection closed inside a body")
        data = bytes(self.buf[:count])
        del self.buf[:count]
        return data

    def read_some(self) -> bytes:
        """Whatever is buffered or arrives next; b"" at EOF."""
        if not self.buf and not self._fill():
            return b""
        data = bytes(self.buf)
        self.buf.clear()
        return data


def _parse_headers(head: bytes) -> tuple[str, dict[str, str]]:
    """The start line and the headers (names lower-cased; a repeated header keeps the last)."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProxyProtocolError(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _is_chunked(headers: dict[str, str]) -> bool:
    return "chunked" in headers.get("transfer-encoding", "").lower()


def _content_length(headers: dict[str, str]) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    try:
        length = int(raw)
    except ValueError as exc:
        raise ProxyProtocolError(f"bad Content-Length {raw!r}") from exc
    if length < 0:
        raise ProxyProtocolError(f"bad Content-Length {raw!r}")
    return length


def _read_chunked(stream: _Stream) -> bytes:
    """A whole chunked body with its framing (sizes, trailers), ready to forward as-is."""
    out = bytearray()
    while True:
        size_line = stream.read_line()
        out += size_line
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise ProxyProtocolError(f"bad chunk size {size_line!r}") from exc
        if size == 0:
            while True:  # trailers, then the blank line
                trailer = stream.read_line()
                out += trailer
                if trailer == b"\r\n":
                    return bytes(out)
        out += stream.read_exact(size + 2)


def _status_response(status: int, retry_after: float | None) -> bytes:
    """An empty-bodied error that keeps the connection alive, as a loaded server sends."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Length: 0"]
    if retry_after is not None:
        shown = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        lines.append(f"Retry-After: {shown}")
    lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _abort(sock: socket.socket) -> None:
    """Close with RST instead of FIN: what a crashed or overloaded server's kernel sends."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """A TCP proxy for one upstream HTTP server whose behaviour tests switch at run time."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.port = listen_port
        self._lock = threading.Lock()
        self._mode = _Mode()
        self._fail_next = 0
        self._fail_status = 503
        self._fail_retry_after: float | None = None
        self._requests_seen = 0
        self._requests_by_path: collections.Counter[str] = collections.Counter()
        # Every request read, as (method, path, body), for a test that classifies them itself;
        # bounded, so that a long benchmark behind the proxy does not grow without end.
        self._recorded: collections.deque[RecordedRequest] = collections.deque(maxlen=100_000)
        self._connections_accepted = 0
        self._websockets_opened = 0
        self._websockets_open = 0
        self._upgrades_refused = 0
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._want_listening = True
        self._listening_matches = threading.Condition(self._lock)
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._accept_thread: threading.Thread | None = None

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind (the port is known once this returns) and start accepting."""
        if self._accept_thread is not None:
            raise RuntimeError("FaultProxy already started")
        self._listener = self._bind()
        self.port = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"fault-proxy-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()

    def stop(self) -> None:
        """Wake and end every thread; idempotent. Threads are daemons, so a straggler never
        blocks interpreter exit, but joining here keeps one test's proxy out of the next."""
        self._stopping.set()
        with self._lock:
            self._listening_matches.notify_all()
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=2.0)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=2.0)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    # -- controls ----------------------------------------------------------------------------------

    def set_mode(
        self,
        mode: str,
        *,
        status: int = 503,
        retry_after: float | None = None,
        seconds: float = 0.0,
    ) -> None:
        """Switch behaviour; takes effect for the next request on every connection.

        Returns only once the listening socket matches the mode (closed for ``refuse``, open
        otherwise), so a test can rely on the very next connect being refused or accepted.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(sorted(MODES))})")
        if mode in ("http_status", "ws_refuse") and not 100 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP status")
        if mode in ("delay", "ws_drop") and seconds < 0:
            raise ValueError(f"{mode} seconds must be >= 0")
        with self._lock:
            self._mode = _Mode(name=mode, status=status, retry_after=retry_after, seconds=seconds)
            self._want_listening = mode != "refuse"
            doomed = list(self._sockets) if mode == "refuse" else []
            if self._accept_thread is not None:
                self._listening_matches.wait_for(
                    lambda: (
                        (self._listener is not None) == self._want_listening
                        or self._stopping.is_set()
                    ),
                    timeout=5.0,
                )
        for sock in doomed:  # a server that is down has no open connections either
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def drop_connections(self) -> None:
        """End every open connection now, with RST where the kernel still can (what a heal
        that loses them does); the threads serving them wake and leave."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)

    def fail_next(self, n: int, status: int = 503, retry_after: float | None = None) -> None:
        """Answer only the next `n` requests with `status`, then behave as the mode says."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._fail_next = n
            self._fail_status = status
            self._fail_retry_after = retry_after

    def reset_counters(self) -> None:
        with self._lock:
            self._requests_seen = 0
            self._requests_by_path.clear()
            self._recorded.clear()
            self._connections_accepted = 0
            self._websockets_opened = 0
            self._upgrades_refused = 0

    @property
    def requests_seen(self) -> int:
        """Complete requests read from clients, whatever the proxy then did with them."""
        with self._lock:
            return self._requests_seen

    @property
    def requests_by_path(self) -> collections.Counter[str]:
        """A snapshot: request path (no query string) -> how many requests."""
        with self._lock:
            return collections.Counter(self._requests_by_path)

    @property
    def recorded_requests(self) -> list[RecordedRequest]:
        """A snapshot: every request read so far (the last 100,000), in order."""
        with self._lock:
            return list(self._recorded)

    @property
    def connections_accepted(self) -> int:
        """Client connections accepted; shows whether a client reused its keep-alive socket."""
        with self._lock:
            return self._connections_accepted

    @property
    def websockets_opened(self) -> int:
        """Websocket tunnels opened (101 answers relayed to a client)."""
        with self._lock:
            return self._websockets_opened

    @property
    def websockets_open(self) -> int:
        """Websocket tunnels open right now (not reset by `reset_counters`)."""
        with self._lock:
            return self._websockets_open

    @property
    def upgrades_refused(self) -> int:
        """Websocket upgrade requests answered with an error in ``ws_refuse``."""
        with self._lock:
            return self._upgrades_refused

    # -- accepting ---------------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen_host, self.port))
        sock.listen(128)
        sock.settimeout(_ACCEPT_POLL)
        return sock

    def _accept_loop(self) -> None:
        """The only owner of the listening socket, so it is never closed under a blocked
        accept() in another thread (whose fd number could then be reused)."""
        try:
            while not self._stopping.is_set():
                self._reconcile_listener()
                listener = self._listener
                if listener is None:
                    self._stopping.wait(_ACCEPT_POLL)
                    continue
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    continue
                self._on_accept(client)
        finally:
            with self._lock:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                self._listening_matches.notify_all()

    def _reconcile_listener(self) -> None:
        with self._lock:
            if self._want_listening and self._listener is None:
                try:
                    self._listener = self._bind()
                except OSError:
                    return  # port briefly unavailable: retry on the next turn
            elif not self._want_listening and self._listener is not None:
                self._listener.close()
                self._listener = None
            self._listening_matches.notify_all()

    def _on_accept(self, client: socket.socket) -> None:
        client.settimeout(None)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._connections_accepted += 1
            mode = self._mode
        if mode.name == "reset":
            _abort(client)
            return
        thread = threading.Thread(
            target=self._serve_client, args=(client,), name="fault-proxy-client", daemon=True
        )
        with self._lock:
            self._sockets.add(client)
            self._threads.add(thread)
        thread.start()

    # -- one client connection ---------------------------------------------------------------------

    def _serve_client(self, client: socket.socket) -> None:
        stream = _Stream(client)
        upstream: _Upstream | None = None
        abort = False
        try:
            while not self._stopping.is_set():
                request = self._read_request(stream)
                if request is None:
                    return
                action, mode, fail_status, fail_retry_after = self._decide(request)
                while action == "hold":
                    if self._stopping.wait(_ACCEPT_POLL):
                        return
                    with self._lock:
                        held = self._mode.name == "hold"
                    if not held:
                        action, mode, fail_status, fail_retry_after = self._decide(request)
                if action in ("reset", "refuse"):
                    abort = True
                    return
                if action == "fail":
                    client.sendall(_status_response(fail_status, fail_retry_after))
                elif action == "ws_refuse":
                    with self._lock:
                        self._upgrades_refused += 1
                    client.sendall(_status_response(mode.status, mode.retry_after))
                elif action == "http_status":
                    client.sendall(_status_response(mode.status, mode.retry_after))
                elif action == "blackhole":
                    while stream.read_some():  # swallow whatever comes until the client leaves
                        pass
                    return
                else:
                    if action == "delay" and self._stopping.wait(mode.seconds):
                        return
                    if upstream is None:
                        upstream = _Upstream(self)
                    if not upstream.forward(request, client):
                        return
                    if upstream.switched:
                        abort = self._tunnel(client, stream, upstream)
                        return
                if request.close:
                    return
        except (OSError, ProxyProtocolError):
            return  # the client or upstream went away, or spoke something else: drop it
        finally:
            if upstream is not None:
                upstream.close()
            with self._lock:
                self._sockets.discard(client)
                self._threads.discard(threading.current_thread())
                refusing = self._mode.name in ("reset", "refuse")
            if abort or refusing:
                _abort(client)
            else:
                with contextlib.suppress(OSError):
                    client.close()

    def _read_request(self, stream: _Stream) -> _Request | None:
        head = stream.read_head()
        if head is None:
            return None
        start, headers = _parse_headers(head)
        parts = start.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise ProxyProtocolError(f"bad request line {start!r}")
        method, target, version = parts
        if _is_chunked(headers):
            body = _read_chunked(stream)
        else:
            body = stream.read_exact(_content_length(headers) or 0)
        connection = headers.get("connection", "").lower()
        close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        path = urlsplit(target).path or target
        upgrade = headers.get("upgrade", "").lower() == "websocket" and "upgrade" in connection
        with self._lock:
            self._requests_seen += 1
            self._requests_by_path[path] += 1
            self._recorded.append(RecordedRequest(method, path, body))
        return _Request(method=method, path=path, raw=head + body, close=close, upgrade=upgrade)

    def _decide(self, request: _Request) -> tuple[str, _Mode, int, float | None]:
        """What to do with this request: a pending fail_next wins over the mode."""
        with self._lock:
            mode = self._mode
            if self._fail_next > 0:
                self._fail_next -= 1
                return "fail", mode, self._fail_status, self._fail_retry_after
            action = mode.name
            if action.startswith("ws_"):  # websocket-only faults: plain HTTP passes
                action = "ws_refuse" if action == "ws_refuse" and request.upgrade else "pass"
            return action, mode, self._fail_status, self._fail_retry_after

    def _tunnel(self, client: socket.socket, stream: _Stream, upstream: _Upstream) -> bool:
        """Relay a switched (websocket) connection both ways until one side ends or a mode cuts
        it; True when it was cut (the caller then resets the client too). A select loop in
        this thread, woken every `_ACCEPT_POLL`, so a mode change reaches open tunnels."""
        assert upstream.sock is not None and upstream.stream is not None
        server, server_stream = upstream.sock, upstream.stream
        opened = time.monotonic()
        with self._lock:
            self._websockets_opened += 1
            self._websockets_open += 1
        # Bytes read past the heads belong to the tunnel (a first frame sent right away).
        pending = {client: bytes(stream.buf), server: bytes(server_stream.buf)}
        stream.buf.clear()
        server_stream.buf.clear()
        peer = {client: server, server: client}
        live = [client, server]
        went_silent = False
        try:
            while not self._stopping.is_set():
                with self._lock:
                    mode = self._mode
                silent = mode.name == "ws_silent"
                dropped = mode.name == "ws_drop" and time.monotonic() - opened >= mode.seconds
                # Frames were lost while silent: a tunnel never resumes, it is cut.
                if dropped or (went_silent and not silent):
                    _abort(server)
                    return True
                went_silent = went_silent or silent
                for source, data in list(pending.items()):
                    if data and not silent and peer[source] in live:
                        peer[source].sendall(data)
                    pending[source] = b""
                readable, _, _ = select.select(live, [], [], _ACCEPT_POLL)
                for source in readable:
                    data = source.recv(_RELAY_CHUNK)
                    if not data:
                        if source is client or not silent:
                            return False
                        live.remove(server)  # silent: the client must not hear of it
                        continue
                    pending[source] = data
            return False
        except OSError:
            return False
        finally:
            with self._lock:
                self._websockets_open -= 1

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)


class _Upstream:
    """The upstream connection of one client connection, opened lazily and reopened when the
    server closed it between requests (uvicorn drops idle keep-alive connections after 5 s)."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.sock: socket.socket | None = None
        self.stream: _Stream | None = None
        self.used = False  # at least one response came over this socket
        self.switched = False  # the server answered 101: the connection is a tunnel now

    def _connect(self) -> tuple[socket.socket, _Stream]:
        sock = socket.create_connection((self.proxy.upstream_host, self.proxy.upstream_port), 10.0)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.proxy._track(sock)
        self.sock, self.stream, self.used = sock, _Stream(sock), False
        return sock, self.stream

    def close(self) -> None:
        if self.sock is not None:
            self.proxy._untrack(self.sock)
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = self.stream = None

    def forward(self, request: _Request, client: socket.socket) -> bool:
        """Send the request, relay the response; False when the client connection must end."""
        for _ in range(2):
            reused = self.sock is not None and self.used
            try:
                if self.sock is None or self.stream is None:
                    sock, stream = self._connect()
                else:
                    sock, stream = self.sock, self.stream
                sock.sendall(request.raw)
                head = stream.read_head()
                if head is None:
                    raise ConnectionResetError("upstream closed before answering")
            except OSError:
                self.close()
                if reused:
                    continue  # a stale pooled connection: one fresh try
                client.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return False
            return self._relay(request, head, stream, client)
        return False

    def _relay(
        self, request: _Request, head: bytes, stream: _Stream, client: socket.socket
    ) -> bool:
        while True:
            start, headers = _parse_headers(head)
            try:
                status = int(start.split(" ")[1])
            except (IndexError, ValueError) as exc:
                raise ProxyProtocolError(f"bad status line {start!r}") from exc
            client.sendall(head)
            if 100 <= status < 200 and status != 101:
                head = stream.read_head() or b""
                if not head:
                    raise ProxyProtocolError("upstream closed after an interim response")
                continue
            break
        self.used = True
        if status == 101:
            self.switched = True
            return True
        upstream_close = "close" in headers.get("connection", "").lower()
        if request.method == "HEAD" or status in (204, 304):
            pass
        elif _is_chunked(headers):
            client.sendall(_read_chunked(stream))
        elif (length := _content_length(headers)) is not None:
            remaining = length
            while remaining:
                data = stream.read_exact(min(remaining, _RELAY_CHUNK))
                client.sendall(data)
                remaining -= len(data)
        else:  # delimited by close: relay to EOF, then the client connection ends too
            while data := stream.read_some():
                client.sendall(data)
            self.close()
            return False
        if upstream_close:
            self.close()
            return False
        return True
