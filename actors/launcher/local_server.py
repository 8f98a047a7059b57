"""Run a throwaway Prefect server on loopback for examples and tests (2.x, or 3.x from
another virtual environment's interpreter).

The agent under test talks to Prefect only over HTTP, so the most honest
test double is the real server.  This module deliberately does not import
``prefect``: the server runs in a separate process (its own interpreter,
its own session) so that tests can kill and restart it to simulate API
outages without tearing down the test process.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import IO

import httpx

from actors.edges.processes import ProcessGroup

__all__ = ["LocalPrefectServer"]

_POLL_INTERVAL = 0.2
_STOP_GRACE = 10.0
_LOG_TAIL_CHARS = 4000


def _free_port(host: str) -> int:
    # Letting the kernel choose avoids collisions between parallel test runs;
    # the tiny window between close() and the server's bind is acceptable.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_answers(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _prefect_executable(python: str) -> str:
    # Prefer the CLI next to the interpreter so a venv's prefect wins
    # over whatever happens to be first on PATH.
    candidate = pathlib.Path(python).parent / "prefect"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    if python != sys.executable:
        raise RuntimeError(f"no `prefect` CLI next to {python}")
    found = shutil.which("prefect")
    if found is None:
        raise RuntimeError(
            "the `prefect` CLI was not found; install prefect>=2.20,<3 "
            "into the same environment to run a local server"
        )
    return found


def _leader_exited(pid: int) -> bool:
    # WNOWAIT: observe the exit without reaping, keeping the pgid reserved.
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return result is not None


class LocalPrefectServer:
    """A real ``prefect server start`` process bound to a loopback port.

    Keeping home and port stable across :meth:`restart` lets tests simulate
    an API outage: the agent keeps its configured URL, and the database (the
    SQLite file in home, or the PostgreSQL one of ``database_url``), and
    therefore every flow run, survives the restart.
    """

    def __init__(
        self,
        home: pathlib.Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        python: str | None = None,
        env: dict[str, str] | None = None,
        *,
        database_url: str | None = None,
    ) -> None:
        """`python`: the interpreter whose prefect serves (default: this one's); `env`: more
        settings for the server; `database_url`: the server's database, as SQLAlchemy names it
        (`postgresql+asyncpg://user:password@host:port/db`, which Prefect migrates at start),
        instead of the SQLite file in `home`."""
        self.python = python or sys.executable
        self.extra_env = dict(env or {})
        self.database_url = database_url
        self.host = host
        self.port = port if port is not None else _free_port(host)
        # Only a home we created ourselves is ours to delete on stop().
        self._owns_home = home is None
        self.home: pathlib.Path = (
            home if home is not None else pathlib.Path(tempfile.mkdtemp(prefix="prefect-home-"))
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.start_seconds: float | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def log_path(self) -> pathlib.Path:
        return self.home / "server.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # An inherited API URL would make the server's own CLI (and anything
        # it spawns) talk to some other server.
        env.pop("PREFECT_API_URL", None)
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_UI_ENABLED": "false",
                "PREFECT_API_SERVICES_UI": "false",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                # The scheduler would create runs behind the tests' back.
                "PREFECT_API_SERVICES_SCHEDULER_ENABLED": "false",
                "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
            }
        )
        if self.database_url is not None:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def _log_tail(self) -> str:
        if self._log is not None:
            with contextlib.suppress(ValueError, OSError):
                self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no server log>"
        return text[-_LOG_TAIL_CHARS:]

    def start(self, timeout: float = 90.0) -> None:
        """Start the server and block until its health endpoint answers.

        Returning only once ``/api/health`` is 200 means callers never race
        the server's database migrations.
        """
        if self._proc is not None:
            if not _leader_exited(self._proc.pid):
                return
            # A server that died on its own still needs its group reaped.
            self._kill_group()
        executable = _prefect_executable(self.python)
        if _port_answers(self.host, self.port):
            # Otherwise another server's /api/health would pass for ours.
            raise RuntimeError(f"{self.host}:{self.port} is already in use")
        self.home.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # The first start goes through `prefect server start`, as users run it. That CLI
        # refuses a port it cannot bind at once, which a port just released (TIME_WAIT) is;
        # a restart therefore runs the same application the CLI runs, through uvicorn
        # directly, which reuses the address.
        command = (
            [
                self.python,
                "-m",
                "uvicorn",
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ]
            if self.start_seconds is not None
            else [executable, "server", "start", "--host", self.host, "--port", str(self.port)]
        )
        self._proc = subprocess.Popen(
            command,
            env=self._env(),
            cwd=str(self.home),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # A separate session gives us a process group to kill as a whole:
            # uvicorn and its services must not outlive stop().
            start_new_session=True,
        )
        deadline = began + timeout
        health = f"http://{self.host}:{self.port}/api/health"
        with httpx.Client(timeout=2.0) as client:
            while True:
                if _leader_exited(self._proc.pid):
                    tail = self._log_tail()
                    self._kill_group()
                    raise RuntimeError(f"prefect server exited during startup; log tail:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(health).status_code == 200:
                        break
                if time.monotonic() >= deadline:
                    tail = self._log_tail()
                    self._kill_group()
                    raise RuntimeError(
                        f"prefect server not healthy at {health} after {timeout}s; "
                        f"log tail:\n{tail}"
                    )
                time.sleep(_POLL_INTERVAL)
        self.start_seconds = time.monotonic() - began

    def _kill_group(self) -> None:
        proc = self._proc
        if proc is None:
            return
        # The leader is left unreaped (a zombie) until the very end, so its
        # pid -- which is also the process group id -- cannot be recycled
        # while we are still sending signals to that group. uvicorn runs as
        # a child of the CLI and may outlive it: the stop kills leftovers.
        pid = proc.pid
        ProcessGroup(pid, lambda: not _leader_exited(pid)).stop(_STOP_GRACE)
        proc.wait()
        self._cleanup_process()

    def _cleanup_process(self) -> None:
        self._proc = None
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def stop_process(self) -> None:
        """Take the API down but keep the database, for outages longer than a restart.

        A later :meth:`start` brings the same runs back on the same URL.
        """
        self._kill_group()

    def stop(self) -> None:
        """Kill the server's whole process group and drop a temporary home.

        Safe to call repeatedly so fixtures and ``__exit__`` can both call it.
        """
        self._kill_group()
        if self._owns_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def restart(self, timeout: float = 90.0) -> None:
        """Bounce the server while keeping its URL and database.

        Used to simulate an API outage; unlike :meth:`stop` this never deletes
        the home directory, otherwise all runs would vanish.
        """
        self.stop_process()
        self.start(timeout=timeout)

    def __enter__(self) -> LocalPrefectServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
