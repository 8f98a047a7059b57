"""Which runs an earlier life of the agent left within its reach: taken over, others left alone."""

from __future__ import annotations

import pytest

from actors.rules.infrastructure_pid import format_infrastructure_pid, parse_infrastructure_pid
from actors.rules.reconcile import left_behind
from messages.wire.prefect import FlowRun


def test_only_runs_within_reach_no_live_agent_watches_are_taken_over() -> None:
    runs = [
        FlowRun(id="mine", infrastructure_pid="here:10"),
        FlowRun(id="watched", infrastructure_pid="here:11"),
        FlowRun(id="elsewhere", infrastructure_pid="there:10"),
        FlowRun(id="no-pid"),
        FlowRun(id="garbled", infrastructure_pid="not a pid"),
    ]
    found = left_behind(
        runs, here=lambda pid: pid.startswith("here:"), watched=lambda pid: pid == "here:11"
    )
    assert [run.id for run in found] == ["mine"]


def test_a_recorded_pid_names_its_host_and_anything_else_is_refused() -> None:
    assert parse_infrastructure_pid(format_infrastructure_pid("host-1", 42)) == ("host-1", 42)
    for garbled in ("42", ":42", "host:", "host:4x2", "not a pid"):
        with pytest.raises(ValueError, match="hostname:pid"):
            parse_infrastructure_pid(garbled)
