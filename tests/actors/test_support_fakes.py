"""The fake server and the manual clock themselves: the actor tests rest on what they claim."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pykka
import pytest

from actors.edges.prefect_api import ApiError, NotFoundError
from actors.rules.proposals import cancelled, crashed, pending, scheduled_now
from actors.rules.retry import RetryPolicy
from actors.tree.cancel_watcher import cancelling_runs_filter
from messages.wire.prefect import CANCELLED, CANCELLING, CRASHED, PENDING, RUNNING, SCHEDULED
from tests.support.fake_api import FakePrefectApi
from tests.support.manual_clock import ManualClock
from tests.support.waiting import wait_for


def fake_with_run() -> tuple[FakePrefectApi, str]:
    fake = FakePrefectApi()
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(["true"]))
    return fake, run.id


@pytest.mark.timeout(30)
def test_pending_is_accepted_once_and_a_repeat_of_ours_is_recognised() -> None:
    fake, run_id = fake_with_run()
    ours = pending()
    first = fake.set_state(run_id, ours)
    assert first.status == "ACCEPT" and first.state is not None and first.state.type == PENDING
    repeat = fake.set_state(run_id, ours)  # the same proposal again: a lost answer
    assert repeat.status == "REJECT" and repeat.state is not None
    assert repeat.state.state_details.transition_id == ours.state_details.transition_id
    rival = fake.set_state(run_id, pending())  # another agent's
    assert rival.status == "ABORT" and rival.state is not None and rival.state.type == PENDING
    assert [s.type for s in fake.history(run_id)] == [SCHEDULED, PENDING]


@pytest.mark.timeout(30)
def test_forced_states_are_accepted_and_a_final_state_refuses_the_rest() -> None:
    fake, run_id = fake_with_run()
    assert fake.set_state(run_id, cancelled("gone"), force=True).status == "ACCEPT"
    assert fake.set_state(run_id, crashed("late")).status == "ABORT"
    assert fake.set_state(run_id, pending()).status == "ABORT"
    assert fake.set_state(run_id, scheduled_now("again"), force=True).status == "ACCEPT"
    assert [s.type for s in fake.history(run_id)] == [SCHEDULED, CANCELLED, SCHEDULED]
    assert fake.state(run_id).message == "again"


@pytest.mark.timeout(30)
def test_polls_find_due_runs_and_cancellations() -> None:
    fake = FakePrefectApi()
    queue = fake.add_queue("default")
    deployment = fake.add_deployment(["true"])
    late = fake.add_run(deployment, scheduled_in=-5)
    now = fake.add_run(deployment)
    fake.add_run(deployment, scheduled_in=3600)  # not due
    before = datetime.now(UTC) + timedelta(seconds=1)
    assert [r.id for r in fake.get_runs(queue.id, before, 10)] == [
        late.id,
        now.id,
    ]
    assert [r.id for r in fake.scheduled_runs("default", before, 1)] == [late.id]
    fake.request_cancel(now.id)
    fake.set_run_state(late.id, RUNNING)
    assert [r.id for r in fake.filter_flow_runs(cancelling_runs_filter(("default",)))] == [now.id]
    assert [r.id for r in fake.runs_in_states(["default"], [RUNNING])] == [late.id]
    assert fake.state(now.id).type == CANCELLING
    with pytest.raises(NotFoundError):
        fake.read_flow_run("no-such-run")


@pytest.mark.timeout(30)
def test_fail_raises_the_edges_error_for_the_next_calls_and_a_retry_view_retries() -> None:
    fake, run_id = fake_with_run()
    fake.fail("read_flow_run", times=2, status=503)
    for _ in range(2):
        with pytest.raises(ApiError) as raised:
            fake.read_flow_run(run_id)
        assert raised.value.status == 503 and raised.value.transient
    assert fake.read_flow_run(run_id).id == run_id
    fake.fail("read_flow_run", times=2, status=None)
    patient = fake.with_retry(RetryPolicy(base_delay=0.01, max_delay=0.01))
    assert patient.read_flow_run(run_id).id == run_id  # third attempt answered
    attempts = fake.calls("read_flow_run")[-3:]
    assert [c.error is not None for c in attempts] == [True, True, False]
    fake.fail("read_flow_run", times=1, status=404)
    with pytest.raises(NotFoundError):
        patient.read_flow_run(run_id)  # a 404 is not retried
    with pytest.raises(ValueError, match="not a server call"):
        fake.fail("read_flowrun")


@pytest.mark.timeout(30)
def test_hang_holds_matching_calls_until_released() -> None:
    fake, run_id = fake_with_run()
    gate = fake.hang(
        "set_state", when=lambda call: call.proposal is not None and call.proposal.type == PENDING
    )
    answers: list[str] = []
    caller = threading.Thread(
        target=lambda: answers.append(fake.set_state(run_id, pending()).status)
    )
    caller.start()
    wait_for(lambda: fake.blocked("set_state"), 5, "the Pending to be held", interval=0.005)
    assert [c.method for c in fake.blocked()] == ["set_state"]
    assert fake.read_flow_run(run_id).state is not None  # other calls go on
    assert fake.set_state(run_id, crashed("x"), force=True).status == "ACCEPT"  # not matched
    assert answers == []
    gate.release()
    caller.join(5)
    assert answers == ["ABORT"]  # answered after the forced Crashed: a Pending is no more due
    assert fake.blocked() == []
    call = fake.proposals(run_id, PENDING)[0]
    assert call.answered_at is not None and call.answered_at > call.at
    assert fake.state(run_id).type == CRASHED


@pytest.mark.timeout(30)
def test_manual_clock_delivers_due_timers_in_order_and_only_when_advanced() -> None:
    clock = ManualClock()
    fired: list[str] = []
    clock.call_later(2.0, lambda: fired.append("two"))
    clock.call_later(1.0, lambda: fired.append("one"))
    later = clock.call_later(1.5, lambda: fired.append("cancelled"))
    later.cancel()
    clock.call_later(1.0, lambda: clock.call_later(0.5, lambda: fired.append("chained")))
    assert clock.advance(0.9) == 0 and fired == []
    assert [round(t.due_in, 3) for t in clock.pending()] == [0.1, 0.1, 1.1]
    clock.advance(0.7)
    assert fired == ["one", "chained"]
    clock.advance(10)
    assert fired == ["one", "chained", "two"]
    assert clock.pending() == []


@pytest.mark.timeout(30)
def test_manual_clock_tells_actors_and_stops() -> None:
    class Inbox(pykka.ThreadingActor):
        def __init__(self, got: list[object]) -> None:
            super().__init__()
            self.got = got

        def on_receive(self, message: object) -> None:
            self.got.append(message)

    got: list[object] = []
    ref = Inbox.start(got)
    try:
        clock = ManualClock()
        clock.tell_later(5, ref, "hello")
        assert clock.wait_for_timer(lambda t: t.message == "hello", timeout=1).due_in == 5
        clock.advance(5)
        ref.ask("barrier")
        assert got == ["hello", "barrier"]
        clock.stop()
        clock.tell_later(0, ref, "after stop")
        clock.advance(1)
        ref.ask("barrier")
        assert got == ["hello", "barrier", "barrier"]
    finally:
        ref.stop()
