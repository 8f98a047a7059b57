"""The Process kind behind the infrastructure seam: a flow run as a local process group.

A run's process leads a process group of its own (`start_new_session`), so a stop reaches
everything the flow spawned and a Ctrl+C in the agent's terminal does not reach the runs; it
is signalled only through `ProcessGroup` (`actors.edges.processes`). Its infrastructure pid is
`host:pid`, known only once it started (a process cannot exist before it starts: `create`
checks and holds the spec, `start` spawns it). A temporary working directory made for it is
removed after its exit.

A process this agent started is waited for as its child, so its exit code is known; one found
again after a restart (`find`) is watched through /proc, and its code is not (only a parent
can wait for it): `wait` then answers `ExitStatus(None)` and the server's state decides.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

from actors.edges.infrastructure import ExitStatus, Reach, RunSource
from actors.edges.processes import (
    HOSTNAME,
    ProcessGroup,
    belongs_to_run,
    find_run_process,
    owned_by_live_agent,
    process_alive,
)
from actors.edges.spawn import Child
from actors.rules.infrastructure import ProcessSpec, SubmissionError, process_spec
from actors.rules.infrastructure_pid import format_infrastructure_pid, parse_infrastructure_pid

WATCH_SECONDS = 0.25  # how often a process found again by its pid is looked for in /proc


class StartedProcess:
    """A run's process this agent starts (its `RunJob`): spawned by `start`, waited for as a
    child, so `wait` knows its exit code."""

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self._child: Child | None = None
        self._group: ProcessGroup | None = None
        self._temp_dir: str | None = None
        self._stopped = False  # a stop was asked: what the leader leaves is killed

    @property
    def infrastructure_pid(self) -> str | None:
        return None if self._child is None else format_infrastructure_pid(HOSTNAME, self._child.pid)

    @property
    def label(self) -> str:
        return "process (not started)" if self._child is None else f"pid {self._child.pid}"

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    def start(self) -> None:
        spec = self.spec
        self._temp_dir = None if spec.working_dir else tempfile.mkdtemp(suffix="-prefect-run")
        cwd = spec.working_dir or self._temp_dir
        output = None if spec.stream_output else subprocess.DEVNULL
        try:
            child = Child(
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
        self._child = child
        self._group = ProcessGroup(child.pid, lambda: child.running)

    def wait(self) -> ExitStatus:
        """Its exit code (negative: killed by that signal), or None when the code was lost
        (see `actors.edges.spawn`)."""
        if self._child is None:
            return ExitStatus(None)
        return ExitStatus(self._child.wait())

    def terminate(self) -> bool:
        self._stopped = True
        return self._group is not None and self._group.terminate()

    def grace_over(self) -> bool:
        return self._group is not None and self._group.grace_over()

    def kill(self) -> bool:
        self._stopped = True
        return self._group is not None and self._group.kill()

    def after_exit(self) -> list[str]:
        """After a stop, SIGKILL to what the leader left in its group (a flow that ended on
        its own may leave a process behind on purpose, as under Prefect's own agent); the
        temporary working directory removed."""
        done = []
        if self._stopped and self._group is not None:
            left = self._group.kill_leftovers()
            if left:
                done.append(f"killed what its group still held: {left}")
        if self._remove_temp_dir():
            done.append("removed its temporary working directory")
        return done

    def _remove_temp_dir(self) -> bool:
        if self._temp_dir is None:
            return False
        shutil.rmtree(self._temp_dir, ignore_errors=True)
        self._temp_dir = None
        return True


class FoundProcess:
    """A run's process found again (this agent did not start it, or a failed supervisor of it
    did): watched through /proc by its pid; its exit code cannot be known."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._group = ProcessGroup(pid, lambda: process_alive(pid))
        self._stopped = False

    @property
    def infrastructure_pid(self) -> str:
        return format_infrastructure_pid(HOSTNAME, self.pid)

    @property
    def label(self) -> str:
        return f"pid {self.pid}"

    @property
    def running(self) -> bool:
        return process_alive(self.pid)

    def start(self) -> None:
        raise RuntimeError("a process found again is already running")

    def wait(self) -> ExitStatus:
        while process_alive(self.pid):
            time.sleep(WATCH_SECONDS)
        return ExitStatus(None)

    def terminate(self) -> bool:
        self._stopped = True
        return self._group.terminate()

    def grace_over(self) -> bool:
        return self._group.grace_over()

    def kill(self) -> bool:
        self._stopped = True
        return self._group.kill()

    def after_exit(self) -> list[str]:
        if not self._stopped:
            return []
        left = self._group.kill_leftovers()
        return [f"killed what its group still held: {left}"] if left else []


class Process:
    """The Process kind: 2.x Process blocks, 3.x process pools (and runs with no block)."""

    kind = "process"
    block_types = ("process",)
    pool_types = ("process",)

    def prepare(self, source: RunSource) -> ProcessSpec:
        return process_spec(
            source.flow_run,
            source.deployment,
            source.block,
            api_url=source.api_url,
            api_key=source.api_key,
            base_env=source.base_env,
            job_variables=source.job_variables,
            pool=source.pool,
        )

    def create(self, spec: object) -> StartedProcess:
        if not isinstance(spec, ProcessSpec):
            raise TypeError(f"the Process kind cannot create {type(spec).__name__}")
        return StartedProcess(spec)

    def find(self, flow_run_id: str, infrastructure_pid: str | None) -> FoundProcess | None:
        """By the recorded pid when it still names the run's process (a pid reused by another
        process is never taken for it), or by the run's environment when none was recorded."""
        if infrastructure_pid is None:
            pid = find_run_process(flow_run_id)
            return None if pid is None else FoundProcess(pid)
        host, pid = parse_infrastructure_pid(infrastructure_pid)
        if host != HOSTNAME or not belongs_to_run(pid, flow_run_id):
            return None
        return FoundProcess(pid)

    def reach(self, infrastructure_pid: str) -> Reach:
        try:
            host, _ = parse_infrastructure_pid(infrastructure_pid)
        except ValueError:
            return "not-mine"
        if ":" in host:  # another kind's form (`docker:<daemon>:<id>`), not a host name
            return "not-mine"
        return "here" if host == HOSTNAME else "elsewhere"

    def watched(self, infrastructure_pid: str) -> bool:
        """Whether a live agent (another one on this host) is still the process's parent: its
        run is that agent's, not an orphan of an earlier life of this one."""
        _, pid = parse_infrastructure_pid(infrastructure_pid)
        return owned_by_live_agent(pid)
