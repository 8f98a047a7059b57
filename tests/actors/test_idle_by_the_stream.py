"""Idle by the stream, not by the clock: what an idle agent asks of the server, and that runs
are still taken on time, against the fake API and the stand-in event stream.

With a healthy stream, a pool's queues are looked at by its PoolScout in one request, as a
safety net (every 45 s); a run created for later is read once and a timer brings it due; when
the stream is lost, or the server has none, the pool is looked at every query interval (one
request for all of its queues) and runs are picked up within it.
"""

from __future__ import annotations

import json
import time

import pytest

from actors import AgentHandle
from messages.wire.prefect import PENDING, WorkQueue
from tests.actors.test_actors_without_server import node, wait_until
from tests.actors.test_event_listener import (
    StandInStream,
    Start,
    connected,
    fake,
    flow_run_event,
    mode,
    runs_dir,
    settle,
    start,
    stream,
)
from tests.support.fake_api import FakePrefectApi

# The fixtures, shared with the listener's tests.
__all__ = ["fake", "runs_dir", "start", "stream"]

QUEUES = ("q1", "q2", "q3")
# (The pool itself is read by the Heartbeat and Recovery too, at their own pace: not counted.)
QUEUE_CALLS = (
    "get_pool_runs",
    "read_pool_queue",
    "read_work_queue_by_name",
    "get_runs",
    "scheduled_runs",
)


def queue_calls(fake: FakePrefectApi, since: float) -> list[str]:
    """The requests about the pool's queues and their runs the server received after `since`."""
    return [call.method for call in fake.calls() if call.at > since and call.method in QUEUE_CALLS]


def pool_with_queues(fake: FakePrefectApi) -> dict[str, WorkQueue]:
    fake.add_pool("pool")
    return {name: fake.add_queue(name, pool="pool") for name in QUEUES}


def idle_window(seconds: float) -> float:
    """Let the agent idle for `seconds` (a window measured, not a wait for something);
    returns when it began."""
    began = time.monotonic()
    time.sleep(seconds)
    return began


@pytest.mark.timeout(30)
def test_a_run_created_for_later_is_taken_at_its_time_with_no_poll_in_between(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    queues = pool_with_queues(fake)
    queue = queues["q1"]
    handle = start(fake, work_pools=("pool",), work_queues=QUEUES, prefetch_seconds=1.0)
    connected(handle, stream, *(q.id for q in queues.values()))
    settle(*QUEUES)
    run = fake.add_run(fake.add_deployment(["true"]), queue="q1", pool="pool", scheduled_in=4.0)
    created = time.monotonic()
    stream.send(flow_run_event(run.id, queue.id, "Scheduled", "SCHEDULED"))
    wait_until(lambda: fake.proposals(run.id, PENDING), 10, "the run's Pending proposal")
    taken = fake.proposals(run.id, PENDING)[0].at - created
    reads = [c for c in fake.calls("get_pool_runs") if c.at > created]
    assert 2.8 < taken < 3.8, f"taken {taken:.2f}s after its creation; due at 4 s, prefetch 1 s"
    assert len(reads) == 2, "one read as it was announced, one when it came due, none between"
    assert reads[1].at - reads[0].at > 2.5


@pytest.mark.timeout(30)
def test_idle_with_the_stream_the_queues_are_not_polled_and_a_lost_stream_polls_at_once(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    queues = pool_with_queues(fake)
    handle = start(fake, work_pools=("pool",), work_queues=QUEUES, query_interval=1.0)
    connected(handle, stream, *(q.id for q in queues.values()))
    settle(*QUEUES)  # the polls at start and those the stream's opening woke
    idle_from = idle_window(3.0)
    assert queue_calls(fake, idle_from) == [], "an idle agent polled with the stream healthy"

    stream.refusing = True
    stream.drop()
    wait_until(lambda: mode(handle) == "polling", 5, "the fall back to polling")
    lost = time.monotonic()
    run = fake.add_run(fake.add_deployment(["true"]), queue="q2", pool="pool")  # no event
    wait_until(lambda: fake.proposals(run.id, PENDING), 5, "the run's Pending proposal")
    assert fake.proposals(run.id, PENDING)[0].at - lost < 1.0 + 0.5, "not within one interval"


@pytest.mark.timeout(30)
def test_without_a_stream_one_request_per_look_covers_every_queue_of_the_pool(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    stream.refusing = True  # a server without the event stream (2.20 by default)
    pool_with_queues(fake)
    handle = start(fake, work_pools=("pool",), work_queues=QUEUES, query_interval=1.0)
    wait_until(lambda: mode(handle) == "polling", 5, "the agent to poll")
    settle(*QUEUES)  # the polls at start
    idle_from = idle_window(3.0)
    idle = queue_calls(fake, idle_from)
    assert set(idle) == {"get_pool_runs"}, idle
    assert 2 <= len(idle) <= 4, f"{len(idle)} requests in 3 query intervals for three queues"
    looks = [c for c in fake.calls("get_pool_runs") if c.at > idle_from]
    assert all(sorted(c.params["queue_names"]) == list(QUEUES) for c in looks)

    asked = time.monotonic()
    run = fake.add_run(fake.add_deployment(["true"]), queue="q3", pool="pool")
    wait_until(lambda: fake.proposals(run.id, PENDING), 5, "the run's Pending proposal")
    assert fake.proposals(run.id, PENDING)[0].at - asked < 1.0 + 0.5, "not within one interval"


def plain_queues_scouted(fake: FakePrefectApi, stream: StandInStream, start: Start) -> None:
    """2.20 by default: no stream, queues made without a pool (kept in `default-agent-pool`),
    an agent polling every second once its scout has looked."""
    stream.refusing = True
    fake.add_pool("default-agent-pool")
    for name in QUEUES:
        fake.add_queue(name)
    handle = start(fake, work_queues=QUEUES, query_interval=1.0)
    wait_until(lambda: mode(handle) == "polling", 5, "the agent to poll")
    wait_until(lambda: fake.calls("get_pool_runs"), 5, "the scout's first look")


@pytest.mark.timeout(30)
def test_plain_queues_without_a_stream_are_looked_at_in_one_request_of_the_default_agent_pool(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    """2.20 by default: no stream, queues made without a pool (kept in `default-agent-pool`).
    A tag-filtered queue, which only get_runs serves, still polls on its own."""
    plain_queues_scouted(fake, stream, start)
    settle(*QUEUES)
    idle_from = idle_window(3.0)
    idle = queue_calls(fake, idle_from)
    assert set(idle) == {"get_pool_runs"}, idle
    assert 2 <= len(idle) <= 4, f"{len(idle)} requests in 3 query intervals for three queues"
    looks = [c for c in fake.calls("get_pool_runs") if c.at > idle_from]
    assert all(c.params["pool"] == "default-agent-pool" for c in looks)
    assert all(sorted(c.params["queue_names"]) == list(QUEUES) for c in looks)

    asked = time.monotonic()
    run = fake.add_run(fake.add_deployment(["true"]), queue="q2")
    wait_until(lambda: fake.proposals(run.id, PENDING), 5, "the run's Pending proposal")
    assert fake.proposals(run.id, PENDING)[0].at - asked < 1.0 + 0.5, "not within one interval"


@pytest.mark.timeout(30)
def test_a_backlog_costs_the_scouts_looks_a_small_page_and_is_taken_whole(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    """A look only says which watchers to wake, so it reads a page sized to its queues (ten
    rows for three), not a backlog: its full page wakes every watcher, whose own polls take
    the backlog. In a fleet's drain, 100-row looks cost the server 1.5 ms per run taken."""
    plain_queues_scouted(fake, stream, start)
    deployment = fake.add_deployment(["true"])
    backlog = [fake.add_run(deployment, queue="q2") for _ in range(30)]
    wait_until(
        lambda: all(fake.proposals(run.id, PENDING) for run in backlog), 10, "the whole backlog"
    )
    limits = {call.params["limit"] for call in fake.calls("get_pool_runs")}
    assert limits == {10}, limits


@pytest.mark.timeout(30)
def test_a_paused_plain_queue_left_to_the_scout_still_sees_its_resume_within_an_interval(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    """The scout's request leaves paused queues out, so a paused queue keeps its own look
    every query interval even where the scout covers its idle looks: its resume shows in the
    tree within one, with no run needed to wake it."""
    stream.refusing = True
    fake.add_pool("default-agent-pool")
    for name in QUEUES:
        fake.add_queue(name)
    fake.pause_queue("q1")
    handle = start(fake, work_queues=QUEUES, query_interval=1.0)
    wait_until(lambda: fake.calls("get_pool_runs"), 5, "the scout's first look")
    wait_until(lambda: watcher_state(handle, "q1") == "paused", 5, "q1's watcher paused")
    settle(*QUEUES)
    fake.pause_queue("q1", paused=False)
    resumed = time.monotonic()
    wait_until(lambda: watcher_state(handle, "q1") != "paused", 5, "q1's watcher to resume")
    assert time.monotonic() - resumed < 1.0 + 0.5, "not within one query interval"


def watcher_state(handle: AgentHandle, queue: str) -> str | None:
    found = node(handle.tree(), "QueueWatcher", queue)
    return found.state if found is not None else None


def queue_event(queue: WorkQueue, change: str) -> str:
    """A work queue's status or update event as Prefect 3 sends it (its resource the queue)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    event = {
        "occurred": stamp,
        "event": f"prefect.work-queue.{change}",
        "resource": {
            "prefect.resource.id": f"prefect.work-queue.{queue.id}",
            "prefect.resource.name": queue.name,
            "prefect.resource.role": "work-queue",
        },
        "related": [],
        "payload": {},
        "id": f"{queue.id}-{change}-{time.monotonic()}",
        "follows": None,
    }
    return json.dumps({"type": "event", "event": event})


@pytest.mark.timeout(30)
def test_a_paused_queue_resumed_takes_its_runs_as_the_server_announces_it(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    """Idle by the stream, the pool is looked at every 45 s: its queue's resume comes by event
    (and a status event of a queue not seen paused, as when the server marks it polled, costs
    no poll)."""
    queues = pool_with_queues(fake)
    fake.pause_queue("q1", pool="pool")
    handle = start(fake, work_pools=("pool",), work_queues=QUEUES)
    connected(handle, stream, *(q.id for q in queues.values()))
    settle(*QUEUES)
    wait_until(lambda: watcher_state(handle, "q1") == "paused", 5, "q1's watcher paused")
    run = fake.add_run(fake.add_deployment(["true"]), queue="q1", pool="pool")
    stream.send(flow_run_event(run.id, queues["q1"].id, "Scheduled", "SCHEDULED"))
    settle(*QUEUES)
    assert not fake.proposals(run.id, PENDING)

    before = time.monotonic()
    stream.send(queue_event(queues["q2"], "ready"))  # q2 was never paused: nothing to do
    fake.pause_queue("q1", paused=False, pool="pool")
    stream.send(queue_event(queues["q1"], "not-ready"))
    wait_until(lambda: fake.proposals(run.id, PENDING), 5, "the run's Pending proposal")
    settle(*QUEUES)
    assert fake.proposals(run.id, PENDING)[0].at - before < 1.0
    read = [c.params["name"] for c in fake.calls("read_pool_queue") if c.at > before]
    assert read == ["q1"], f"queues read after the events: {read}"


@pytest.mark.timeout(30)
def test_a_run_the_server_deferred_is_proposed_again_at_its_new_time_with_no_event(
    fake: FakePrefectApi, stream: StandInStream, start: Start
) -> None:
    """Prefect 3 refuses Pending while a deployment's concurrency slot is taken and schedules
    the run again a moment later (AwaitingConcurrencySlot), announcing nothing that wakes an
    agent: the watcher polls for it at that time, not at the stream's safety-net look."""
    queues = pool_with_queues(fake)
    handle = start(fake, work_pools=("pool",), work_queues=QUEUES)
    connected(handle, stream, *(q.id for q in queues.values()))
    settle(*QUEUES)
    deployment = fake.add_deployment(["true"])
    fake.take_slot(deployment, defer_seconds=2.0)
    run = fake.add_run(deployment, queue="q1", pool="pool")
    stream.send(flow_run_event(run.id, queues["q1"].id, "Scheduled", "SCHEDULED"))
    wait_until(lambda: fake.proposals(run.id, PENDING), 10, "the run's first Pending proposal")
    refused_at = fake.proposals(run.id, PENDING)[0].at
    fake.free_slot(deployment)  # the slot frees with no event the agent listens to

    wait_until(lambda: len(fake.proposals(run.id, PENDING)) > 1, 10, "a proposal at its new time")
    again = fake.proposals(run.id, PENDING)[1].at - refused_at
    assert 1.9 < again < 3.5, f"proposed again {again:.2f}s after the deferral; due at 2 s"
    states = [state.name for state in fake.history(run.id)]
    assert states[-2:] == ["AwaitingConcurrencySlot", "Pending"], states
