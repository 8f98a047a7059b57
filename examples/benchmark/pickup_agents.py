"""The latency part's servers and contenders: a Prefect 3 server and a 2.20 one with events
on, and how each contender is started on its queues, at its defaults.

    3.x  ours        examples/agent.py -p POOL -q Q --events auto
         ours-off    examples/agent.py -p POOL -q Q --events off
         worker      prefect worker start --type process --pool POOL --work-queue Q (3.x)
    2.20 ours        examples/agent.py -q Q --events auto
         ours-off    examples/agent.py -q Q --events off (idle and drain only: today's cost)
         official    prefect agent start -q Q

On Prefect 3 each contender gets a `process` pool of its own; on 2.20 plain queues (listed in
the default agent pool). Every contender runs with a clean environment (no PREFECT_ setting
of the user's) and its output in a log.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from actors.launcher.local_server import LocalPrefectServer
from examples.benchmark.contenders import (
    LAUNCHER,
    Agent,
    Contender,
    ContenderError,
    clean_env,
    prefect_cli,
)
from examples.benchmark.procs import ProcessGuard
from examples.benchmark.server import BenchServer
from examples.harness import prefect3
from examples.harness.agent_status import STATUS_HOST, free_port

Major = Literal["2", "3"]
Kind = Literal["ours", "official"]

# Prefect 2.20 serves /api/events/out and emits flow-run events only with this on (off by
# default); the stream-out and persister services it needs are on by default once it is. The
# event logger (on by default with it) only writes every event to the server's log: off.
EVENTS_2 = {
    "PREFECT_EXPERIMENTAL_EVENTS": "true",
    "PREFECT_API_SERVICES_EVENT_LOGGER_ENABLED": "false",
}
# The polls' nominal pace at the defaults (the run-now gaps span one of it, see pickup.py).
POLL_DEFAULTS = {"ours": 15.0, "ours-off": 15.0, "official": 15.0, "worker": 10.0}


@dataclass(frozen=True)
class Entrant:
    """One contender of this part on one server."""

    name: str  # ours, ours-off, official, worker
    major: Major
    describe: str

    @property
    def label(self) -> str:
        return f"{'3.x' if self.major == '3' else '2.20'} {self.name}"

    @property
    def events(self) -> str | None:
        """ours' --events value; None for the official contenders."""
        return {"ours": "auto", "ours-off": "off"}.get(self.name)


ENTRANTS: dict[Major, dict[str, Entrant]] = {
    "3": {
        "ours": Entrant("ours", "3", "examples/agent.py -p POOL -q Q --events auto (defaults)"),
        "ours-off": Entrant("ours-off", "3", "examples/agent.py -p POOL -q Q --events off"),
        "worker": Entrant(
            "worker",
            "3",
            "prefect worker start --type process --pool POOL --work-queue Q (Prefect 3, defaults)",
        ),
    },
    "2": {
        "ours": Entrant("ours", "2", "examples/agent.py -q Q --events auto (defaults)"),
        "ours-off": Entrant("ours-off", "2", "examples/agent.py -q Q --events off"),
        "official": Entrant("official", "2", "prefect agent start -q Q (Prefect 2.20, defaults)"),
    },
}


@dataclass
class Target:
    api_url: str
    major: Major
    version: str
    start_seconds: float | None = None
    server: LocalPrefectServer | None = None


def start_server(major: Major, stack: contextlib.ExitStack) -> Target:
    """A fresh server of `major` on its own SQLite file (2.20 with events on), stopped by
    `stack`."""
    if major == "3":
        if not prefect3.PYTHON.exists():
            raise ContenderError(
                f"the latency part needs {prefect3.VENV} (Prefect 3): `python -m venv "
                f"{prefect3.VENV} && {prefect3.PYTHON} -m pip install '{prefect3.REQUIREMENT}'`"
            )
        server = LocalPrefectServer(python=str(prefect3.PYTHON), env=dict(prefect3.SERVER_ENV))
    else:
        server = LocalPrefectServer(env=dict(EVENTS_2))
    stack.callback(server.stop)
    began = time.monotonic()
    server.start(timeout=240.0)
    version = server_version(server.api_url)
    return Target(server.api_url, major, version, time.monotonic() - began, server)


def given_server(api_url: str) -> Target:
    version = server_version(api_url)
    return Target(api_url.rstrip("/"), "3" if version.startswith("3") else "2", version)


def server_version(api_url: str) -> str:
    answer = httpx.get(f"{api_url.rstrip('/')}/admin/version", timeout=30.0)
    answer.raise_for_status()
    return str(answer.json())


@functools.cache
def ours_has_events_flag() -> bool:
    """Whether this checkout's agent takes --events (the part says so when it does not)."""
    answer = subprocess.run(
        [sys.executable, str(LAUNCHER), "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return "--events" in answer.stdout


@dataclass
class Place:
    """Where a contender's runs go: its pool (3.x) or none, and its queues."""

    pool: str | None
    queues: list[str]


def make_place(bench: BenchServer, target: Target, name: str, queues: int) -> Place:
    """`queues` fresh queues (3.x: in a new `process` pool) named after `name`."""
    base = f"bench-{bench.tag}-{name}"
    names = [base] if queues == 1 else [f"{base}-q{i + 1:02d}" for i in range(queues)]
    if target.major == "3":
        bench.api.create_work_pool(base, type_="process")
        for queue in names:
            bench.api.create_pool_queue(base, queue)
        return Place(base, names)
    for queue in names:
        bench.api.call("POST", "work_queues/", json={"name": queue})
    return Place(None, names)


def deployment(
    bench: BenchServer,
    *,
    target: Target,
    place: Place,
    name: str,
    command: list[str],
    env: dict[str, str],
) -> str:
    """A deployment on the place's first queue whose runs start `command` with `env` added."""
    if target.major == "3":
        assert place.pool is not None
        return bench.pool_deployment(name, place.pool, place.queues[0], shlex.join(command), env)
    return bench.deployment(name, place.queues[0], command, env)


def launch(
    guard: ProcessGuard,
    entrant: Entrant,
    *,
    api_url: str,
    place: Place,
    work_dir: Path,
    log_name: str,
    query_interval: float | None = None,
) -> Agent:
    """Start one contender on `place` against `api_url` (a counting proxy's, for the idle
    cost); ours serves its status endpoint on loopback. `query_interval`: ours' only (the
    smoke test's; the benchmark keeps every default)."""
    log = work_dir / f"{log_name}.log"
    env = clean_env(work_dir / f"home-{log_name}")
    status_url = None
    if entrant.name in ("ours", "ours-off"):
        port = free_port()
        status_url = f"http://{STATUS_HOST}:{port}"
        argv = [sys.executable, str(LAUNCHER), "--api", api_url]
        if place.pool is not None:
            argv += ["-p", place.pool]
        for queue in place.queues:
            argv += ["-q", queue]
        argv += ["--status-host", STATUS_HOST, "--status-port", str(port)]
        if ours_has_events_flag() and entrant.events is not None:
            argv += ["--events", entrant.events]
        if query_interval is not None:
            argv += ["--query-interval", f"{query_interval:g}"]
    elif entrant.name == "worker":
        assert place.pool is not None
        env["PREFECT_API_URL"] = api_url
        argv = [str(prefect3.VENV / "bin" / "prefect"), "worker", "start", "--type", "process"]
        argv += ["--pool", place.pool]
        for queue in place.queues:
            argv += ["--work-queue", queue]
    elif entrant.name == "official":
        env["PREFECT_API_URL"] = api_url
        argv = [prefect_cli(), "agent", "start"]
        for queue in place.queues:
            argv += ["-q", queue]
    else:
        raise ValueError(f"unknown contender {entrant.name}")
    contender = Contender(entrant.label, "ours" if status_url else "official", entrant.describe)
    return Agent(contender, guard.start(argv, env, log), log, status_url)


def events_mode(agent: Agent) -> str | None:
    """The `events:` line of ours' /healthz (`stream`, `polling (reason)`, `off`), or None."""
    if agent.status_url is None:
        return None
    try:
        body = httpx.get(f"{agent.status_url}/healthz", timeout=5.0).text
    except httpx.HTTPError:
        return None
    for line in body.splitlines():
        if line.startswith("events:"):
            return line.split(":", 1)[1].strip()
    return None


_METRIC = re.compile(r"^(prefect_actor_agent_event\w*_total)(?:\{[^}]*\})? ([0-9.e+-]+)$", re.M)


def event_metrics(agent: Agent) -> dict[str, float]:
    """ours' event counters (received, wakes, connects) from its /metrics."""
    if agent.status_url is None:
        return {}
    try:
        text = httpx.get(f"{agent.status_url}/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return {}
    found: dict[str, float] = {}
    for name, value in _METRIC.findall(text):
        found[name] = found.get(name, 0.0) + float(value)
    return found


def queue_last_polled(bench: BenchServer, place: Place, queue: str) -> str | None:
    if place.pool is not None:
        row = bench.api.call("GET", f"work_pools/{place.pool}/queues/{queue}")
    else:
        row = bench.api.read_work_queue(queue)
    polled = row.get("last_polled")
    return None if polled is None else str(polled)


def wait_ready(
    bench: BenchServer,
    agent: Agent,
    entrant: Entrant,
    place: Place,
    *,
    timeout: float = 120.0,
    stream_timeout: float = 30.0,
    polled: Callable[[], bool] | None = None,
) -> str | None:
    """Until the contender has polled its queues once (`polled`, by default the server's
    `last_polled` of the first queue, which a 3.x server records a few seconds late) and,
    for ours with the stream, until /healthz says `events: stream` (at most `stream_timeout`
    more); its event mode then."""
    if polled is None:
        polled = lambda: queue_last_polled(bench, place, place.queues[0]) is not None  # noqa: E731
    deadline = time.monotonic() + timeout
    while not polled():
        agent.check_alive(" before its first poll")
        if time.monotonic() >= deadline:
            raise ContenderError(
                f"{entrant.label} did not poll {place.queues[0]} within {timeout:.0f}s; its "
                f"log ends:\n{agent.log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.2)
    if agent.status_url is None:
        return None
    deadline = time.monotonic() + stream_timeout
    mode = events_mode(agent)
    while entrant.events == "auto" and mode != "stream" and time.monotonic() < deadline:
        agent.check_alive(" while its event stream connected")
        time.sleep(0.2)
        mode = events_mode(agent)
    return mode
