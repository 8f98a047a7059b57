"""A shared queue's window of sightings, and the runs read in full (rules/shared_window.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from actors.rules.shared_window import candidates, in_picked_order
from messages.wire.prefect import FlowRun, RunSighting

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def seen(run_id: str, expected_in: float | None) -> RunSighting:
    when = None if expected_in is None else NOW + timedelta(seconds=expected_in)
    return RunSighting(id=run_id, timestamp=when)


def test_the_share_picks_from_runs_expected_by_the_horizon_and_own_later_ones_are_read() -> None:
    window = [seen("a", -5), seen("b", 30), seen("c", 5), seen("d", 40), seen("e", None)]
    mine = {"b"}
    due, own_later = candidates(window, NOW + timedelta(seconds=10), mine.__contains__)
    assert [s.id for s in due] == ["a", "c", "e"]  # in the window's order; no time: due
    assert own_later == ["b"]  # "d" is a peer's: its timer is the peer's to set


def test_full_rows_come_back_in_the_order_the_share_picked_them() -> None:
    rows = [FlowRun(id=run_id) for run_id in ("x", "y", "z")]  # the server's (time) order
    assert [r.id for r in in_picked_order(rows, ["z", "x", "y"])] == ["z", "x", "y"]
    assert [r.id for r in in_picked_order(rows, ["y"])] == ["y", "x", "z"]  # unasked: last
