"""Several hosts on one machine: each agent under test in a host of its own.

Why namespaces. An agent records each run's process on the server as ``hostname:pid``
(``actors.edges.processes.infrastructure_pid``) and later acts on such records: after a
restart it adopts, watches and may signal the pid of a run it finds recorded under its own
hostname, and it must leave a pid recorded under another hostname alone, because that number
means some other machine's process (signalling it here would kill whatever unrelated process
has that number on this machine). Tests of several agents that share one machine, one
hostname and one pid space cannot tell these cases apart: every claim would name this host,
and every pid would be a live local one. So each simulated host gets

- its own UTS namespace, with the hostname it is named after: ``socket.gethostname()`` in the
  agent (read once, at import) and in its runs says ``host-a``, so its claims say
  ``host-a:<pid>``;
- its own PID namespace, with ``/proc`` mounted for it (``--mount-proc``, which needs a mount
  namespace of its own too): pids are numbered from 1 there, the agent sees only its own
  host's processes in ``/proc`` and can signal only those. Two hosts can and do claim the same
  number (``host-a:7`` and ``host-b:7``), as real hosts do. A pid the host's agent recorded is
  a pid *inside* that namespace; the same process has another pid on the machine (the one a
  test sees in its own ``/proc``). ``SimulatedHost.machine_pid`` maps one to the other (the
  ``NSpid`` line of ``/proc/<pid>/status``), while the host still lives;
- a TCP proxy (``examples.harness.fault_proxy.FaultProxy``) of its own between it and the Prefect
  server, which it reaches only through that proxy (``host.api_url``; its runs inherit that URL
  as ``PREFECT_API_URL`` and use it too), so a test can cut the host off the network
  (``cut_off``, the proxy's ``blackhole`` mode) and connect it again (``reconnect``).

Killing a host whole: the namespace's first process is a tiny init (``_INIT`` below), and when
the first process of a PID namespace dies the kernel kills every other process of it at once
(SIGKILL, no handler runs, nothing is handed back): the agent and every run process, whatever
process group or session they lead. That is a machine losing power, as seen from the server.

What is not simulated:

- The network: no network namespace. Every host shares the machine's loopback (the server is
  on it; so are the status ports, which must therefore differ between hosts), and "cut off"
  means the host's proxy stops answering, not that packets are lost; a process of the host
  that dialled the server's own port directly would bypass it. Only the agent's and its runs'
  traffic to the server is cut.
- The file system: hosts share it (markers, working directories, ``~/.prefect``); only
  ``/proc`` is the host's own. Users, IPC and time are the machine's.
- A host's clock, its kernel, and a half-dead host: a host is either up or killed whole.

Why an init and not ``exec`` of the agent as pid 1: pid 1 of a namespace gets only the signals
it installed a handler for (even from outside) and inherits every orphan. The init here sets
the hostname, spawns the agent (pid 2 inside), passes SIGTERM/SIGINT/SIGHUP on to it, reaps
orphans, and exits with the agent's exit code when the agent exits (which ends the host: its
remaining processes are killed). So the agent runs as it does on a real host, not as pid 1.

After a kill, the host's log ends with ``unshare: sigprocmask unblock failed: Invalid
argument``: util-linux 2.38's unshare tries to re-raise the signal that killed its child on
itself, which fails for SIGKILL, and exits 1. Harmless, and the reason `kill` returns no code.

Needs root (or an unprivileged user namespace, not used here) and ``unshare`` from util-linux.
Everything is passed as argv lists; no shell ever parses a host name or an argument.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO
from urllib.parse import urlsplit

from examples.harness.fault_proxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent.parent
LAUNCHER = ROOT / "examples" / "agent.py"

UNSHARE = ["unshare", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child"]

# The first process of a host: argv is [hostname, agent argv...]. Stdlib only, no site (-S).
_INIT = r"""
import os, signal, socket, sys

socket.sethostname(sys.argv[1])
argv = sys.argv[2:]
agent = os.posix_spawnp(argv[0], argv, os.environ)


def forward(signum, frame):
    try:
        os.kill(agent, signum)
    except ProcessLookupError:
        pass


for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(signum, forward)
code = 0
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    if pid == agent:
        code = os.waitstatus_to_exitcode(status)
        break
sys.exit(code if code >= 0 else 128 - code)
"""

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

_live: set[SimulatedHost] = set()
_live_lock = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:
    """A host a test forgot to close (or a crashed session) must not outlive the session."""
    with _live_lock:
        hosts = list(_live)
    for host in hosts:
        with contextlib.suppress(Exception):
            host.close()


def pid_namespace(pid: int) -> str | None:
    """The pid namespace a machine-level pid lives in (`pid:[4026532...]`), None if gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def namespace_pids(pid: int) -> list[int]:
    """`NSpid` of a machine-level pid: its pid in each namespace, the machine's first."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return [int(field) for field in line.split()[1:]]
    return []


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == str(pid):
            found.append(int(entry))
    return found


class SimulatedHost:
    """One host: a hostname and pid space of its own, and a proxy of its own to the server.

    ``SimulatedHost(name, server_host, server_port)`` starts the proxy at once (in ``__init__``);
    ``run_agent`` starts the host itself, with the agent in it. Use it as a context manager (or
    call ``close``): leaving it kills the host whole and stops the proxy.
    """

    def __init__(
        self,
        name: str,
        server_host: str,
        server_port: int,
        cut_off_able: bool = True,
        *,
        api_path: str = "/api",
        log_dir: Path | None = None,
    ) -> None:
        if not _HOSTNAME.match(name):
            raise ValueError(f"{name!r} is not a host name (letters, digits, '-')")
        self.name = name
        self.server_host = server_host
        self.server_port = server_port
        if log_dir is None:  # kept afterwards: a failed test's log is worth reading
            log_dir = Path(tempfile.mkdtemp(prefix=f"host-{name}-"))
        self.log_dir = log_dir
        self.log_path = self.log_dir / f"{name}.log"
        self.proxy: FaultProxy | None = None
        if cut_off_able:
            self.proxy = FaultProxy(server_host, server_port)
            self.proxy.start()
            base = self.proxy.url
        else:
            base = f"http://{server_host}:{server_port}"
        self.api_url = base + api_path
        self._unshare: subprocess.Popen[bytes] | None = None
        self._init_pid: int | None = None
        self._namespace: str | None = None
        self._log: BinaryIO | None = None
        self._closed = False
        self._killed = False
        with _live_lock:
            _live.add(self)

    @classmethod
    def for_api(
        cls, name: str, api_url: str, cut_off_able: bool = True, *, log_dir: Path | None = None
    ) -> SimulatedHost:
        """A host in front of the server at `api_url` (e.g. the session's `api_url` fixture)."""
        parts = urlsplit(api_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"{api_url!r} names no host and port")
        return cls(
            name, parts.hostname, parts.port, cut_off_able, api_path=parts.path, log_dir=log_dir
        )

    # -- the host and its agent --------------------------------------------------------------

    def run_agent(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        command: Sequence[str] | None = None,
    ) -> None:
        """Start the host with the agent in it: the launcher (`examples/agent.py`) with `args`.

        `args` may leave out `--api` (the host's `api_url` is put first); an `--api` other than
        the host's is refused, so no agent reaches the server around its host's proxy. `env`
        defaults to this process's environment without `PREFECT_*` variables. `command`
        replaces `[python, examples/agent.py]` (e.g. `[python, "-m", "actors", "start"]`).
        Returns once the host's init runs; the agent is then starting. A host that was killed
        or stopped can run an agent again (a reboot: a new pid namespace, pids from 1 again;
        the log file is appended to).
        """
        if self._closed:
            raise RuntimeError(f"host {self.name} is closed")
        if self._unshare is not None and self._unshare.poll() is None:
            raise RuntimeError(f"host {self.name} already runs an agent")
        if self._unshare is not None:  # booting again after a kill or a stop: a new namespace
            self._wait_gone(10.0)
            self._unshare = self._init_pid = self._namespace = None
            self._killed = False
        args = list(args)
        if "--api" in args:
            given = args[args.index("--api") + 1]
            if given != self.api_url:
                raise ValueError(f"--api {given} is not host {self.name}'s {self.api_url}")
        else:
            args = ["--api", self.api_url, *args]
        if env is None:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        agent = [*(command or [sys.executable, str(LAUNCHER)]), *args]
        unshare = shutil.which("unshare")
        if unshare is None:
            raise RuntimeError("unshare (util-linux) is not installed")
        self._log = self.log_path.open("ab")
        self._unshare = subprocess.Popen(
            [unshare, *UNSHARE[1:], "--", sys.executable, "-S", "-c", _INIT, self.name, *agent],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        self._init_pid, self._namespace = self._find_init()

    def _find_init(self) -> tuple[int, str]:
        """The namespace's first process (the child `unshare` forks) and its namespace."""
        assert self._unshare is not None
        mine = pid_namespace(os.getpid())
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            for child in _children(self._unshare.pid):
                namespace = pid_namespace(child)
                if namespace is not None and namespace != mine:
                    return child, namespace
            if self._unshare.poll() is not None:
                raise RuntimeError(
                    f"host {self.name} did not start (unshare exited "
                    f"{self._unshare.returncode}): {self.logs()[-2000:]}"
                )
            time.sleep(0.01)
        self._kill_unshare()
        raise RuntimeError(f"host {self.name}: no namespace init appeared within 10 s")

    @property
    def init_pid(self) -> int | None:
        """The machine-level pid of the host's first process (None before `run_agent`)."""
        return self._init_pid

    @property
    def running(self) -> bool:
        return self._unshare is not None and self._unshare.poll() is None

    def agent_pid(self) -> int | None:
        """The machine-level pid of the agent (pid 2 inside), None when it is gone."""
        return self.machine_pid(2)

    def pids(self) -> list[int]:
        """Machine-level pids of every process of this host still on the machine (zombies
        included while they can still be told apart), sorted."""
        if self._namespace is None:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and pid_namespace(int(entry)) == self._namespace:
                found.append(int(entry))
        return sorted(found)

    def machine_pid(self, host_pid: int) -> int | None:
        """The machine-level pid of the host's process numbered `host_pid` inside the host (as
        its agent logs it, records it in `infrastructure_pid`, and its processes see
        `os.getpid()`); None when the host has no such process (any more)."""
        for pid in self.pids():
            nspids = namespace_pids(pid)
            if nspids and nspids[-1] == host_pid:
                return pid
        return None

    def host_pid(self, machine_pid: int) -> int | None:
        """The other way round: the pid inside the host of a machine-level pid of it."""
        if self._namespace is None or pid_namespace(machine_pid) != self._namespace:
            return None
        nspids = namespace_pids(machine_pid)
        return nspids[-1] if nspids else None

    def logs(self) -> str:
        """What the agent (and the host's init) wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- the network ---------------------------------------------------------------------------

    def cut_off(self, hold: bool = False) -> None:
        """The host stops reaching the server: its proxy reads requests and never answers
        (on open keep-alive connections too, from their next request). With `hold`, the
        requests are kept and let through when the host reconnects, as a partition that
        buffers does: they reach the server late, and a client still waiting gets its answer."""
        self._require_proxy().set_mode("hold" if hold else "blackhole")

    def reconnect(self, drop_connections: bool = False) -> None:
        """Traffic passes again; connections held in the blackhole end when their client
        gives up, new ones are forwarded. With `drop_connections`, every connection open
        through the cut is reset as the traffic comes back."""
        proxy = self._require_proxy()
        if drop_connections:
            proxy.drop_connections()
        proxy.set_mode("pass")

    def _require_proxy(self) -> FaultProxy:
        if self.proxy is None:
            raise RuntimeError(f"host {self.name} was made with cut_off_able=False")
        return self.proxy

    # -- ending --------------------------------------------------------------------------------

    def kill(self, timeout: float = 10.0) -> None:
        """Kill the host whole (SIGKILL to its first process: the kernel kills the rest at
        once) and wait until none of its processes is left. Idempotent; nothing to do when the
        host is not running."""
        if self._unshare is None:
            return
        if self._init_pid is not None and self._unshare.poll() is None:
            # The init is unshare's only child and unshare has not reaped it (unshare still
            # runs, waiting for it), so this pid cannot have been reused by another process.
            self._killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._init_pid, signal.SIGKILL)
        self._wait_gone(timeout)

    def stop(self, timeout: float = 60.0) -> int | None:
        """Stop the agent cleanly (SIGTERM, through the init: it hands back or crashes its
        runs), wait up to `timeout` for it to exit, then kill the host whole. Returns the
        agent's exit code (128 + signal when a signal ended it), or None when it had to be
        killed or was not running."""
        if self._unshare is None:
            return None
        if self._unshare.poll() is None and self._init_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._init_pid, signal.SIGTERM)
            try:
                code: int | None = self._unshare.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
        else:  # it ended before: by itself (its code), or killed (no code of the agent's)
            code = None if self._killed else self._unshare.returncode
        self.kill()
        return code

    def _wait_gone(self, timeout: float) -> None:
        assert self._unshare is not None
        try:
            self._unshare.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_unshare()
        deadline = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() >= deadline:
                raise RuntimeError(f"host {self.name}: processes left: {self.pids()}")
            time.sleep(0.02)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _kill_unshare(self) -> None:
        """unshare runs with --kill-child: killing it kills the namespace's init too."""
        assert self._unshare is not None
        with contextlib.suppress(ProcessLookupError):
            self._unshare.kill()
        self._unshare.wait()

    def close(self) -> None:
        """Kill the host (if it runs) and stop its proxy; idempotent, safe after a failure."""
        if self._closed:
            return
        self._closed = True
        try:
            self.kill()
        finally:
            if self.proxy is not None:
                self.proxy.stop()
            with _live_lock:
                _live.discard(self)

    def __enter__(self) -> SimulatedHost:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "down"
        return f"SimulatedHost({self.name!r}, {state}, api_url={self.api_url!r})"
