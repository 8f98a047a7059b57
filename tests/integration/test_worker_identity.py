"""The agent as the server sees it, on 2.20 and 3.x: a worker of its pool with a fresh
heartbeat while it runs (the pool READY), and a name on every run it takes."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from actors.rules.claims import parse_claim
from tests.conftest import AgentFactory, ThreadAgent
from tests.integration.helpers import FINAL
from tests.integration.test_across_servers import POOL, Served
from tests.support.prefect_objects import call_api, read_run, run_state, wait_for

pytestmark = pytest.mark.integration

HEARTBEAT = 1.0


@pytest.fixture(params=["2.20", "3.x"])
def served(request: pytest.FixtureRequest, api_url: str) -> Served:
    if request.param == "2.20":
        return Served("2.20", api_url)
    return Served.on_3x(request.getfixturevalue("prefect3_server"))


def _pool(served: Served) -> str:
    return POOL if served.version == "3.x" else "default-agent-pool"


def _worker(served: Served, name: str) -> dict[str, Any] | None:
    rows = call_api(served.api_url, "POST", f"/work_pools/{_pool(served)}/workers/filter", {})
    return next((row for row in rows if row["name"] == name), None)


def _heartbeat_age(row: dict[str, Any] | None) -> float:
    if row is None or not row.get("last_heartbeat_time"):
        return float("inf")
    last = datetime.fromisoformat(row["last_heartbeat_time"].replace("Z", "+00:00"))
    return (datetime.now(UTC) - last).total_seconds()


def _pending_message(served: Served, run: str) -> str | None:
    states = call_api(served.api_url, "GET", f"/flow_run_states/?flow_run_id={run}")
    pending = [state for state in states if state["type"] == "PENDING"]
    return pending[-1]["message"] if pending else None


def _worker_labels(served: Served, run: str) -> dict[str, str]:
    """The run's labels once its worker's are there (empty until then)."""
    labels: dict[str, str] = read_run(served.api_url, run).get("labels") or {}
    return labels if "prefect.worker.name" in labels else {}


def test_the_agent_is_a_worker_of_its_pool_and_every_run_it_takes_names_it(
    served: Served, library_agent: AgentFactory, markers: Path
) -> None:
    deployment = served.deploy("hello")
    runs = [served.run(deployment, {"marker_dir": str(markers)}) for _ in range(2)]
    name = f"agent-{served.queue}"
    agent = library_agent(**served.agent_options(), name=name, heartbeat_seconds=HEARTBEAT)
    assert isinstance(agent, ThreadAgent)
    me = agent.handle.ctx.identity

    # Listed as a worker, heartbeating, the pool READY.
    row = wait_for(lambda: _worker(served, name), 15, "the agent's worker row")
    wait_for(lambda: _heartbeat_age(_worker(served, name)) < 3 * HEARTBEAT, 15, "a fresh beat")
    assert row["heartbeat_interval_seconds"] == 1
    pool = call_api(served.api_url, "GET", f"/work_pools/{_pool(served)}")
    assert pool.get("status") in (None, "READY"), pool  # 2.7-era pools have no status
    if served.version == "3.x":
        assert pool["status"] == "READY"

    # Every run it took says who holds it: agent, instance, host.
    wait_for(lambda: all(run_state(served.api_url, run)[0] in FINAL for run in runs), 90, "runs")
    for run in runs:
        assert run_state(served.api_url, run)[0] == "COMPLETED"
        claim = parse_claim(_pending_message(served, run))
        assert claim is not None, _pending_message(served, run)
        assert (claim.name, claim.instance, claim.host) == (name, me.instance, socket.gethostname())
        if served.version == "3.x":
            # The labels are sent beside the run, not before it: on a busy server (503s and
            # their retries) they may land after the run has finished.
            labelled = partial(_worker_labels, served, run)
            labels = wait_for(labelled, 60, "the run's worker labels")
            assert labels.get("prefect.worker.name") == name
            assert labels.get("prefect-actor-agent.instance") == me.instance

    # The tree, /healthz and the logs name it.
    tree = agent.handle.tree()
    assert (tree.detail["name"], tree.detail["instance"]) == (name, me.instance)
    assert any(child.kind == "Heartbeat" for child in tree.children)
    assert name in agent.handle.health()[1] and me.instance in agent.handle.health()[1]
    # The log line is the behaviour: an operator reading a fleet's logs tells agents apart.
    assert f"agent {name!r} (instance {me.instance}" in agent.logs()

    # Stopped cleanly, it has left the pool: its row is gone when stop() returns, and no late
    # heartbeat lists it again.
    agent.stop()
    assert _worker(served, name) is None
    deadline = time.monotonic() + 3 * HEARTBEAT
    while time.monotonic() < deadline:  # an observation window, not a synchronisation
        assert _worker(served, name) is None
        time.sleep(0.2)


def test_an_agent_with_its_default_name_leaves_its_pool_when_stopped(
    served: Served, library_agent: AgentFactory
) -> None:
    agent = library_agent(**served.agent_options(), heartbeat_seconds=HEARTBEAT)
    assert isinstance(agent, ThreadAgent)
    name = agent.handle.ctx.identity.name
    assert "/" not in name, name
    wait_for(lambda: _worker(served, name), 15, "the agent's worker row")
    agent.stop()
    assert _worker(served, name) is None
    assert f"worker {name!r} left work pool {_pool(served)!r}" in agent.logs()


def test_a_worker_name_with_a_slash_stays_listed_and_the_log_says_why(
    served: Served, library_agent: AgentFactory
) -> None:
    name = f"team/agent-{served.queue}"
    agent = library_agent(**served.agent_options(), name=name, heartbeat_seconds=HEARTBEAT)
    wait_for(lambda: _worker(served, name), 15, "the agent's worker row")
    agent.stop()
    assert _worker(served, name) is not None  # the server cannot route the name to remove it
    assert f"worker {name!r} cannot be removed from work pool(s) {_pool(served)!r}" in (
        agent.logs()
    )


def test_the_launcher_stopped_by_sigterm_leaves_its_pool(
    served: Served, launcher_agent: AgentFactory
) -> None:
    name = f"launched-{served.queue}"
    agent = launcher_agent(**served.agent_options(), name=name, heartbeat_seconds=HEARTBEAT)
    wait_for(lambda: _worker(served, name), 60, "the agent's worker row")
    assert agent.stop() == 0  # SIGTERM, and the process exits
    assert _worker(served, name) is None
    assert f"worker {name!r} left work pool" in agent.logs()
