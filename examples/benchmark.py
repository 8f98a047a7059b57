"""Benchmark: the actor agent beside the official `prefect agent start`, on one server, in one run.

    python examples/benchmark.py                      # starts a local server, all contenders
    python examples/benchmark.py --api URL --runs 50 --parts drain --contenders ceiling,ours

Contenders, each on a fresh work queue with its own runs, all created before it starts:

  ceiling      no agent: a plain httpx client proposes Pending and records a pid for each run
               (8 threads), the least work any agent must do per run: the API's own limit
  official-1s  `prefect agent start -q Q` with PREFECT_AGENT_QUERY_INTERVAL=1
  official     `prefect agent start -q Q` at its defaults (poll every 15 s, 10 runs a poll)
  ours         `python examples/agent.py --api URL -q Q` at its defaults

Parts:

  drain        N runs due now whose command is `true`: runs per second from the contender's
               start until every run has an infrastructure_pid, and how long a run waits
               between the poll that found it and its Pending state
  footprint    N runs in flight whose command is `sleep`: the agent's RSS and CPU while they run

Only the standard library and httpx: RSS and CPU come from /proc, so the numbers are the
kernel's own. Every process started here (agents, and the flow processes they start) is
stopped before the benchmark exits, on error and on SIGINT/SIGTERM too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import httpx

from actors.launcher.local_server import LocalPrefectServer

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
LAUNCHER = EXAMPLES / "agent.py"
HOSTNAME = socket.gethostname()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = 200  # the server's largest page (PREFECT_API_DEFAULT_LIMIT)
# How often the benchmark looks for runs that got their pid. The drain's end is the server's
# own record of the last pid, so this decides only when the benchmark notices; looking every
# 0.25 s cost the server a fifth of its CPU and slowed the agent it was measuring.
POLL_SECONDS = 1.0
CEILING_THREADS = 8
SETUP_THREADS = 2  # setting up is not measured: spare the SQLite lock
STOP_GRACE = 30.0
ALL_CONTENDERS = ("ceiling", "official-1s", "official", "ours")
ALL_PARTS = ("drain", "footprint")

Kind = Literal["ceiling", "official", "ours"]


@dataclass(frozen=True)
class Contender:
    """One way of moving runs from Scheduled to a process; `env` is what differs from defaults."""

    name: str
    kind: Kind
    describe: str
    env: dict[str, str] = field(default_factory=dict)


CONTENDERS: dict[str, Contender] = {
    "ceiling": Contender(
        "ceiling",
        "ceiling",
        "httpx, 8 threads: POST set_state Pending + PATCH infrastructure_pid per run, no agent",
    ),
    "official-1s": Contender(
        "official-1s",
        "official",
        "prefect agent start -q Q, PREFECT_AGENT_QUERY_INTERVAL=1",
        {"PREFECT_AGENT_QUERY_INTERVAL": "1"},
    ),
    "official": Contender(
        "official", "official", "prefect agent start -q Q (defaults: 15 s interval, 15 s prefetch)"
    ),
    "ours": Contender("ours", "ours", "examples/agent.py --api URL -q Q (defaults)"),
}


@dataclass
class DrainResult:
    """How fast one contender took N due runs; `elapsed` ends at the last recorded pid."""

    contender: str
    runs: int
    runs_with_pid: int
    elapsed_seconds: float
    runs_per_second: float  # from the contender's start (its start-up included)
    timed_out: bool
    first_pid_seconds: float | None  # contender start -> first pid recorded
    median_poll_to_pending_ms: float | None
    latency_samples: int
    agent_cpu_seconds: float | None  # CPU the agent process used from its start to the end
    log_path: str | None
    ceiling_retries: int | None = None  # 503s (SQLite locked) the ceiling's client retried
    # The drain itself, on the server's clock: runs after the first / (last pid - first Pending)
    steady_runs_per_second: float | None = None
    # poll->Pending of the runs the agent's first poll found: no backlog of its own ahead
    median_first_poll_to_pending_ms: float | None = None


@dataclass
class FootprintResult:
    """What one agent costs while N runs are in flight."""

    contender: str
    target: int
    in_flight: int
    wait_seconds: float  # contender start -> all runs in flight (or the timeout)
    timed_out: bool
    rss_mib: float
    cpu_percent: float  # of one core, over the sampling window
    window_seconds: float
    agent_processes: int  # the agent's own processes measured (flow processes excluded)
    stop_seconds: float
    leftover_processes: int  # flow processes still alive after the stop, killed here
    log_path: str | None
    log_problems: int = 0  # WARNING, ERROR or CRITICAL lines the agent logged meanwhile


class ContenderError(RuntimeError):
    """A contender exited by itself or misbehaved; the message carries its log's tail."""


# -- /proc --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat this benchmark needs."""

    pid: int
    state: str
    ppid: int
    pgid: int
    cpu_ticks: int  # utime + stime of the process itself (all its threads), not its children
    start_ticks: int  # start time since boot: tells a process from a later one with its pid


def proc_stat(pid: int) -> ProcStat | None:
    """None when there is no such process (the name is skipped: it may hold spaces or ')')."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return ProcStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        start_ticks=int(fields[19]),
    )


def rss_kib(pid: int) -> int:
    """VmRSS in KiB; 0 for a process that is gone or a zombie (which has no memory left)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def all_stats() -> list[ProcStat]:
    stats = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None:
                stats.append(stat)
    return stats


def descendants(root: int) -> list[ProcStat]:
    """Every live process below `root`: the flow processes an agent started, among others."""
    children: dict[int, list[ProcStat]] = {}
    for stat in all_stats():
        children.setdefault(stat.ppid, []).append(stat)
    found: list[ProcStat] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def alive(pid: int, start_ticks: int) -> bool:
    """The same process (not a later one that reused the pid) still runs and is no zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat.start_ticks == start_ticks and stat.state != "Z"


# -- processes started here, and the ones they start ----------------------------------------------


class ProcessGuard:
    """Everything this benchmark started, so that nothing outlives it, whatever happens.

    Flow processes are remembered with their start time, so a pid reused by an unrelated
    process after a flow exited is never signalled.
    """

    def __init__(self) -> None:
        self.agents: list[subprocess.Popen[bytes]] = []
        self.flows: dict[int, int] = {}  # pid -> start ticks
        self._lock = threading.Lock()

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # A group of its own: the official agent's flows share it, so one killpg
                # reaches them; a Ctrl+C in this terminal reaches neither.
                start_new_session=True,
            )
        with self._lock:
            self.agents.append(process)
        return process

    def remember_flows(self, pids: Iterable[int]) -> None:
        with self._lock:
            for pid in pids:
                stat = proc_stat(pid)
                if stat is not None and pid not in self.flows:
                    self.flows[pid] = stat.start_ticks

    def remember_descendants(self, process: subprocess.Popen[bytes]) -> None:
        self.remember_flows(stat.pid for stat in descendants(process.pid))

    def live_flows(self) -> list[int]:
        with self._lock:
            return [pid for pid, start in self.flows.items() if alive(pid, start)]

    def kill_flows(self, grace: float = 2.0) -> int:
        """SIGTERM, then SIGKILL, every remembered flow process still alive; how many there were."""
        left = self.live_flows()
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)
            deadline = time.monotonic() + grace
            while self.live_flows() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.live_flows():
                break
        return len(left)

    def stop(self, process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> float:
        """SIGTERM the agent, SIGKILL its group after `grace`; seconds it took to exit."""
        began = time.monotonic()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                print(f"  pid {process.pid} ignored SIGTERM for {grace:.0f}s: SIGKILL", flush=True)
        took = time.monotonic() - began
        # The leader is reaped only now, so its pid (the group id) was not reused meanwhile.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        with self._lock:
            if process in self.agents:
                self.agents.remove(process)
        return took

    def stop_all(self) -> None:
        for process in list(self.agents):
            self.stop(process, grace=5.0)
        self.kill_flows()


# -- the server ---------------------------------------------------------------------------------


TRANSIENT = frozenset({429, 502, 503, 504})  # a SQLite server answers 503 when it is locked
RETRIES = 12
# Every state type a run can be in once an agent took it (2.20 filters know no "not any of").
TAKEN_STATES = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLING", "CANCELLED"]


def _check(response: httpx.Response) -> Any:
    if response.is_error:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json() if response.content else None


class Server:
    """The REST calls that set each contender up and watch it; one client shared by threads."""

    def __init__(self, api_url: str, poll_seconds: float = POLL_SECONDS) -> None:
        self.api_url = api_url.rstrip("/")
        self.poll_seconds = poll_seconds
        headers = {}
        if os.environ.get("PREFECT_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['PREFECT_API_KEY']}"
        self.http = httpx.Client(
            base_url=self.api_url + "/",
            headers=headers,
            timeout=60.0,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        )
        self.tag = uuid.uuid4().hex[:8]
        self._process_schema: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self.retries = 0
        flow = self.call("POST", "flows/", json={"name": f"actor-agent-benchmark-{self.tag}"})
        self.flow_id = str(flow["id"])

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request, tried again on a transient answer (as both agents' clients do).

        A SQLite server answers 503 while another writer holds the database; counting the
        retries says how much of a contender's time went to that.
        """
        for attempt in range(RETRIES):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt + 1 == RETRIES:
                    raise
            else:
                if response.status_code not in TRANSIENT or attempt + 1 == RETRIES:
                    return _check(response)
            with self._lock:
                self.retries += 1
            time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))  # noqa: S311 - jitter
        raise AssertionError("unreachable")

    def delete_everything(self) -> None:
        """Deleting the flow deletes its deployments and runs: an existing server stays tidy."""
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            self.call("DELETE", f"flows/{self.flow_id}")

    def process_schema(self) -> tuple[str, str]:
        """The `process` block type and the schema of the installed Prefect's version.

        The server registers Prefect's own block types at start-up, so the block document
        made here is exactly what `Process(...).save()` makes, without importing Prefect.
        """
        if self._process_schema is None:
            block_type = self.call("GET", "block_types/slug/process")
            schemas = self.call(
                "POST",
                "block_schemas/filter",
                json={"block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}},
            )
            if not schemas:
                raise RuntimeError("the server has no schema for the `process` block type")
            try:
                version = importlib.metadata.version("prefect")
            except importlib.metadata.PackageNotFoundError:
                version = ""
            chosen = next((s for s in schemas if s.get("version") == version), schemas[0])
            self._process_schema = (str(block_type["id"]), str(chosen["id"]))
        return self._process_schema

    def deployment(self, name: str, queue: str, command: list[str]) -> str:
        """A deployment on `queue` whose Process block runs `command` (the flow costs nothing)."""
        block_type_id, schema_id = self.process_schema()
        data: dict[str, Any] = {
            "type": "process",
            "command": command,
            "env": {},
            "labels": {},
            "name": None,
            "stream_output": False,
            "working_dir": None,
        }
        document = self.call(
            "POST",
            "block_documents/",
            json={
                "name": f"bench-{self.tag}-{name}",
                "block_type_id": block_type_id,
                "block_schema_id": schema_id,
                "data": data,
                "is_anonymous": False,
            },
        )
        deployment = self.call(
            "POST",
            "deployments/",
            json={
                "name": name,
                "flow_id": self.flow_id,
                "work_queue_name": queue,
                "infrastructure_document_id": document["id"],
                "path": str(ROOT / "actors" / "launcher"),
                "entrypoint": "demo_flow.py:demo",
            },
        )
        return str(deployment["id"])

    def create_runs(self, deployment_id: str, count: int) -> list[str]:
        """`count` runs due now (Scheduled, scheduled_time = now)."""

        def one(_: int) -> str:
            now = datetime.now(UTC).isoformat()
            body = {
                "state": {
                    "type": "SCHEDULED",
                    "name": "Scheduled",
                    "state_details": {"scheduled_time": now},
                }
            }
            path = f"deployments/{deployment_id}/create_flow_run"
            return str(self.call("POST", path, json=body)["id"])

        with ThreadPoolExecutor(SETUP_THREADS) as pool:
            return list(pool.map(one, range(count)))

    def runs_with_pid(self, queue: str, run_ids: Iterable[str]) -> dict[str, tuple[str, datetime]]:
        """Of `run_ids` on `queue`, those with an infrastructure_pid: pid and the run's `updated`.

        Only runs still without a pid are asked for (a pid is never taken back), so the
        benchmark's own polling costs the server less and less as a contender progresses.
        """
        wanted = list(run_ids)
        found: dict[str, tuple[str, datetime]] = {}
        for start in range(0, len(wanted), PAGE):
            body = {
                "flow_runs": {
                    "work_queue_name": {"any_": [queue]},
                    "id": {"any_": wanted[start : start + PAGE]},
                },
                "limit": PAGE,
                "offset": 0,
            }
            for run in self.call("POST", "flow_runs/filter", json=body):
                if run.get("infrastructure_pid"):
                    found[run["id"]] = (run["infrastructure_pid"], _parse_ts(run["updated"]))
        return found

    def taken(self, queue: str) -> int:
        """How many runs of `queue` are past Scheduled: one COUNT, cheap enough to ask every
        second while a contender drains, where reading the runs themselves is not."""
        body = {
            "flow_runs": {
                "work_queue_name": {"any_": [queue]},
                "state": {"type": {"any_": TAKEN_STATES}},
            }
        }
        return int(self.call("POST", "flow_runs/count", json=body))

    def pending_times(self, run_ids: Iterable[str]) -> dict[str, datetime]:
        """When the server recorded each run's first Pending state (its own clock)."""

        def one(run_id: str) -> tuple[str, datetime | None]:
            states = self.call("GET", "flow_run_states/", params={"flow_run_id": run_id})
            pending = sorted(_parse_ts(s["timestamp"]) for s in states if s["type"] == "PENDING")
            return run_id, pending[0] if pending else None

        with ThreadPoolExecutor(SETUP_THREADS) as pool:
            return {run_id: ts for run_id, ts in pool.map(one, run_ids) if ts is not None}


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- when each agent had each run in hand, from its own log --------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_OURS_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+\s+\S+: (.*)$")
_OURS_FOUND = re.compile(r"^found \d+ run\(s\) in work queue ")
_OURS_SUBMIT = re.compile(r"^submitting flow run (\S+) ")
_OFFICIAL_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+\s*\| \S+ - (.*)$")
_OFFICIAL_SUBMIT = re.compile(r"^Submitting flow run '([^']+)'")


def _local(naive: datetime) -> datetime:
    """A log's local wall-clock time as an aware UTC time, comparable to the server's."""
    return naive.astimezone(UTC)


BLOCK_GAP = timedelta(milliseconds=50)  # submissions further apart came from another poll


def _blocks(events: Iterable[tuple[datetime, str | None]]) -> dict[str, datetime]:
    """Per run: the time of the poll answer that brought it, from (time, run id) events.

    A run id of None marks a poll's answer itself (ours' DEBUG "found N run(s)" line).
    Both agents log one submission line per run of an answer in a tight loop before any
    Pending is proposed, so a run's answer arrived at the first line of its block; lines of
    one block are well under a millisecond apart, answers to two polls are a round trip.
    """
    times: dict[str, datetime] = {}
    block_at: datetime | None = None
    last: datetime | None = None
    for stamp, run_id in events:
        if run_id is None:
            block_at, last = stamp, stamp
            continue
        if block_at is None or last is None or stamp - last > BLOCK_GAP:
            block_at = stamp
        last = stamp
        times.setdefault(run_id, block_at)
    return times


def found_times_ours(log: Path) -> dict[str, datetime]:
    """Per run: when the answer of the poll that brought it arrived, by the agent's own log.

    The agent runs at its default INFO level, where the Dispatcher logs "submitting flow run
    ID" as it admits each run of an answer: DEBUG would add the "found N run(s)" line but
    also turn on httpcore's per-request debug lines, which slow the agent down.
    """
    events: list[tuple[datetime, str | None]] = []
    for raw in log.read_text(errors="replace").splitlines():
        match = _OURS_LINE.match(_ANSI.sub("", raw))
        if match is None:
            continue
        stamp = _local(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"))
        if _OURS_FOUND.match(match.group(2)):
            events.append((stamp, None))
        elif submit := _OURS_SUBMIT.match(match.group(2)):
            events.append((stamp, submit.group(1)))
    return _blocks(events)


def found_times_official(log: Path, day: date) -> dict[str, datetime]:
    """Per run: when the answer of the poll that brought it arrived, by the agent's own log.

    The official agent logs "Submitting flow run 'ID'" for each run of an answer in a loop
    with no await in it. Its timestamps have no date: `day` is the benchmark's, moved by a
    day when that is nearer to now (a benchmark across midnight).
    """
    events: list[tuple[datetime, str | None]] = []
    now = datetime.now(UTC)
    for raw in log.read_text(errors="replace").splitlines():
        match = _OFFICIAL_LINE.match(_ANSI.sub("", raw).strip())
        submit = _OFFICIAL_SUBMIT.match(match.group(2)) if match else None
        if match is None or submit is None:
            continue
        clock = datetime.strptime(match.group(1), "%H:%M:%S.%f").time()
        stamp = min(
            (_local(datetime.combine(day + timedelta(days=d), clock)) for d in (-1, 0, 1)),
            key=lambda candidate: abs((candidate - now).total_seconds()),
        )
        events.append((stamp, submit.group(1)))
    return _blocks(events)


# -- the contenders -------------------------------------------------------------------------------


def prefect_cli() -> str:
    """The `prefect` next to this interpreter: the same installation as the server's."""
    candidate = Path(sys.executable).parent / "prefect"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("prefect")
    if found is None:
        raise RuntimeError("the `prefect` CLI was not found next to the interpreter or on PATH")
    return found


def clean_env(home: Path) -> dict[str, str]:
    """This environment without any Prefect setting, so every agent runs at its defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if os.environ.get("PREFECT_API_KEY"):
        env["PREFECT_API_KEY"] = os.environ["PREFECT_API_KEY"]
    # A fresh home: no profile of the user's can change the official agent's settings.
    env["PREFECT_HOME"] = str(home)
    return env


def launch(
    guard: ProcessGuard,
    contender: Contender,
    api_url: str,
    queue: str,
    work_dir: Path,
    *,
    limit: int | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start one agent on its queue, its output in a log: the log is also a measurement.

    `limit`: ours gets `--limit` (the official agent has no such flag)."""
    log = work_dir / f"{contender.name}-{queue}.log"
    env = clean_env(work_dir / "prefect-home")
    if contender.kind == "official":
        env["PREFECT_API_URL"] = api_url
        env.update(contender.env)
        argv = [prefect_cli(), "agent", "start", "-q", queue]
    elif contender.kind == "ours":
        argv = [sys.executable, str(LAUNCHER), "--api", api_url, "-q", queue]
        if limit is not None:
            argv += ["--limit", str(limit)]
    else:
        raise ValueError(f"{contender.name} is not an agent")
    return guard.start(argv, env, log), log


def log_tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


def local_pids(infrastructure_pids: Iterable[str]) -> list[int]:
    """The pids of `hostname:pid` values recorded on this host."""
    pids = []
    for value in infrastructure_pids:
        host, _, pid = value.rpartition(":")
        if host == HOSTNAME and pid.isdigit():
            pids.append(int(pid))
    return pids


@dataclass
class Progress:
    """What the benchmark saw of a contender's runs while it waited for their pids."""

    pids: dict[str, tuple[str, datetime]]
    started_wall: datetime
    observed_seconds: float
    timed_out: bool


def wait_for_pids(
    server: Server,
    queue: str,
    run_ids: list[str],
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None,
    log: Path | None,
    on_poll: Callable[[dict[str, tuple[str, datetime]]], None] | None = None,
    cheap: bool = False,
) -> Progress:
    """Look every `server.poll_seconds` until every run has a pid, the timeout, or the agent's
    death. `cheap`: count the runs taken (one COUNT) until all are, and only then read their
    pids, so that the benchmark's looking costs the server next to nothing during a drain."""
    started_wall = datetime.now(UTC)
    began = time.monotonic()
    pids: dict[str, tuple[str, datetime]] = {}
    timed_out = False
    while len(pids) < len(run_ids):
        if process is not None and process.poll() is not None:
            raise ContenderError(
                f"the agent exited with {process.returncode}; its log ends:\n"
                f"{log_tail(log) if log else ''}"
            )
        if time.monotonic() - began >= timeout:
            timed_out = True
            break
        tick = time.monotonic()
        if not cheap or server.taken(queue) >= len(run_ids):
            pids.update(server.runs_with_pid(queue, [r for r in run_ids if r not in pids]))
        if on_poll is not None:
            on_poll(pids)
        if len(pids) == len(run_ids):
            break
        time.sleep(max(0.0, server.poll_seconds - (time.monotonic() - tick)))
    return Progress(pids, started_wall, time.monotonic() - began, timed_out)


def steady_rate(
    pending: dict[str, datetime], pids: dict[str, tuple[str, datetime]]
) -> float | None:
    """Runs per second from the first Pending to the last pid, both as the server recorded
    them: the pace of the drain once the contender is taking runs, start-up left out (it is
    reported on its own), the same clock and the same events for every contender."""
    if len(pids) < 2 or not pending:
        return None
    first = min(pending.values())
    last = max(updated for _, updated in pids.values())
    seconds = (last - first).total_seconds()
    return (len(pids) - 1) / seconds if seconds > 0 else None


def drain_queue(
    server: Server, contender: str, round_index: int, runs: int
) -> tuple[str, list[str]]:
    """A fresh queue of `runs` due runs whose command is `true`, for one contender's round
    (names are unique per round: a server keeps the deployments and blocks of earlier ones)."""
    label = f"{contender}-drain{round_index + 1}"
    queue = f"bench-{server.tag}-{label}"
    deployment = server.deployment(f"{label}-{server.tag}", queue, ["true"])
    return queue, server.create_runs(deployment, runs)


def drain_ceiling(server: Server, runs: int, round_index: int = 0) -> DrainResult:
    """The two calls every agent must make per run, and nothing else, at bounded concurrency."""
    queue, run_ids = drain_queue(server, "ceiling", round_index, runs)

    def take(run_id: str) -> bool:
        pending = {"state": {"type": "PENDING", "name": "Pending"}}
        result = server.call("POST", f"flow_runs/{run_id}/set_state", json=pending)
        if result["status"] != "ACCEPT":
            return False
        server.call("PATCH", f"flow_runs/{run_id}", json={"infrastructure_pid": "host:123"})
        return True

    retries_before = server.retries
    began = time.monotonic()
    with ThreadPoolExecutor(CEILING_THREADS) as pool:
        taken = sum(pool.map(take, run_ids))
    elapsed = time.monotonic() - began
    pids = server.runs_with_pid(queue, run_ids)
    steady = steady_rate(server.pending_times(list(pids)), pids)
    return DrainResult(
        contender="ceiling",
        steady_runs_per_second=steady,
        runs=runs,
        runs_with_pid=taken,
        elapsed_seconds=elapsed,
        runs_per_second=taken / elapsed,
        timed_out=False,
        first_pid_seconds=None,
        median_poll_to_pending_ms=None,
        latency_samples=0,
        agent_cpu_seconds=None,
        log_path=None,
        ceiling_retries=server.retries - retries_before,
    )


def drain_agent(
    server: Server,
    guard: ProcessGuard,
    contender: Contender,
    *,
    runs: int,
    timeout: float,
    work_dir: Path,
    round_index: int = 0,
) -> DrainResult:
    """Runs/s from the agent's start to its last pid, and poll->Pending from its log.

    The runs exist before the agent starts, so its start-up counts as users feel it.
    """
    queue, run_ids = drain_queue(server, contender.name, round_index, runs)
    day = datetime.now().date()  # the official agent logs local time
    started_wall = datetime.now(UTC)
    process, log = launch(guard, contender, server.api_url, queue, work_dir)
    cpu_seconds: float | None = None
    try:
        progress = wait_for_pids(
            server, queue, run_ids, timeout=timeout, process=process, log=log, cheap=True
        )
        if progress.timed_out:  # what it managed by then, read once the clock stopped
            progress.pids.update(server.runs_with_pid(queue, run_ids))
        stat = proc_stat(process.pid)
        if stat is not None:
            cpu_seconds = stat.cpu_ticks / CLOCK_TICKS
        guard.remember_flows(local_pids(pid for pid, _ in progress.pids.values()))
        guard.remember_descendants(process)
    finally:
        guard.stop(process)
        guard.kill_flows()
    done = len(progress.pids)
    if progress.timed_out or not done:
        elapsed = (progress.started_wall - started_wall).total_seconds() + progress.observed_seconds
    else:
        # The server's `updated` of the run whose pid came last: the PATCH itself, not the
        # benchmark's next look (--poll-interval later at worst).
        last = max(updated for _, updated in progress.pids.values())
        elapsed = (last - started_wall).total_seconds()
        observed = (progress.started_wall - started_wall).total_seconds()
        elapsed = min(max(elapsed, 1e-3), observed + progress.observed_seconds)
    first = (
        (min(updated for _, updated in progress.pids.values()) - started_wall).total_seconds()
        if progress.pids
        else None
    )
    found = (
        found_times_official(log, day) if contender.kind == "official" else found_times_ours(log)
    )
    pending = server.pending_times(list(progress.pids))
    steady = steady_rate(pending, progress.pids)
    latencies = [
        (pending[run] - found[run]).total_seconds() * 1000
        for run in progress.pids
        if run in pending and run in found
    ]
    first_found = min(found.values(), default=None)
    first_poll = [
        (pending[run] - found[run]).total_seconds() * 1000
        for run in progress.pids
        if run in pending and found.get(run) == first_found
    ]
    return DrainResult(
        contender=contender.name,
        steady_runs_per_second=steady,
        runs=runs,
        runs_with_pid=done,
        elapsed_seconds=elapsed,
        runs_per_second=done / elapsed if elapsed > 0 else 0.0,
        timed_out=progress.timed_out,
        first_pid_seconds=first,
        median_poll_to_pending_ms=statistics.median(latencies) if latencies else None,
        median_first_poll_to_pending_ms=statistics.median(first_poll) if first_poll else None,
        latency_samples=len(latencies),
        agent_cpu_seconds=cpu_seconds,
        log_path=str(log),
    )


def agent_processes(process: subprocess.Popen[bytes], flows: set[int]) -> list[int]:
    """The agent and whatever it runs besides flow processes (and their children)."""
    below = descendants(process.pid)
    by_parent: dict[int, list[int]] = {}
    for stat in below:
        by_parent.setdefault(stat.ppid, []).append(stat.pid)
    excluded: set[int] = set()
    todo = [pid for pid in flows if proc_stat(pid) is not None]
    while todo:
        pid = todo.pop()
        if pid not in excluded:
            excluded.add(pid)
            todo.extend(by_parent.get(pid, []))
    return [process.pid] + [stat.pid for stat in below if stat.pid not in excluded]


def footprint_agent(
    server: Server,
    guard: ProcessGuard,
    contender: Contender,
    *,
    runs: int,
    timeout: float,
    window: float,
    work_dir: Path,
) -> FootprintResult:
    """RSS and CPU of the agent alone while it holds many runs, then a stop that leaks nothing.

    The flow processes are excluded: they are the same `sleep` for every contender, and what
    a user pays for the agent is its own process.
    """
    queue = f"bench-{server.tag}-{contender.name}-footprint"
    # The sleeps must outlast the wait and the window, or runs would end while measured.
    sleep_seconds = max(120, int(timeout + window + 60))
    command = ["sleep", str(sleep_seconds)]
    deployment = server.deployment(f"{contender.name}-footprint-{server.tag}", queue, command)
    run_ids = server.create_runs(deployment, runs)
    began = time.monotonic()
    process, log = launch(guard, contender, server.api_url, queue, work_dir, limit=runs)

    def remember(pids: dict[str, tuple[str, datetime]]) -> None:
        # From /proc, not the server: while runs are being taken the benchmark only counts
        # them (reading up to N runs a second held a 1,000-run wait to a third of its pace).
        guard.remember_descendants(process)
        guard.remember_flows(local_pids(pid for pid, _ in pids.values()))

    stop_seconds = 0.0
    leftovers = 0
    problems_before_stop = 0
    try:
        progress = wait_for_pids(
            server,
            queue,
            run_ids,
            timeout=timeout,
            process=process,
            log=log,
            on_poll=remember,
            cheap=True,
        )
        waited = time.monotonic() - began
        if progress.timed_out:  # counted, not read, while it waited: the pids taken so far
            progress.pids.update(server.runs_with_pid(queue, run_ids))
        guard.remember_descendants(process)
        flows = set(local_pids(pid for pid, _ in progress.pids.values()))
        measured = agent_processes(process, flows)
        before = {pid: stat for pid in measured if (stat := proc_stat(pid)) is not None}
        window_began = time.monotonic()
        time.sleep(window)
        window_seconds = time.monotonic() - window_began
        after = {pid: stat for pid in measured if (stat := proc_stat(pid)) is not None}
        ticks = sum(
            after[pid].cpu_ticks - before[pid].cpu_ticks
            for pid in after
            if pid in before and after[pid].start_ticks == before[pid].start_ticks
        )
        rss = sum(rss_kib(pid) for pid in after)
        if process.poll() is not None:
            raise ContenderError(f"the agent exited while measured; log ends:\n{log_tail(log)}")
        # Counted before the stop: a stop's own lines (runs left to reconcile) are no error.
        problems_before_stop = count_problems(log)
    finally:
        guard.remember_descendants(process)
        if contender.kind == "official":
            # It waits for its flows to end before it exits: end them first.
            guard.kill_flows()
        stop_seconds = guard.stop(process)
        leftovers = len(guard.live_flows())
        guard.kill_flows()
    return FootprintResult(
        contender=contender.name,
        target=runs,
        in_flight=len(progress.pids),
        wait_seconds=waited,
        timed_out=progress.timed_out,
        rss_mib=rss / 1024,
        cpu_percent=100.0 * ticks / CLOCK_TICKS / window_seconds,
        window_seconds=window_seconds,
        agent_processes=len(after),
        stop_seconds=stop_seconds,
        leftover_processes=leftovers,
        log_path=str(log),
        log_problems=problems_before_stop,
    )


_PROBLEM = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) |\| (WARNING|ERROR|CRITICAL) +\|")


def count_problems(log: Path) -> int:
    """WARNING, ERROR and CRITICAL lines in an agent's log (ours or the official format)."""
    try:
        text = _ANSI.sub("", log.read_text(errors="replace"))
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if _PROBLEM.search(line))


# -- the report -----------------------------------------------------------------------------------


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def _drain_rate(drain: DrainResult | None) -> float | None:
    """The rate the ratios compare: the steady drain; a contender that timed out is judged by
    its rate from its start, which is all it managed."""
    if drain is None:
        return None
    if drain.timed_out or drain.steady_runs_per_second is None:
        return drain.runs_per_second
    return drain.steady_runs_per_second


def _paired_ratio(rounds: dict[str, list[DrainResult]], ours: str, theirs: str) -> float | None:
    """The median over rounds of (ours / theirs) within a round: two contenders measured
    minutes apart share the machine's and the server's drift, so their ratio is steadier than
    the ratio of their medians. A contender measured in one round only is paired with it."""
    mine, other = rounds.get(ours, []), rounds.get(theirs, [])
    pairs = [_ratio(_drain_rate(a), _drain_rate(b)) for a, b in zip(mine, other, strict=False)]
    if len(other) == 1 and len(mine) > 1:
        pairs = [_ratio(_drain_rate(a), _drain_rate(other[0])) for a in mine]
    known = [p for p in pairs if p is not None]
    return statistics.median(known) if known else None


def ratios(
    rounds: dict[str, list[DrainResult]], footprints: dict[str, FootprintResult]
) -> dict[str, dict[str, float | None]]:
    """Per contender: drain vs the ceiling, and ours divided by it (drain, RSS, CPU)."""
    ours_fp = footprints.get("ours")
    table: dict[str, dict[str, float | None]] = {}
    for name in ALL_CONTENDERS:
        fp = footprints.get(name)
        if name not in rounds and fp is None:
            continue
        table[name] = {
            "drain_vs_ceiling": _paired_ratio(rounds, name, "ceiling"),
            "ours_over_this_drain": _paired_ratio(rounds, "ours", name),
            "ours_over_this_rss": _ratio(
                ours_fp.rss_mib if ours_fp else None, fp.rss_mib if fp else None
            ),
            "ours_over_this_cpu": _ratio(
                ours_fp.cpu_percent if ours_fp else None, fp.cpu_percent if fp else None
            ),
        }
    return table


def median_round(results: list[DrainResult]) -> DrainResult:
    """The round whose drain rate is the median (the lower one of an even count): the row
    the table shows, a real measurement rather than an average of several."""
    ranked = sorted(results, key=lambda r: _drain_rate(r) or 0.0)
    return ranked[(len(ranked) - 1) // 2]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def render(
    rounds: dict[str, list[DrainResult]],
    drains: dict[str, DrainResult],
    footprints: dict[str, FootprintResult],
    table: dict[str, dict[str, float | None]],
    notes: list[str],
) -> str:
    """The table (a row per contender: its median round, `table`'s ratios) and its notes."""
    headers = [
        "contender",
        "drain runs/s",
        "each round",
        "from start",
        "took s",
        "runs w/ pid",
        "vs ceiling",
        "ours/this",
        "agent CPU s",
        "poll->Pending ms",
        "first poll",
        "in flight",
        "RSS MiB",
        "ours/this",
        "CPU %",
        "ours/this",
    ]
    rows = []
    for name, row in table.items():
        drain = drains.get(name)
        fp = footprints.get(name)
        done = "-"
        if drain is not None:
            done = f"{drain.runs_with_pid}/{drain.runs}" + (" timed out" if drain.timed_out else "")
        flight = "-"
        if fp is not None:
            flight = f"{fp.in_flight}/{fp.target}" + (" timed out" if fp.timed_out else "")
        rows.append(
            [
                name,
                _fmt(_drain_rate(drain), ".1f"),
                " ".join(_fmt(_drain_rate(r), ".1f") for r in rounds.get(name, [])) or "-",
                _fmt(drain.runs_per_second if drain else None, ".1f"),
                _fmt(drain.elapsed_seconds if drain else None, ".1f"),
                done,
                _fmt(row["drain_vs_ceiling"], ".2f", "x"),
                _fmt(row["ours_over_this_drain"], ".2f", "x"),
                _fmt(drain.agent_cpu_seconds if drain else None, ".1f"),
                _fmt(drain.median_poll_to_pending_ms if drain else None, ".0f"),
                _fmt(drain.median_first_poll_to_pending_ms if drain else None, ".0f"),
                flight,
                _fmt(fp.rss_mib if fp else None, ".1f"),
                _fmt(row["ours_over_this_rss"], ".2f", "x"),
                _fmt(fp.cpu_percent if fp else None, ".2f"),
                _fmt(row["ours_over_this_cpu"], ".2f", "x"),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
    lines.append("")
    lines.extend(notes)
    return "\n".join(lines)


def footnotes(
    drains: dict[str, DrainResult],
    footprints: dict[str, FootprintResult],
    args: argparse.Namespace,
) -> list[str]:
    notes = [
        f"{name:<12} {CONTENDERS[name].describe}"
        for name in ALL_CONTENDERS
        if name in {*drains, *footprints}
    ]
    notes += [
        "",
        f"drain: {args.runs} runs due now per contender, command `true`, each contender on a "
        "fresh queue, started after its runs exist; --rounds "
        f"{args.rounds}: every contender drains once a round, the order turned by one each "
        "round (the official agent at its defaults in the first round only: its pace is its "
        "15 s interval). The row is the contender's median round; 'each round' lists them "
        "all, in order.",
        "  drain runs/s = (runs with an infrastructure_pid - 1) / (server `updated` time of "
        "the last pid PATCH - server timestamp of the first PENDING state): the pace once the "
        "contender takes runs, on the server's clock, the same for every contender (the "
        "ceiling included); a contender that timed out shows its from-start rate.",
        "  from start = runs with a pid / (last pid PATCH - contender process start): agent "
        "start-up (imports, first poll) included; for the ceiling, from its first request.",
        f"  timed out: the drain was cut at --drain-timeout {args.drain_timeout:.0f}s; "
        "runs/s = runs with a pid by then / that time.",
        f"  the benchmark looks every {args.poll_interval:g}s: one POST /flow_runs/count of "
        "the queue's runs past Scheduled, and once all are, POST /flow_runs/filter for their "
        "pids; the end is the server's record, so a slower look loses no precision and leaves "
        "the server to the contender (reading every run each second cost it a tenth of its time).",
        "  vs ceiling = this / ceiling; ours/this = ours / this (above 1: ours is faster); "
        "each the median over rounds of the ratio within a round, since the server's pace "
        "drifts between rounds (the ceiling's own spread is in its row).",
        "  agent CPU s = utime+stime of the agent process from its start to the end of the "
        "drain (start-up included).",
        "  poll->Pending = median over runs of (server timestamp of the run's PENDING state, "
        "GET /flow_run_states) - (time the poll's answer that brought the run arrived: the "
        "first of the block of 'submitting flow run ID' lines (ours, at its default INFO "
        "level) or 'Submitting flow run ID' lines (official) each agent logs for a poll's "
        "runs before proposing any Pending); same host and clock, 1 ms log resolution. "
        "During a drain a poll's runs queue behind the agent's own earlier runs (and the "
        "next page is asked for while the last half of a page is with the server); 'first poll' is "
        "the same median over the runs of the contender's first poll, with nothing ahead.",
    ]
    if footprints:
        notes += [
            f"footprint: up to {args.inflight} runs in flight (command `sleep`), no limit; once "
            "all have a pid (or after --footprint-timeout "
            f"{args.footprint_timeout:.0f}s), RSS = VmRSS of the agent's own process(es), "
            "flow processes excluded; CPU = utime+stime delta over "
            f"{args.cpu_window:.0f}s as % of one core (one clock tick = "
            f"{100 / CLOCK_TICKS / args.cpu_window:.2f}%). ours/this below 1: ours is lighter. "
            "A contender that timed out was still taking runs during its window. ours runs "
            "with --limit N.",
        ]
        problems = ", ".join(f"{name} {fp.log_problems}" for name, fp in footprints.items())
        notes.append(
            f"  WARNING/ERROR/CRITICAL lines each agent logged before its stop: {problems}"
        )
        stops = ", ".join(
            f"{name} {fp.stop_seconds:.1f}s ({fp.leftover_processes} left)"
            for name, fp in footprints.items()
        )
        notes.append(
            f"  stop after footprint (SIGTERM -> exit; flow processes then left): {stops}; "
            "the official agent waits for its flows, so the benchmark kills them first."
        )
    notes.append(
        f"machine: {os.cpu_count()} CPUs; load average (1 min) {args.load_before} at the start, "
        f"{_load()} at the end (other work on the machine shares the CPUs with the server)."
    )
    first = ", ".join(
        f"{name} {d.first_pid_seconds:.1f}s"
        for name, d in drains.items()
        if d.first_pid_seconds is not None
    )
    if first:
        notes.append(f"first pid recorded, after contender start (start-up and queueing): {first}")
    return notes


# -- main -----------------------------------------------------------------------------------------


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmark.py", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=100, help="runs per contender to drain")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="drain rounds per contender; the table shows the median (the server's pace "
        "varies by a third between drains on a small machine)",
    )
    parser.add_argument(
        "--inflight", type=int, default=200, help="runs in flight for the footprint"
    )
    parser.add_argument("--parts", default=",".join(ALL_PARTS), help="drain,footprint")
    parser.add_argument(
        "--contenders", default=",".join(ALL_CONTENDERS), help=",".join(ALL_CONTENDERS)
    )
    parser.add_argument("--api", default=None, help="an existing server (default: start one)")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--footprint-timeout", type=float, default=60.0)
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_SECONDS,
        help="seconds between the benchmark's looks for recorded pids (it loads the server)",
    )
    parser.add_argument("--cpu-window", type=float, default=10.0)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write results here")
    parser.add_argument(
        "--keep-logs", default=None, metavar="DIR", help="keep the agents' logs in DIR"
    )
    args = parser.parse_args(argv)
    args.load_before = _load()
    args.part_list = _names(args.parts, ALL_PARTS, parser)
    args.contender_list = _names(args.contenders, ALL_CONTENDERS, parser)
    if args.runs < 1 or args.inflight < 1 or args.rounds < 1:
        parser.error("--runs, --inflight and --rounds must be at least 1")
    return args


def _names(text: str, known: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        parser.error(f"unknown or no names {unknown}: choose from {', '.join(known)}")
    return [n for n in known if n in names]  # a fixed order: the ceiling first


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl+C, so every `finally` here stops what it started."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _reported(
    result: DrainResult | FootprintResult | None, keep_logs: str | None
) -> dict[str, Any] | None:
    """A result for the JSON; its log is named where --keep-logs puts it (the rest is deleted)."""
    if result is None:
        return None
    data = asdict(result)
    if data.get("log_path"):
        data["log_path"] = str(Path(keep_logs) / Path(data["log_path"]).name) if keep_logs else None
    return data


def drain_order(contenders: list[str], rounds: int) -> list[tuple[int, str]]:
    """(round, contender) in the order they drain: every round turns the order by one, so no
    contender always follows the same one onto a server still busy with its runs; the
    official agent at its defaults drains in the first round only (a 15 s poll sets its pace,
    and a round of it takes minutes)."""
    order = []
    for index in range(rounds):
        shift = index % len(contenders)
        for name in contenders[shift:] + contenders[:shift]:
            if name != "official" or index == 0:
                order.append((index, name))
    return order


def run(args: argparse.Namespace, api_url: str, guard: ProcessGuard, work_dir: Path) -> int:
    server = Server(api_url, args.poll_interval)
    rounds: dict[str, list[DrainResult]] = {}
    footprints: dict[str, FootprintResult] = {}
    try:
        if "drain" in args.part_list:
            for index, name in drain_order(args.contender_list, args.rounds):
                say(f"drain, round {index + 1}/{args.rounds}: {name} ({args.runs} runs)...")
                if name == "ceiling":
                    d = drain_ceiling(server, args.runs, index)
                else:
                    d = drain_agent(
                        server,
                        guard,
                        CONTENDERS[name],
                        runs=args.runs,
                        timeout=args.drain_timeout,
                        work_dir=work_dir,
                        round_index=index,
                    )
                rounds.setdefault(name, []).append(d)
                steady = _fmt(d.steady_runs_per_second, ".1f")
                say(
                    f"  {d.runs_with_pid}/{d.runs} in {d.elapsed_seconds:.1f}s = "
                    f"{d.runs_per_second:.1f} runs/s from start, {steady} runs/s from the first "
                    "Pending" + (" (timed out)" if d.timed_out else "")
                )
        if "footprint" in args.part_list:
            for name in args.contender_list:
                if name == "ceiling":
                    continue
                say(f"footprint: {name} ({args.inflight} runs in flight)...")
                fp = footprint_agent(
                    server,
                    guard,
                    CONTENDERS[name],
                    runs=args.inflight,
                    timeout=args.footprint_timeout,
                    window=args.cpu_window,
                    work_dir=work_dir,
                )
                footprints[name] = fp
                say(
                    f"  {fp.in_flight}/{fp.target} in flight after {fp.wait_seconds:.1f}s: "
                    f"RSS {fp.rss_mib:.1f} MiB, CPU {fp.cpu_percent:.2f}%, "
                    f"stopped in {fp.stop_seconds:.1f}s, {fp.leftover_processes} flow(s) left"
                )
    finally:
        if args.api:
            server.delete_everything()
        server.close()
    drains = {name: median_round(results) for name, results in rounds.items()}
    table = ratios(rounds, footprints)
    notes = footnotes(drains, footprints, args)
    print(render(rounds, drains, footprints, table, notes), flush=True)
    if args.json:
        report = {
            "api_url": api_url,
            "settings": {
                "runs": args.runs,
                "inflight": args.inflight,
                "parts": args.part_list,
                "contenders": args.contender_list,
                "drain_timeout": args.drain_timeout,
                "rounds": args.rounds,
                "footprint_timeout": args.footprint_timeout,
                "cpu_window": args.cpu_window,
                "cpus": os.cpu_count(),
                "load_before": args.load_before,
                "load_after": _load(),
                "poll_interval": args.poll_interval,
            },
            "contenders": {
                name: {
                    "describe": CONTENDERS[name].describe,
                    "drain": _reported(drains.get(name), args.keep_logs),
                    "drain_rounds": [_drain_rate(r) for r in rounds.get(name, [])],
                    "footprint": _reported(footprints.get(name), args.keep_logs),
                    "ratios": row,
                }
                for name, row in table.items()
            },
            "footnotes": notes,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    guard = ProcessGuard()
    server: LocalPrefectServer | None = None
    work_dir = Path(tempfile.mkdtemp(prefix="agent-benchmark-"))
    try:
        with stop_on_sigterm():
            try:
                api_url = args.api
                if api_url is None:
                    say("starting a local Prefect server...")
                    server = LocalPrefectServer()
                    server.start()
                    api_url = server.api_url
                    say(f"  ready at {api_url} after {server.start_seconds or 0:.1f}s")
                return run(args, api_url, guard, work_dir)
            finally:
                guard.stop_all()
                if server is not None:
                    server.stop()
    except ContenderError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; every process started here was stopped")
        return 130
    finally:
        if args.keep_logs:
            keep = Path(args.keep_logs)
            keep.mkdir(parents=True, exist_ok=True)
            for log in work_dir.glob("*.log"):
                shutil.copy2(log, keep / log.name)
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
