"""`ProcessGroup.stop`, the blocking stop the launcher's local server uses (the agent's runs
are stopped step by step on its clock: see tests/actors/test_actors_without_server.py)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from actors.edges.processes import ProcessGroup, group_members, process_alive


def _gone(pids: list[int]) -> bool:
    """Whether every one of `pids` has died within a second (a SIGKILL lands a moment later)."""
    deadline = time.monotonic() + 1.0
    while any(process_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _group(tmp_path: Path, script: str) -> tuple[subprocess.Popen[bytes], int]:
    """A leader running `script` in a session of its own, and the pid of its `sleep` child."""
    child_file = tmp_path / "child"
    leader = subprocess.Popen(["sh", "-c", script, str(child_file)], start_new_session=True)
    deadline = time.monotonic() + 5
    while not child_file.exists() or not child_file.read_text().strip():
        assert time.monotonic() < deadline, "the leader did not start its child"
        time.sleep(0.01)
    return leader, int(child_file.read_text())


def test_stop_kills_a_child_that_ignores_sigterm_once_its_leader_exits(tmp_path: Path) -> None:
    leader, child = _group(
        tmp_path, "(trap '' TERM; exec sleep 600) & echo $! > \"$0\"; while :; do sleep 0.05; done"
    )
    began = time.monotonic()
    ProcessGroup(leader.pid, lambda: leader.poll() is None).stop(grace=30)
    assert time.monotonic() - began < 5, "the leader died of SIGTERM: no grace to wait out"
    assert _gone([child])
    assert not group_members(leader.pid)


def test_stop_kills_a_leader_that_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    leader, child = _group(
        tmp_path, "trap '' TERM; sleep 600 & echo $! > \"$0\"; while :; do sleep 0.05; done"
    )
    began = time.monotonic()
    ProcessGroup(leader.pid, lambda: leader.poll() is None).stop(grace=0.5)
    assert time.monotonic() - began >= 0.5
    assert leader.returncode == -9
    assert _gone([child])
