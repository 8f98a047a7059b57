"""The idle fleet: what N agents that have nothing to do cost ONE Prefect server on
PostgreSQL, ours beside N of Prefect's own, on 2.20 and on 3.x.

    python -m examples.benchmark --parts idle-fleet --idle-fleet-agents 100

A fleet is idle most of its life, and what each agent costs the server by the second (polls,
cancellation polls, heartbeats, worker rows) grows with the number of agents while nobody
looks. For each server (`--idle-fleet-servers`, default 2 and 3), one PostgreSQL server and a
Prefect server on it, then in turn:

  server alone   no agent: the server's own background work, measured first
  ours           N of our agents at their defaults (`-q Q`; on 3.x `-p POOL -q Q`)
  official       N `prefect agent start -q Q` (2.20) or `prefect worker start --type process
                 --pool POOL --work-queue Q` (3.x), at their defaults

All N agents of a contender serve one queue of their own (a fleet sharing a queue, as in the
fleet part) with no runs in it, each in a simulated host of its own
(`examples/harness/hosts.py`), and they all reach the server through one counting proxy
(`request_count`). Once every agent has started and the agents' CPU has stopped falling
(their imports and first polls done), a warm-up, then a window: the server's CPU (the Prefect
server's process tree, and PostgreSQL's, from /proc) per minute of the window, the requests
the proxy saw, and each agent's RSS. The agents of one contender are stopped before the next
starts, so each window has the server to itself and one fleet.

A host is not started while the machine has less than `MIN_AVAILABLE_MIB` available: the
contender then runs with the agents that fit, and its row says so.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from examples.benchmark.contenders import LAUNCHER, ContenderError, clean_env, prefect_cli
from examples.benchmark.fleet import (
    _OFFICIAL_STUB,
    Target,
    Work,
    _stop_hosts,
    _wait_agent_pid,
    prepare,
    start_target,
)
from examples.benchmark.fleet_cpu import CpuSplit, Roots, snapshot, split
from examples.benchmark.procs import CLOCK_TICKS, rss_kib
from examples.benchmark.request_count import RequestCounter
from examples.benchmark.server import BenchServer
from examples.harness import prefect3
from examples.harness.hosts import SimulatedHost

Say = Callable[[str], None]
Kind = Literal["none", "ours", "official"]

START_BATCH = 4  # hosts started together (2 cores: two imports each)
BATCH_STEP = 2.0  # seconds of a batch's CPU compared, to see its imports done
BATCH_TIMEOUT = 60.0
SETTLED_RATIO = 0.8  # settled: a step's CPU no longer below this share of the step before
IDLE_SHARE = 0.05  # of a core: an agent importing uses most of one, an idle one a few %
MIN_AVAILABLE_MIB = 1536  # no host is started with less memory than this left on the machine
TOP_ENDPOINTS = 6  # endpoints listed per contender


@dataclass
class IdleFleet:
    """One contender's idle window on one server."""

    server: str  # "2" or "3"
    contender: str  # "server alone", "ours", "official"
    describe: str
    agents_asked: int
    agents: int  # started (fewer than asked when memory ran short)
    start_seconds: float = 0.0  # first host started -> agents' CPU settled
    settled: bool = True  # False: the start timeout came first
    window_seconds: float = 0.0
    # CPU seconds per minute of the window
    server_cpu: float | None = None  # the Prefect server's process tree
    server_top_cpu: float | None = None  # its busiest process
    postgres_cpu: float | None = None
    agents_cpu: float | None = None  # the agents' own processes
    machine_cpu: float | None = None  # every CPU of the machine, other users' work included
    requests_per_minute: float | None = None
    endpoints_per_minute: dict[str, float] = field(default_factory=dict)
    rss_mib: list[float] = field(default_factory=list)  # each agent at the window's end
    exited: int = 0  # agents that exited during the window
    note: str | None = None
    error: str | None = None

    @property
    def server_and_db_cpu(self) -> float | None:
        if self.server_cpu is None:
            return None
        return self.server_cpu + (self.postgres_cpu or 0.0)


@dataclass
class IdleFleetResults:
    settings: dict[str, Any]
    targets: dict[str, Target] = field(default_factory=dict)  # "2" / "3"
    rows: list[IdleFleet] = field(default_factory=list)
    seconds: float = 0.0
    machine: str = ""


def available_mib() -> int:
    """MemAvailable of /proc/meminfo, MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def describe(kind: Kind, major: str, count: int) -> str:
    if kind == "none":
        return "no agent"
    hosts = f"{count} simulated host(s), one agent each, at defaults"
    if kind == "ours":
        flags = "-p POOL -q Q" if major == "3" else "-q Q"
        return f"examples/agent.py {flags}, {hosts}"
    if major == "3":
        return f"prefect worker start --type process --pool POOL --work-queue Q, {hosts}"
    return f"prefect agent start -q Q, {hosts}"


def agent_command(
    kind: Kind,
    major: str,
    pool: str,
    queue: str,
    *,
    host: str,
    home: Path,
    query_interval: float | None = None,
) -> tuple[list[str], list[str], dict[str, str]]:
    """(command, args, env) for SimulatedHost.run_agent; every contender at its defaults, but
    for a `query_interval` given (a short one lets a small run see every kind of look)."""
    env = clean_env(home)
    if query_interval is not None:
        env["PREFECT_AGENT_QUERY_INTERVAL"] = f"{query_interval:g}"  # ours and 2.x's agent
        env["PREFECT_WORKER_QUERY_SECONDS"] = f"{query_interval:g}"  # Prefect 3's worker
    if kind == "ours":
        args = ["-p", pool, "-q", queue] if major == "3" else ["-q", queue]
        return [sys.executable, str(LAUNCHER)], args, env
    stub = [sys.executable, "-S", "-c", _OFFICIAL_STUB, prefect_cli()]
    if major == "3":
        stub[-1] = str(prefect3.VENV / "bin" / "prefect")
        args = ["worker", "start", "--type", "process", "--pool", pool, "--work-queue", queue]
        return stub, [*args, "--name", f"official-worker@{host}"], env
    return stub, ["agent", "start", "-q", queue], env


def _agents_ticks(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def wait_settled(
    pids: list[int], timeout: float, alive: Callable[[], None], step_seconds: float
) -> bool:
    """Until the agents' CPU over a step is that of idle agents (below IDLE_SHARE of a core
    each) and no longer falls below SETTLED_RATIO of the step before: their imports and first
    polls are behind them. False at the timeout."""
    deadline = time.monotonic() + timeout
    before = _agents_ticks(pids)
    last_step: float | None = None
    while time.monotonic() < deadline:
        time.sleep(min(step_seconds, max(0.0, deadline - time.monotonic())))
        alive()
        now = _agents_ticks(pids)
        step, before = now - before, now
        idle = step <= IDLE_SHARE * step_seconds * CLOCK_TICKS * len(pids)
        if idle and last_step is not None and step >= SETTLED_RATIO * last_step:
            return True
        last_step = step
    return False


def _per_minute(cpu: CpuSplit, group: str) -> float | None:
    value = cpu.seconds.get(group)
    if value is None or cpu.wall_seconds <= 0:
        return None
    return 60.0 * value / cpu.wall_seconds


def _alive(hosts: list[SimulatedHost]) -> Callable[[], None]:
    def check() -> None:
        for host in hosts:
            if not host.running:
                raise ContenderError(
                    f"host {host.name}'s agent exited; its log ends:\n{host.logs()[-3000:]}"
                )

    return check


def start_fleet(
    row: IdleFleet,
    kind: Kind,
    target: Target,
    work: Work,
    *,
    api_url: str,
    hosts: list[SimulatedHost],
    roots: Roots,
    work_dir: Path,
    query_interval: float | None = None,
) -> list[int]:
    """Up to `row.agents_asked` hosts with an agent each (into `hosts` as they come, so a
    failure half-way still stops those up), in batches; the agents' pids."""
    alive = _alive(hosts)
    pids: list[int] = []
    for index in range(row.agents_asked):
        if available_mib() < MIN_AVAILABLE_MIB:
            row.note = (
                f"started {index} of {row.agents_asked}: less than {MIN_AVAILABLE_MIB} MiB "
                "available on the machine"
            )
            break
        name = f"idle{target.major}-{kind}-{index + 1:03d}"
        host = SimulatedHost.for_api(name, api_url, False, log_dir=work_dir)
        hosts.append(host)
        command, agent_args, env = agent_command(
            kind, target.major, work.pool, work.queue, host=name, home=work_dir / f"home-{name}",
            query_interval=query_interval,
        )  # fmt: skip
        host.run_agent(agent_args, env, command=command)
        pids.append(_wait_agent_pid(host))
        roots.hosts = [*roots.hosts, *([host.init_pid] if host.init_pid else [])]
        if len(hosts) % START_BATCH == 0:
            # the next batch once this one's imports are done: their memory is then real for
            # the check above, and a hundred imports at once on a small machine would starve
            # the server being measured of its CPU for minutes
            wait_settled(pids[-START_BATCH:], BATCH_TIMEOUT, alive, BATCH_STEP)
    roots.agents = list(pids)
    row.agents = len(hosts)
    return pids


def measure(
    target: Target, bench: BenchServer, kind: Kind, count: int, *, args: Any, work_dir: Path,
    say: Say,
) -> IdleFleet:  # fmt: skip
    """One contender: its hosts up and settled, a warm-up, the window, the hosts stopped."""
    name = {"none": "server alone", "ours": "ours", "official": "official"}[kind]
    row = IdleFleet(
        server=target.major, contender=name, describe=describe(kind, target.major, count),
        agents_asked=count if kind != "none" else 0, agents=0,
    )  # fmt: skip
    roots = Roots(server=target.server_pid, postgres=target.postgres_pid)
    hosts: list[SimulatedHost] = []
    counter: RequestCounter | None = None
    pids: list[int] = []
    with contextlib.ExitStack() as stack:
        if kind != "none":
            work = prepare(
                bench, target, name=f"idle{target.major}-{kind}", runs=0, work_dir=work_dir, say=say
            )
            counter = RequestCounter(target.api_url)
            stack.callback(counter.stop)
            stack.callback(_stop_hosts, hosts)  # before the proxy stops (LIFO)
            say(f"  starting {count} agent(s) ({name}) on {count} simulated host(s)...")
            began = time.monotonic()
            pids = start_fleet(
                row, kind, target, work, api_url=counter.api_url, hosts=hosts, roots=roots,
                work_dir=work_dir, query_interval=args.idle_fleet_query_interval,
            )  # fmt: skip
            if row.note:
                say(f"  {row.note}")
            row.settled = wait_settled(
                pids, args.idle_fleet_start_timeout, _alive(hosts), args.idle_fleet_settle_step
            )
            row.start_seconds = time.monotonic() - began
            say(
                f"  {row.agents} agent(s) up, CPU settled after {row.start_seconds:.0f}s"
                + ("" if row.settled else " (timed out: measured anyway)")
            )
        time.sleep(args.idle_fleet_warmup)
        first = snapshot(roots)
        before = counter.snapshot()[0] if counter is not None else Counter[str]()
        time.sleep(args.idle_fleet_seconds)
        last = snapshot(roots)
        after = counter.snapshot()[0] if counter is not None else Counter[str]()
        row.exited = sum(1 for host in hosts if not host.running)
        row.rss_mib = [rss_kib(pid) / 1024 for pid in pids]
    _figures(row, split(first, last, "idle"), after - before if counter is not None else None)
    return row


def _figures(row: IdleFleet, cpu: CpuSplit, requests: Counter[str] | None) -> None:
    row.window_seconds = cpu.wall_seconds
    row.server_cpu = _per_minute(cpu, "server")
    row.postgres_cpu = _per_minute(cpu, "postgres")
    row.agents_cpu = _per_minute(cpu, "agents") if row.agents else None
    row.machine_cpu = _per_minute(cpu, "machine")
    if cpu.server_top_seconds is not None and cpu.wall_seconds > 0:
        row.server_top_cpu = 60.0 * cpu.server_top_seconds / cpu.wall_seconds
    if requests is not None and cpu.wall_seconds > 0:
        minutes = cpu.wall_seconds / 60.0
        row.requests_per_minute = sum(requests.values()) / minutes
        row.endpoints_per_minute = {
            endpoint: n / minutes for endpoint, n in requests.most_common(TOP_ENDPOINTS)
        }


def run_idle_fleet(args: Any, work_dir: Path, say: Say) -> IdleFleetResults:
    """The whole part: per server, PostgreSQL and Prefect up, each contender's window, all
    stopped again."""
    began = time.monotonic()
    count = args.idle_fleet_agents
    kinds: list[Kind] = ["none", "ours"] + (["official"] if args.idle_fleet_official else [])
    results = IdleFleetResults(
        settings={
            "agents": count,
            "servers": args.idle_fleet_server_list,
            "warmup_seconds": args.idle_fleet_warmup,
            "query_interval": args.idle_fleet_query_interval,
            "window_seconds": args.idle_fleet_seconds,
            "start_timeout": args.idle_fleet_start_timeout,
            "official": args.idle_fleet_official,
            "postgres_durable": args.fleet_pg_durable,
            "available_mib_before": available_mib(),
        }
    )
    for major in args.idle_fleet_server_list:
        say(f"idle fleet: {count} agent(s) per contender, Prefect {major} on PostgreSQL...")
        with contextlib.ExitStack() as stack:
            try:
                target = start_target(stack, major, "postgresql", args, say=say, work_dir=work_dir)
            except Exception as exc:  # noqa: BLE001 - the other server is still measured
                results.rows.append(
                    IdleFleet(major, "-", "", count, 0, error=f"{type(exc).__name__}: {exc}")
                )
                say(f"  failed: {type(exc).__name__}: {str(exc)[:1500]}")
                continue
            results.targets[major] = target
            bench = BenchServer(target.api_url, args.poll_interval)
            stack.callback(bench.close)
            for kind in kinds:
                say(f"idle fleet: Prefect {major}, {kind}...")
                try:
                    row = measure(target, bench, kind, count, args=args, work_dir=work_dir, say=say)
                except Exception as exc:  # noqa: BLE001 - in the table's notes; the rest goes on
                    row = IdleFleet(
                        major, kind, describe(kind, major, count), count, 0,
                        error=f"{type(exc).__name__}: {str(exc)[:1500]}",
                    )  # fmt: skip
                    say(f"  failed: {row.error}")
                results.rows.append(row)
                if row.error is None:
                    say(
                        f"  server {row.server_cpu or 0:.2f} CPU s/min, postgres "
                        f"{row.postgres_cpu or 0:.2f}, requests/min "
                        f"{row.requests_per_minute if row.requests_per_minute is not None else '-'}"
                    )
    results.seconds = time.monotonic() - began
    return results


# -- the report --------------------------------------------------------------------------------

HEADERS = [
    "server",
    "contender",
    "agents",
    "window s",
    "server CPU s/min",
    "API process",
    "postgres",
    "server+pg",
    "above alone",
    "per agent ms/min",
    "vs ours",
    "requests/min",
    "per agent",
    "agents CPU s/min",
    "RSS MiB/agent",
]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}}"


def rows(results: IdleFleetResults) -> list[list[str]]:
    out: list[list[str]] = []
    for major in dict.fromkeys(r.server for r in results.rows):
        mine = [r for r in results.rows if r.server == major and r.error is None]
        alone = next((r.server_and_db_cpu for r in mine if r.contender == "server alone"), None)
        ours = next((r for r in mine if r.contender == "ours"), None)
        ours_total = ours.server_and_db_cpu if ours is not None else None
        version = results.targets[major].version if major in results.targets else major
        for r in mine:
            total = r.server_and_db_cpu
            above = None if total is None or alone is None or r.contender == "server alone" else (
                total - alone
            )  # fmt: skip
            per_agent = None if above is None or not r.agents else 1000.0 * above / r.agents
            versus = None
            if ours_total and total and r.contender != "server alone":
                versus = total / ours_total
            agents = str(r.agents) if r.agents == r.agents_asked else f"{r.agents}/{r.agents_asked}"
            rss = statistics.mean(r.rss_mib) if r.rss_mib else None
            out.append([
                version, r.contender, agents if r.contender != "server alone" else "-",
                _fmt(r.window_seconds, ".0f"), _fmt(r.server_cpu, ".2f"),
                _fmt(r.server_top_cpu, ".2f"), _fmt(r.postgres_cpu, ".2f"), _fmt(total, ".2f"),
                _fmt(above, ".2f"), _fmt(per_agent, ".0f"), _fmt(versus, ".2f") + (
                    "x" if versus is not None else ""
                ),
                _fmt(r.requests_per_minute, ".0f"),
                _fmt(
                    r.requests_per_minute / r.agents
                    if r.requests_per_minute is not None and r.agents else None, ".1f",
                ),
                _fmt(r.agents_cpu, ".2f"), _fmt(rss, ".1f"),
            ])  # fmt: skip
    return out


def _table(headers: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in body:
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    return lines


def footnotes(results: IdleFleetResults) -> list[str]:
    notes = [
        "CPU s/min: CPU seconds per minute of the window (60 = one core busy), from /proc: "
        "the Prefect server's process tree, its busiest process (API process), PostgreSQL's "
        "processes; server+pg is both, 'above alone' that minus the server alone's, and "
        "'per agent' that per agent in CPU ms per minute.",
        "vs ours: server+pg of this contender over ours' on the same server (above 1: ours "
        "cost the server less).",
        "requests/min: HTTP requests through the contender's counting proxy in the window.",
    ]
    for r in results.rows:
        if r.error is not None:
            notes.append(f"failed: Prefect {r.server}, {r.contender}: {r.error}")
            continue
        if r.note:
            notes.append(f"Prefect {r.server}, {r.contender}: {r.note}")
        if not r.settled:
            notes.append(
                f"Prefect {r.server}, {r.contender}: the agents' CPU had not settled after "
                f"{r.start_seconds:.0f}s (measured anyway)"
            )
        if r.exited:
            notes.append(f"Prefect {r.server}, {r.contender}: {r.exited} agent(s) exited")
        if r.endpoints_per_minute:
            top = ", ".join(f"{e} {n:.1f}" for e, n in r.endpoints_per_minute.items())
            notes.append(f"Prefect {r.server}, {r.contender}, requests/min by endpoint: {top}")
    return notes


def render(results: IdleFleetResults, notes: list[str]) -> str:
    settings = results.settings
    lines = [
        f"idle fleet: {settings['agents']} agents per contender on one Prefect server on "
        f"PostgreSQL; window {settings['window_seconds']:g}s after a "
        f"{settings['warmup_seconds']:g}s warm-up ({results.seconds / 60:.1f} minutes in all)"
    ]
    body = rows(results)
    if body:
        lines += _table(HEADERS, body)
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines)


def json_report(results: IdleFleetResults, notes: list[str]) -> dict[str, Any]:
    return {
        "settings": results.settings,
        "seconds": results.seconds,
        "targets": {k: asdict(t) for k, t in results.targets.items()},
        "rows": [{**asdict(r), "server_and_db_cpu": r.server_and_db_cpu} for r in results.rows],
        "notes": notes,
    }
