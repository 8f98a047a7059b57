"""How often idle queues are looked at, and which runs of a look are due (rules/scouting.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from actors.rules.scouting import STREAM_LOOK_SECONDS, SeenLater, due_split, look_interval
from messages.wire.prefect import FlowRun

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def run(run_id: str, due_in: float | None) -> FlowRun:
    when = None if due_in is None else NOW + timedelta(seconds=due_in)
    return FlowRun(id=run_id, name=run_id, next_scheduled_start_time=when)


def test_the_stream_makes_the_look_a_safety_net_under_the_servers_not_ready_minute() -> None:
    assert look_interval(15.0, stream_healthy=False) == 15.0
    assert look_interval(15.0, stream_healthy=True) == STREAM_LOOK_SECONDS
    assert STREAM_LOOK_SECONDS < 60.0  # 2.20 and 3.x mark a queue NOT_READY after a minute
    assert look_interval(120.0, stream_healthy=True) == 120.0  # never faster than asked


def test_a_look_proposes_what_is_due_and_remembers_the_earliest_of_the_rest() -> None:
    runs = [run("a", -5), run("b", 10), run("c", 40), run("d", 25), run("e", None)]
    due, later = due_split(runs, NOW + timedelta(seconds=15))
    assert [r.id for r in due] == ["a", "b", "e"]  # in the server's order; no time: due
    assert later == NOW + timedelta(seconds=25)
    assert due_split([run("a", 0)], NOW) == ([run("a", 0)], None)


def test_a_run_due_later_wakes_its_watcher_once() -> None:
    seen = SeenLater(size=2)
    assert seen.first_time("a") and not seen.first_time("a")
    assert seen.first_time("b") and seen.first_time("c")  # "a" forgotten: the oldest
    assert seen.first_time("a")
