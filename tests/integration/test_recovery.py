"""When a host dies, its peers recover its runs exactly once; a server outage recovers nothing;
a host cut off and back kills what its peers recovered; an agent killed mid-burst and started
again runs every run once. Simulated hosts against the PostgreSQL-backed 2.20 server, with
short intervals: a heartbeat every 2 s, a peer lost after 6 s (three intervals). Who recovered
or relinquished what is read from the server's state histories and from each host's agent's
metrics (its status endpoint), not from its log."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from actors.rules.claims import claim_message
from actors.rules.identity import AgentIdentity
from examples.harness.agent_status import AgentStatus
from examples.harness.hosts import SimulatedHost
from tests.conftest import LAUNCHER, launcher_args
from tests.integration.helpers import (
    command_markers,
    command_starts,
    deploy_marker_command,
    has_polled,
    infrastructure_pid,
    process_gone,
    run_agent_with_status,
)
from tests.support.prefect_objects import (
    call_api,
    create_run,
    create_runs,
    read_states,
    run_state,
    set_run_state,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HEARTBEAT, LOST = 2.0, 6.0
RECOVERED = "prefect_agent_runs_recovered_total"  # by kind: crashed, handed-back, cancelled
FINISHED = "prefect_agent_runs_finished_total"  # by outcome (messages/user/events.py)


def _args(queue: str, limit: int) -> list[str]:
    return [
        "-q", queue,
        "--limit", str(limit),
        "--query-interval", "1",
        "--heartbeat-seconds", str(HEARTBEAT),
        "--lost-agent-seconds", str(LOST),
        "--cancel-poll-interval", "1",
        "--shutdown-grace-seconds", "1",
    ]  # fmt: skip


def _identity(status: AgentStatus) -> AgentIdentity:
    """Who the agent is, as its tree's root says."""
    detail = status.tree().detail
    return AgentIdentity(detail["name"], detail["instance"], detail["host"])


def _recovered(status: AgentStatus) -> dict[str, float]:
    """The runs of lost peers the agent recovered, by kind."""
    kinds = ("crashed", "handed-back", "cancelled")
    return {kind: status.sample(RECOVERED, kind=kind) or 0.0 for kind in kinds}


def _relinquished(status: AgentStatus) -> float:
    """The runs the agent killed because a peer had recovered them meanwhile."""
    return status.sample(FINISHED, outcome="relinquished") or 0.0


def _history(api_url: str, run_id: str) -> list[dict[str, object]]:
    return list(call_api(api_url, "GET", f"/flow_run_states/?flow_run_id={run_id}"))


def _recoveries(api_url: str, run_id: str) -> int:
    """How many states a peer proposed for the run (each recovery is one)."""
    return sum(
        "peer agent" in str(state.get("message") or "") for state in _history(api_url, run_id)
    )


def _host_of(api_url: str, run_id: str) -> str:
    return str(infrastructure_pid(api_url, run_id) or "").rpartition(":")[0]


def _serving(host: SimulatedHost, status: AgentStatus, queue: str) -> None:
    wait_for(lambda: has_polled(status, queue), 60, f"{host.name}'s agent to serve")


def test_a_host_killed_whole_has_its_runs_recovered_once_by_its_peers(
    postgres_api_url: str, markers: Path, tmp_path: Path
) -> None:
    api, queue = postgres_api_url, f"lost-{uuid.uuid4().hex[:8]}"
    deployment = deploy_marker_command(api, queue, markers, "300")
    with (
        SimulatedHost.for_api("lost-a", api, log_dir=tmp_path) as a,
        SimulatedHost.for_api("peer-b", api, log_dir=tmp_path) as b,
        SimulatedHost.for_api("peer-c", api, log_dir=tmp_path) as c,
    ):
        status_a = run_agent_with_status(a, _args(queue, 2))
        _serving(a, status_a, queue)
        running, started = create_runs(api, deployment, 2)
        wait_for(lambda: all(_host_of(api, r) == "lost-a" for r in (running, started)), 30, "a")
        set_run_state(api, running, "RUNNING", "Running")  # as the engine would
        # A run lost-a took (its claim) but had not started when it died.
        taken = create_run(api, deployment, scheduled_in=3600)
        claim = claim_message(_identity(status_a))
        set_run_state(api, taken, "PENDING", "Pending", force=False, message=claim)

        peers = {peer: run_agent_with_status(peer, _args(queue, 2)) for peer in (b, c)}
        for peer, status in peers.items():
            _serving(peer, status, queue)
        theirs = create_runs(api, deployment, 2)
        wait_for(lambda: {_host_of(api, r) for r in theirs} <= {"peer-b", "peer-c"}, 30, "b, c")
        wait_for(lambda: all(command_markers(markers, r) for r in theirs), 10, "their markers")
        peer_pids = [
            host.machine_pid(command_markers(markers, run)[0]["pid"])
            for run in theirs
            for host in (b, c)
            if _host_of(api, run) == host.name
        ]

        killed_at = time.monotonic()
        a.kill()
        assert a.pids() == []
        set_run_state(api, started, "CANCELLING", "Cancelling")  # asked after the host died

        wait_for(
            lambda: (
                run_state(api, running)[0] == "CRASHED"
                and run_state(api, started)[0] == "CANCELLED"
                and _host_of(api, taken) in {"peer-b", "peer-c"}
            ),
            LOST + 30,
            "every run of the lost host to be recovered",
        )
        recovered_in = time.monotonic() - killed_at
        print(f"recovered in {recovered_in:.1f}s after the host died")
        assert "lost-a" in (run_state(api, running)[2] or "")
        assert "lost host" in (run_state(api, started)[2] or "")
        for run in (running, started, taken):
            assert _recoveries(api, run) == 1, _history(api, run)  # once, by one peer

        def by_kind() -> dict[str, float]:
            recovered = [_recovered(status) for status in peers.values()]
            return {kind: sum(r[kind] for r in recovered) for kind in recovered[0]}

        # running Crashed, started Cancelled, taken handed back: each by one of the peers (the
        # count follows the server's answer by a moment).
        expected = {"crashed": 1, "handed-back": 1, "cancelled": 1}
        wait_for(lambda: by_kind() == expected, 10, f"the peers to count {expected}")
        assert command_starts(markers)[taken] == 1  # handed back, started once, elsewhere
        # The peers' own runs were not touched.
        assert set(read_states(api, theirs).values()) == {"PENDING"}
        assert not any(process_gone(pid) for pid in peer_pids if pid is not None)


def test_a_server_outage_recovers_nothing_and_kills_nothing(
    postgres_api_url: str, markers: Path, tmp_path: Path
) -> None:
    api, queue = postgres_api_url, f"outage-{uuid.uuid4().hex[:8]}"
    deployment = deploy_marker_command(api, queue, markers, "4", "3")  # exits 3 mid-outage
    with (
        SimulatedHost.for_api("out-a", api, log_dir=tmp_path) as a,
        SimulatedHost.for_api("out-b", api, log_dir=tmp_path) as b,
    ):
        hosts = {host: run_agent_with_status(host, _args(queue, 1)) for host in (a, b)}
        for host, status in hosts.items():
            _serving(host, status, queue)
        runs = create_runs(api, deployment, 2)
        wait_for(lambda: {_host_of(api, r) for r in runs} == {"out-a", "out-b"}, 30, "runs")
        for host in (a, b):
            host.cut_off()
        outage = 3 * LOST
        wait_for(lambda: all(len(command_markers(markers, r)) == 1 for r in runs), 10, "markers")
        time.sleep(outage)  # the outage itself (three lost windows), not a wait for anything
        for host in (a, b):
            host.reconnect()
        wait_for(lambda: set(read_states(api, runs).values()) == {"CRASHED"}, 60, "runs reported")
        for run in runs:
            assert "exit code 3" in (run_state(api, run)[2] or "") or "3" in (
                run_state(api, run)[2] or ""
            )
            assert _recoveries(api, run) == 0
        for host, status in hosts.items():
            assert _recovered(status) == {"crashed": 0, "handed-back": 0, "cancelled": 0}
            assert _relinquished(status) == 0
            # Agents of earlier tests in this pool are gone for good; these two never were.
            # (The agent counts the peers it declared lost, not which: their names are only
            # in its warnings, and the tree shows those lost now.)
            declared = [line for line in host.logs().splitlines() if "is lost" in line]
            assert not any("@out-" in line for line in declared), declared


# How a partition ends, each tried in turn on one pair of hosts: (what the cut does to the
# requests, whether the heal resets the connections, how long the cut lasts after a peer has
# recovered the run: 0 is a heal the moment it has).
HEALS = (
    ("blackhole", False, LOST),  # requests unanswered, clients time out; a long cut
    ("hold", False, LOST),  # requests held, then let through late: heartbeats that "went through"
    ("blackhole", True, LOST),  # the heal resets every connection
    ("hold", False, 0.0),  # a short cut, held requests: healed as soon as the run is recovered
)


def test_a_host_cut_off_kills_what_its_peer_recovered_at_every_kind_of_heal(
    postgres_api_url: str, markers: Path, tmp_path: Path
) -> None:
    """The fleet's no-double-execution promise: whatever the partition did to the requests
    and connections, the copy of a run a peer declared Crashed is killed within a heartbeat
    interval or two of the host reaching the server again."""
    api, queue = postgres_api_url, f"cut-{uuid.uuid4().hex[:8]}"
    deployment = deploy_marker_command(api, queue, markers, "300")
    with (
        SimulatedHost.for_api("cut-a", api, log_dir=tmp_path) as a,
        SimulatedHost.for_api("cut-b", api, log_dir=tmp_path) as b,
    ):
        status_b = run_agent_with_status(b, _args(queue, 1))
        _serving(b, status_b, queue)
        filler = create_run(api, deployment)  # b's one slot: the runs below go to a
        wait_for(lambda: _host_of(api, filler) == "cut-b", 30, "b's own run")
        status_a = run_agent_with_status(a, _args(queue, 1))
        _serving(a, status_a, queue)
        for count, (hold, drop, after) in enumerate(HEALS, start=1):
            run = create_run(api, deployment)
            wait_for(lambda: _host_of(api, run) == "cut-a", 30, "the run on cut-a")  # noqa: B023
            set_run_state(api, run, "RUNNING", "Running")
            # The pid is recorded as the process starts; its marker is written a moment later.
            marker = wait_for(lambda: command_markers(markers, run), 10, "its marker")  # noqa: B023
            machine_pid = a.machine_pid(marker[0]["pid"])
            assert machine_pid is not None

            a.cut_off(hold=hold == "hold")
            wait_for(
                lambda: run_state(api, run)[0] == "CRASHED",  # noqa: B023
                2 * LOST + 30,
                "b to recover it",
            )
            assert _recoveries(api, run) == 1
            assert not process_gone(machine_pid)  # cut off, it cannot know yet
            time.sleep(after)  # the partition lasts this much longer: the scenario, not a wait
            a.reconnect(drop_connections=drop)
            back_at = time.monotonic()
            wait_for(
                lambda: process_gone(machine_pid),  # noqa: B023
                2 * HEARTBEAT + 3,
                f"its process to be killed after a {hold} cut (connections reset: {drop})",
            )
            print(f"{hold}, reset {drop}: killed {time.monotonic() - back_at:.1f}s after healing")
            assert run_state(api, run)[0] == "CRASHED"  # the peer's state stands
            assert command_starts(markers)[run] == 1
            wait_for(
                lambda: _relinquished(status_a) == count,  # noqa: B023
                10,
                "a to count the run relinquished",
            )
        wait_for(lambda: _recovered(status_b)["crashed"] == len(HEALS), 10, "b's recoveries")


def test_an_agent_killed_during_a_burst_and_restarted_runs_every_run_once(
    api_url: str, markers: Path, tmp_path: Path
) -> None:
    queue = f"burst-{uuid.uuid4().hex[:8]}"
    deployment = deploy_marker_command(api_url, queue, markers, "1", env={"MARKER_COMPLETE": "1"})
    runs = create_runs(api_url, deployment, 50)
    args = launcher_args(api_url, {"work_queues": (queue,), "query_interval": 1.0})
    log_path = tmp_path / "agent.log"
    command = [sys.executable, str(LAUNCHER), *args]
    with log_path.open("ab") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: len(command_starts(markers)) >= 5, 60, "the burst to start")
            first.kill()  # SIGKILL: no goodbye, runs left Pending with and without pids
            first.wait(10)
            second = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                try:
                    wait_for(
                        lambda: set(read_states(api_url, runs).values()) == {"COMPLETED"},
                        120,
                        "every run to complete",
                        interval=1.0,
                    )
                except AssertionError as exc:  # say which runs, and what the agent said
                    left = {r: s for r, s in read_states(api_url, runs).items() if s != "COMPLETED"}
                    tail = log_path.read_text(errors="replace")[-6000:]
                    raise AssertionError(f"{exc}; not completed: {left}\n{tail}") from None
            finally:
                second.terminate()
                second.wait(30)
        finally:
            if first.poll() is None:
                first.kill()
    starts = command_starts(markers)
    assert len(starts) == 50 and set(starts.values()) == {1}, starts
