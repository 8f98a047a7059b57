"""Small observations shared by the integration tests: what the server and the disk say, and
what a command run to its end printed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from actors.edges.processes import process_alive
from examples.harness.agent_status import AgentStatus, StatusUnavailableError, find_node, free_port
from examples.harness.hosts import SimulatedHost
from tests.support.prefect_objects import call_api, deploy, read_run, read_states, run_state

FLOWS = Path(__file__).resolve().parent.parent / "flows"
# -S: the command needs only the standard library, and skipping site halves its start-up.
MARKER_COMMAND = [sys.executable, "-S", str(FLOWS / "marker_command.py")]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def deploy_marker_command(
    api_url: str,
    queue: str,
    markers: Path,
    *args: str,
    name: str = "marker",
    env: dict[str, str | None] | None = None,
) -> str:
    """A deployment whose runs start the fast marker command instead of the engine."""
    return deploy(
        api_url,
        FLOWS / "hello.py",
        "hello",
        name=f"{name}-{queue}",
        work_queue=queue,
        command=[*MARKER_COMMAND, *args],
        env={"MARKER_DIR": str(markers), **(env or {})},
    )


def command_markers(markers: Path, run_id: str) -> list[dict[str, Any]]:
    """What each start of the marker command for this run recorded."""
    return [json.loads(path.read_text()) for path in markers.glob(f"{run_id}.*.cmd")]


def command_starts(markers: Path) -> Counter[str]:
    """How many times the marker command started for each flow run id."""
    return Counter(path.name.split(".", 1)[0] for path in markers.glob("*.cmd"))


def state_type(api_url: str, run_id: str) -> str:
    return run_state(api_url, run_id)[0]


states = read_states  # each run's state type, a page of runs per request


def history(api_url: str, run_id: str) -> list[dict[str, Any]]:
    """Every state the run has had on the server, oldest first."""
    return list(call_api(api_url, "GET", f"/flow_run_states/?flow_run_id={run_id}"))


def all_in(api_url: str, run_ids: list[str], wanted: set[str]) -> bool:
    return set(states(api_url, run_ids).values()) <= wanted


def infrastructure_pid(api_url: str, run_id: str) -> str | None:
    value = read_run(api_url, run_id).get("infrastructure_pid")
    return str(value) if value else None


def process_gone(pid: int) -> bool:
    """True when no live process has this pid (a zombie awaiting its reaper counts as gone).

    Asked as the agent asks it, so a process reaped between the open and the read of its
    /proc entry (ESRCH, not ENOENT) is gone here too."""
    return not process_alive(pid)


def run_ok(
    argv: list[str], *, timeout: float, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A command run to its end, as a user runs it from a shell, which must succeed; a failure
    shows the output's tail, where a command says what went wrong."""
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return result


def run_agent_with_status(host: SimulatedHost, args: list[str]) -> AgentStatus:
    """Start the host's agent with a status endpoint of its own, where a test reads its
    metrics and tree (the hosts share the machine's loopback, so each gets its own port)."""
    port = free_port()
    host.run_agent([*args, "--status-port", str(port)])
    return AgentStatus.on_port(port)


def has_polled(status: AgentStatus, queue: str) -> bool:
    """The agent serves `queue`: its watcher has polled the server and is idle till the next
    poll (False while the agent is still starting, its status endpoint not up yet)."""
    try:
        tree = status.tree(timeout=0)
    except StatusUnavailableError:
        return False
    watcher = find_node(tree, "QueueWatcher", queue)
    return watcher is not None and watcher.state.startswith("idle")
