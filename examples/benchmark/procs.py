"""/proc, and every process the benchmark starts: the agents and the flow processes they start.

Only the standard library: RSS and CPU come from /proc, so the numbers are the kernel's own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE = 30.0


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
                # The log's directory, never the repository: Prefect 3's worker copies a
                # deployment's `path` into its working directory before each run
                cwd=log.parent,
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


def load_average() -> str:
    """The 1-minute load average, as /proc/loadavg says it ("?" when it cannot be read)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"
