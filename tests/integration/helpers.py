"""Small observations shared by the integration tests: what the server and the disk say, and
what a command run to its end printed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.prefect_objects import deploy, read_run, read_states, run_state

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


def all_in(api_url: str, run_ids: list[str], wanted: set[str]) -> bool:
    return set(states(api_url, run_ids).values()) <= wanted


def infrastructure_pid(api_url: str, run_id: str) -> str | None:
    value = read_run(api_url, run_id).get("infrastructure_pid")
    return str(value) if value else None


def process_gone(pid: int) -> bool:
    """True when no live process has this pid (a zombie awaiting its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def free_port() -> int:
    """A loopback port nobody listens on now (for a status endpoint under test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
