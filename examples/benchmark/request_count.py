"""A counting TCP proxy: how many HTTP requests one contender sends the server, and which.

Idle cost is counted at the server's door, per contender: each contender talks to the server
through a proxy of its own, so nothing of the benchmark's own requests (or of another
contender's) is in its count, and no agent's own account of itself is trusted.

Bytes are relayed unchanged in both directions (a websocket upgrade too: after it the
client's frames are masked, so they never look like a request line). A request is counted
where its request line (`METHOD /path HTTP/1.x`) appears in the client's bytes; JSON bodies
hold no raw CRLF, so a body never passes for one. Stdlib only: a thread accepts, two threads
relay each connection.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import Counter
from urllib.parse import urlsplit

_REQUEST_LINE = re.compile(
    rb"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (/[^ \r\n]*) HTTP/1\.[01]\r\n"
)
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BENCH_NAME = re.compile(r"bench-[0-9a-f]{8}-[^/]*")  # the benchmark's pools and queues
_TAIL = 4096  # bytes kept between reads, so a request line split across two is still seen
_CHUNK = 64 * 1024


def endpoint(method: str, path: str, api_prefix: str = "/api") -> str:
    """`POST /work_queues/{id}/get_runs`: the query string dropped, ids and the
    benchmark's pool and queue names folded."""
    path = path.split("?", 1)[0]
    if path.startswith(api_prefix + "/"):
        path = path[len(api_prefix) :]
    return f"{method} {_BENCH_NAME.sub('{name}', _ID.sub('{id}', path))}"


class RequestCounter:
    """Listens on a loopback port and relays every connection to `upstream_api`'s host.

    `api_url` is what a contender is given instead of the server's; `snapshot()` the counts
    so far (a window is the difference of two)."""

    def __init__(self, upstream_api: str) -> None:
        parts = urlsplit(upstream_api)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._prefix = parts.path.rstrip("/")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        port = self._listener.getsockname()[1]
        self.api_url = f"http://127.0.0.1:{port}{self._prefix}"
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._bytes = [0, 0]  # client -> server, server -> client
        self._connections = 0
        self._sockets: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="request-count", daemon=True)
        self._thread.start()

    def snapshot(self) -> tuple[Counter[str], int, int, int]:
        """(requests by endpoint, bytes sent to the server, bytes back, connections opened)."""
        with self._lock:
            return Counter(self._counts), self._bytes[0], self._bytes[1], self._connections

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5.0)
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream, timeout=10.0)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._connections += 1
                self._sockets += [client, server]
            done = threading.Semaphore(0)  # one release per direction finished
            for args in ((client, server, True, done), (server, client, False, done)):
                threading.Thread(target=self._relay, args=args, daemon=True).start()
            threading.Thread(target=self._close, args=(client, server, done), daemon=True).start()

    def _close(
        self, client: socket.socket, server: socket.socket, done: threading.Semaphore
    ) -> None:
        """Both directions ended: the pair's sockets are closed and forgotten."""
        done.acquire()
        done.acquire()
        with self._lock:
            self._sockets = [s for s in self._sockets if s is not client and s is not server]
        client.close()
        server.close()

    def _relay(
        self,
        source: socket.socket,
        target: socket.socket,
        upstream: bool,
        done: threading.Semaphore,
    ) -> None:
        tail = b""
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                target.sendall(data)
                found: list[str] = []
                if upstream:
                    window = tail + data
                    for match in _REQUEST_LINE.finditer(window):
                        if match.end() > len(tail):  # not counted with the bytes before
                            method, path = (g.decode("latin-1") for g in match.groups())
                            found.append(endpoint(method, path, self._prefix))
                    tail = window[-_TAIL:]
                with self._lock:
                    self._bytes[0 if upstream else 1] += len(data)
                    self._counts.update(found)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)
            done.release()
