"""The EventListener in a whole agent, against the fake API and a stand-in event stream.

The stand-in is a real websocket server in this process (`websockets.sync.server`) at the fake
API's `/api/events/out`, speaking the servers' protocol (the `prefect` subprotocol, auth, one
filter message, then events shaped as the 2.20 and 3.x servers send them). It stands in for
the faults a real server cannot be made to produce on cue: refusing the upgrade, dropping the
socket mid-way, going silent (a socket that answers no ping), sending an event twice. The
tests against real servers are `tests/integration/test_event_stream.py`.

Each test judges what a user sees: the run proposed Pending (once), the process killed and
the run Cancelled, the polls the server received, the tree, `/healthz`'s events line, and the
log lines of each switch. Nothing waits by sleeping; every wait is for a condition.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pykka
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve
from websockets.typing import Subprotocol

from actors import AgentHandle, StatusServer, settings_from_env, start_agent
from actors.runtime.clock import Clock
from actors.status.text import events_line
from actors.tree.event_listener import EventListener
from actors.tree.queue_watcher import QueueWatcher
from messages.internal.lifecycle import Describe
from messages.user.tree import ActorNode
from messages.wire.prefect import CANCELLED, CANCELLING, PENDING, WorkQueue
from tests.actors.test_actors_without_server import (
    alive,
    node,
    read_pid,
    run_command,
    started_pid,
    wait_until,
)
from tests.support.fake_api import FakePrefectApi

EVENTS_LOGGER = "prefect_actor_agent.events"


# -- the stand-in stream ---------------------------------------------------------------------------


def flow_run_event(run_id: str, queue_id: str, state_name: str, state_type: str) -> str:
    """A state-change event as the servers send it (shape captured from 3.9)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    event = {
        "occurred": stamp,
        "event": f"prefect.flow-run.{state_name}",
        "resource": {
            "prefect.resource.id": f"prefect.flow-run.{run_id}",
            "prefect.resource.name": "fake-run",
            "prefect.state-name": state_name,
            "prefect.state-type": state_type,
            "prefect.state-message": "",
        },
        "related": [
            {"prefect.resource.id": "prefect.flow.f", "prefect.resource.role": "flow"},
            {
                "prefect.resource.id": f"prefect.work-queue.{queue_id}",
                "prefect.resource.role": "work-queue",
                "prefect.resource.name": "q",
            },
        ],
        "payload": {"validated_state": {"type": state_type, "name": state_name}},
        "id": f"{run_id}-{state_name}",
        "follows": None,
    }
    return json.dumps({"type": "event", "event": event})


class StandInStream:
    """The server side of the event stream, with faults on cue (see the module docstring)."""

    def __init__(self) -> None:
        self.refusing = False
        self.refused = 0  # upgrades refused
        self.handshakes = 0  # upgrades accepted
        self.filters: list[dict[str, Any]] = []  # every filter message received, in order
        self.tokens: list[str | None] = []  # the token of every auth message
        self._open: list[ServerConnection] = []  # subscribed connections
        self._changed = threading.Condition()
        self.server = serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=[Subprotocol("prefect")],
            process_request=self._process_request,
        )
        self.port = self.server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        if request.path != "/api/events/out":
            return connection.respond(404, "not found\n")
        if self.refusing:
            self.refused += 1
            return connection.respond(503, "no websockets here\n")
        self.handshakes += 1
        return None

    def _handle(self, connection: ServerConnection) -> None:
        try:
            auth = json.loads(connection.recv(timeout=5))
            if auth.get("type") != "auth":
                connection.close(1008, "Expected 'auth' message")
                return
            self.tokens.append(auth.get("token"))
            connection.send('{"type": "auth_success"}')
            subscribe = json.loads(connection.recv(timeout=5))
            with self._changed:
                self.filters.append(subscribe)
                self._open.append(connection)
                self._changed.notify_all()
            for _ in connection:  # the agent sends nothing more: wait for the end
                pass
        except (ConnectionClosed, TimeoutError, OSError):
            pass
        finally:
            with self._changed:
                if connection in self._open:
                    self._open.remove(connection)
                self._changed.notify_all()

    def subscribed_queue_ids(self) -> set[str]:
        """The queue ids of the latest subscription."""
        with self._changed:
            if not self.filters:
                return set()
            ids = self.filters[-1]["filter"]["any_resource"]["id"]
        return {queue_id.removeprefix("prefect.work-queue.") for queue_id in ids}

    def open_count(self) -> int:
        with self._changed:
            return len(self._open)

    def send(self, message: str) -> None:
        """To every subscribed connection."""
        with self._changed:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(ConnectionClosed):
                connection.send(message)

    def drop(self) -> None:
        """Cut every connection mid-way (no close frame: the TCP connection is gone)."""
        with self._changed:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.socket.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.drop()
        self.server.shutdown()
        self._thread.join(timeout=5)


class SilentStream:
    """A stream that opens (handshake, auth answered) and then says nothing and answers
    nothing, pings included, while its socket stays open: a half-dead network path."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                self.connections.append(client)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += client.recv(4096)
                key = next(
                    line.split(b":", 1)[1].strip()
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")
                )
                accept = base64.b64encode(
                    hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()  # noqa: S324 - the protocol's own hash
                )
                client.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n"
                    b"Sec-WebSocket-Protocol: prefect\r\n\r\n"
                )
                success = b'{"type": "auth_success"}'
                client.sendall(bytes([0x81, len(success)]) + success)  # one unmasked text frame
                # From here on nothing is read or written: pings go unanswered.

    def stop(self) -> None:
        self.listener.close()
        for client in self.connections:
            with contextlib.suppress(OSError):
                client.close()


# -- the agent -------------------------------------------------------------------------------------


def event_listener_node(handle: AgentHandle) -> ActorNode:
    found = node(handle.tree(), "EventListener")
    assert found is not None, "the tree has no EventListener"
    return found


def mode(handle: AgentHandle) -> str:
    return event_listener_node(handle).state


def watcher(queue: str) -> pykka.ActorRef[Any]:
    for ref in pykka.ActorRegistry.get_by_class(QueueWatcher):
        with contextlib.suppress(pykka.ActorDeadError):
            if ref.proxy().queue_name.get(timeout=2) == queue:
                return ref
    raise AssertionError(f"no watcher of queue {queue!r}")


def _quiet(queues: tuple[str, ...]) -> bool:
    for ref in pykka.ActorRegistry.get_by_class(EventListener):
        ref.ask(Describe(), timeout=5)  # what it has been told is handled, its tells sent
    for queue in queues:
        proxy = watcher(queue).proxy()
        if proxy.poll_under_way.get(timeout=5) or proxy.woken.get(timeout=5):
            return False
    return True


def settle(*queues: str) -> None:
    """Wait until what was told has been acted on: the listener's tells handled by the
    watchers, and no poll of these queues under way or still owed to a wake."""
    wait_until(lambda: _quiet(queues), 5, f"the polls of {queues} to be over")


def polls(fake: FakePrefectApi, queue: WorkQueue, since: float) -> int:
    """The polls for due runs of `queue` the server received after `since` (monotonic)."""
    return sum(
        1
        for call in fake.calls()
        if call.at > since
        and (
            (call.method == "scheduled_runs" and call.params.get("queue_name") == queue.name)
            or (call.method == "get_runs" and call.params.get("queue_id") == queue.id)
        )
    )


def counted(handle: AgentHandle, metric: str) -> float:
    return handle.metrics.registry.get_sample_value(f"prefect_actor_agent_{metric}_total") or 0.0


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == EVENTS_LOGGER and text in record.getMessage()
    ]


Start = Callable[..., AgentHandle]


@pytest.fixture
def stream() -> Iterator[StandInStream]:
    stand_in = StandInStream()
    yield stand_in
    stand_in.stop()


@pytest.fixture
def fake(stream: StandInStream) -> Iterator[FakePrefectApi]:
    api = FakePrefectApi(version="3.9.1", api_url=stream.api_url)
    yield api
    api.release_all()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def start(runs_dir: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Start]:
    """Start an agent against a fake API on a real clock (polls 60 s apart: within a test,
    only the first poll and those an event causes happen). Afterwards every agent is stopped,
    every run process killed, and no event stream thread is left running."""
    caplog.set_level(logging.DEBUG, logger=EVENTS_LOGGER)
    before = {ref.actor_urn for ref in pykka.ActorRegistry.get_all()}
    handles: list[AgentHandle] = []

    def launch(api: FakePrefectApi, **options: Any) -> AgentHandle:
        options.setdefault("work_queues", ("default",))
        options.setdefault("query_interval", 60.0)
        options.setdefault("cancel_poll_interval", 60.0)
        options.setdefault("stream_cancel_poll_interval", 60.0)
        settings = settings_from_env({}, api_url=api.api_url, **options)
        handle = start_agent(settings, api=api, clock=Clock())
        handles.append(handle)
        return handle

    yield launch
    for handle in handles:
        handle.stop(grace_seconds=1.0, timeout=10.0)
    for marker in runs_dir.glob("*.started"):
        pid = read_pid(marker)
        if pid is not None and pid > 1:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    for ref in pykka.ActorRegistry.get_all():
        if ref.actor_urn not in before:
            ref.stop(block=False)
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("event-stream-")],
        5,
        "every event stream thread to end once its agent stopped",
    )


def connected(handle: AgentHandle, stream: StandInStream, *queue_ids: str) -> None:
    wait_until(lambda: mode(handle) == "stream", 5, "the event stream to connect")
    wait_until(
        lambda: stream.subscribed_queue_ids() == set(queue_ids),
        5,
        f"a subscription to the queues {queue_ids}",
    )


# -- waking ----------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_scheduled_event_wakes_its_queues_watcher_once(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    default, other = fake.add_queue("default"), fake.add_queue("other")
    handle = start(fake, work_queues=("default", "other"))
    connected(handle, stream, default.id, other.id)
    settle("default", "other")  # the polls at start, and those the session's opening woke
    wakes, received = counted(handle, "event_wakes"), counted(handle, "events_received")
    before = time.monotonic()

    run = fake.add_run(fake.add_deployment(["true"]), queue="default")
    announced = flow_run_event(run.id, default.id, "Scheduled", "SCHEDULED")
    stream.send(announced)
    stream.send(announced)  # the same event twice
    wait_until(lambda: fake.proposals(run.id, PENDING), 5, "the run's Pending proposal")
    wait_until(
        lambda: counted(handle, "events_received") == received + 2, 5, "both events to arrive"
    )
    settle("default", "other")

    assert len(fake.proposals(run.id, PENDING)) == 1
    assert polls(fake, default, before) == 1, "one poll of the announced run's queue"
    assert polls(fake, other, before) == 0, "no poll of a queue whose runs were not announced"
    assert counted(handle, "event_wakes") == wakes + 1


@pytest.mark.timeout(30)
def test_a_burst_of_events_costs_at_most_one_poll_more(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    default = fake.add_queue("default")
    handle = start(fake)
    connected(handle, stream, default.id)
    settle("default")
    received = counted(handle, "events_received")
    before = time.monotonic()
    deployment = fake.add_deployment(["true"])
    runs = [fake.add_run(deployment, queue="default") for _ in range(5)]
    hang = fake.hang("get_runs", "scheduled_runs")  # the woken poll waits: the others pile up
    for run in runs:
        stream.send(flow_run_event(run.id, default.id, "Scheduled", "SCHEDULED"))
    wait_until(fake.blocked, 5, "the woken poll to reach the server")
    wait_until(
        lambda: counted(handle, "events_received") == received + 5, 5, "every event to arrive"
    )
    hang.release()
    wait_until(
        lambda: all(fake.proposals(run.id, PENDING) for run in runs), 5, "every run's Pending"
    )
    settle("default")
    assert polls(fake, default, before) == 2, "the woken poll, and one for what came during it"


# -- cancelling ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_cancelling_event_for_a_held_run_reaches_its_supervisor_at_once(
    fake: FakePrefectApi, stream: StandInStream, start: Start, runs_dir: Path
) -> None:
    default = fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)), queue="default")
    handle = start(fake)
    pid = started_pid(runs_dir, run.id)
    connected(handle, stream, default.id)
    # holding a run, the safety net keeps its own pace (four times slower holding none)
    wait_until(lambda: cancel_pace(handle) == "60s (the event stream is healthy)", 5, "pace")

    fake.request_cancel(run.id)  # the CancelWatcher's next poll is a minute away
    asked = time.monotonic()
    stream.send(flow_run_event(run.id, default.id, "Cancelling", "CANCELLING"))
    wait_until(lambda: not alive(pid), 5, "the run's process to be killed")
    killed = time.monotonic() - asked
    wait_until(lambda: fake.state(run.id).type == CANCELLED, 5, "the run to be Cancelled")
    assert killed < 1.0, f"killed {killed:.2f}s after the event"


@pytest.mark.timeout(30)
def test_a_cancelling_event_for_a_run_not_held_or_of_a_queue_not_served_is_ignored(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    default = fake.add_queue("default")
    handle = start(fake)
    connected(handle, stream, default.id)
    # (The CancelWatcher's next poll, which would find these runs, is a minute away.)
    # Another agent's run in this queue, and a run of a queue this agent does not serve.
    theirs = fake.add_run(None, queue="default", state_type=PENDING, infrastructure_pid="h:42")
    fake.request_cancel(theirs.id)
    stranger = fake.add_run(None, queue="elsewhere")
    fake.request_cancel(stranger.id)
    received = counted(handle, "events_received")
    stream.send(flow_run_event(theirs.id, default.id, "Cancelling", "CANCELLING"))
    stream.send(flow_run_event(stranger.id, "not-a-served-queue", "Cancelling", "CANCELLING"))
    wait_until(
        lambda: counted(handle, "events_received") == received + 2, 5, "both events to arrive"
    )
    settle("default")

    for run in (theirs, stranger):
        assert not fake.calls(run_id=run.id), "the agent acted on a run it does not hold"
        assert fake.state(run.id).type == CANCELLING
    dispatcher = node(handle.tree(), "Dispatcher")
    assert dispatcher is not None and not dispatcher.children


@pytest.mark.timeout(30)
def test_the_api_key_goes_in_the_auth_message_and_never_in_the_log(
    fake: FakePrefectApi, stream: StandInStream, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the websockets library's included
    key = "pnu_event-stream-key-never-logged"
    default = fake.add_queue("default")
    handle = start(fake, api_key=key)
    connected(handle, stream, default.id)
    assert stream.tokens == [key]
    agents_log = [r for r in caplog.records if not r.name.startswith("websockets.server")]
    assert agents_log, "nothing was logged"
    assert not [r.getMessage() for r in agents_log if key in r.getMessage()]
    assert key not in msgspec.json.encode(handle.tree()).decode()


# -- falling back and coming back ------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_a_dropped_stream_falls_back_to_polling_and_returns_with_one_log_line_each_way(
    fake: FakePrefectApi,
    stream: StandInStream,
    start: Start,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    default = fake.add_queue("default")
    handle = start(fake, cancel_poll_interval=50.0)
    status = StatusServer(handle).start()
    request.addfinalizer(status.stop)
    connected(handle, stream, default.id)
    # holding no run, the safety net is four times slower than while holding runs
    wait_until(
        lambda: cancel_pace(handle) == "240s (the event stream is healthy, no run held)", 5, "slow"
    )
    assert healthz_events(status) == "events: stream"

    stream.refusing = True  # the reconnections fail for a while
    cancel_polls = len(fake.calls("filter_flow_runs"))
    stream.drop()
    wait_until(lambda: mode(handle) == "polling", 5, "the fall back to polling")
    assert healthz_events(status).startswith("events: polling (")
    # the polling pace of an agent that holds no run: the safety net's (no process to stop)
    wait_until(lambda: cancel_pace(handle) == "240s (no run held)", 5, "the polling pace")
    wait_until(
        lambda: len(fake.calls("filter_flow_runs")) > cancel_polls, 5, "a cancel poll at once"
    )
    wait_until(lambda: stream.refused >= 1, 5, "a reconnection to be refused")
    stream.refusing = False
    wait_until(lambda: mode(handle) == "stream", 10, "the stream to come back")
    assert healthz_events(status) == "events: stream"
    assert counted(handle, "event_stream_connects") == 2  # at start, and on return

    # One notice each way for the user, however many reconnections failed between.
    assert len(messages(caplog, "event stream unavailable")) == 1
    assert len(messages(caplog, "event stream connected")) == 2
    wait_until(lambda: len(stream.filters) == 2, 5, "the stand-in to hear the new subscription")
    run = fake.add_run(fake.add_deployment(["true"]), queue="default")
    stream.send(flow_run_event(run.id, default.id, "Scheduled", "SCHEDULED"))
    wait_until(lambda: fake.proposals(run.id, PENDING), 5, "the run's Pending proposal")


def healthz_events(status: StatusServer) -> str:
    """The events line of /healthz (its second), as a monitor reads it."""
    body = httpx.get(f"http://{status.host}:{status.port}/healthz", timeout=5).text
    return body.splitlines()[1]


def cancel_pace(handle: AgentHandle) -> str | None:
    cancels = node(handle.tree(), "CancelWatcher")
    return cancels.detail.get("every") if cancels is not None else None


@pytest.mark.timeout(30)
def test_a_silent_socket_is_given_up_within_two_ping_intervals(start: Start) -> None:
    silent = SilentStream()
    try:
        fake = FakePrefectApi(version="3.9.1", api_url=silent.api_url)
        fake.add_queue("default")
        handle = start(fake, event_ping_seconds=0.5)
        wait_until(lambda: counted(handle, "event_stream_connects"), 5, "the stream to open")
        opened = time.monotonic()
        wait_until(lambda: mode(handle) == "polling", 5, "the fall back")
        given_up = time.monotonic() - opened
        assert given_up < 2 * 0.5 + 0.3, f"a silent socket was given up after {given_up:.2f}s"
        assert "answered no ping" in event_listener_node(handle).detail["reason"]
    finally:
        silent.stop()


@pytest.mark.timeout(30)
def test_a_queue_matched_later_is_subscribed_to_without_a_switch(
    fake: FakePrefectApi, stream: StandInStream, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A new subscription opens a new session; the mode stays `stream` throughout, which only
    the notices show (the agent counts sessions, not switches of mode)."""
    first = fake.add_queue("etl-a")
    handle = start(fake, work_queues=(), queue_prefixes=("etl-",), rematch_interval=0.2)
    connected(handle, stream, first.id)
    second = fake.add_queue("etl-b")
    wait_until(
        lambda: stream.subscribed_queue_ids() == {first.id, second.id},
        5,
        "a subscription to both queues",
    )
    wait_until(lambda: stream.open_count() == 1, 5, "the first session to be closed")
    assert mode(handle) == "stream"
    assert not messages(caplog, "event stream unavailable")
    assert len(messages(caplog, "event stream connected")) == 1


@pytest.mark.timeout(30)
def test_events_off_never_opens_the_stream(start: Start) -> None:
    off, auto = StandInStream(), StandInStream()
    try:
        off_api = FakePrefectApi(version="3.9.1", api_url=off.api_url)
        auto_api = FakePrefectApi(version="3.9.1", api_url=auto.api_url)
        for api in (off_api, auto_api):
            api.add_queue("default")
        off_agent = start(off_api, events="off")
        auto_agent = start(auto_api)
        wait_until(lambda: mode(auto_agent) == "stream", 5, "the other agent's stream to open")
        assert off.handshakes == 0, "an agent with --events off opened the event stream"
        assert mode(off_agent) == "off"
        assert events_line(off_agent.tree()) == "events: off"
    finally:
        off.stop()
        auto.stop()
