"""The agent's other edge: flow run processes on this host.

Each run's process leads a process group of its own (`start_new_session`), so that a
cancellation reaches everything the flow spawned, children and grandchildren, and so that a
Ctrl+C in the agent's terminal does not reach the runs. A temporary working directory made for
a run is removed when the run's process has exited.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile

from actors.infrastructure import ProcessSpec, SubmissionError

log = logging.getLogger("prefect_actor_agent.process")

HOSTNAME = socket.gethostname()


def infrastructure_pid(pid: int) -> str:
    """The `hostname:pid` form the server records, as the official agent writes it."""
    return f"{HOSTNAME}:{pid}"


def parse_infrastructure_pid(value: str) -> tuple[str, int]:
    """Split `hostname:pid`; raises ValueError for anything else."""
    host, sep, pid = value.rpartition(":")
    if not sep or not host or not pid.isdigit():
        raise ValueError(f"infrastructure_pid {value!r} is not of the form hostname:pid")
    return host, int(pid)


class RunProcess:
    """One started flow run process; `wait` blocks, so call it from a helper, never an inbox."""

    def __init__(self, spec: ProcessSpec) -> None:
        self._temp_dir = None if spec.working_dir else tempfile.mkdtemp(suffix="-prefect-run")
        cwd = spec.working_dir or self._temp_dir
        output = None if spec.stream_output else subprocess.DEVNULL
        try:
            self._popen = subprocess.Popen(
                list(spec.command),
                env=spec.env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self._remove_temp_dir()
            raise SubmissionError(
                f"could not start {spec.command[0]!r} in {cwd!r}: {exc.strerror or exc}"
            ) from exc
        self.pid = self._popen.pid

    def wait(self) -> int:
        """Block until the process exits; its exit code (negative: killed by that signal)."""
        try:
            return self._popen.wait()
        finally:
            self._remove_temp_dir()

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def signal_group(self, signum: int) -> bool:
        """Send `signum` to the run's whole process group; False when nothing is left there."""
        return signal_process_group(self.pid, signum)

    def _remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def signal_process_group(pgid: int, signum: int) -> bool:
    """Signal a process group; False when no process is left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not permitted to signal process group %d", pgid)
        return False
    return True


def group_alive(pgid: int) -> bool:
    return signal_process_group(pgid, 0)


SIGTERM = signal.SIGTERM
SIGKILL = signal.SIGKILL
