"""Processes on this host, read from /proc and signalled by group: what the Process kind of
infrastructure (`actors.edges.process_kind`) is made of.

Each run's process leads a process group of its own (`start_new_session`), so that a
cancellation reaches everything the flow spawned, children and grandchildren, and so that a
Ctrl+C in the agent's terminal does not reach the runs. `ProcessGroup` is the one place such a
group is signalled (SIGTERM, a grace period, SIGKILL). A temporary working directory made for a
run is removed when the run's process has exited (by the Process kind).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable

log = logging.getLogger("prefect_actor_agent.process")

HOSTNAME = socket.gethostname()


class ProcessGroup:
    """A process group whose leader this host runs: the one place the agent signals one.

    How a group is stopped: SIGTERM to every member; a grace period; SIGKILL if the leader
    outlived it; and, once the leader has exited, SIGKILL to whatever it left in its group (a
    child that ignores SIGTERM, or that its leader did not wait for). An actor waits out the
    grace on its own clock and calls `grace_over`; `stop` waits here, for a caller that may
    block. A group with no process left in it is not an error: every step then does nothing.
    """

    def __init__(self, pgid: int, leader_running: Callable[[], bool]) -> None:
        self.pgid = pgid  # the leader's pid
        self._leader_running = leader_running

    def terminate(self) -> bool:
        """SIGTERM to every member, the start of a stop; False when nothing is left there."""
        return self._signal(signal.SIGTERM)

    def kill(self) -> bool:
        """SIGKILL to every member now, with no grace; False when nothing is left there."""
        return self._signal(signal.SIGKILL)

    def grace_over(self) -> bool:
        """The grace period after `terminate` has passed: SIGKILL, if the leader still runs.
        Whether it did (and was killed)."""
        return self._leader_running() and self.kill()

    def kill_leftovers(self) -> list[int]:
        """After the leader's exit: SIGKILL to the live members it left; which they were."""
        left = group_members(self.pgid)
        if left:
            self.kill()
        return left

    def stop(self, grace: float, poll_seconds: float = 0.05) -> None:
        """The whole stop, waiting here: SIGTERM, up to `grace` seconds for the leader to
        exit, SIGKILL if it did not (then waiting for it), and SIGKILL to its leftovers."""
        self.terminate()
        if not self._wait_leader(grace, poll_seconds):
            self.kill()
            self._wait_leader(None, poll_seconds)
        self.kill_leftovers()

    def _wait_leader(self, timeout: float | None, poll_seconds: float) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._leader_running():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(poll_seconds)
        return True

    def _signal(self, signum: int) -> bool:
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            log.warning("not permitted to signal process group %d", self.pgid)
            return False
        return True


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_alive(pid: int) -> bool:
    """True for a live process; a zombie waiting for its reaper is not alive."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group: what a cancellation must leave behind it, none."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and fields[0] != "Z" and fields[2] == str(pgid):
                members.append(int(entry))
    return members


AGENT_PID_VARIABLE = "PREFECT_ACTOR_AGENT_PID"


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            entries = environ.read().split(b"\0")
    except OSError:
        return {}
    pairs = (entry.decode("utf-8", "replace").partition("=") for entry in entries if entry)
    return {name: value for name, _, value in pairs}


def owned_by_live_agent(pid: int) -> bool:
    """Whether the run process `pid` is still supervised by the agent that started it: that
    agent (named in its environment) is alive and is still its parent."""
    owner = _environ(pid).get(AGENT_PID_VARIABLE, "")
    fields = _stat_fields(pid)
    if not owner.isdigit() or fields is None:
        return False
    return fields[1] == owner and process_alive(int(owner))


def find_run_process(flow_run_id: str) -> int | None:
    """The process of that flow run on this host, found by its environment: the leader of its
    process group (the agent starts each run as one), or None. For a run whose pid was never
    recorded (its agent died between the start and the report)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        fields = _stat_fields(pid)
        if fields is None or fields[2] != entry:  # not a process group leader
            continue
        if _environ(pid).get("PREFECT__FLOW_RUN_ID") == flow_run_id:
            return pid
    return None


def belongs_to_run(pid: int, flow_run_id: str) -> bool:
    """Whether `pid` is that flow run's process: its environment or command line names the run.

    A pid recorded on the server may have been reused by an unrelated process since; such a
    process must never be signalled.
    """
    if not process_alive(pid):
        return False
    if _environ(pid).get("PREFECT__FLOW_RUN_ID") == flow_run_id:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return flow_run_id.encode() in cmdline.read()
    except OSError:
        return False

