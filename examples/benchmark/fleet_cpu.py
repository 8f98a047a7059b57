"""Where the CPU goes during a fleet's drain: the Prefect server's processes, PostgreSQL's,
the agents' own, the runs' processes, the benchmark's, and the machine as a whole.

A snapshot reads /proc once: every process's utime+stime (its own, all threads) and the
cutime+cstime of the children it reaped. A group's total is its root's own and reaped time
plus the own and reaped time of every live process below it, so a child that exits moves its
time into its parent's reaped share and the total never goes back (PostgreSQL's backends,
reaped by the postmaster; the runs' processes, reaped by their agent). A share is the
difference of two snapshots over the wall-clock time between them, in % of one core; the
machine's busy time comes from /proc/stat (every CPU, every process on the machine, other
users' work included).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from examples.benchmark.procs import CLOCK_TICKS

Key = tuple[int, int]  # (pid, start ticks): a process, told from a later one with its pid


@dataclass(frozen=True)
class Stat:
    pid: int
    ppid: int
    own: int  # utime + stime, ticks
    reaped: int  # cutime + cstime, ticks
    start: int


def _stat(pid: int) -> Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return Stat(
        pid=pid,
        ppid=int(fields[1]),
        own=int(fields[11]) + int(fields[12]),
        reaped=int(fields[13]) + int(fields[14]),
        start=int(fields[19]),
    )


def machine_busy_ticks() -> int:
    """Every CPU's non-idle time since boot (user, nice, system, irq, softirq, steal)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:9]]
    idle, iowait = values[3], values[4]
    return sum(values) - idle - iowait


@dataclass
class Roots:
    """The processes whose trees are measured: None or empty when a group is not ours to see
    (a server given with --api runs elsewhere)."""

    server: int | None = None
    postgres: int | None = None
    hosts: list[int] = field(default_factory=list)  # each simulated host's first process
    agents: list[int] = field(default_factory=list)  # each host's agent (machine pids)


@dataclass(frozen=True)
class Snapshot:
    wall: datetime
    monotonic: float
    groups: dict[str, int]  # group -> ticks
    server_processes: dict[Key, int]  # own ticks of each process of the server's tree


def _tree(root: int, stats: Mapping[int, Stat], children: Mapping[int, list[int]]) -> list[Stat]:
    found: list[Stat] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        stat = stats.get(pid)
        if stat is None:
            continue
        found.append(stat)
        todo.extend(children.get(pid, []))
    return found


def _total(stats: Iterable[Stat]) -> int:
    return sum(s.own + s.reaped for s in stats)


def snapshot(roots: Roots) -> Snapshot:
    """One look at /proc: the ticks of each group now."""
    wall, mono = datetime.now(UTC), time.monotonic()
    stats: dict[int, Stat] = {}
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                stats[stat.pid] = stat
                children.setdefault(stat.ppid, []).append(stat.pid)
    groups: dict[str, int] = {}
    server_processes: dict[Key, int] = {}
    if roots.server is not None:
        tree = _tree(roots.server, stats, children)
        groups["server"] = _total(tree)
        server_processes = {(s.pid, s.start): s.own for s in tree}
    if roots.postgres is not None:
        groups["postgres"] = _total(_tree(roots.postgres, stats, children))
    hosts = sum(_total(_tree(root, stats, children)) for root in roots.hosts)
    agents = sum(stats[pid].own for pid in roots.agents if pid in stats)
    groups["agents"] = agents
    groups["runs"] = max(0, hosts - agents)  # the hosts' trees but the agents' own time
    me = stats.get(os.getpid())
    groups["benchmark"] = me.own if me is not None else 0
    groups["machine"] = machine_busy_ticks()
    return Snapshot(wall, mono, groups, server_processes)


@dataclass
class CpuSplit:
    """CPU seconds of each group over a window, and the window; `percent` is of one core."""

    window: str  # what the window spans: "steady" (first Pending -> last pid) or "whole"
    wall_seconds: float
    seconds: dict[str, float]
    server_top_seconds: float | None  # the busiest single process of the server's tree
    cpus: int

    def percent(self, group: str) -> float | None:
        value = self.seconds.get(group)
        if value is None or self.wall_seconds <= 0:
            return None
        return 100.0 * value / self.wall_seconds

    @property
    def server_top_percent(self) -> float | None:
        if self.server_top_seconds is None or self.wall_seconds <= 0:
            return None
        return 100.0 * self.server_top_seconds / self.wall_seconds

    @property
    def other_percent(self) -> float | None:
        """The machine's busy time that none of the groups measured here accounts for."""
        machine = self.percent("machine")
        if machine is None:
            return None
        known = sum(self.percent(g) or 0.0 for g in self.seconds if g != "machine")
        return max(0.0, machine - known)


def split(first: Snapshot, last: Snapshot, window: str) -> CpuSplit:
    seconds = {
        group: (last.groups[group] - first.groups.get(group, 0)) / CLOCK_TICKS
        for group in last.groups
    }
    top = None
    if last.server_processes:
        deltas = [
            ticks - first.server_processes.get(key, 0)
            for key, ticks in last.server_processes.items()
        ]
        top = max(deltas) / CLOCK_TICKS
    return CpuSplit(
        window=window,
        wall_seconds=last.monotonic - first.monotonic,
        seconds=seconds,
        server_top_seconds=top,
        cpus=os.cpu_count() or 1,
    )


def window_split(
    snapshots: list[Snapshot], begin: datetime | None, end: datetime | None
) -> CpuSplit | None:
    """The split over the snapshots nearest inside [begin, end] (the steady drain), or over
    all of them when that holds fewer than two snapshots 2 s apart."""
    if len(snapshots) < 2:
        return None
    if begin is not None and end is not None:
        inside = [s for s in snapshots if begin <= s.wall <= end]
        if len(inside) >= 2 and inside[-1].monotonic - inside[0].monotonic >= 2.0:
            return split(inside[0], inside[-1], "steady")
    return split(snapshots[0], snapshots[-1], "whole")


BUSY_PERCENT = 75.0  # a process this busy is the bottleneck (a shared machine rarely gives 100)
MACHINE_BUSY = 0.9  # of all CPUs


def limit_verdict(cpu: CpuSplit | None) -> str:
    """What the CPU split says limited the drain, in a few words."""
    if cpu is None:
        return "not measured"
    top = cpu.server_top_percent
    machine = cpu.percent("machine") or 0.0
    postgres = cpu.percent("postgres")
    server = cpu.percent("server")
    capacity = 100.0 * cpu.cpus
    if top is not None and top >= BUSY_PERCENT:
        verdict = f"the server's API process ({top:.0f}% of a core: one Python process)"
    elif postgres is not None and postgres >= BUSY_PERCENT:
        verdict = f"PostgreSQL ({postgres:.0f}% of a core)"
    elif machine >= MACHINE_BUSY * capacity:
        verdict = f"the machine's CPUs ({machine:.0f}% of {capacity:.0f}%)"
    elif server is None:
        verdict = "not the agents' CPU (the server is not measured here)"
    else:
        verdict = "no CPU saturated: waiting (latency, locks, polling intervals)"
    if machine >= MACHINE_BUSY * capacity and not verdict.startswith("the machine"):
        verdict += f"; the machine was busy too ({machine:.0f}% of {capacity:.0f}%)"
    return verdict
