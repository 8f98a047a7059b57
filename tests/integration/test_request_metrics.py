"""What the agent costs the server, as its /metrics says, on 2.20 and 3.x: the launcher's
agent talks to the server through a proxy that records every request, and at moments when no
request is in flight, its `prefect_agent_api_requests_total` by kind equals what the proxy
saw, kind by kind, after an idle window and after a few runs.

The proxy's reading is the wire's own: a search for runs (`POST /flow_runs/filter`) is told
by the states its body asks for, where the agent's count goes by what its caller said the
search was for. A poll an event woke is a poll on the wire: those two kinds are compared
together, and on 3.x (its event stream on) the event-woken ones must be there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from actors.rules.request_kinds import REQUEST_KINDS, request_kind
from examples.harness.agent_status import sample_value
from examples.harness.fault_proxy import FaultProxy, RecordedRequest
from tests.conftest import AgentFactory, LauncherAgent
from tests.integration.helpers import MARKER_COMMAND, infrastructure_pid
from tests.integration.test_across_servers import Served
from tests.support.prefect_objects import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REQUESTS = "prefect_agent_api_requests_total"
RUNS = 3


@pytest.fixture(params=["2.20", "3.x"])
def served(request: pytest.FixtureRequest, api_url: str) -> Served:
    if request.param == "2.20":
        return Served("2.20", api_url)
    return Served.on_3x(request.getfixturevalue("prefect3_server"))


@pytest.fixture
def proxy(served: Served) -> Iterator[FaultProxy]:
    upstream = httpx.URL(served.api_url)
    assert upstream.host and upstream.port
    with FaultProxy(upstream.host, upstream.port) as running:
        yield running


def _wire_kind(request: RecordedRequest) -> str | None:
    """The kind of a request as the wire shows it; None for the event stream's websocket."""
    path = request.path.removeprefix("/api")
    if path.startswith("/events/"):
        return None  # one connection, counted by prefect_actor_agent_event_stream_connects
    if request.method == "POST" and path.rstrip("/") == "/flow_runs/filter":
        if b'"SCHEDULED"' in request.body:
            return "poll"
        if b'"CANCELLING"' in request.body:
            return "cancellation_poll"
        return "recovery"  # runs held, left by a lost peer or an earlier life
    return request_kind(request.method, path)


def _on_the_wire(proxy: FaultProxy) -> Counter[str]:
    kinds = (_wire_kind(request) for request in proxy.recorded_requests)
    return Counter(kind for kind in kinds if kind is not None)


def _on_metrics(agent: LauncherAgent) -> Counter[str]:
    text = agent.status.metrics()
    counted: Counter[str] = Counter()
    for kind in REQUEST_KINDS:
        value = sample_value(text, REQUESTS, {"kind": kind})
        assert value is not None, f"{kind} missing from /metrics"
        merged = "poll" if kind == "event_woken_poll" else kind
        counted[merged] += int(value)
    counted["event_woken_poll (of poll)"] = int(
        sample_value(text, REQUESTS, {"kind": "event_woken_poll"}) or 0
    )
    return counted


def _agreed(proxy: FaultProxy, agent: LauncherAgent) -> tuple[Counter[str], Counter[str]] | None:
    """Both counts, at a moment no request was in flight (the wire the same before and after
    /metrics was read, and /metrics the same as the wire); None when that moment was not one."""
    before = _on_the_wire(proxy)
    counted = _on_metrics(agent)
    after = _on_the_wire(proxy)
    woken = counted.pop("event_woken_poll (of poll)")
    if before != after or +counted != before:
        return None
    counted["event_woken_poll (of poll)"] = woken
    return before, counted


def test_metrics_count_the_requests_by_kind_as_the_server_received_them(
    served: Served, proxy: FaultProxy, launcher_agent: AgentFactory, markers: Path
) -> None:
    deployment = served.deploy(
        "hello", env={"MARKER_DIR": str(markers)}, command=[*MARKER_COMMAND, "0"]
    )
    agent = launcher_agent(
        **{**served.agent_options(), "api_url": f"{proxy.url}/api"}, heartbeat_seconds=1.0
    )
    assert isinstance(agent, LauncherAgent)

    def agreed() -> tuple[Counter[str], Counter[str]] | None:
        return _agreed(proxy, agent)

    start, _ = wait_for(lambda: (a := agreed()) and a[0]["poll"] > 0 and a, 60, "a first poll")

    # An idle window: polls, heartbeats, the cancellation poll; nothing taken.
    idle, _ = wait_for(
        lambda: (a := agreed()) and a[0]["heartbeat"] >= start["heartbeat"] + 4 and a,
        60,
        "an idle window of four heartbeats",
        interval=0.05,
    )
    window = idle - start
    if served.version == "3.x":  # idle by the stream: no queue is read or polled meanwhile
        assert window["queue_read"] == 0 and window["event_woken_poll"] == 0, window
    else:
        assert window["poll"] > 0 and window["queue_read"] > 0, window
    assert window["state_proposal"] == 0 and window["pid_report"] == 0, window
    assert window["other"] == 0, window

    # A few runs: each taken (a Pending proposal, its pid recorded), its deployment read.
    runs = [served.run(deployment) for _ in range(RUNS)]
    wait_for(lambda: all(infrastructure_pid(served.api_url, run) for run in runs), 90, "runs taken")
    wire, counted = wait_for(agreed, 60, "a moment with no request in flight", interval=0.05)
    taken = wire - idle
    assert taken["state_proposal"] >= RUNS and taken["pid_report"] >= RUNS, taken
    assert taken["deployment_read"] >= 1, taken
    assert wire["other"] == 0, wire
    if served.version == "3.x":  # its stream announces each run: polls it woke are counted
        assert counted["event_woken_poll (of poll)"] > 0, counted
