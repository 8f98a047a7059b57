"""Which runs an earlier life of the agent left on this host: taken over, others left alone."""

from __future__ import annotations

from actors.rules.reconcile import left_behind
from messages.wire.prefect import FlowRun


def test_only_this_hosts_runs_no_live_agent_watches_are_taken_over() -> None:
    runs = [
        FlowRun(id="mine", infrastructure_pid="here:10"),
        FlowRun(id="watched", infrastructure_pid="here:11"),
        FlowRun(id="elsewhere", infrastructure_pid="there:10"),
        FlowRun(id="no-pid"),
        FlowRun(id="garbled", infrastructure_pid="not a pid"),
    ]
    found = left_behind(runs, "here", owned_by_live_agent=lambda pid: pid == 11)
    assert [run.id for run in found] == ["mine"]
