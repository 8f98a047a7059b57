"""`--pool`: the queues of a Prefect 2.20 work pool, its pause, its limit and its priorities.

The first test runs in both runtimes (the launcher's `-p`); the rules themselves live in the
actors, so the others run once, in the library runtime."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.harness.agent_status import find_node
from messages.user.tree import ActorNode
from tests.conftest import AgentFactory, AgentUnderTest
from tests.integration.helpers import command_markers, deploy_marker_command, state_type
from tests.support.prefect_objects import (
    create_pool,
    create_pool_queue,
    create_runs,
    move_deployment_to_pool,
    pause_pool,
    wait_for,
)

pytestmark = pytest.mark.integration

POLLS = "prefect_agent_poll_latency_seconds_count"


def _pool_name() -> str:
    return f"pool-{uuid.uuid4().hex[:8]}"


def _pool_deployment(
    api_url: str, pool: str, queue: str, markers: Path, *args: str, complete: bool = False
) -> str:
    env = {"MARKER_COMPLETE": "1"} if complete else {}
    deployment = deploy_marker_command(
        api_url, f"{pool}-{queue}", markers, *args, name=f"m-{queue}", env=env
    )
    move_deployment_to_pool(api_url, deployment, pool, queue)
    return deployment


def _watchers(agent: AgentUnderTest) -> list[ActorNode]:
    return [node for node in agent.tree().children if node.kind == "QueueWatcher"]


def _watched(agent: AgentUnderTest) -> dict[str, str | None]:
    """Each queue the agent watches, with the work pool its watcher names."""
    return {node.name: node.detail.get("work pool") for node in _watchers(agent)}


def _queue_ids(agent: AgentUnderTest) -> dict[str, str | None]:
    """Each queue the agent watches, with the id of the queue its watcher holds (None before
    the watcher has read or made it)."""
    return {node.name: node.detail.get("queue id") for node in _watchers(agent)}


def _starts(markers: Path, runs: list[str]) -> dict[str, dict[str, Any]]:
    """The first marker of each run that started (a run starts once)."""
    found = {}
    for run in runs:
        seen = command_markers(markers, run)
        if seen:
            found[run] = seen[0]
    return found


def test_pool_serves_every_queue_and_creates_named_ones(
    agent_factory: AgentFactory, api_url: str, markers: Path
) -> None:
    pool = _pool_name()
    create_pool(api_url, pool)
    create_pool_queue(api_url, pool, "second")
    runs = create_runs(api_url, _pool_deployment(api_url, pool, "default", markers), 1)
    runs += create_runs(api_url, _pool_deployment(api_url, pool, "second", markers), 1)

    every_queue = agent_factory(work_pool=pool)
    wait_for(lambda: len(_starts(markers, runs)) == 2, 60, "a run of each pool queue to start")
    assert _watched(every_queue) == {"default": pool, "second": pool}
    assert all(_queue_ids(every_queue).values()), _queue_ids(every_queue)  # each read its queue

    named = agent_factory(work_pool=pool, work_queues=("made-by-agent",))
    made = f"{api_url}/work_pools/{pool}/queues/made-by-agent"
    wait_for(lambda: httpx.get(made).status_code == 200, 30, "the named queue to exist in the pool")
    made_id = httpx.get(made).json()["id"]
    # the watcher holds it once the server's answer is back, which can be after the queue shows
    wait_for(
        lambda: _queue_ids(named).get("made-by-agent") == made_id,
        10,
        "the agent's watcher to hold the queue it created",
    )
    assert _watched(named) == {"made-by-agent": pool}


def test_paused_pool_is_not_served_until_it_resumes(
    library_agent: AgentFactory, api_url: str, markers: Path
) -> None:
    pool = _pool_name()
    create_pool(api_url, pool)
    runs = create_runs(api_url, _pool_deployment(api_url, pool, "default", markers), 2)
    pause_pool(api_url, pool, True)

    agent = library_agent(work_pool=pool, work_queues=("default",))

    def paused() -> bool:
        watcher = find_node(agent.tree(), "QueueWatcher", "default")
        return watcher is not None and watcher.state == "paused"

    wait_for(paused, 30, "the agent to see the paused pool")
    polls = agent.metric(POLLS)
    wait_for(lambda: agent.metric(POLLS) > polls, 30, "a second poll of the paused pool")
    assert paused()
    assert _starts(markers, runs) == {}
    assert {state_type(api_url, run) for run in runs} == {"SCHEDULED"}

    pause_pool(api_url, pool, False)
    wait_for(lambda: len(_starts(markers, runs)) == 2, 60, "both runs to start after resuming")


def test_pool_concurrency_limit_holds_across_its_runs(
    library_agent: AgentFactory, api_url: str, markers: Path
) -> None:
    pool = _pool_name()
    create_pool(api_url, pool, concurrency_limit=1)
    deployment = _pool_deployment(api_url, pool, "default", markers, "0.5", complete=True)
    runs = create_runs(api_url, deployment, 3)

    library_agent(work_pool=pool)

    def ended() -> dict[str, dict[str, Any]]:
        starts = _starts(markers, runs)
        return starts if all("end" in m for m in starts.values()) and len(starts) == 3 else {}

    done = wait_for(ended, 90, "all three runs to end, one at a time")
    spans = sorted((m["time"], m["end"]) for m in done.values())
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"two runs of a pool limited to 1 overlapped: {spans}"


def test_pool_priorities_decide_who_gets_scarce_room(
    library_agent: AgentFactory, api_url: str, markers: Path
) -> None:
    pool = _pool_name()
    create_pool(api_url, pool)
    low_queue = create_pool_queue(api_url, pool, "low", priority=20)
    high_queue = create_pool_queue(api_url, pool, "high", priority=10)
    assert high_queue["priority"] < low_queue["priority"]
    low = create_runs(api_url, _pool_deployment(api_url, pool, "low", markers, complete=True), 2)
    high = create_runs(api_url, _pool_deployment(api_url, pool, "high", markers, complete=True), 2)

    library_agent(work_pool=pool, work_queues=("low", "high"), limit=1)

    runs = low + high
    done = wait_for(
        lambda: len(_starts(markers, runs)) == 4 and _starts(markers, runs),
        90,
        "all four runs to start",
    )
    last_high = max(done[run]["time"] for run in high)
    first_low = min(done[run]["time"] for run in low)
    assert last_high < first_low, "a low-priority run started while high-priority runs waited"
