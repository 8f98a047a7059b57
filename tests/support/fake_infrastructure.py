"""A fake kind of infrastructure for actor tests, as `fake_api` is a fake of the server.

`FakeInfrastructure` answers the seam (`actors.edges.infrastructure.Infrastructure`) in
memory: a run whose deployment's block is of type "fake" gets a `FakeJob`, which "runs" until
the test ends it (`job.end(ExitStatus(...))`) or a stop does. Like a container, its pid
(`fake:<run id>`) is known before it starts, so the supervisor records it first; a test may
make it one that learns its pid only by starting (`pid_before_start=False`), or one that
ignores `terminate` (`obeys_terminate=False`) so only the grace's kill ends it. Each job keeps
what was done to it, in order (`job.events`), and when it started (`job.started_at`,
`time.monotonic()`), to compare with the fake server's calls.

It is a *fake*, a small working implementation, not a mock: nothing here asserts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from actors.edges.infrastructure import ExitStatus, Reach, RunSource
from actors.rules.infrastructure import SubmissionError

SIGTERM_EXIT = -15
SIGKILL_EXIT = -9


@dataclass(frozen=True)
class FakeSpec:
    flow_run_id: str
    fail_start: str | None = None  # the block's "fail_start": `start` raises with this reason


class FakeJob:
    """One run's fake infrastructure."""

    def __init__(self, spec: FakeSpec, pid_before_start: bool, obeys_terminate: bool) -> None:
        self.spec = spec
        self.events: list[str] = ["create"]
        self.started_at: float | None = None
        self._pid_before_start = pid_before_start
        self._obeys_terminate = obeys_terminate
        self._lock = threading.Lock()
        self._started = False
        self._ended = threading.Event()
        self._status = ExitStatus(None)

    @property
    def infrastructure_pid(self) -> str | None:
        if self._started or self._pid_before_start:
            return f"fake:{self.spec.flow_run_id}"
        return None

    @property
    def label(self) -> str:
        return f"fake job {self.spec.flow_run_id}"

    @property
    def running(self) -> bool:
        return self._started and not self._ended.is_set()

    def start(self) -> None:
        self._note("start")
        if self.spec.fail_start is not None:
            raise SubmissionError(self.spec.fail_start)
        self.started_at = time.monotonic()
        self._started = True

    def wait(self) -> ExitStatus:
        self._ended.wait()
        return self._status

    def terminate(self) -> bool:
        self._note("terminate")
        if self._obeys_terminate:
            return self.end(ExitStatus(SIGTERM_EXIT))
        return self.running

    def grace_over(self) -> bool:
        self._note("grace_over")
        return self.end(ExitStatus(SIGKILL_EXIT))

    def kill(self) -> bool:
        self._note("kill")
        return self.end(ExitStatus(SIGKILL_EXIT))

    def after_exit(self) -> list[str]:
        self._note("after_exit")
        return ["removed the fake job"]

    def end(self, status: ExitStatus) -> bool:
        """End it with `status` (the test's decision, or a stop's); False: it was not running."""
        with self._lock:
            if not self.running:
                return False
            self._status = status
            self._ended.set()
            return True

    def _note(self, event: str) -> None:
        with self._lock:
            self.events.append(event)


class FakeInfrastructure:
    """The "fake" kind: its jobs live in memory, their ends are the test's to decide."""

    kind = "fake"
    block_types = ("fake",)
    pool_types = ("fake",)

    def __init__(self, *, pid_before_start: bool = True, obeys_terminate: bool = True) -> None:
        self.pid_before_start = pid_before_start
        self.obeys_terminate = obeys_terminate
        self.jobs: dict[str, FakeJob] = {}
        self._lock = threading.Lock()

    def prepare(self, source: RunSource) -> FakeSpec:
        data = source.block.data if source.block is not None else {}
        fail = data.get("fail_start")
        return FakeSpec(source.flow_run.id, str(fail) if fail else None)

    def create(self, spec: object) -> FakeJob:
        if not isinstance(spec, FakeSpec):
            raise TypeError(f"the fake kind cannot create {type(spec).__name__}")
        job = FakeJob(spec, self.pid_before_start, self.obeys_terminate)
        with self._lock:
            self.jobs[spec.flow_run_id] = job
        return job

    def find(self, flow_run_id: str, infrastructure_pid: str | None) -> FakeJob | None:
        with self._lock:
            job = self.jobs.get(flow_run_id)
        if job is None or not job.running:
            return None
        if infrastructure_pid is not None and infrastructure_pid != job.infrastructure_pid:
            return None
        return job

    def reach(self, infrastructure_pid: str) -> Reach:
        return "here" if infrastructure_pid.startswith("fake:") else "not-mine"

    def job(self, flow_run_id: str, timeout: float = 5.0) -> FakeJob:
        """The run's job once the agent created it (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                job = self.jobs.get(flow_run_id)
            if job is not None:
                return job
            time.sleep(0.01)
        raise AssertionError(f"no fake job was created for run {flow_run_id} in {timeout}s")
