"""Which runs are taken, when, and how often: de-duplication, several agents, paused and matched
queues. These tests start the fast marker command instead of the engine: they are about the
dispatching, and each marker file is one start of a run's process. What the agent did is read
from its metrics, its tree and the requests it made, not from its log."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from actors.edges.prefect_api import PrefectApi
from examples.harness.agent_status import find_node
from messages.internal.dispatch import RunsFound
from messages.internal.lifecycle import CountHeldRuns
from messages.user.events import RunSubmitted
from messages.wire.prefect import FlowRun
from tests.conftest import AgentFactory, ThreadAgent
from tests.integration.helpers import (
    command_markers,
    command_starts,
    deploy_marker_command,
    states,
)
from tests.support.prefect_objects import (
    call_api,
    create_run,
    create_runs,
    pause_queue,
    read_run,
    run_state,
    wait_for,
)

pytestmark = pytest.mark.integration

SUBMITTED = "prefect_agent_runs_submitted_total"
FINISHED = "prefect_agent_runs_finished_total"
POLLS = "prefect_agent_poll_latency_seconds_count"


class RoutedApi(PrefectApi):
    """The real API client, noting how each poll read its queue's due runs: `get_runs` (the
    poll the server records) or the flow-run filter (`scheduled_runs`), and how many it got."""

    def __init__(self, api_url: str) -> None:
        super().__init__(api_url)
        self.reads: list[tuple[str, int]] = []

    def get_runs(self, queue_id: str, scheduled_before: datetime, limit: int) -> list[FlowRun]:
        runs = super().get_runs(queue_id, scheduled_before, limit)
        self.reads.append(("get_runs", len(runs)))
        return runs

    def scheduled_runs(
        self, queue_name: str, scheduled_before: datetime, limit: int
    ) -> list[FlowRun]:
        runs = super().scheduled_runs(queue_name, scheduled_before, limit)
        self.reads.append(("flow-run filter", len(runs)))
        return runs

    def routes(self, *, with_runs: bool = False) -> set[str]:
        return {route for route, found in list(self.reads) if found or not with_runs}


def test_the_same_run_seen_by_two_queues_and_two_polls_starts_once(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers, "1")
    run_id = create_run(api_url, deployment)
    run = msgspec.convert(read_run(api_url, run_id), FlowRun)

    agent = library_agent(work_queues=(queue,), query_interval=0.2)
    assert isinstance(agent, ThreadAgent)
    dispatcher = agent.handle.dispatcher
    for source in ("another-queue", queue, "another-queue"):
        dispatcher.tell(RunsFound(source, (run,)))

    agent.wait_finished(run_id, 30, "the run to finish")
    for source in ("another-queue", queue):  # stale sightings after the run ended
        dispatcher.tell(RunsFound(source, (run,)))
    assert dispatcher.ask(CountHeldRuns()) == 0  # answered after the stale sightings were handled
    assert command_starts(markers)[run_id] == 1
    submitted = [e for e in agent.events() if isinstance(e, RunSubmitted)]
    assert [e.flow_run_id for e in submitted] == [run_id]
    assert agent.metric(SUBMITTED) == 1


def test_two_agents_on_one_queue_start_each_run_exactly_once(
    library_agent: AgentFactory,
    launcher_agent: AgentFactory,
    api_url: str,
    queue: str,
    markers: Path,
) -> None:
    """One agent in each runtime (threads in this process, the launcher under gevent)."""
    deployment = deploy_marker_command(api_url, queue, markers)
    runs = create_runs(api_url, deployment, 50)

    first = library_agent(work_queues=(queue,), query_interval=0.5)
    second = launcher_agent(work_queues=(queue,), query_interval=0.5)

    wait_for(lambda: set(command_starts(markers)) >= set(runs), 120, "every run to start")
    wait_for(lambda: "SCHEDULED" not in states(api_url, runs).values(), 30, "no run left Scheduled")
    starts = command_starts(markers)
    assert {run: starts[run] for run in runs} == dict.fromkeys(runs, 1)
    taken = [agent.metric(SUBMITTED) for agent in (first, second)]
    assert sum(taken) >= 50, taken


def test_paused_queue_is_skipped_with_one_log_line_and_taken_after_resume(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers)  # creates the queue
    pause_queue(api_url, queue, True)
    run_id = create_run(api_url, deployment)

    agent = library_agent(work_queues=(queue,), query_interval=0.2)

    def watcher_state() -> str:
        watcher = find_node(agent.tree(), "QueueWatcher", queue)
        return watcher.state if watcher is not None else "absent"

    wait_for(lambda: watcher_state() == "paused", 30, "the watcher to see the queue paused")
    polls = agent.metric(POLLS)
    wait_for(lambda: agent.metric(POLLS) >= polls + 3, 30, "several polls of the paused queue")
    assert watcher_state() == "paused"
    # A notice a user reads once, not once a poll.
    assert agent.logs().count(f"work queue '{queue}' is paused") == 1
    assert run_state(api_url, run_id)[0] == "SCHEDULED"
    assert command_starts(markers)[run_id] == 0
    assert agent.metric(SUBMITTED) == 0

    pause_queue(api_url, queue, False)
    wait_for(lambda: command_starts(markers)[run_id] == 1, 30, "the run to start after resume")
    assert watcher_state() != "paused"


def test_prefix_mode_picks_up_a_queue_created_later_and_ignores_others(
    agent_factory: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    prefix = f"{queue}-etl-"
    agent = agent_factory(queue_prefixes=(prefix,), rematch_interval=0.5, query_interval=0.5)
    # The first (empty) match shows only in its notice: neither the tree nor a metric says the
    # agent has matched once yet (the queue below must come after it).
    wait_for(lambda: "no work queue matches" in agent.logs(), 30, "the first empty match")

    matched = deploy_marker_command(api_url, f"{prefix}nightly", markers, name="m")
    ignored = deploy_marker_command(api_url, f"{queue}-other", markers, name="i")
    taken = create_run(api_url, matched)
    left = create_run(api_url, ignored)

    wait_for(lambda: command_starts(markers)[taken] == 1, 60, "the matched queue's run to start")
    watchers = {node.name for node in agent.tree().children if node.kind == "QueueWatcher"}
    assert watchers == {f"{prefix}nightly"}
    assert command_starts(markers)[left] == 0
    assert run_state(api_url, left)[0] == "SCHEDULED"


def test_a_page_of_runs_of_one_deployment_reads_it_once(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    """The deployment and its block are read once for a whole page of its runs, not once per
    run: the supervisors that miss the cache together wait for the one read in flight."""
    deployment = deploy_marker_command(api_url, queue, markers)
    runs = create_runs(api_url, deployment, 16)
    reads: list[str] = []

    class CountingApi(PrefectApi):
        def _request(self, method: str, path: str, *args: Any, **kwargs: Any) -> httpx.Response:
            if method == "GET" and path.startswith(("deployments/", "block_documents/")):
                reads.append(path.split("/", 1)[0])
            return super()._request(method, path, *args, **kwargs)

    library_agent(work_queues=(queue,), api=CountingApi(api_url))

    wait_for(lambda: len(command_starts(markers)) == len(runs), 60, "every run to start")
    assert sorted(reads) == ["block_documents", "deployments"], reads


def test_a_drain_reads_its_next_pages_by_filter_and_the_queue_is_still_marked_polled(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    """Between the polls the server records (get_runs), a drain's pages come by the cheaper
    flow-run filter; each run still starts once, and the queue shows as polled."""
    runs = create_runs(api_url, deploy_marker_command(api_url, queue, markers), 40)

    api = RoutedApi(api_url)
    library_agent(work_queues=(queue,), api=api)
    wait_for(lambda: set(command_starts(markers)) >= set(runs), 90, "every run to start")
    # Runs came by the poll the server records, and by the filter for the pages after it.
    assert api.routes(with_runs=True) == {"get_runs", "flow-run filter"}, api.reads
    assert call_api(api_url, "GET", f"/work_queues/name/{queue}")["last_polled"] is not None
    assert set(command_starts(markers).values()) == {1}
    assert "SCHEDULED" not in states(api_url, runs).values()


def test_a_queue_concurrency_limit_holds_through_a_drain(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    """Only get_runs applies a queue's limit: a limited queue is never read by the filter."""
    deployment = deploy_marker_command(api_url, queue, markers, "0.5", env={"MARKER_COMPLETE": "1"})
    queue_id = call_api(api_url, "GET", f"/work_queues/name/{queue}")["id"]
    call_api(api_url, "PATCH", f"/work_queues/{queue_id}", {"concurrency_limit": 2})
    runs = create_runs(api_url, deployment, 6)

    api = RoutedApi(api_url)
    library_agent(work_queues=(queue,), query_interval=0.5, api=api)

    def ended() -> list[dict[str, Any]]:
        found = [command_markers(markers, run) for run in runs]
        done = all(len(seen) == 1 and "end" in seen[0] for seen in found)
        return [seen[0] for seen in found] if done else []

    spans = [(m["time"], m["end"]) for m in wait_for(ended, 90, "all six runs to end")]
    at_once = max(sum(1 for start, end in spans if start <= t < end) for t, _ in spans)
    assert at_once <= 2, f"a queue limited to 2 ran {at_once} at once: {sorted(spans)}"
    assert api.routes() == {"get_runs"}, api.reads
