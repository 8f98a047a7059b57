"""The fault-injection proxy (`examples/harness/fault_proxy.py`) does what fault tests rely on,
checked against a stdlib server on loopback.

Fault tests against the real Prefect server are only as trustworthy as the proxy in between: a
proxy that silently corrupted keep-alive framing or failed the wrong request would make the
agent look broken (or robust) for the wrong reason. So each mode is checked here against a tiny
`ThreadingHTTPServer`, with httpx as the client, as the agent uses it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.sync.connection import Connection
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve

from actors.edges.prefect_api import ApiError, PrefectApi, RetryPolicy
from examples.harness.fault_proxy import FaultProxy
from messages.wire.prefect import WorkQueue
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]  # a proxy and servers on loopback


class _Handler(BaseHTTPRequestHandler):
    """Echoes requests; a few paths answer like the Prefect API or use chunked framing."""

    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr lines."""

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/api/work_queues/name/x":
            self._reply(200, json.dumps({"id": "1", "name": "x"}).encode())
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._reply(200, json.dumps({"method": "GET", "path": self.path}).encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self._reply(
            201, json.dumps({"method": "POST", "path": self.path, "echo": body.decode()}).encode()
        )


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(*upstream) as running:
        yield running


@pytest.fixture
def client(proxy: FaultProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=5.0) as http:
        yield http


def test_pass_forwards_get_and_post_over_one_keep_alive_connection(
    proxy: FaultProxy, client: httpx.Client
) -> None:
    first = client.get("/a?x=1")
    posted = client.post("/b", content=b'{"k": "v"}', headers={"Content-Type": "application/json"})
    again = client.get("/a")

    assert first.status_code == 200
    assert first.json() == {"method": "GET", "path": "/a?x=1"}
    assert posted.status_code == 201
    assert posted.json() == {"method": "POST", "path": "/b", "echo": '{"k": "v"}'}
    assert again.json()["path"] == "/a"
    assert proxy.connections_accepted == 1
    assert proxy.requests_seen == 3


def test_a_large_post_body_and_chunked_response_keep_their_framing(
    proxy: FaultProxy, client: httpx.Client
) -> None:
    big = "x" * 300_000
    assert client.post("/big", content=big.encode()).json()["echo"] == big
    chunked = client.get("/chunked")
    assert chunked.text == "hello chunked world"
    assert client.get("/after").json()["path"] == "/after"  # framing intact after chunks
    assert proxy.connections_accepted == 1


def test_http_status_mode_answers_new_and_existing_connections_with_retry_after(
    proxy: FaultProxy, client: httpx.Client
) -> None:
    assert client.get("/warm").status_code == 200  # opens the keep-alive connection
    proxy.set_mode("http_status", status=503, retry_after=2)

    on_existing = client.get("/x")
    with httpx.Client(base_url=proxy.url, timeout=5.0) as fresh:
        on_new = fresh.post("/y", content=b"{}")

    for response in (on_existing, on_new):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.content == b""
    assert proxy.connections_accepted == 2

    proxy.set_mode("http_status", status=429, retry_after=None)
    limited = client.get("/x")
    assert limited.status_code == 429
    assert "retry-after" not in limited.headers


def test_fail_next_fails_exactly_n_requests_then_forwards(
    proxy: FaultProxy, client: httpx.Client
) -> None:
    proxy.fail_next(2)
    statuses = [client.get(f"/n{i}").status_code for i in range(4)]
    assert statuses == [503, 503, 200, 200]

    proxy.fail_next(1, status=429, retry_after=0.5)
    limited = client.get("/z")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "0.5")
    assert client.get("/z").status_code == 200


def test_reset_mode_breaks_new_and_existing_connections(
    proxy: FaultProxy, client: httpx.Client
) -> None:
    assert client.get("/warm").status_code == 200
    proxy.set_mode("reset")
    with pytest.raises(
        (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError, httpx.WriteError)
    ):
        client.get("/existing")
    with (
        httpx.Client(base_url=proxy.url, timeout=5.0) as fresh,
        pytest.raises(
            (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError, httpx.WriteError)
        ),
    ):
        fresh.get("/new")

    proxy.set_mode("pass")
    assert client.get("/back").status_code == 200


def test_refuse_mode_refuses_connects_and_pass_listens_again_on_the_same_port(
    proxy: FaultProxy, client: httpx.Client
) -> None:
    port = proxy.port
    assert client.get("/warm").status_code == 200
    proxy.set_mode("refuse")
    with pytest.raises(httpx.ConnectError):
        httpx.get(proxy.url + "/new", timeout=2.0)
    with pytest.raises(httpx.TransportError):  # the open connection was dropped too
        client.get("/existing")

    proxy.set_mode("pass")
    assert proxy.port == port
    assert client.get("/back").status_code == 200


def test_delay_mode_makes_a_short_timeout_client_time_out(proxy: FaultProxy) -> None:
    proxy.set_mode("delay", seconds=1.0)
    with httpx.Client(base_url=proxy.url, timeout=0.2) as impatient:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            impatient.get("/slow")
        assert time.monotonic() - started < 0.9
    with httpx.Client(base_url=proxy.url, timeout=3.0) as patient:
        proxy.set_mode("delay", seconds=0.1)
        assert patient.get("/slow").status_code == 200


def test_blackhole_mode_never_answers(proxy: FaultProxy) -> None:
    proxy.set_mode("blackhole")
    with (
        httpx.Client(base_url=proxy.url, timeout=0.2) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.post("/void", content=b"{}")
    assert proxy.requests_by_path["/void"] == 1


def test_hold_mode_lets_held_requests_through_late_when_it_heals(
    proxy: FaultProxy, client: httpx.Client
) -> None:
    proxy.set_mode("hold")
    answers: list[httpx.Response] = []
    waiting = threading.Thread(target=lambda: answers.append(client.post("/late", content=b"1")))
    waiting.start()
    deadline = time.monotonic() + 5
    while proxy.requests_by_path["/late"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # the polling interval of this wait
    waiting.join(timeout=0.3)
    assert waiting.is_alive() and not answers  # held, not answered
    proxy.set_mode("pass")
    waiting.join(timeout=5)
    assert [a.json()["echo"] for a in answers] == ["1"]


def test_drop_connections_ends_every_open_connection(proxy: FaultProxy) -> None:
    proxy.set_mode("blackhole")
    with httpx.Client(base_url=proxy.url, timeout=5.0) as waiting:
        failures: list[Exception] = []

        def call() -> None:
            try:
                waiting.get("/hang")
            except httpx.HTTPError as exc:
                failures.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 5
        while proxy.requests_by_path["/hang"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the polling interval of this wait
        proxy.drop_connections()
        caller.join(timeout=2)
        assert not caller.is_alive() and failures, "the held request did not end"


def test_requests_by_path_counts_every_request_whatever_the_proxy_did(
    proxy: FaultProxy, client: httpx.Client
) -> None:
    client.get("/p?page=1")
    client.get("/p?page=2")
    proxy.fail_next(1)
    client.post("/q", content=b"{}")
    client.get("/r")

    assert proxy.requests_by_path == {"/p": 2, "/q": 1, "/r": 1}
    assert proxy.requests_seen == 4
    proxy.reset_counters()
    assert proxy.requests_seen == 0
    assert not proxy.requests_by_path


def test_unknown_mode_is_rejected(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        proxy.set_mode("chaos")


def test_stop_ends_every_proxy_thread_even_with_requests_held(upstream: tuple[str, int]) -> None:
    before = set(threading.enumerate())
    proxy = FaultProxy(*upstream)
    proxy.start()
    proxy.set_mode("blackhole")
    with httpx.Client(base_url=proxy.url, timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
        http.get("/held")
    proxy.stop()
    leftover = [t for t in set(threading.enumerate()) - before if t.name.startswith("fault-proxy")]
    assert leftover == []


def _api(proxy: FaultProxy) -> PrefectApi:
    return PrefectApi(
        proxy.url + "/api", retry=RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
    )


def test_prefect_api_retries_through_two_503s(proxy: FaultProxy) -> None:
    api = _api(proxy)
    try:
        proxy.fail_next(2)
        assert api.read_work_queue_by_name("x") == WorkQueue(id="1", name="x")
    finally:
        api.close()
    assert proxy.requests_by_path["/api/work_queues/name/x"] == 3


def test_prefect_api_gives_up_on_a_503_storm_with_an_api_error(proxy: FaultProxy) -> None:
    proxy.set_mode("http_status", status=503, retry_after=0.01)
    api = _api(proxy)
    try:
        with pytest.raises(ApiError, match="503"):
            api.read_work_queue_by_name("x")
    finally:
        api.close()
    assert proxy.requests_by_path["/api/work_queues/name/x"] == 4


# -- websockets ------------------------------------------------------------------------------------
# The agent's event stream is a websocket through the same proxy: these run against a stdlib-free
# but real websocket server (the `websockets` package's own), which echoes each message and
# answers plain HTTP requests too, so each test sees that only websockets are hurt.


def _ws_handler(connection: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        for message in connection:
            connection.send(message)


def _plain_http(connection: ServerConnection, request: Request) -> Response | None:
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return connection.respond(200, "plain\n")
    return None


@pytest.fixture(scope="module")
def ws_upstream() -> Iterator[tuple[str, int]]:
    server = ws_serve(_ws_handler, "127.0.0.1", 0, process_request=_plain_http)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", server.socket.getsockname()[1]
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def ws_proxy(ws_upstream: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(*ws_upstream) as running:
        yield running


def _ws(proxy: FaultProxy) -> ClientConnection:
    return ws_connect(f"ws://127.0.0.1:{proxy.port}/events/out", open_timeout=3, close_timeout=1)


def _echoes(ws: Connection, text: str = "hello") -> bool:
    ws.send(text)
    return ws.recv(timeout=3) == text


def _plain_passes(proxy: FaultProxy) -> bool:
    return httpx.get(proxy.url + "/api/health", timeout=3).text == "plain\n"


def test_websockets_tunnel_both_ways_in_pass_mode(ws_proxy: FaultProxy) -> None:
    with _ws(ws_proxy) as ws:
        assert _echoes(ws, "one") and _echoes(ws, "two")
        assert ws.ping().wait(3)  # control frames pass too
        assert ws_proxy.websockets_open == 1
    assert ws_proxy.websockets_opened == 1
    wait_for(lambda: ws_proxy.websockets_open == 0, 3, "the tunnel to close")
    assert _plain_passes(ws_proxy)


def test_ws_refuse_answers_upgrades_with_the_status_and_lets_plain_http_through(
    ws_proxy: FaultProxy,
) -> None:
    with _ws(ws_proxy) as already_open:
        ws_proxy.set_mode("ws_refuse", status=502)
        with pytest.raises(InvalidStatus) as refused:
            _ws(ws_proxy)
        assert refused.value.response.status_code == 502
        assert _plain_passes(ws_proxy)
        assert _echoes(already_open)  # an open tunnel is left alone
    assert ws_proxy.upgrades_refused == 1

    ws_proxy.set_mode("pass")
    with _ws(ws_proxy) as again:
        assert _echoes(again)


def test_ws_drop_cuts_an_open_tunnel_at_once_and_new_ones_when_they_are_that_old(
    ws_proxy: FaultProxy,
) -> None:
    with _ws(ws_proxy) as established:
        assert _echoes(established)
        ws_proxy.set_mode("ws_drop", seconds=0.5)
        cut = time.monotonic()
        with pytest.raises(ConnectionClosed):
            established.recv(timeout=3)
        assert time.monotonic() - cut < 1.0  # older than 0.5 s: cut at once

    assert _plain_passes(ws_proxy)
    with _ws(ws_proxy) as fresh:
        opened = time.monotonic()
        assert _echoes(fresh)  # it lives for its 0.5 s
        with pytest.raises(ConnectionClosed):
            fresh.recv(timeout=3)
        assert 0.4 <= time.monotonic() - opened < 2.0

    ws_proxy.set_mode("pass")
    with _ws(ws_proxy) as back:
        assert _echoes(back)


def test_ws_silent_accepts_upgrades_then_forwards_nothing_until_it_ends(
    ws_proxy: FaultProxy,
) -> None:
    ws_proxy.set_mode("ws_silent")
    with _ws(ws_proxy) as silent:  # the 101 arrives: the socket opens
        silent.send("anyone?")
        with pytest.raises(TimeoutError):
            silent.recv(timeout=0.5)
        assert not silent.ping().wait(0.5)  # no pong either
        assert _plain_passes(ws_proxy)

        ws_proxy.set_mode("pass")  # frames were lost: the silent tunnel is cut, never resumed
        with pytest.raises(ConnectionClosed):
            silent.recv(timeout=3)
    with _ws(ws_proxy) as fresh:
        assert _echoes(fresh)


def test_refuse_mode_drops_open_tunnels_too(ws_proxy: FaultProxy) -> None:
    with _ws(ws_proxy) as established:
        ws_proxy.set_mode("refuse")
        with pytest.raises(ConnectionClosed):
            established.recv(timeout=3)
