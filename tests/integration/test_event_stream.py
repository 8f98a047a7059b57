"""The event stream (issue 17) against real servers: Prefect 3, and Prefect 2.20 with
`PREFECT_EXPERIMENTAL_EVENTS` on (examples/harness/events_server.py).

With the query interval at 60 s, a run created after the watcher's first poll can be taken
within seconds only because the server announced it, and with the cancel poll at 60 s too, a
prompt kill can only come from the announced Cancelling. The stream's faults (an upgrade
refused, a socket dropped mid-way, a socket gone silent) come from the fault proxy
(examples/harness/fault_proxy.py): a real server cannot produce them while it still answers REST,
which is exactly the case the agent must survive by polling. A 2.20 server without events is
the suite's own 2.20 server.

Runs start the marker command (tests/flows/marker_command.py: no engine, starts in ms), so the
times measured are the agent's and the server's, not Prefect's import time.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from examples.harness.agent_logs import lines_with
from examples.harness.agent_status import free_port
from examples.harness.fault_proxy import FaultProxy
from tests.conftest import AgentFactory, AgentUnderTest
from tests.integration.helpers import (
    FLOWS,
    MARKER_COMMAND,
    command_markers,
    deploy_marker_command,
    process_gone,
    state_type,
)
from tests.support.prefect_objects import create_run, set_run_state, wait_for
from tests.support.served import BaseServed

pytestmark = pytest.mark.integration

POOL = "event-stream-tests"  # the 3.x process pool these tests deploy to
BOUND = 5.0  # seconds from "run created" to Pending, and from Cancelling to the process gone
SLOW_POLL = 60.0  # the query and cancel intervals while the stream is expected to do the work
CONNECTED = "event stream connected"
UNAVAILABLE = "event stream unavailable"
CONNECTS = "prefect_actor_agent_event_stream_connects_total"  # sessions opened


class Served(BaseServed):
    """A server, a queue of this test's own on it, and how to deploy the marker command."""

    pool = POOL

    def deploy_marker(self, markers: Path, seconds: str = "300") -> str:
        """A deployment of the queue whose runs start the marker command, sleeping `seconds`."""
        if self.version != "3.x":
            return deploy_marker_command(self.api_url, self.queue, markers, seconds)
        return self.deploy_on_pool(
            "marker",
            name=f"marker-{self.queue}",
            entrypoint="hello.py:hello",
            directory=FLOWS,
            command=shlex.join([*MARKER_COMMAND, seconds]),
            env={"MARKER_DIR": str(markers)},
        )


@pytest.fixture(params=["3.x", "2.20-events"])
def served(request: pytest.FixtureRequest) -> Served:
    """A server that streams events (conftest starts each in the background at collection)."""
    if request.param == "3.x":
        return Served.on_3x(request.getfixturevalue("prefect3_server"))
    return Served("2.20-events", request.getfixturevalue("prefect_events_server").api_url)


# -- observing the agent ---------------------------------------------------------------------------


def _tree(agent: AgentUnderTest, status_port: int | None) -> dict[str, Any]:
    handle = getattr(agent, "handle", None)  # a library agent: its tree in this process
    if handle is not None:
        return dict(msgspec.to_builtins(handle.tree()))
    assert status_port is not None
    try:
        answer = httpx.get(f"http://127.0.0.1:{status_port}/tree", timeout=5)
    except httpx.TransportError:  # the launcher is not serving its status port yet
        return {"children": []}
    tree: dict[str, Any] = answer.json()
    return tree


def _child(tree: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((child for child in tree["children"] if child["kind"] == kind), None)


@dataclass
class Watched:
    """An agent under test and what a user can see of it: its tree, its log."""

    agent: AgentUnderTest
    status_port: int | None = None

    def listener(self) -> dict[str, Any] | None:
        return _child(_tree(self.agent, self.status_port), "EventListener")

    def listener_state(self) -> str | None:
        node = self.listener()
        return None if node is None else str(node["state"])

    def watcher_quiet(self, seconds: float) -> bool:
        """The QueueWatcher has polled and been idle for `seconds`, with the stream up: the
        wake every new session gives has been served, and no poll is due for a while."""
        tree = _tree(self.agent, self.status_port)
        watcher, listener = _child(tree, "QueueWatcher"), _child(tree, "EventListener")
        return (
            watcher is not None
            and listener is not None
            and listener["state"] == "stream"
            and str(watcher["state"]).startswith("idle, last poll found")
            and time.time() - float(watcher["since"]) >= seconds
        )

    def count(self, text: str) -> int:
        return self.agent.logs().count(text)

    def connects(self) -> float:
        """Event stream sessions the agent opened so far."""
        return self.agent.metric(CONNECTS)

    def wait_mode(self, state: str, logged: str, times: int, timeout: float = 20.0) -> None:
        """Wait until the EventListener is in `state` for the `times`th time: its tree says
        the mode, and each switch has its one notice in the log (the agent counts sessions
        opened, not switches to polling: the notice is the only record of those)."""
        wait_for(
            lambda: self.count(logged) >= times and self.listener_state() == state,
            timeout,
            f"{logged!r} logged {times} time(s) and the EventListener {state!r}",
            interval=0.05,
        )
        # One notice a switch, not one a retry: the user reads it.
        assert self.count(logged) == times, f"{logged!r} logged more than once per switch"
        if state == "stream":
            assert self.connects() == times, "a session opened without a switch to the stream"


def _start(factory: AgentFactory, **options: Any) -> Watched:
    """Start an agent; one run through the launcher gets a status port to read its tree."""
    port = free_port()
    agent = factory(**options, status_port=port)
    return Watched(agent, None if hasattr(agent, "handle") else port)


def _pid_of(markers: Path, run: str) -> Callable[[], int]:
    """The pid the run's process recorded, 0 until it started (for `wait_for`)."""

    def pid() -> int:
        starts = command_markers(markers, run)
        return int(starts[0]["pid"]) if starts else 0

    return pid


def _run_and_cancel(served: Served, deployment: str, markers: Path, timeout: float) -> None:
    """A run starts, then Cancelling kills its process and the run ends Cancelled."""
    run = create_run(served.api_url, deployment)
    pid = wait_for(_pid_of(markers, run), timeout, f"run {run}'s process to start", 0.05)
    set_run_state(served.api_url, run, "CANCELLING", "Cancelling")
    wait_for(lambda: process_gone(pid), timeout, f"run {run}'s process to be killed", 0.05)
    wait_for(lambda: state_type(served.api_url, run) == "CANCELLED", 15, f"run {run} Cancelled")


# -- the stream does the work ----------------------------------------------------------------------


def test_a_run_created_now_is_taken_and_cancelled_as_the_server_announces_it(
    served: Served, agent_factory: AgentFactory, markers: Path
) -> None:
    deployment = served.deploy_marker(markers)
    watched = _start(
        agent_factory,
        **served.agent_options(),
        query_interval=SLOW_POLL,
        cancel_poll_interval=SLOW_POLL,
        stream_cancel_poll_interval=SLOW_POLL,
    )
    watched.wait_mode("stream", CONNECTED, 1)
    # The watcher's polls are done: without the stream, the next one is 60 s away.
    wait_for(lambda: watched.watcher_quiet(0.5), 20, "the queue watcher idle", 0.05)
    listener = watched.listener()
    assert listener is not None and listener["detail"]["mode"] == "stream"
    assert (
        listener["detail"]["url"].startswith("ws://") and "/events/out" in listener["detail"]["url"]
    )

    created = time.monotonic()
    run = create_run(served.api_url, deployment)
    wait_for(lambda: state_type(served.api_url, run) == "PENDING", BOUND + 10, "Pending", 0.05)
    to_pending = time.monotonic() - created
    pid = wait_for(_pid_of(markers, run), BOUND + 10, "the run's process to start", 0.02)
    to_start = time.monotonic() - created
    assert not process_gone(pid)

    asked = time.monotonic()
    set_run_state(served.api_url, run, "CANCELLING", "Cancelling")
    wait_for(lambda: process_gone(pid), BOUND + 10, "the run's process to be killed", 0.02)
    to_kill = time.monotonic() - asked
    wait_for(lambda: state_type(served.api_url, run) == "CANCELLED", 15, "the run Cancelled")

    print(  # read with -s: the report quotes these
        f"[{served.version}, {type(watched.agent).__name__}] pending after {to_pending:.2f}s, "
        f"process after {to_start:.2f}s, killed {to_kill:.2f}s after Cancelling"
    )
    assert to_pending < BOUND, f"Pending {to_pending:.1f}s after the run was created"
    assert to_kill < BOUND, f"killed {to_kill:.1f}s after Cancelling"
    # It never fell back: still streaming, in the one session it opened.
    assert watched.listener_state() == "stream"
    assert watched.connects() == 1


# -- the stream cut: polling meanwhile, and back ---------------------------------------------------


@pytest.fixture
def proxy(served: Served) -> Iterator[FaultProxy]:
    """A fault proxy in front of the server; the agent's API URL points at it."""
    upstream = httpx.URL(served.api_url)
    assert upstream.host and upstream.port
    with FaultProxy(upstream.host, upstream.port) as running:
        yield running


@pytest.mark.parametrize("served", ["2.20-events"], indirect=True)
def test_with_the_stream_cut_the_agent_polls_and_returns_to_the_stream(
    served: Served, proxy: FaultProxy, library_agent: AgentFactory, markers: Path
) -> None:
    deployment = served.deploy_marker(markers)
    proxy.set_mode("ws_refuse", status=502)  # a proxy in the way that does no websockets
    watched = _start(
        library_agent,
        **{**served.agent_options(), "api_url": proxy.url + "/api"},
        query_interval=1.0,
        cancel_poll_interval=1.0,
        event_ping_seconds=1.0,
        event_reconnect_max_seconds=2.0,
    )

    # Refused upgrades: it polls, runs and cancels; once let through, it streams.
    watched.wait_mode("polling", UNAVAILABLE, 1)
    assert proxy.upgrades_refused >= 1
    listener = watched.listener()
    assert listener is not None and listener["detail"].get("reason")
    _run_and_cancel(served, deployment, markers, timeout=15)
    proxy.set_mode("pass")
    watched.wait_mode("stream", CONNECTED, 1)

    # Dropped mid-way, and every new socket dropped at once: polling again, then back.
    proxy.set_mode("ws_drop")
    watched.wait_mode("polling", UNAVAILABLE, 2)
    _run_and_cancel(served, deployment, markers, timeout=15)
    # Its next try comes after the backoff (up to 2 s here), which a quick run may beat.
    wait_for(lambda: proxy.websockets_opened >= 2, 15, "the agent to try the stream again")
    proxy.set_mode("pass")
    watched.wait_mode("stream", CONNECTED, 2)

    # Silent: the socket stays open and nothing comes; the ping finds it out.
    proxy.set_mode("ws_silent")
    watched.wait_mode("polling", UNAVAILABLE, 3)
    proxy.set_mode("pass")
    watched.wait_mode("stream", CONNECTED, 3)
    # Faults of the network are expected: the user's log gets notices, not tracebacks.
    assert "Traceback" not in watched.agent.logs()


# -- a server without the stream -------------------------------------------------------------------


def test_a_2_20_server_without_events_is_polled_as_before(
    api_url: str, launcher_agent: AgentFactory, markers: Path
) -> None:
    served = Served("2.20", api_url)
    deployment = served.deploy_marker(markers)
    watched = _start(launcher_agent, **served.agent_options(), query_interval=1.0)

    wait_for(lambda: watched.listener_state() == "polling", 30, "the EventListener polling", 0.1)
    _run_and_cancel(served, deployment, markers, timeout=15)

    assert watched.connects() == 0
    # A server without events is no fault: one notice, at INFO, not a warning.
    notices = lines_with(watched.agent.logs(), UNAVAILABLE)
    assert [level for level, _ in notices] == ["INFO"], notices
    listener = watched.listener()
    assert listener is not None and listener["detail"]["mode"] == "polling"
    assert watched.status_port is not None
    health = httpx.get(f"http://127.0.0.1:{watched.status_port}/healthz", timeout=5)
    assert health.status_code == 200
    assert "events: polling (" in health.text
