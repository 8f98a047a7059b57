"""One agent, several work pools (`-p` repeated), against the fake server in milliseconds.

Each pool is served as if it were the agent's only one: its queues watched, its runs taken
and started on their own kind, its worker row heartbeated, its lost peers recovered, its
cancellations seen; a pool of a type no kind runs is refused alone. What they share is the
agent: one name, one lease, one Dispatcher and one `--limit`. The real thing, a process pool
and a docker pool against a 3.x server and a real daemon, is
`tests/integration/test_many_pools.py`.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import httpx
import pytest

from actors import AgentHandle, StatusServer
from actors.edges.process_kind import Process
from actors.rules.claims import claim_message
from actors.rules.identity import AgentIdentity
from messages.internal.lifecycle import Tick
from messages.wire.prefect import CRASHED, PENDING, RUNNING, SCHEDULED
from tests.actors.test_actors_without_server import (
    Start,
    alive,
    heartbeats_answered,
    lease_lapsed,
    node,
    run_command,
    started_pid,
    wait_until,
)
from tests.support.fake_api import FakePrefectApi
from tests.support.fake_infrastructure import FakeInfrastructure
from tests.support.manual_clock import ManualClock


def pool_with_default_queue(fake: FakePrefectApi, name: str, type_: str, **options: int) -> None:
    fake.add_pool(name, type_=type_, **options)  # type: ignore[arg-type]
    fake.add_queue("default", pool=name)


def healthz(status: StatusServer) -> str:
    return httpx.get(f"http://{status.host}:{status.port}/healthz", timeout=5).text


def heartbeats_of_pool_fail_while(fake: FakePrefectApi, pool: str, status: int) -> threading.Event:
    """The heartbeats of `pool` fail with HTTP `status` while the returned event is set."""
    failing = threading.Event()
    fake.fail(
        "send_worker_heartbeat",
        10**6,
        status,
        when=lambda call: call.params["pool"] == pool and failing.is_set(),
    )
    return failing


def start_with_short_lease(start: Start, clock: ManualClock, pools: tuple[str, ...]) -> AgentHandle:
    """An agent of `pools` whose lease lapses 1 s (of `clock`) after a heartbeat's send."""
    return start(clock=clock, work_pools=pools, heartbeat_seconds=0.5, lost_agent_seconds=1.5)


def advance_to_next_beat(clock: ManualClock) -> None:
    """Half a second on, once the Heartbeat has scheduled its next round: it does so when the
    last round's answer reaches it, which on a loaded machine can come after the test has
    seen the round answered (a clock moved before then would leave the round unscheduled)."""
    clock.wait_for_timer(
        lambda timer: (
            isinstance(timer.message, Tick)
            and timer.ref is not None
            and timer.ref.actor_class.__name__ == "Heartbeat"
        ),
        timeout=5,
    )
    clock.advance(0.5)


def pool_lines(body: str) -> list[str]:
    return [line for line in body.splitlines() if line.startswith("work pool ")]


@pytest.mark.timeout(30)
def test_several_pools_are_served_at_once_each_run_on_its_own_kind_and_a_refused_one_alone(
    fake: FakePrefectApi, start: Start, runs_dir: Path, request: pytest.FixtureRequest
) -> None:
    """A process pool's run runs as a process, a "fake" pool's on the fake kind, and the
    kubernetes pool (no kind of this agent makes pods) is refused while the two are served:
    its run is never proposed, and /healthz has a line per pool. Each pool has a queue named
    "default": each has its own watcher, `pool/default`."""
    pool_with_default_queue(fake, "local", "process")
    pool_with_default_queue(fake, "boxes", "fake")
    pool_with_default_queue(fake, "pods", "kubernetes")
    process_run = fake.add_run(fake.add_deployment(run_command(runs_dir)), pool="local")
    boxed_run = fake.add_run(fake.add_deployment(None, block_data={"type": "fake"}), pool="boxes")
    pod_run = fake.add_run(fake.add_deployment(run_command(runs_dir)), pool="pods")
    kind = FakeInfrastructure()
    handle = start(work_pools=("local", "boxes", "pods"), infrastructures=(Process(), kind))
    status = StatusServer(handle).start()
    request.addfinalizer(status.stop)

    started_pid(runs_dir, process_run.id)
    kind.job(boxed_run.id)  # started on the fake kind, never as a process
    assert not (runs_dir / f"{boxed_run.id}.started").exists()
    refused = wait_until(
        lambda: (
            (w := node(handle.tree(), "QueueWatcher", "pods/default"))
            and w.state.startswith("refused")
            and w
        ),
        5,
        "the kubernetes pool's watcher to refuse it",
    )
    assert "of type 'kubernetes'" in refused.detail["refused"]
    watchers = {n.name for n in handle.tree().children if n.kind == "QueueWatcher"}
    assert watchers == {"local/default", "boxes/default", "pods/default"}
    body = wait_until(
        lambda: len(pool_lines(b := healthz(status))) == 3 and b, 5, "a line per pool"
    )
    assert "work pool 'local' (process): served" in body, body
    assert "work pool 'boxes' (fake): served" in body, body
    assert "work pool 'pods' (kubernetes): refused: " in body, body
    assert fake.proposals(pod_run.id) == []
    assert fake.state(pod_run.id).type == SCHEDULED
    # A worker of the pools it serves, of the refused one not (the server would show it READY).
    heartbeated = {c.params["pool"] for c in fake.calls("send_worker_heartbeat")}
    assert heartbeated == {"local", "boxes"}, heartbeated


@pytest.mark.timeout(30)
def test_the_agent_heartbeats_every_pool_under_one_name(fake: FakePrefectApi, start: Start) -> None:
    """The server lists the agent as a worker of each pool it serves, by one name (the
    default name names both pools)."""
    pool_with_default_queue(fake, "alpha", "process")
    pool_with_default_queue(fake, "beta", "process")
    handle = start(work_pools=("beta", "alpha"))
    name = handle.ctx.identity.name
    assert "alpha,beta/default" in name, name

    def heartbeated() -> set[str]:
        calls = fake.calls("send_worker_heartbeat")
        return {c.params["pool"] for c in calls if c.answered_at and c.error is None}

    wait_until(lambda: heartbeated() == {"alpha", "beta"}, 5, "a heartbeat in each pool")
    for pool in ("alpha", "beta"):
        assert [w.name for w in fake.read_workers(pool)] == [name]


@pytest.mark.timeout(30)
def test_a_served_pool_that_does_not_exist_leaves_the_lease_and_the_other_pools_be(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """A pool served is deleted (or was mistyped): the server answers its heartbeat 404. The
    other pool's heartbeats renew the lease, so its runs are taken long after the lease
    would have lapsed."""
    pool_with_default_queue(fake, "local", "process")
    clock = ManualClock()
    gone = heartbeats_of_pool_fail_while(fake, "typo", 404)
    handle = start_with_short_lease(start, clock, ("local", "typo"))
    wait_until(lambda: heartbeats_answered(fake) >= 2, 5, "a round through in both pools")
    gone.set()
    for _ in range(8):  # four seconds: the lease lapses 1 s after a send unless renewed
        answered = heartbeats_answered(fake)
        advance_to_next_beat(clock)
        wait_until(lambda a=answered: heartbeats_answered(fake) > a, 5, "the next heartbeat")
    assert not lease_lapsed(handle)
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)), pool="local")
    clock.advance(60)  # the next poll
    started_pid(runs_dir, run.id)
    heartbeat = node(handle.tree(), "Heartbeat")
    assert heartbeat is not None and "missing: 'typo'" in heartbeat.state, heartbeat


@pytest.mark.timeout(30)
def test_a_heartbeat_failing_in_one_pool_lapses_the_lease_though_the_other_pool_takes_it(
    fake: FakePrefectApi, start: Start
) -> None:
    """The peers of a pool judge this agent by its row there: a row left stale in one pool
    lets them declare it lost and recover its runs, so the lease lapses with it."""
    pool_with_default_queue(fake, "local", "process")
    pool_with_default_queue(fake, "other", "process")
    clock = ManualClock()
    cut = heartbeats_of_pool_fail_while(fake, "other", 503)
    handle = start_with_short_lease(start, clock, ("local", "other"))
    wait_until(lambda: heartbeats_answered(fake) >= 2, 5, "a round through in both pools")
    cut.set()
    for _ in range(4):  # the lease lapses 1 s after the last round that went through
        answered = heartbeats_answered(fake, ok=False)
        advance_to_next_beat(clock)
        with contextlib.suppress(AssertionError):
            wait_until(lambda a=answered: heartbeats_answered(fake, ok=False) > a, 1, "a round")
    ok_in_local = [
        c
        for c in fake.calls("send_worker_heartbeat")
        if c.params["pool"] == "local" and c.answered_at and c.error is None
    ]
    assert len(ok_in_local) >= 2, "the first pool's heartbeats went on"
    wait_until(lambda: lease_lapsed(handle), 5, "the lease to lapse")


@pytest.mark.timeout(30)
def test_a_pool_limit_counts_only_the_runs_of_that_pool(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """Two pools with a concurrency limit of 1 each: a run of the first pool is running;
    at the next poll the second pool's run is taken all the same (a pool's limit is not
    filled by another pool's run), and the first pool's second run waits."""
    for pool in ("left", "right"):
        pool_with_default_queue(fake, pool, "process", concurrency_limit=1)
    deployment = fake.add_deployment(run_command(runs_dir))
    left = [fake.add_run(deployment, pool="left") for _ in range(2)]
    clock = ManualClock()
    start(clock=clock, work_pools=("left", "right"))
    first = wait_until(
        lambda: next((r for r in left if fake.proposals(r.id, PENDING)), None), 5, "one taken"
    )
    started_pid(runs_dir, first.id)
    right = fake.add_run(deployment, pool="right")
    clock.advance(60)  # the next polls of both pools
    started_pid(runs_dir, right.id)
    assert [r.id for r in left if fake.proposals(r.id, PENDING)] == [first.id]


@pytest.mark.timeout(30)
def test_limit_counts_the_runs_of_every_pool_together(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    for pool in ("left", "right"):
        pool_with_default_queue(fake, pool, "process")
    deployment = fake.add_deployment(run_command(runs_dir))
    runs = [fake.add_run(deployment, pool=pool) for pool in ("left", "right", "left", "right")]
    handle = start(work_pools=("left", "right"), limit=1)
    first = wait_until(
        lambda: next((r for r in runs if fake.proposals(r.id, PENDING)), None), 5, "one taken"
    )
    started_pid(runs_dir, first.id)
    polled = ("waiting for a free slot", "idle")
    wait_until(
        lambda: all(
            n.state.startswith(polled) for n in handle.tree().children if n.kind == "QueueWatcher"
        ),
        5,
        "both pools polled",
    )
    assert [r.id for r in runs if fake.proposals(r.id, PENDING)] == [first.id]


@pytest.mark.timeout(30)
def test_q_names_a_queue_of_every_pool_and_is_created_in_each_served_pool(
    fake: FakePrefectApi, start: Start
) -> None:
    """`-p a -p b -q fast`: a watcher for `fast` in each pool, the queue created in each
    (as one pool's is), but not in a refused pool: its watcher refuses before it reads."""
    for pool, type_ in (("a", "process"), ("b", "process"), ("pods", "kubernetes")):
        fake.add_pool(pool, type_=type_)
    handle = start(work_pools=("a", "b", "pods"), work_queues=("fast",))
    wait_until(
        lambda: {c.params.get("pool") for c in fake.calls("create_pool_queue")} == {"a", "b"},
        5,
        "the queue created in each served pool",
    )
    wait_until(
        lambda: (
            (w := node(handle.tree(), "QueueWatcher", "pods/fast"))
            and w.state.startswith("refused")
        ),
        5,
        "the refused pool's watcher",
    )
    assert "pods" not in {c.params.get("pool") for c in fake.calls("create_pool_queue")}


@pytest.mark.timeout(30)
def test_a_cancellation_in_any_pool_served_stops_its_run(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    pool_with_default_queue(fake, "first", "process")
    pool_with_default_queue(fake, "second", "process")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)), pool="second")
    clock = ManualClock()
    start(clock=clock, work_pools=("first", "second"))
    pid = started_pid(runs_dir, run.id)
    fake.request_cancel(run.id)
    clock.advance(60)  # the cancellation poll
    wait_until(lambda: not alive(pid), 5, "the cancelled run's process to end")
    wait_until(lambda: fake.state(run.id).type == "CANCELLED", 5, "the run Cancelled")


@pytest.mark.timeout(30)
def test_a_lost_peer_is_recovered_from_in_the_pool_where_its_row_went_stale(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """Recovery reads every pool's worker rows: a peer whose row in the second pool is an
    hour old has its Running run there declared Crashed. In a pool this agent refuses (its
    runs' pods are of a kind it cannot judge) it recovers nothing."""
    pool_with_default_queue(fake, "first", "process")
    pool_with_default_queue(fake, "second", "process")
    pool_with_default_queue(fake, "pods", "kubernetes")
    peer = AgentIdentity("actor-agent@gone second/default", "0123abcd4567", "gone", 4242)
    deployment = fake.add_deployment(run_command(runs_dir))
    runs = {}
    for pool in ("second", "pods"):
        fake.add_worker(pool, peer.name, heartbeat_age=3600)
        runs[pool] = run = fake.add_run(deployment, pool=pool)
        fake.set_run_state(run.id, PENDING, message=claim_message(peer))
        fake.set_run_state(run.id, RUNNING)
    run = runs["second"]
    clock = ManualClock()
    start(
        clock=clock,
        work_pools=("first", "second", "pods"),
        heartbeat_seconds=1.0,
        lost_agent_seconds=3.0,
    )
    for _ in range(12):  # a lost window of unbroken heartbeats, then a round of Recovery
        answered = heartbeats_answered(fake)
        advance_to_next_beat(clock)
        with contextlib.suppress(AssertionError):
            wait_until(lambda a=answered: heartbeats_answered(fake) > a, 0.5, "a heartbeat")
        if fake.state(run.id).type == CRASHED:
            break
    wait_until(lambda: fake.state(run.id).type == CRASHED, 5, "the lost peer's run Crashed")
    assert "declared it lost" in (fake.state(run.id).message or "")
    assert fake.state(runs["pods"].id).type == RUNNING
    assert "pods" not in {c.params["pool"] for c in fake.calls("read_workers")}
