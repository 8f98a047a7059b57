"""Which runs the Dispatcher admits: limit, de-duplication, order. No actors, no server."""

from datetime import UTC, datetime, timedelta

from actors.rules.admission import admit, free_slots
from messages.wire.prefect import FlowRun

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run(run_id: str, minutes: float | None) -> FlowRun:
    when = None if minutes is None else T0 + timedelta(minutes=minutes)
    return FlowRun(id=run_id, next_scheduled_start_time=when)


def ids(runs: list[FlowRun]) -> list[str]:
    return [r.id for r in runs]


def test_admits_earliest_scheduled_first_within_the_limit() -> None:
    found = [run("late", 5), run("early", 1), run("middle", 3)]
    assert ids(admit(found, held=[], limit=2)) == ["early", "middle"]


def test_runs_already_held_are_not_admitted_again() -> None:
    found = [run("a", 1), run("b", 2)]
    assert ids(admit(found, held=["a"], limit=None)) == ["b"]


def test_the_same_run_seen_twice_in_one_batch_is_admitted_once() -> None:
    found = [run("a", 1), run("a", 1), run("b", 2)]
    assert ids(admit(found, held=[], limit=None)) == ["a", "b"]


def test_held_runs_count_against_the_limit() -> None:
    found = [run("c", 1), run("d", 2)]
    assert ids(admit(found, held=["a", "b"], limit=3)) == ["c"]
    assert admit(found, held=["a", "b", "x"], limit=3) == []


def test_runs_without_a_start_time_go_last() -> None:
    found = [run("none", None), run("a", 1)]
    assert ids(admit(found, held=[], limit=None)) == ["a", "none"]


def test_naive_and_aware_times_sort_together() -> None:
    naive = FlowRun(id="naive", next_scheduled_start_time=datetime(2025, 1, 1))
    assert ids(admit([run("aware", 0), naive], held=[], limit=None)) == ["naive", "aware"]


def test_free_slots() -> None:
    assert free_slots(None, 10) is None
    assert free_slots(3, 1) == 2
    assert free_slots(3, 5) == 0
