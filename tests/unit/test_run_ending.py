"""How a run ended decides what the server is told: the pure rules, without a server."""

from __future__ import annotations

from actors.rules import run_ending
from messages.internal.dispatch import Cancel
from messages.internal.lifecycle import Interrupt


def test_exit_zero_reports_nothing_the_engine_reported_the_state() -> None:
    ending = run_ending.after_exit(0, None)
    assert (ending.outcome, ending.report) == ("exited", None)


def test_nonzero_exit_is_crashed_with_what_the_code_means() -> None:
    ending = run_ending.after_exit(-9, None)
    assert ending.outcome == "crashed"
    assert ending.report is not None and ending.report.type == "CRASHED"
    assert "-9" in (ending.report.message or "") and not ending.force


def test_a_cancelled_run_is_cancelled_by_force_and_says_how_its_process_ended() -> None:
    killed = run_ending.after_exit(-9, Cancel("r", "asked in the UI"))
    terminated = run_ending.after_exit(-15, Cancel("r", "asked in the UI"))
    for ending in (killed, terminated):
        assert ending.outcome == "cancelled" and ending.force
        assert ending.report is not None and ending.report.type == "CANCELLED"
    assert "killed after the grace period" in (killed.report.message or "")  # type: ignore[union-attr]
    assert "terminated" in (terminated.report.message or "")  # type: ignore[union-attr]


def test_a_run_interrupted_by_the_agent_stopping_is_crashed_saying_so() -> None:
    ending = run_ending.after_exit(-15, Interrupt(5.0))
    assert ending.outcome == "interrupted"
    assert ending.report is not None and ending.report.type == "CRASHED"
    assert "agent stopped" in (ending.report.message or "")


def test_an_unknown_exit_code_asks_the_server_before_deciding() -> None:
    assert run_ending.after_exit(None, None).ask_server
    assert run_ending.unknown_exit("COMPLETED", "x").report is None
    crashed = run_ending.unknown_exit("RUNNING", "its supervisor had failed")
    assert crashed.report is not None and crashed.report.type == "CRASHED"
    assert "its supervisor had failed" in (crashed.report.message or "")


def test_stopped_before_start_cancel_is_cancelled_and_interrupt_hands_the_run_back() -> None:
    cancelled = run_ending.before_start(Cancel("r"))
    handed_back = run_ending.before_start(Interrupt(1.0))
    assert cancelled.report is not None and cancelled.report.type == "CANCELLED"
    assert handed_back.report is not None and handed_back.report.type == "SCHEDULED"
    assert cancelled.force and handed_back.force


def test_a_process_that_cannot_be_found_is_cancelled_only_when_a_cancel_asked() -> None:
    asked = run_ending.unreachable_process("no pid was recorded", Cancel("r"))
    assert asked.report is not None and "no pid was recorded" in (asked.report.message or "")
    assert run_ending.unreachable_process("no pid", None).report is None


def test_an_exit_0_found_after_the_fact_without_a_final_state_is_crashed_with_its_code() -> None:
    assert run_ending.unknown_exit("COMPLETED", "x", 0).report is None
    crashed = run_ending.unknown_exit("RUNNING", "the agent that started it was lost", 0)
    assert crashed.report is not None and crashed.report.type == "CRASHED"
    assert "exited with code 0 without reporting" in (crashed.report.message or "")
