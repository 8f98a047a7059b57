"""A stopped agent leaves its pool at once, on 2.20 and 3.x: two agents share a contested
queue; one stops cleanly while runs wait in the paused queue, and once it resumes, the runs
the share gives the stopped agent are taken by the other without the grace a listed peer's
runs wait in a full window (`actors/rules/share.py`), because the stopped agent's worker row
is gone instead of staying ONLINE for three heartbeat intervals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actors.rules.claims import parse_claim
from actors.rules.share import GRACE_SECONDS, owner
from examples.harness.agent_status import find_node
from tests.conftest import AgentFactory, ThreadAgent
from tests.integration.helpers import MARKER_COMMAND
from tests.integration.test_across_servers import POOL, Served
from tests.support.prefect_objects import call_api, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

HEARTBEAT = 2.0  # a peer reads the rows this often; today's stopped peer stays ONLINE 3x longer
RUNS = 8  # a batch that makes the queue contested
DRAIN = 20  # after the stop: more than the window (limit 2, two sharers: 4 rows) holds
# The survivor learns at its next reading of the rows (one heartbeat interval), then polls:
# well under the grace that a run of a peer still listed waits.
TAKEN_WITHIN = GRACE_SECONDS - 0.5


@pytest.fixture(params=["2.20", "3.x"])
def served(request: pytest.FixtureRequest, api_url: str) -> Served:
    if request.param == "2.20":
        return Served("2.20", api_url)
    return Served.on_3x(request.getfixturevalue("prefect3_server"))


def _pool(served: Served) -> str:
    return POOL if served.version == "3.x" else "default-agent-pool"


def _workers(served: Served) -> set[str]:
    rows = call_api(served.api_url, "POST", f"/work_pools/{_pool(served)}/workers/filter", {})
    return {row["name"] for row in rows}


def _pending(served: Served, run: str) -> dict[str, Any] | None:
    states = call_api(served.api_url, "GET", f"/flow_run_states/?flow_run_id={run}")
    pending = [state for state in states if state["type"] == "PENDING"]
    return pending[-1] if pending else None


def _pause(served: Served, paused: bool) -> None:
    """Pause or resume the test's queue, as a user does in the UI."""
    if served.version == "3.x":
        found = call_api(served.api_url, "GET", f"/work_pools/{POOL}/queues/{served.queue}")
    else:
        found = call_api(served.api_url, "GET", f"/work_queues/name/{served.queue}")
    call_api(served.api_url, "PATCH", f"/work_queues/{found['id']}", {"is_paused": paused})


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _taker(served: Served, run: str) -> str | None:
    pending = _pending(served, run)
    claim = parse_claim(pending["message"]) if pending else None
    return claim.name if claim is not None else None


def test_a_stopped_agents_share_of_a_contested_queue_goes_to_its_peer_at_once(
    served: Served, library_agent: AgentFactory, markers: Path
) -> None:
    deployment = served.deploy(
        "hello", env={"MARKER_DIR": str(markers)}, command=[*MARKER_COMMAND, "0"]
    )
    options = {
        **served.agent_options(),
        "heartbeat_seconds": HEARTBEAT,
        "lost_agent_seconds": 60.0,  # nobody is declared lost here: only the rows matter
        "limit": 2,  # a small page, so that the window is full and the grace applies
    }
    leaving = library_agent(**options, name=f"leaving-{served.queue}")
    staying = library_agent(**options, name=f"staying-{served.queue}")
    assert isinstance(staying, ThreadAgent)
    names = {f"leaving-{served.queue}", f"staying-{served.queue}"}
    wait_for(lambda: names <= _workers(served), 30, "both agents listed")

    # Both race for the same runs until the staying one loses a proposal: the queue is then
    # contested, and its watcher proposes first the runs the share gives it (its tree says so).
    def contested() -> bool:
        watcher = find_node(staying.tree(), "QueueWatcher")
        if watcher is not None and watcher.detail.get("shared with") == "1 live peer(s)":
            return True
        runs = [served.run(deployment) for _ in range(RUNS)]
        wait_for(lambda: all(_pending(served, run) for run in runs), 60, "the runs taken")
        return False

    wait_for(contested, 120, "the queue contested", interval=0.0)

    # The next runs wait in the paused queue, so that the survivor sees them all at once
    # (a full window, where a listed peer's runs wait their grace), right after the stop.
    _pause(served, True)
    runs = [served.run(deployment) for _ in range(DRAIN)]
    leaving.stop()
    assert f"leaving-{served.queue}" not in _workers(served)
    resumed = datetime.now(UTC)
    _pause(served, False)
    wait_for(lambda: all(_pending(served, run) for run in runs), 90, "the new runs taken")

    assert {_taker(served, run) for run in runs} == {f"staying-{served.queue}"}
    theirs = [run for run in runs if owner(run, sorted(names)) == f"leaving-{served.queue}"]
    assert theirs  # about half: 1 in a million that the share gave it none
    waits = {}
    for run in theirs:
        pending = _pending(served, run)
        assert pending is not None
        waits[run] = (_when(pending["timestamp"]) - resumed).total_seconds()
    # The first of the stopped agent's runs was taken before a grace could have passed.
    assert min(waits.values()) < TAKEN_WITHIN, sorted(waits.values())
