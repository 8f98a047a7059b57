"""A fleet: three agents on three simulated hosts share one queue of a PostgreSQL-backed
Prefect server. Every run starts exactly once, its `infrastructure_pid` names the host whose
agent ran it (the pid in it is the one the run's process had on that host), its claim names
that agent, each agent counts the runs it took, and every agent is a worker of the pool."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from actors.rules.claims import parse_claim
from examples.harness.hosts import SimulatedHost
from tests.integration.helpers import (
    command_markers,
    command_starts,
    deploy_marker_command,
    has_polled,
    infrastructure_pid,
    run_agent_with_status,
)
from tests.support.prefect_objects import call_api, create_runs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

HOSTS = ("fleet-a", "fleet-b", "fleet-c")
FINISHED = "prefect_agent_runs_finished_total"  # by outcome (messages/user/events.py)
RUNS = 100


def _pending_claim(api_url: str, run_id: str) -> Any:
    states = call_api(api_url, "GET", f"/flow_run_states/?flow_run_id={run_id}")
    messages = [state["message"] for state in states if state["type"] == "PENDING"]
    return parse_claim(messages[-1]) if messages else None


def test_three_hosts_run_a_hundred_runs_exactly_once_each_naming_its_host(
    postgres_api_url: str, markers: Path, tmp_path: Path
) -> None:
    api_url = postgres_api_url
    queue = f"fleet-{uuid.uuid4().hex[:8]}"
    deployment = deploy_marker_command(api_url, queue, markers, "0")
    with (
        SimulatedHost.for_api(HOSTS[0], api_url, log_dir=tmp_path) as a,
        SimulatedHost.for_api(HOSTS[1], api_url, log_dir=tmp_path) as b,
        SimulatedHost.for_api(HOSTS[2], api_url, log_dir=tmp_path) as c,
    ):
        hosts = {host.name: host for host in (a, b, c)}
        args = ["-q", queue, "--query-interval", "1", "--heartbeat-seconds", "2"]
        status = {name: run_agent_with_status(host, args) for name, host in hosts.items()}
        for name, agent in status.items():
            wait_for(lambda agent=agent: has_polled(agent, queue), 60, f"{name}'s agent")

        runs = create_runs(api_url, deployment, RUNS)
        # The marker command is no engine: a run taken stays Pending, with its pid recorded.
        wait_for(lambda: len(command_starts(markers)) == RUNS, 120, "every run to start", 1.0)
        wait_for(
            lambda: all(infrastructure_pid(api_url, run) for run in runs), 60, "every pid", 1.0
        )

        starts = command_starts(markers)
        assert len(starts) == RUNS and set(starts.values()) == {1}, starts  # exactly once
        ran_on: dict[str, int] = dict.fromkeys(hosts, 0)
        for run_id in runs:
            claim = str(infrastructure_pid(api_url, run_id))
            host_name, _, pid = claim.rpartition(":")
            assert host_name in hosts, f"{run_id}: {claim!r} names no simulated host"
            # The pid recorded is the one the run's process saw itself as, on that host.
            assert [m["pid"] for m in command_markers(markers, run_id)] == [int(pid)], claim
            holder = _pending_claim(api_url, run_id)
            assert holder is not None and holder.host == host_name, holder
            ran_on[host_name] += 1
        assert sum(ran_on.values()) == RUNS

        def exits() -> dict[str, float]:
            return {
                name: agent.sample(FINISHED, outcome="exited") or 0
                for name, agent in status.items()
            }

        # Each agent saw the exit of exactly the runs its host ran (a run it lost to a peer is
        # `not-submitted`, not `exited`).
        wait_for(lambda: exits() == ran_on, 30, f"the agents to count {ran_on}")

        workers = call_api(api_url, "POST", "/work_pools/default-agent-pool/workers/filter", {})
        online = {row["name"] for row in workers if row.get("status") == "ONLINE"}
        for name in hosts:
            assert any(f"@{name} " in worker for worker in online), (name, online)

        for host in hosts.values():
            host.kill()
            assert host.pids() == []
