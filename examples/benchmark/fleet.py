"""The fleet: K agents on K simulated hosts share one queue of ONE Prefect server on
PostgreSQL, beside the server's raw API ceiling and K official agents, in one run.

    python -m examples.benchmark --parts fleet --fleet-agents 10 --fleet-runs 5000

What runs (each contender on a fresh queue, its N runs created before it starts):

  ceiling          no agent: the ceiling's client (Pending + pid per run, 8 threads)
  fleet-ours       K of our agents, each in a simulated host of its own
                   (`examples/harness/hosts.py`: its own hostname and pid space), at defaults
  fleet-official   K official agents (`prefect agent start -q Q`,
                   PREFECT_AGENT_QUERY_INTERVAL=1; on Prefect 3 `prefect worker start --type
                   process`, PREFECT_WORKER_QUERY_SECONDS=1), each in a host of its own too
  one-ours-pg      one of our agents on the same PostgreSQL-backed server
  one-ours-sqlite  one of our agents on a SQLite-backed server started for it afterwards

A run's command is the cheapest marker of its own start: `sh -c 'exec mktemp
"$MARKER_DIR/$PREFECT__FLOW_RUN_ID.$$.XXXXXX"'` (MARKER_DIR from the deployment's env, the run
id expanded by sh from the run's environment: no shell text is built from server data;
mktemp makes a new file at every start, so two starts of one run on two hosts whose pids
happen to be equal still leave two markers). Runs started, started twice and never started
are counted from these markers, not from anyone's log.

During each drain a sampler looks at /proc every second (`fleet_cpu`: the server's, the
PostgreSQL server's, the agents' and their runs' CPU, and each agent's RSS) and at the pool's
worker rows every two seconds (name, status, heartbeat age; the pool's status).
"""

from __future__ import annotations

import contextlib
import functools
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from actors.launcher.local_server import LocalPrefectServer
from actors.launcher.prefect_objects import parse_time
from actors.rules.retry import RetryPolicy
from examples.benchmark.ceiling import CEILING_THREADS, FAKE_PID
from examples.benchmark.contenders import LAUNCHER, ContenderError, clean_env, prefect_cli
from examples.benchmark.fleet_cpu import CpuSplit, Roots, Snapshot, limit_verdict, snapshot
from examples.benchmark.fleet_cpu import window_split as cpu_window
from examples.benchmark.procs import CLOCK_TICKS, rss_kib
from examples.benchmark.request_count import RequestCounter
from examples.benchmark.server import BenchServer
from examples.harness import prefect3
from examples.harness.agent_logs import count_problems
from examples.harness.hosts import SimulatedHost
from examples.harness.postgres import PostgresServer, postgres_binaries

Say = Callable[[str], None]
Kind = Literal["ceiling", "ours", "official"]

MARKER_COMMAND = ["sh", "-c", 'exec mktemp "$MARKER_DIR/$PREFECT__FLOW_RUN_ID.$$.XXXXXX"']
AGENT_POOL_2 = "default-agent-pool"  # where a 2.x server lists the workers of plain queues
SAMPLE_SECONDS = 1.0  # /proc: CPU and RSS
WORKER_SAMPLE_EVERY = 2  # worker rows every 2nd sample
# Setting up is not measured, so it may wait: a SQLite server just started answers 503
# ("database is locked") for a minute while its services start, on a busy machine (the 12
# tries of the default policy, about 15 s, were not enough).
SETUP_RETRY = RetryPolicy(base_delay=0.05, max_delay=5.0, attempts=80)
PG_SETUP_THREADS = 8  # creating runs: PostgreSQL takes concurrent writers, SQLite does not
MARKER_WAIT = 15.0  # seconds to wait, once every run has a pid, for markers still missing
HOST_STOP_GRACE = 20.0
LOST_RACES = 1.2  # submissions per run from which the verdict names the races lost
# Once every run is past Scheduled, a drain whose count of pids has not grown for this long is
# over: the runs still without one were taken and stranded (Pending, no process, or no pid).
STALL_SECONDS = 60.0

# The official agent in a host: SimulatedHost puts `--api URL` first, which the official CLI
# does not take: this stdlib-only stub turns it into PREFECT_API_URL and execs the CLI, so
# the agent is still the host's pid 2 and reaches the server at the host's URL.
_OFFICIAL_STUB = r"""
import os, sys
prefect, rest = sys.argv[1], sys.argv[2:]
if rest[:1] == ["--api"]:
    os.environ["PREFECT_API_URL"] = rest[1]
    rest = rest[2:]
os.execv(prefect, [prefect, *rest])
"""


@dataclass
class Target:
    """A server the fleet drains against, and the processes that make it up (for the CPU)."""

    api_url: str
    database: str  # "postgresql", "sqlite", or "given" (--api)
    major: str  # "2" or "3"
    version: str  # as the server says it
    server_pid: int | None = None
    postgres_pid: int | None = None
    postgres_version: str | None = None
    start_seconds: float | None = None
    server_log: Path | None = None  # the Prefect server's output (its tracebacks among it)


@dataclass
class AgentFigures:
    """One agent of a contender: where it ran, what it took, what it cost."""

    host: str
    # runs whose infrastructure_pid names this host; None when the pids name no host at all
    # (Prefect 3's process worker records a bare pid)
    runs_with_pid: int | None
    rss_mib_max: float
    rss_mib_end: float
    cpu_seconds: float  # the agent process's own, from its start to the end of the drain
    log_problems: int  # WARNING/ERROR/CRITICAL lines in the host's log
    log_path: str
    # "submitting flow run" lines in its log: each a run it tried to take (a Pending proposal
    # follows), won or lost to another agent; None when its log has none of these lines
    submissions: int | None = None


@dataclass
class FleetDrain:
    """One contender's drain of N runs, with exactly-once counts, workers, RSS and CPU."""

    contender: str
    describe: str
    database: str
    agents: int
    runs: int
    runs_with_pid: int
    elapsed_seconds: float  # first agent start (ceiling: first request) -> last pid PATCH
    runs_per_second: float  # runs with a pid / elapsed: start-up included
    steady_runs_per_second: float | None  # (runs - 1) / (last pid - first Pending), server clock
    timed_out: bool
    setup_seconds: float  # creating its runs (not measured)
    stalled: bool = False  # ended by STALL_SECONDS: every run taken, some never got a pid
    stranded: int = 0  # runs past Scheduled at the end without a pid
    server_tracebacks: int | None = None  # in the server's log during this drain
    error: str | None = None  # the drain could not finish: why
    first_pid_seconds: float | None = None
    markers_seconds: float | None = None  # first agent start -> the last run's marker
    started_once: int | None = None  # runs with exactly one marker
    started_twice_or_more: int | None = None  # runs with more than one
    extra_starts: int | None = None  # markers beyond the first of each run
    never_started: int | None = None  # runs with no marker
    # the agents' logged submissions per run started: above 1, proposals lost to other agents
    submissions_per_run: float | None = None
    all_online_seconds: float | None = None  # first agent start -> all K workers ONLINE
    max_online: int | None = None
    min_online_after_all: int | None = None  # from all K ONLINE to the drain's end
    pool_statuses: list[str] = field(default_factory=list)  # seen from all-online to the end
    pool_statuses_before: list[str] = field(default_factory=list)  # seen before that
    max_heartbeat_age_seconds: float | None = None  # over this fleet's rows, in the window
    worker_samples: int = 0
    agent_figures: list[AgentFigures] = field(default_factory=list)
    cpu: CpuSplit | None = None
    limit: str = ""
    ceiling_retries: int | None = None
    # --fleet-count-requests: the agents' requests in the drain by endpoint, through one
    # counting proxy (`request_count`) between all of the contender's hosts and the server
    requests: dict[str, int] | None = None


@dataclass
class FleetResults:
    settings: dict[str, Any]
    targets: dict[str, Target] = field(default_factory=dict)  # "postgresql" / "sqlite"
    drains: list[FleetDrain] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)


# -- servers -----------------------------------------------------------------------------------


def _postgres_version() -> str | None:
    """The PostgreSQL server's version, from its binary (`postgres (PostgreSQL) 18.1`)."""
    try:
        answer = subprocess.run(
            [str(postgres_binaries() / "postgres"), "--version"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return None
    return answer.stdout.strip().rsplit(" ", 1)[-1] or None


def server_version(api_url: str) -> str:
    answer = httpx.get(f"{api_url}/admin/version", timeout=30.0)
    answer.raise_for_status()
    return str(answer.json())


def start_target(
    stack: contextlib.ExitStack, major: str, database: str, args: Any, *, say: Say, work_dir: Path
) -> Target:
    """A Prefect server of `major` on `database` ("postgresql": a PostgresServer of its own;
    "sqlite": the server's own file), stopped by `stack` (the server before its database)."""
    python = None
    env = None
    if major == "3":
        if not prefect3.PYTHON.exists():
            raise ContenderError(
                f"--fleet-server 3 needs {prefect3.VENV} (Prefect 3): `python -m venv "
                f"{prefect3.VENV} && {prefect3.PYTHON} -m pip install '{prefect3.REQUIREMENT}'`"
            )
        python, env = str(prefect3.PYTHON), dict(prefect3.SERVER_ENV)
    began = time.monotonic()
    url = None
    postgres: PostgresServer | None = None
    if database == "postgresql":
        say("  starting PostgreSQL...")
        postgres = stack.enter_context(PostgresServer(durable=args.fleet_pg_durable))
        url = postgres.url
    say(f"  starting a Prefect {major} server on {database}...")
    server = LocalPrefectServer(python=python, env=env, database_url=url)
    stack.callback(server.stop)
    # before the stop (LIFO): the logs go where --keep-logs copies from
    stack.callback(_copy_log, server.log_path, work_dir / f"server-{database}.log")
    if postgres is not None:
        stack.callback(_copy_log, postgres.log_path, work_dir / "postgres.log")
    server.start(timeout=240.0)
    version = server_version(server.api_url)
    target = Target(
        api_url=server.api_url,
        database=database,
        major=major,
        version=version,
        server_pid=server.pid,
        postgres_pid=postgres.pid if postgres is not None else None,
        postgres_version=_postgres_version() if postgres is not None else None,
        start_seconds=time.monotonic() - began,
        server_log=server.log_path,
    )
    say(f"  Prefect {version} on {database} at {target.api_url} ({target.start_seconds:.1f}s)")
    return target


def _copy_log(source: Path, target: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.copy2(source, target)


def _log_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def tracebacks_since(path: Path | None, offset: int) -> int | None:
    """Errors the server logged after `offset`: its tracebacks, a chain of them counted once
    (a 500 answer, or one of its background services failing)."""
    if path is None:
        return None
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return None
    chained = text.count("The above exception was the direct cause") + text.count(
        "During handling of the above exception"
    )
    return text.count("Traceback (most recent call last)") - chained  # one per error


def given_target(api_url: str) -> Target:
    """--api: a server running elsewhere; its processes are not ours to measure."""
    version = server_version(api_url)
    major = "3" if version.startswith("3") else "2"
    return Target(api_url=api_url, database="given", major=major, version=version)


# -- what each contender drains -----------------------------------------------------------------


@dataclass
class Work:
    queue: str
    pool: str  # where its workers are listed (2.x: default-agent-pool)
    run_ids: list[str]
    markers: Path
    setup_seconds: float


def prepare(
    bench: BenchServer, target: Target, *, name: str, runs: int, work_dir: Path, say: Say
) -> Work:
    """A fresh queue (Prefect 3: a pool of its own, of type process) and `runs` due runs."""
    queue = f"bench-{bench.tag}-{name}"
    markers = work_dir / f"markers-{name}"
    markers.mkdir()
    env = {"MARKER_DIR": str(markers)}
    began = time.monotonic()
    measured_retry, bench.api.retry = bench.api.retry, SETUP_RETRY
    try:
        if target.major == "3":
            pool = queue
            bench.api.create_work_pool(pool, type_="process")
            bench.api.create_pool_queue(pool, queue)
            command = shlex.join(MARKER_COMMAND)
            deployment = bench.pool_deployment(name, pool, queue, command, env)
        else:
            pool = AGENT_POOL_2
            deployment = bench.deployment(name, queue, MARKER_COMMAND, env)
        # SQLite takes one writer at a time: one request at a time
        threads = PG_SETUP_THREADS if target.database == "postgresql" else 1
        say(f"  creating {runs} runs on {queue}...")
        run_ids = bench.create_runs(deployment, runs, threads=threads)
    finally:
        bench.api.retry = measured_retry
    return Work(queue, pool, run_ids, markers, time.monotonic() - began)


_SUBMITTING = re.compile(r"submitting flow run", re.IGNORECASE)


def count_submissions(log: Path) -> int | None:
    """Lines saying a run is being submitted, in any of the three agents' formats: ours
    ("submitting flow run ID ..."), Prefect 2's agent ("Submitting flow run 'ID'") and
    Prefect 3's worker ("Worker 'W' submitting flow run 'ID'"); None when there are none."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = sum(1 for line in text.splitlines() if _SUBMITTING.search(line))
    return found or None


def count_markers(markers: Path) -> tuple[Counter[str], datetime | None]:
    """Starts per run id from the marker files, and when the last one was made."""
    starts: Counter[str] = Counter()
    last = 0
    for entry in markers.iterdir():
        starts[entry.name.split(".", 1)[0]] += 1
        with contextlib.suppress(OSError):
            last = max(last, entry.stat().st_mtime_ns)
    return starts, (datetime.fromtimestamp(last / 1e9, UTC) if last else None)


# -- the sampler -------------------------------------------------------------------------------


@dataclass
class WorkerSample:
    at: datetime
    pool_status: str | None
    rows: list[tuple[str, str, float | None]]  # this contender's workers: name, status, age s


class Sampler:
    """A thread that looks at /proc every second (CPU snapshots, each agent's RSS) and at the
    pool's worker rows every other second, until `stop`."""

    def __init__(
        self, roots: Roots, bench: BenchServer | None, pool: str | None, mine: str | None
    ) -> None:
        self.roots = roots
        self.bench = bench
        self.pool = pool
        self.mine = mine  # a worker row is this contender's when its name holds this
        self.snapshots: list[Snapshot] = []
        self.workers: list[WorkerSample] = []
        self.rss: dict[int, list[int]] = {}  # agent machine pid -> KiB samples
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-sampler", daemon=True)

    def start(self) -> Sampler:
        self.snapshots.append(snapshot(self.roots))
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return  # stopped already (the drain stops it, and its exit stack again)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)
        self.snapshots.append(snapshot(self.roots))
        if self.pool is not None:
            # a drain shorter than two samples still gets its worker rows read once, while
            # the agents are up (the hosts stop after the sampler)
            self.workers.append(self._workers())

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(SAMPLE_SECONDS):
            tick += 1
            try:
                self.snapshots.append(snapshot(self.roots))
                for pid in list(self.roots.agents):
                    kib = rss_kib(pid)
                    if kib:
                        self.rss.setdefault(pid, []).append(kib)
                if self.pool is not None and tick % WORKER_SAMPLE_EVERY == 0:
                    self.workers.append(self._workers())
            except Exception:  # noqa: BLE001 - a failed look is counted, never fatal
                self.errors += 1

    def _workers(self) -> WorkerSample:
        assert self.bench is not None and self.pool is not None
        api = self.bench.api
        status: str | None = None
        rows: list[tuple[str, str, float | None]] = []
        now = datetime.now(UTC)
        try:
            pool = api.call("GET", f"work_pools/{self.pool}")
            # 2.x keeps no status for a pool of type prefect-agent (default-agent-pool):
            # null, the server's own answer, is shown as such
            status = str(pool.get("status") or "null")
            found = api.call("POST", f"work_pools/{self.pool}/workers/filter", json={})
        except httpx.HTTPError:
            self.errors += 1
            return WorkerSample(now, status, rows)
        for row in found or []:
            name = str(row.get("name"))
            if self.mine is not None and self.mine not in name:
                continue
            beat = row.get("last_heartbeat_time")
            age = (now - parse_time(beat)).total_seconds() if beat else None
            rows.append((name, str(row.get("status")), age))
        return WorkerSample(now, status, rows)


def _workers_figures(drain: FleetDrain, samples: list[WorkerSample], began: datetime) -> None:
    """All-online time, and the minimum ONLINE and pool statuses from then to the end."""
    drain.worker_samples = len(samples)
    if not samples:
        return
    online = [sum(1 for _, status, _ in s.rows if status == "ONLINE") for s in samples]
    drain.max_online = max(online)
    first_all = next((i for i, n in enumerate(online) if n >= drain.agents), None)
    before = samples if first_all is None else samples[:first_all]
    drain.pool_statuses_before = sorted({s.pool_status or "-" for s in before})
    if first_all is None:
        return
    window = samples[first_all:]
    drain.all_online_seconds = (samples[first_all].at - began).total_seconds()
    drain.min_online_after_all = min(online[first_all:])
    drain.pool_statuses = sorted({s.pool_status or "-" for s in window})
    ages = [age for s in window for _, _, age in s.rows if age is not None]
    drain.max_heartbeat_age_seconds = max(ages) if ages else None


# -- reading a drain back ----------------------------------------------------------------------


@dataclass
class ReadBack:
    pids: dict[str, str]  # run id -> infrastructure_pid
    last_pid: datetime | None
    first_pid: datetime | None
    first_pending: datetime | None


def read_back(bench: BenchServer, queue: str, run_ids: list[str]) -> ReadBack:
    """Every run once (pages of 200): its pid, its `updated` (the pid PATCH is a run's last
    write here: its command exits 0 and nobody reports after that), and the first Pending: a
    run still Pending carries that state's timestamp; for the others, their state history."""
    runs = bench.api.read_runs(run_ids, work_queue=queue)
    pids: dict[str, str] = {}
    updated: list[datetime] = []
    pending: list[datetime] = []
    moved_on: list[str] = []
    for run_id, run in runs.items():
        if run.get("infrastructure_pid"):
            pids[run_id] = str(run["infrastructure_pid"])
            updated.append(parse_time(run["updated"]))
        state = run.get("state") or {}
        if state.get("type") == "PENDING" and state.get("timestamp"):
            pending.append(parse_time(state["timestamp"]))
        elif state.get("type") != "SCHEDULED":
            moved_on.append(run_id)
    if moved_on:
        pending.extend(bench.pending_times(moved_on).values())
    return ReadBack(
        pids,
        max(updated) if updated else None,
        min(updated) if updated else None,
        min(pending) if pending else None,
    )


def _rates(drain: FleetDrain, back: ReadBack, began: datetime, observed: float) -> None:
    done = len(back.pids)
    drain.runs_with_pid = done
    if back.last_pid is not None and not drain.timed_out:
        drain.elapsed_seconds = max((back.last_pid - began).total_seconds(), 1e-3)
    else:
        drain.elapsed_seconds = observed
    drain.runs_per_second = done / drain.elapsed_seconds if drain.elapsed_seconds > 0 else 0.0
    if back.first_pid is not None:
        drain.first_pid_seconds = (back.first_pid - began).total_seconds()
    if done >= 2 and back.first_pending is not None and back.last_pid is not None:
        seconds = (back.last_pid - back.first_pending).total_seconds()
        drain.steady_runs_per_second = (done - 1) / seconds if seconds > 0 else None


# -- the contenders ----------------------------------------------------------------------------


def drain_ceiling(
    bench: BenchServer, target: Target, runs: int, work_dir: Path, say: Say
) -> FleetDrain:
    """The ceiling's client (`ceiling.py`: Pending, then the pid, per run, 8 threads) on a
    queue of this server, its CPU split sampled as for the agents."""
    work = prepare(bench, target, name="ceiling", runs=runs, work_dir=work_dir, say=say)
    api = bench.api

    def take(run_id: str) -> bool:
        if not api.propose_pending(run_id):
            return False
        api.set_infrastructure_pid(run_id, FAKE_PID)
        return True

    roots = Roots(server=target.server_pid, postgres=target.postgres_pid)
    log_offset = _log_size(target.server_log)
    sampler = Sampler(roots, None, None, None).start()
    retries_before = api.retried
    began_wall, began = datetime.now(UTC), time.monotonic()
    try:
        with ThreadPoolExecutor(CEILING_THREADS) as pool:
            list(pool.map(take, work.run_ids))
    finally:
        sampler.stop()
    observed = time.monotonic() - began
    back = read_back(bench, work.queue, work.run_ids)
    drain = FleetDrain(
        contender="ceiling",
        describe=f"no agent: httpx, {CEILING_THREADS} threads, Pending + pid PATCH per run",
        database=target.database,
        agents=0,
        runs=runs,
        runs_with_pid=0,
        elapsed_seconds=0.0,
        runs_per_second=0.0,
        steady_runs_per_second=None,
        timed_out=False,
        setup_seconds=work.setup_seconds,
        ceiling_retries=api.retried - retries_before,
        server_tracebacks=tracebacks_since(target.server_log, log_offset),
    )
    _rates(drain, back, began_wall, observed)
    drain.cpu = cpu_window(sampler.snapshots, back.first_pending, back.last_pid)
    drain.limit = limit_verdict(drain.cpu)
    return drain


def _agent_command(
    kind: Kind, target: Target, work: Work, host: str, home: Path
) -> tuple[list[str], list[str], dict[str, str]]:
    """(command, args, env) for SimulatedHost.run_agent (which puts `--api URL` first)."""
    env = clean_env(home)
    if kind == "ours":
        args = ["-q", work.queue]
        if target.major == "3":
            args = ["-p", work.pool, *args]
        return [sys.executable, str(LAUNCHER)], args, env
    stub = [sys.executable, "-S", "-c", _OFFICIAL_STUB, prefect_cli()]
    if target.major == "3":
        env["PREFECT_WORKER_QUERY_SECONDS"] = "1"
        stub[-1] = str(prefect3.VENV / "bin" / "prefect")
        args = ["worker", "start", "--type", "process", "--pool", work.pool]
        args += ["--work-queue", work.queue, "--name", f"official-worker@{host} {work.queue}"]
        return stub, args, env
    env["PREFECT_AGENT_QUERY_INTERVAL"] = "1"
    return stub, ["agent", "start", "-q", work.queue], env


def describe(kind: Kind, target: Target, count: int) -> str:
    hosts = f"{count} simulated host(s), one agent each"
    if kind == "ours":
        flags = "-p POOL -q Q" if target.major == "3" else "-q Q"
        return f"examples/agent.py {flags} (defaults), {hosts}"
    if target.major == "3":
        return (
            "prefect worker start --type process --pool POOL --work-queue Q, "
            f"PREFECT_WORKER_QUERY_SECONDS=1 (Prefect 3), {hosts}"
        )
    return f"prefect agent start -q Q, PREFECT_AGENT_QUERY_INTERVAL=1, {hosts}"


def _stop_hosts(hosts: list[SimulatedHost]) -> None:
    """SIGTERM every agent at once (through its host's init), then kill each host whole."""

    def one(host: SimulatedHost) -> None:
        try:
            host.stop(timeout=HOST_STOP_GRACE)
        finally:
            host.close()

    with ThreadPoolExecutor(max(1, len(hosts))) as pool:
        list(pool.map(one, hosts))


def _wait_agent_pid(host: SimulatedHost, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        pid = host.agent_pid()
        if pid is not None:
            return pid
        if not host.running or time.monotonic() >= deadline:
            raise ContenderError(f"host {host.name}: no agent process; log:\n{host.logs()[-2000:]}")
        time.sleep(0.01)


@dataclass
class Waited:
    pids: int
    taken: int
    observed_seconds: float
    timed_out: bool
    stalled: bool


def wait_fleet(
    bench: BenchServer,
    work: Work,
    *,
    timeout: float,
    began: float,
    check: Callable[[], None],
) -> Waited:
    """Every `bench.poll_seconds`: one COUNT of the queue's runs past Scheduled, and, once all
    are, the pids of those still without one; until every run has a pid, the timeout, or a
    stall (all taken, no new pid for STALL_SECONDS). `check` raises when an agent died."""
    expected = len(work.run_ids)
    with_pid: set[str] = set()
    taken = 0
    last_change = time.monotonic()
    seen = (0, 0)
    while True:
        check()
        now = time.monotonic()
        if now - began >= timeout:
            return Waited(len(with_pid), taken, now - began, True, False)
        taken = bench.taken(work.queue)
        if taken >= expected:
            missing = [r for r in work.run_ids if r not in with_pid]
            with_pid.update(bench.runs_with_pid(work.queue, missing))
        if len(with_pid) >= expected:
            return Waited(len(with_pid), taken, time.monotonic() - began, False, False)
        if (taken, len(with_pid)) != seen:
            seen, last_change = (taken, len(with_pid)), now
        elif taken >= expected and now - last_change >= STALL_SECONDS:
            return Waited(len(with_pid), taken, time.monotonic() - began, False, True)
        time.sleep(max(0.0, bench.poll_seconds - (time.monotonic() - now)))


def _start_hosts(
    hosts: list[SimulatedHost],
    roots: Roots,
    agent_pids: dict[str, int],
    *,
    kind: Kind,
    target: Target,
    work: Work,
    prefix: str,
    count: int,
    work_dir: Path,
    api_url: str,
) -> None:
    """Boot `count` hosts with an agent each (into `hosts` as they come, so that a failure
    half-way still stops those up), then make their processes the sampler's."""
    for index in range(count):
        host_name = f"{prefix}-{index + 1:02d}"
        host = SimulatedHost.for_api(host_name, api_url, False, log_dir=work_dir)
        hosts.append(host)
        command, args, env = _agent_command(
            kind, target, work, host_name, work_dir / f"home-{host_name}"
        )
        host.run_agent(args, env, command=command)
    for host in hosts:
        pid = _wait_agent_pid(host)
        agent_pids[host.name] = pid
        assert host.init_pid is not None
        roots.hosts = [*roots.hosts, host.init_pid]
        roots.agents = [*roots.agents, pid]


def _exactly_once(drain: FleetDrain, starts: Counter[str], known: set[str]) -> None:
    drain.started_once = sum(1 for r in known if starts.get(r) == 1)
    drain.started_twice_or_more = sum(1 for r in known if starts.get(r, 0) > 1)
    drain.extra_starts = sum(max(0, starts.get(r, 0) - 1) for r in known)
    drain.never_started = sum(1 for r in known if starts.get(r, 0) == 0)


def _stopped_in_order(
    stack: contextlib.ExitStack, hosts: list[SimulatedHost], target: Target, proxy: bool
) -> RequestCounter | None:
    """The hosts stopped by `stack`, and with `proxy` a counting proxy for them to reach the
    server through, stopped after them."""
    counter = None
    if proxy:
        counter = RequestCounter(target.api_url)
        stack.callback(counter.stop)
    stack.callback(_stop_hosts, hosts)
    return counter


def drain_agents(
    bench: BenchServer,
    target: Target,
    *,
    name: str,
    kind: Kind,
    count: int,
    runs: int,
    timeout: float,
    work_dir: Path,
    say: Say,
    count_requests: bool = False,
) -> FleetDrain:
    """`count` agents of `kind`, each on a simulated host of its own, on one fresh queue of
    `runs` due runs; from the first agent's start until every run has a pid. With
    `count_requests`, the hosts reach the server through one counting proxy."""
    work = prepare(bench, target, name=name, runs=runs, work_dir=work_dir, say=say)
    prefix = {"fleet-ours": "ours", "fleet-official": "official"}.get(name, name[9:] or name)
    hosts: list[SimulatedHost] = []
    roots = Roots(server=target.server_pid, postgres=target.postgres_pid)
    sampler = Sampler(roots, bench, work.pool, work.queue)
    agent_pids: dict[str, int] = {}
    say(f"  starting {count} agent(s) ({kind}) on {count} simulated host(s)...")
    log_offset = _log_size(target.server_log)
    with contextlib.ExitStack() as stack:
        counter = _stopped_in_order(stack, hosts, target, count_requests)
        sampler.start()
        stack.callback(sampler.stop)
        began_wall, began = datetime.now(UTC), time.monotonic()
        _start_hosts(
            hosts, roots, agent_pids, kind=kind, target=target, work=work, prefix=prefix,
            count=count, work_dir=work_dir,
            api_url=counter.api_url if counter is not None else target.api_url,
        )  # fmt: skip

        def check_hosts() -> None:
            for host in hosts:
                if not host.running:
                    raise ContenderError(
                        f"host {host.name}'s agent exited; its log ends:\n{host.logs()[-3000:]}"
                    )

        progress = wait_fleet(bench, work, timeout=timeout, began=began, check=check_hosts)
        observed = time.monotonic() - began
        back = read_back(bench, work.queue, work.run_ids)
        deadline = time.monotonic() + MARKER_WAIT
        while time.monotonic() < deadline:
            starts, _ = count_markers(work.markers)
            if len(starts) >= len(back.pids):
                break
            time.sleep(0.5)
        # both before the hosts stop: their stop is not the drain's
        cpu_end = {host: _own_seconds(pid) for host, pid in agent_pids.items()}
        drain_requests = dict(counter.snapshot()[0]) if counter is not None else None
        sampler.stop()
        # the hosts stop here (stack): a start during the stop still leaves its marker
    starts, last_marker = count_markers(work.markers)
    drain = FleetDrain(
        contender=name,
        describe=describe(kind, target, count),
        database=target.database,
        agents=count,
        runs=runs,
        runs_with_pid=0,
        elapsed_seconds=0.0,
        runs_per_second=0.0,
        steady_runs_per_second=None,
        timed_out=progress.timed_out,
        setup_seconds=work.setup_seconds,
        stalled=progress.stalled,
        server_tracebacks=tracebacks_since(target.server_log, log_offset),
        requests=drain_requests,
    )
    _exactly_once(drain, starts, set(work.run_ids))
    _rates(drain, back, began_wall, observed)
    drain.stranded = max(0, progress.taken - drain.runs_with_pid)
    drain.markers_seconds = (last_marker - began_wall).total_seconds() if last_marker else None
    taken = Counter(pid.rpartition(":")[0] for pid in back.pids.values())
    named = any(taken.get(host.name) for host in hosts)
    for host in hosts:
        samples = sampler.rss.get(agent_pids[host.name], [])
        drain.agent_figures.append(
            AgentFigures(
                host=host.name,
                runs_with_pid=taken.get(host.name, 0) if named else None,
                rss_mib_max=max(samples, default=0) / 1024,
                rss_mib_end=(samples[-1] if samples else 0) / 1024,
                cpu_seconds=cpu_end.get(host.name, 0.0),
                log_problems=count_problems(host.log_path),
                log_path=str(host.log_path),
                submissions=count_submissions(host.log_path),
            )
        )
    tried = [a.submissions for a in drain.agent_figures if a.submissions is not None]
    started = len(work.run_ids) - (drain.never_started or 0)
    if tried and started:
        drain.submissions_per_run = sum(tried) / started
    _workers_figures(drain, sampler.workers, began_wall)
    end = back.last_pid if not drain.timed_out else None
    drain.cpu = cpu_window(sampler.snapshots, back.first_pending, end)
    drain.limit = limit_verdict(drain.cpu)
    if drain.submissions_per_run is not None and drain.submissions_per_run >= LOST_RACES:
        drain.limit += (
            f"; {drain.submissions_per_run:.1f} submissions per run started (the rest lost "
            "to another agent's Pending)"
        )
    return drain


def _own_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# -- the part ----------------------------------------------------------------------------------


def default_timeout(runs: int) -> float:
    """Enough for a drain at 2 runs/s after a minute of start-up (K official agents on one
    queue of a busy 2-core machine drained 4 runs/s)."""
    return max(180.0, 60.0 + runs / 2.0)


def _say_drain(say: Say, d: FleetDrain) -> None:
    steady = "-" if d.steady_runs_per_second is None else f"{d.steady_runs_per_second:.1f}"
    once = "" if d.started_once is None else (
        f"; started once {d.started_once}, twice+ {d.started_twice_or_more}, "
        f"never {d.never_started}"
    )  # fmt: skip
    say(
        f"  {d.runs_with_pid}/{d.runs} with a pid in {d.elapsed_seconds:.1f}s: "
        f"{d.runs_per_second:.1f} runs/s from start, {steady} steady"
        + (" (timed out)" if d.timed_out else "")
        + (f" (stalled: {d.stranded} run(s) taken, never given a pid)" if d.stalled else "")
        + once
    )
    if d.cpu is not None:
        parts = ", ".join(
            f"{group} {d.cpu.percent(group):.0f}%"
            for group in d.cpu.seconds
            if d.cpu.percent(group) is not None
        )
        say(f"  CPU ({d.cpu.window}, % of one core): {parts}; limit: {d.limit}")


def attempt(results: FleetResults, name: str, say: Say, drain: Callable[[], FleetDrain]) -> None:
    """One contender's drain: its figures, or (on any error but an interrupt) a line saying
    why there are none, so that one contender's failure never loses the others' figures."""
    say(f"fleet: {name}...")
    try:
        measured = drain()
    except Exception as exc:  # noqa: BLE001 - reported in the table's notes, the rest goes on
        results.skipped.append(f"failed: {name}: {type(exc).__name__}: {str(exc)[:1500]}")
        say(f"  failed: {type(exc).__name__}: {str(exc)[:1500]}")
        return
    results.drains.append(measured)
    _say_drain(say, measured)


def _sqlite_drain(
    results: FleetResults, args: Any, *, runs: int, timeout: float, work_dir: Path, say: Say
) -> FleetDrain:
    """One of our agents on a SQLite-backed server of the same version, started for it."""
    with contextlib.ExitStack() as stack:
        target = start_target(stack, args.fleet_server, "sqlite", args, say=say, work_dir=work_dir)
        results.targets["sqlite"] = target
        bench = BenchServer(target.api_url, args.poll_interval)
        stack.callback(bench.close)
        return drain_agents(
            bench, target, name="one-ours-sqlite", kind="ours", count=1, runs=runs,
            timeout=timeout, work_dir=work_dir, say=say,
        )  # fmt: skip


def run_fleet(args: Any, work_dir: Path, say: Say) -> FleetResults:
    """The whole part: servers up, each contender's drain, everything stopped again."""
    began = time.monotonic()
    runs, agents = args.fleet_runs, args.fleet_agents
    compare_runs = args.fleet_compare_runs or runs
    timeout = args.fleet_timeout or default_timeout(runs)
    results = FleetResults(
        settings={
            "agents": agents,
            "runs": runs,
            "compare_runs": compare_runs,
            "official": args.fleet_official,
            "compare_sqlite": args.fleet_compare_sqlite,
            "server": args.fleet_server,
            "timeout": timeout,
            "postgres_durable": args.fleet_pg_durable,
            "count_requests": args.fleet_count_requests,
            "api": args.api,
            "marker_command": MARKER_COMMAND,
        }
    )
    say(f"fleet: {agents} agent(s), {runs} runs, Prefect {args.fleet_server} on PostgreSQL...")
    with contextlib.ExitStack() as stack:
        if args.api:
            target = given_target(args.api)
        else:
            target = start_target(
                stack, args.fleet_server, "postgresql", args, say=say, work_dir=work_dir
            )
        results.targets[target.database] = target
        bench = BenchServer(target.api_url, args.poll_interval)
        stack.callback(bench.close)
        if args.api:
            stack.callback(bench.delete_everything)
        attempt(results, "ceiling", say, lambda: drain_ceiling(bench, target, runs, work_dir, say))
        plan: list[tuple[str, Kind, int, int]] = [("fleet-ours", "ours", agents, runs)]
        if args.fleet_official:
            plan.append(("fleet-official", "official", agents, runs))
        if args.fleet_compare_sqlite:
            one = "one-ours-pg" if target.database == "postgresql" else "one-ours"
            plan.append((one, "ours", 1, compare_runs))
        for name, kind, count, n in plan:
            attempt(
                results, f"{name} ({count} agent(s), {n} runs)", say,
                functools.partial(
                    drain_agents, bench, target, name=name, kind=kind, count=count, runs=n,
                    timeout=timeout, work_dir=work_dir, say=say,
                    count_requests=args.fleet_count_requests,
                ),
            )  # fmt: skip
    if args.fleet_compare_sqlite:
        if args.api:
            results.skipped.append("one-ours-sqlite: --api names the server; none is started")
        else:
            attempt(
                results, f"one-ours-sqlite (1 agent, {compare_runs} runs)", say,
                functools.partial(
                    _sqlite_drain, results, args, runs=compare_runs, timeout=timeout,
                    work_dir=work_dir, say=say,
                ),
            )  # fmt: skip
    results.seconds = time.monotonic() - began
    return results
