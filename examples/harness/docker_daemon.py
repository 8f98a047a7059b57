"""A real Docker daemon for the tests and the benchmark: the machine's, or a private one.

Why a private daemon: the container work (issue 23) must be tested against a real engine, and
the machines this project runs on have none running (the static `docker` CLI there is only a
client). So when neither `DOCKER_HOST` nor the default socket answers `/_ping`, this module
starts its own `dockerd` (Debian's `docker.io` 20.10, installed by apt when missing and we are
root on Debian), with:

- `--data-root` in a cache directory that outlives the session
  (`~/.cache/prefect-actor-agent/docker/data`, or `$XDG_CACHE_HOME/...`), so an image built
  once (examples/harness/flow_image.py, minutes) is there for the next session (seconds);
- `--exec-root`, the socket, the pid file and the log in a short temporary directory under
  /tmp (a unix socket's path may not exceed 107 bytes, and containerd's sockets sit below);
- `--storage-driver overlay2 --iptables=false --bridge=none`: no bridge network and no
  firewall rules on the host, so a container reaches a server on loopback with
  `network_mode="host"` (and a container without a network mode has none);
- its own empty `--config-file`, so no `/etc/docker/daemon.json` of the machine changes it.

Only one daemon may use a data root at a time: a lock file next to it says which one, and a
second session on the same machine takes the next slot (`data-2`, ... : a cache of its own).
Whoever holds the lock may clean up after a dead session: a `dockerd` still running on that
data root, its containerd shims and their containers, stale mounts, exited containers.

The private `dockerd` runs below examples/harness/subreaper.py, which reaps the containerd
shims that detach from it (PID 1 on these machines leaves them as zombies), kills what the
daemon leaves when it exits, and stops the daemon when this process dies without stopping it.

Leaving (the `with` block's end, `stop()`, or the interpreter's exit) stops a daemon this
module started: its running containers are killed first (the daemon would otherwise give
each its stop timeout), then `dockerd` gets SIGTERM and, after a deadline, SIGKILL; then every
process that still names its exec root (containerd, `containerd-shim-runc-v2`) is killed
along with its descendants (a container's processes), mounts under its roots are undone and
the temporary directory removed. The data root stays. With the machine's daemon, leaving
removes only the containers labelled with this harness's `labels` (pass them to
`containers.run`).

Use::

    from examples.harness.docker_daemon import DockerDaemon

    with DockerDaemon() as daemon:
        client = daemon.client()
        client.containers.run(..., network_mode="host", labels=daemon.labels)
        # daemon.environ: {"DOCKER_HOST": ...} for a process that should use it too
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import docker
import docker.errors

from examples.harness.debian_packages import UnavailableError, ensure_program

__all__ = ["DEFAULT_SOCKET", "DockerDaemon", "UnavailableError", "cache_dir", "process_alive"]

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# dockerd 20.10 speaks the Engine API 1.41; the docker CLI on the machine may be far newer
# (v28 asks for 1.50), so a client of our daemon names the version instead of negotiating.
PRIVATE_API_VERSION = "1.41"
START_TIMEOUT = 60.0
STOP_GRACE = 20.0
SHUTDOWN_TIMEOUT = 5  # dockerd's own deadline for the containers it stops on SIGTERM
SLOTS = 4
LABEL = "prefect-actor-agent.harness"
RUN_DIR_PARENT = "/tmp"
RUN_DIR_PREFIX = "paa-dockerd-"
SUBREAPER = Path(__file__).resolve().with_name("subreaper.py")
_LOG_TAIL_CHARS = 4000

_running: set[DockerDaemon] = set()
_running_lock = threading.Lock()


def cache_dir() -> Path:
    """Where the harness keeps what outlives a session (the daemon's data root, with its
    images): not /tmp, which a machine may clear."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "prefect-actor-agent" / "docker"


def _ping(client: docker.DockerClient) -> bool:
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False


def _machine_daemon() -> docker.DockerClient | None:
    """A client of the daemon `DOCKER_HOST` names (or of the default socket), if it answers."""
    try:
        # from_env honours DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH; "auto" asks
        # the daemon its API version, which fails at once when nothing listens.
        client = docker.from_env(version="auto", timeout=5)
    except (docker.errors.DockerException, OSError):
        return None
    if _ping(client):
        return client
    client.close()
    return None


# -- processes and mounts ------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) of every process now."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        found[int(entry.name)] = (
            parent,
            [part.decode(errors="replace") for part in raw.split(b"\0") if part],
        )
    return found


def _names(part: str, path: str) -> bool:
    """Whether an argument names `path` or something below it (`/x/data` is not named by
    `/x/data-2`, another session's data root)."""
    return part.endswith(path) or f"{path}/" in part


def _naming(needle: str) -> set[int]:
    """Processes whose command line names `needle` (a path of ours), with all descendants."""
    table = _processes()
    chosen = {
        pid
        for pid, (_, argv) in table.items()
        if pid != os.getpid() and any(_names(part, needle) for part in argv)
    }
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in table.items() if parent in chosen} - chosen
        chosen |= more
        grew = bool(more)
    return chosen


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: on these machines PID 1 reaps late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _kill_all(pids: set[int], timeout: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _mounts_under(*roots: Path) -> list[str]:
    """Mount points at or below `roots`, deepest first (the order to undo them in)."""
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(point == str(root) or point.startswith(f"{root}/") for root in roots):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _unmount_under(*roots: Path) -> list[str]:
    """Undo the mounts below `roots`; those that stay (none, normally)."""
    for point in _mounts_under(*roots):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return _mounts_under(*roots)


def _argv_value(argv: list[str], flag: str) -> str | None:
    for i, part in enumerate(argv):
        if part == flag and i + 1 < len(argv):
            return argv[i + 1]
        if part.startswith(f"{flag}="):
            return part.partition("=")[2]
    return None


def _sweep_orphans(data_root: Path) -> list[str]:
    """Kill a dockerd some dead session left on `data_root`, with what hangs from it; what
    was swept, as the command lines of the daemons (for the caller's log)."""
    swept = []
    for _pid, (_, argv) in _processes().items():
        if not argv or not argv[0].endswith("dockerd"):
            continue
        if _argv_value(argv, "--data-root") != str(data_root):
            continue
        swept.append(" ".join(argv))
        exec_root = _argv_value(argv, "--exec-root")
        victims = _naming(str(data_root))
        if exec_root:
            victims |= _naming(exec_root)
        _kill_all(victims)
        if exec_root:
            _unmount_under(Path(exec_root))
    _unmount_under(data_root)
    return swept


def _remove_stale_run_dirs() -> None:
    """Remove the run directories of sessions that died without stopping their daemon (the
    subreaper stopped it, but nothing undid dockerd's mounts there or removed the files)."""
    for path in Path(RUN_DIR_PARENT).glob(f"{RUN_DIR_PREFIX}*"):
        owner = path.name.removeprefix(RUN_DIR_PREFIX).split("-")[0]
        if not owner.isdigit() or process_alive(int(owner)):  # a zombie owner is gone too
            continue
        if _naming(str(path)):  # its daemon still runs: the data root's sweep is for that
            continue
        if not _unmount_under(path):
            shutil.rmtree(path, ignore_errors=True)


# -- the daemon ---------------------------------------------------------------------------


class DockerDaemon:
    """The machine's Docker daemon when it answers, else a private `dockerd`.

    `start()`/`stop()` or a `with` block; `stop()` may be called any number of times.
    `base_url`, `client()`, `environ` and `labels` are what a test needs; `private` says
    whether this object started the daemon; `start_seconds` how long making it ready took,
    not counting `install_seconds` (apt installing `docker.io` on a new machine).
    """

    def __init__(
        self,
        *,
        use_machine_daemon: bool = True,
        data_root: Path | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.use_machine_daemon = use_machine_daemon
        self._fixed_data_root = data_root
        self.start_timeout = start_timeout
        self.base_url: str | None = None
        self.private = False
        self.data_root: Path | None = None
        self.run_dir: Path | None = None
        self.start_seconds: float | None = None
        self.install_seconds = 0.0
        self.swept: list[str] = []
        self.labels = {LABEL: uuid.uuid4().hex}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock_file: IO[bytes] | None = None
        self._machine_client: docker.DockerClient | None = None
        self._argv: list[str] = []

    # -- what a test needs --------------------------------------------------------------

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A new client of this daemon (the caller closes it, or lets it go)."""
        if self.base_url is None:
            raise RuntimeError("the daemon is not started")
        if not self.private:
            return docker.from_env(version="auto", timeout=timeout)
        return docker.DockerClient(
            base_url=self.base_url, version=PRIVATE_API_VERSION, timeout=timeout
        )

    @property
    def environ(self) -> dict[str, str]:
        """What a child process's environment needs to use this daemon (`docker` CLI, an
        agent under test). For the machine's daemon, the variables as they are here."""
        if self.base_url is None:
            raise RuntimeError("the daemon is not started")
        if not self.private:
            return {k: v for k, v in os.environ.items() if k.startswith("DOCKER_")}
        return {"DOCKER_HOST": self.base_url, "DOCKER_API_VERSION": PRIVATE_API_VERSION}

    def log_tail(self) -> str:
        if self.run_dir is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.run_dir / "dockerd.log").read_text(errors="replace")[-_LOG_TAIL_CHARS:]
        return ""

    # -- start --------------------------------------------------------------------------

    def start(self) -> DockerDaemon:
        began = time.monotonic()
        if self.use_machine_daemon:
            self._machine_client = _machine_daemon()
        if self._machine_client is not None:
            self.base_url = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        else:
            self._start_private()
        self.start_seconds = time.monotonic() - began - self.install_seconds
        with _running_lock:
            _running.add(self)
        return self

    def _start_private(self) -> None:
        if os.geteuid() != 0:
            raise UnavailableError(
                "no Docker daemon answers (DOCKER_HOST or the default socket), and only root "
                "can start a private one"
            )
        installed = time.monotonic()
        dockerd = ensure_program("dockerd", "docker.io")
        self.install_seconds = time.monotonic() - installed
        self.data_root = self._take_data_root()
        self.swept = _sweep_orphans(self.data_root)
        _remove_stale_run_dirs()
        # /tmp, not $TMPDIR: the socket's path must stay short. Named after this process, so
        # that a later session knows the directory is stale once this process is gone.
        self.run_dir = Path(
            tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-", dir=RUN_DIR_PARENT)
        )
        socket_path = self.run_dir / "docker.sock"
        config = self.run_dir / "daemon.json"
        config.write_text("{}\n")
        self._log = (self.run_dir / "dockerd.log").open("wb")
        argv = [
            dockerd,
            "--data-root", str(self.data_root),
            "--exec-root", str(self.run_dir / "exec"),
            "-H", f"unix://{socket_path}",
            "--pidfile", str(self.run_dir / "dockerd.pid"),
            "--config-file", str(config),
            "--storage-driver", "overlay2",
            "--iptables=false",
            "--bridge=none",
            "--shutdown-timeout", str(SHUTDOWN_TIMEOUT),
        ]  # fmt: skip
        self.base_url = f"unix://{socket_path}"
        self.private = True
        self._argv = argv
        self._launch()
        try:
            self._wait_ready()
            self._tidy()
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> None:
        # Under the subreaper (subreaper.py says why: no zombie shims); in a session of its
        # own, so a Ctrl-C at the terminal reaches pytest, which stops the daemon in order.
        self._proc = subprocess.Popen(
            [sys.executable, str(SUBREAPER), "--", *self._argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def restart(self, down_seconds: float = 0.0) -> None:
        """Restart the private daemon as an operator would (`systemctl restart docker`):
        SIGTERM, so that dockerd stops its running containers itself (SIGTERM, then SIGKILL
        after its `--shutdown-timeout`), then the same daemon (same data root, same ID) again
        after `down_seconds`. Containers are kept, stopped; nothing is tidied."""
        if self._proc is None or self.run_dir is None:
            raise RuntimeError("only a private daemon this object started can be restarted")
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        _kill_all(_naming(str(self.run_dir / "exec")))
        if down_seconds:
            time.sleep(down_seconds)  # the daemon is away this long: the scenario, not a wait
        self._launch()
        self._wait_ready()

    def _take_data_root(self) -> Path:
        """The first data root whose lock is free (held until `stop()`)."""
        if self._fixed_data_root is not None:
            candidates = [self._fixed_data_root]
        else:
            base = cache_dir()
            candidates = [base / ("data" if n == 1 else f"data-{n}") for n in range(1, SLOTS + 1)]
        for root in candidates:
            root.mkdir(parents=True, exist_ok=True)
            lock = root.with_name(root.name + ".lock").open("ab")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                lock.close()
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise
            self._lock_file = lock
            return root
        raise UnavailableError(f"every Docker data root is in use by another session: {candidates}")

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        client = docker.DockerClient(base_url=self.base_url, version=PRIVATE_API_VERSION, timeout=5)
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"dockerd exited with {self._proc.returncode} while starting:\n"
                        f"{self.log_tail()}"
                    )
                if _ping(client):
                    return
                time.sleep(0.1)
        finally:
            client.close()
        raise RuntimeError(
            f"dockerd did not answer within {self.start_timeout:.0f}s:\n{self.log_tail()}"
        )

    def _tidy(self) -> None:
        """Remove what a dead session left in the data root: its containers (the images
        stay). We hold the data root's lock, so nothing else uses them."""
        client = self.client()
        try:
            for container in client.containers.list(all=True):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
        finally:
            client.close()

    # -- stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        with _running_lock:
            _running.discard(self)
        if self._machine_client is not None:
            self._remove_labelled(self._machine_client)
            self._machine_client.close()
            self._machine_client = None
        if self._proc is not None:
            self._stop_private()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def _remove_labelled(self, client: docker.DockerClient) -> None:
        label = f"{LABEL}={self.labels[LABEL]}"
        with contextlib.suppress(docker.errors.DockerException, OSError):
            for container in client.containers.list(all=True, filters={"label": label}):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)

    def _stop_private(self) -> None:
        assert self._proc is not None and self.run_dir is not None
        if self._proc.poll() is None:
            # Kill the containers first: on SIGTERM dockerd would give each its stop timeout.
            with contextlib.suppress(docker.errors.DockerException, OSError):
                client = self.client(timeout=10)
                try:
                    for container in client.containers.list():
                        with contextlib.suppress(docker.errors.APIError):
                            container.kill()
                finally:
                    client.close()
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        # containerd dies with dockerd (its parent-death signal), but a shim outlives both on
        # purpose (live restore): kill whatever still names our exec root, with its children.
        exec_root = self.run_dir / "exec"
        _kill_all(_naming(str(exec_root)))
        left = _unmount_under(self.run_dir)
        if self.data_root is not None:
            left += _unmount_under(self.data_root)
        if not left:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- with -----------------------------------------------------------------------------

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        kind = "private" if self.private else "machine's"
        return f"<DockerDaemon {kind} {self.base_url}>"


def _stop_all(*_: Any) -> None:
    with _running_lock:
        left = list(_running)
    for daemon in left:
        daemon.stop()


atexit.register(_stop_all)
