"""Simulated hosts (`examples/harness/hosts.py`) are what the multi-host tests take them for.

Two agents, each in a host of its own ("host-a", "host-b": own hostname, own pid space, own
proxy to the session's server), share one queue. Each run starts once, its recorded
`infrastructure_pid` names the host that ran it, and the pid in it is that host's own number
for the run's process (the pid the run's process sees, the pid its agent's tree shows), which
the machine knows under another number. Killing a host leaves none of its processes behind and
touches no process of the other host.
"""

from __future__ import annotations

import socket
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from examples.harness.agent_status import AgentStatus, find_node
from examples.harness.hosts import SimulatedHost
from tests.integration.helpers import (
    command_markers,
    command_starts,
    deploy_marker_command,
    has_polled,
    infrastructure_pid,
    process_gone,
    run_agent_with_status,
)
from tests.support.prefect_objects import create_runs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

RUNS = 6
PER_HOST = RUNS // 2  # each agent's --limit: both hosts get runs, whoever polls first


def _agent_args(queue: str) -> list[str]:
    return [
        "-q", queue,
        "--limit", str(PER_HOST),
        "--query-interval", "0.5",
        "--shutdown-grace-seconds", "2",
        "--log-level", "DEBUG",
    ]  # fmt: skip


def _held(status: AgentStatus) -> dict[str, str]:
    """The runs the agent holds now, each with the infrastructure pid its tree shows
    (`host:pid`; "" before the start)."""
    dispatcher = find_node(status.tree(), "Dispatcher")
    assert dispatcher is not None
    return {child.name: child.detail.get("pid", "") for child in dispatcher.children}


def _environ(machine_pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{machine_pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)


def test_two_hosts_share_a_queue_and_one_dies_whole(
    api_url: str, markers: Path, tmp_path: Path
) -> None:
    queue = f"hosts-{uuid.uuid4().hex[:8]}"
    deployment = deploy_marker_command(
        api_url, queue, markers, "60", env={"MARKER_ENV_NAMES": "PREFECT_API_URL"}
    )
    machine_hostname = socket.gethostname()
    with (
        SimulatedHost.for_api("host-a", api_url, log_dir=tmp_path) as host_a,
        SimulatedHost.for_api("host-b", api_url, log_dir=tmp_path) as host_b,
    ):
        hosts = {"host-a": host_a, "host-b": host_b}
        status = {
            name: run_agent_with_status(host, _agent_args(queue)) for name, host in hosts.items()
        }
        for name, agent in status.items():
            wait_for(lambda agent=agent: has_polled(agent, queue), 30, f"{name}'s agent to start")

        run_ids = create_runs(api_url, deployment, RUNS)
        wait_for(
            lambda: all(infrastructure_pid(api_url, run_id) for run_id in run_ids),
            30,
            "every run's infrastructure_pid",
        )
        wait_for(lambda: len(command_starts(markers)) == RUNS, 10, "every run's process")

        claims = {run_id: str(infrastructure_pid(api_url, run_id)) for run_id in run_ids}
        by_host: dict[str, list[tuple[str, int]]] = {name: [] for name in hosts}
        for run_id, claim in claims.items():
            name, _, pid_text = claim.rpartition(":")
            assert name in hosts, f"run {run_id} claimed by {claim!r}, not by a simulated host"
            by_host[name].append((run_id, int(pid_text)))
        assert {name: len(runs) for name, runs in by_host.items()} == {
            "host-a": PER_HOST,
            "host-b": PER_HOST,
        }, claims

        machine_pids: dict[str, list[int]] = {name: [] for name in hosts}
        for name, runs in by_host.items():
            host = hosts[name]
            held = _held(status[name])
            other = _held(status["host-b" if name == "host-a" else "host-a"])
            for run_id, host_pid in runs:
                # The pid the run's process saw itself as (os.getpid() in the marker) is the
                # host's number, the one its agent shows and recorded; the other agent does
                # not hold the run.
                (marker,) = command_markers(markers, run_id)
                assert marker["pid"] == host_pid
                assert marker["env"]["PREFECT_API_URL"] == host.api_url  # through its proxy
                assert held.get(run_id) == f"{name}:{host_pid}", held
                assert run_id not in other, other
                # On the machine the same process has another pid: that one is the run's.
                machine_pid = host.machine_pid(host_pid)
                assert machine_pid is not None, f"{claims[run_id]} is no process of {name}"
                assert machine_pid != host_pid
                assert _environ(machine_pid)["PREFECT__FLOW_RUN_ID"] == run_id
                assert host.host_pid(machine_pid) == host_pid
                machine_pids[name].append(machine_pid)
            assert set(machine_pids[name]) <= set(host.pids())
            assert host.proxy is not None and host.proxy.requests_seen > 0
        assert set(command_starts(markers).values()) == {1}, command_starts(markers)
        assert socket.gethostname() == machine_hostname  # only the hosts were renamed

        host_a.kill()
        assert host_a.pids() == []
        assert all(process_gone(pid) for pid in machine_pids["host-a"])
        assert not any(process_gone(pid) for pid in machine_pids["host-b"])
        assert set(command_starts(markers).values()) == {1}  # nothing started again

        assert host_b.stop(timeout=30) == 0, host_b.logs()[-3000:]
        assert host_b.pids() == []
        assert all(process_gone(pid) for pid in machine_pids["host-b"])


def test_a_host_is_cut_off_and_reconnected(api_url: str, tmp_path: Path) -> None:
    with SimulatedHost.for_api("host-c", api_url, log_dir=tmp_path) as host:
        assert host.api_url != api_url
        assert httpx.get(f"{host.api_url}/health", timeout=5).status_code == 200
        host.cut_off()
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{host.api_url}/health", timeout=0.5)
        assert httpx.get(f"{api_url}/health", timeout=5).status_code == 200  # others reach it
        host.reconnect()
        assert httpx.get(f"{host.api_url}/health", timeout=5).status_code == 200
        proxy = host.proxy
    assert proxy is not None
    left = [t.name for t in threading.enumerate() if t.name.startswith("fault-proxy")]
    assert f"fault-proxy-accept-{proxy.port}" not in left


def test_a_host_has_its_own_hostname_and_pid_space(tmp_path: Path) -> None:
    """Without an agent: what a process inside a host sees, and that kill leaves nothing."""
    probe = (
        "import os, socket, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n"
        "seen = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "print('probe', socket.gethostname(), os.getpid(), child.pid, seen, flush=True)\n"
        "time.sleep(60)\n"
    )
    with SimulatedHost("host-d", "127.0.0.1", 9, cut_off_able=False, log_dir=tmp_path) as host:
        host.run_agent([], command=[sys.executable, "-c", probe])
        line = wait_for(
            lambda: next((x for x in host.logs().splitlines() if x.startswith("probe")), None),
            10,
            "the probe's line",
        )
        assert line == "probe host-d 2 3 [1, 2, 3]"  # init 1, probe 2, its child 3; no more
        pids = host.pids()
        assert len(pids) == 3 and host.machine_pid(3) in pids
        host.kill()
        assert host.pids() == []
        assert all(process_gone(pid) for pid in pids)
