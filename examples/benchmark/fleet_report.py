"""The fleet's report: a table of the drains (exactly-once counts, workers, RSS), a table of
where the CPU went during each, the notes that say how each figure is computed, and JSON."""

from __future__ import annotations

import json
import os
import statistics
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from examples.benchmark.fleet import AgentFigures, FleetDrain, FleetResults, Target
from examples.benchmark.fleet_cpu import CpuSplit
from examples.benchmark.procs import load_average

DRAIN_HEADERS = [
    "contender",
    "agents",
    "database",
    "drain runs/s",
    "from start",
    "took s",
    "marker s",
    "runs w/ pid",
    "started once",
    "twice+",
    "never",
    "tries/run",
    "server errors",
    "vs ceiling",
    "ours/this",
    "all ONLINE s",
    "min ONLINE",
    "pool",
    "beat age s",
    "RSS MiB/agent",
]
CPU_HEADERS = [
    "contender",
    "window s",
    "server",
    "API process",
    "server ms/run",
    "postgres",
    "pg ms/run",
    "agents",
    "runs",
    "benchmark",
    "other",
    "machine",
    "what limited the drain",
]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def drain_rate(drain: FleetDrain | None) -> float | None:
    """The steady pace; a drain that timed out (or had no steady figure) by its from-start
    rate, which is all it managed."""
    if drain is None:
        return None
    if drain.timed_out or drain.steady_runs_per_second is None:
        return drain.runs_per_second
    return drain.steady_runs_per_second


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def ratios(results: FleetResults) -> dict[str, dict[str, float | None]]:
    """vs ceiling (same server only) and ours/this (the fleets: ours over the official one)."""
    by_name = {d.contender: d for d in results.drains}
    ceiling = by_name.get("ceiling")
    ours = by_name.get("fleet-ours")
    table: dict[str, dict[str, float | None]] = {}
    for d in results.drains:
        same_server = ceiling is not None and d.database == ceiling.database
        table[d.contender] = {
            "drain_vs_ceiling": _ratio(drain_rate(d), drain_rate(ceiling)) if same_server else None,
            "ours_over_this_drain": (
                _ratio(drain_rate(ours), drain_rate(d)) if d.contender == "fleet-official" else None
            ),
        }
    return table


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i in (0, len(headers) - 1) and not cell[:1].isdigit()
            else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()  # fmt: skip

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _rss_cell(d: FleetDrain) -> str:
    values = [a.rss_mib_max for a in d.agent_figures if a.rss_mib_max > 0]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({max(values):.1f})"


def _once(value: int | None) -> str:
    return "-" if value is None else str(value)


def drain_rows(results: FleetResults) -> list[list[str]]:
    table = ratios(results)
    rows = []
    for d in results.drains:
        done = f"{d.runs_with_pid}/{d.runs}" + (" timed out" if d.timed_out else "")
        if d.stalled:
            done += " stalled"
        workers = d.agents > 0 and d.worker_samples > 0
        min_online = "-"
        if workers:
            min_online = (
                f"{d.min_online_after_all}/{d.agents}"
                if d.min_online_after_all is not None
                else f"max {d.max_online}/{d.agents}"
            )
        rows.append(
            [
                d.contender,
                str(d.agents) if d.agents else "-",
                d.database,
                _fmt(drain_rate(d), ".1f"),
                _fmt(d.runs_per_second, ".1f"),
                _fmt(d.elapsed_seconds, ".1f"),
                _fmt(d.markers_seconds, ".1f"),
                done,
                _once(d.started_once),
                _once(d.started_twice_or_more),
                _once(d.never_started),
                _fmt(d.submissions_per_run, ".1f"),
                _once(d.server_tracebacks),
                _fmt(table[d.contender]["drain_vs_ceiling"], ".2f", "x"),
                _fmt(table[d.contender]["ours_over_this_drain"], ".2f", "x"),
                _fmt(d.all_online_seconds, ".0f") if workers else "-",
                min_online,
                ",".join(d.pool_statuses) or "-" if workers else "-",
                _fmt(d.max_heartbeat_age_seconds, ".0f") if workers else "-",
                _rss_cell(d),
            ]
        )
    return rows


def _pct(cpu: CpuSplit | None, group: str) -> str:
    if cpu is None:
        return "-"
    return _fmt(cpu.percent(group), ".0f", "%")


def _window(cpu: CpuSplit | None) -> str:
    if cpu is None:
        return "-"
    return f"{cpu.wall_seconds:.0f}" + (" whole" if cpu.window == "whole" else "")


def per_run_ms(cpu: CpuSplit | None, group: str, rate: float | None) -> float | None:
    """CPU ms the group spent per run taken: its share of a core over the steady window
    divided by the runs per second in it."""
    percent = cpu.percent(group) if cpu is not None else None
    if percent is None or not rate:
        return None
    return 10.0 * percent / rate


def cpu_rows(results: FleetResults) -> list[list[str]]:
    rows = []
    for d in results.drains:
        cpu = d.cpu
        rows.append(
            [
                d.contender,
                _window(cpu),
                _pct(cpu, "server"),
                _fmt(cpu.server_top_percent if cpu else None, ".0f", "%"),
                _fmt(per_run_ms(cpu, "server", drain_rate(d)), ".0f"),
                _pct(cpu, "postgres"),
                _fmt(per_run_ms(cpu, "postgres", drain_rate(d)), ".0f"),
                _pct(cpu, "agents"),
                _pct(cpu, "runs"),
                _pct(cpu, "benchmark"),
                _fmt(cpu.other_percent if cpu else None, ".0f", "%"),
                _pct(cpu, "machine"),
                d.limit or "-",
            ]
        )
    return rows


def render(results: FleetResults, notes: list[str]) -> str:
    lines = ["fleet: the drains", *_table(DRAIN_HEADERS, drain_rows(results)), ""]
    lines += [
        "fleet: where the CPU went during each drain (% of one core)",
        *_table(CPU_HEADERS, cpu_rows(results)),
        "",
        *notes,
    ]
    return "\n".join(lines)


def _versions(results: FleetResults) -> str:
    parts = []
    for database, target in results.targets.items():
        text = f"Prefect server {target.version} on {database}"
        if target.postgres_version:
            text += f" (PostgreSQL {target.postgres_version})"
        parts.append(text)
    return "; ".join(parts)


def footnotes(results: FleetResults) -> list[str]:
    s = results.settings
    by_name = {d.contender: d for d in results.drains}
    notes = [f"{d.contender:<16} {d.describe}" for d in results.drains]
    notes += [
        "",
        f"{s['runs']} runs per fleet contender ({s['compare_runs']} for the one-agent rows), "
        "each on a fresh queue, created before its agents start; command `"
        + " ".join(s["marker_command"][:2])
        + " '"
        + s["marker_command"][2]
        + "'`: a marker file per start.",
        "  drain runs/s = (runs with a pid - 1) / (server `updated` of the last pid PATCH - "
        "server timestamp of the first Pending): the steady pace, on the server's clock; "
        "from start = runs with a pid / (last pid PATCH - first agent start; the ceiling: its "
        "first request), start-up of K agents on this machine included; took s = that time; "
        "marker s = first agent start -> the newest marker file (the last run's process start, "
        "by the machine's clock).",
        "  started once / twice+ / never: runs of that contender with exactly one, more than "
        "one, and no marker file, counted after its agents stopped.",
        "  tries/run = the 'submitting flow run' lines all its agents logged (each a run an "
        "agent tried to take: a Pending proposal follows, won or lost to another agent) / runs "
        "started: 1.0 means no agent ever lost a race for a run; read from the agents' logs, "
        "a diagnostic only (the counts above come from the markers).",
        "  stalled: every run was past Scheduled and no new pid came for 60 s: the runs still "
        "without a pid were taken and stranded (Pending with no process, or a process whose "
        "pid was never recorded); the drain's figures are those of the runs with a pid. "
        "timed out: cut at --fleet-timeout, judged by its from-start rate.",
        "  server errors = tracebacks in the Prefect server's log during the drain, a chain "
        "counted once: a 500 answer to someone's request, or a background service of the "
        "server failing (on SQLite: 'database is locked').",
        "  vs ceiling = this / the ceiling on the same server; ours/this = fleet-ours / "
        "fleet-official.",
        "  workers: POST /work_pools/POOL/workers/filter every 2 s during the drain (2.x: "
        "default-agent-pool), this contender's rows only (their names hold its queue); all "
        "ONLINE s = first agent start -> the first look with all K ONLINE; min ONLINE and "
        "pool = the fewest ONLINE and the pool statuses seen from then to the drain's end; "
        "beat age = the oldest heartbeat seen then. The official 2.x agent sends no "
        "heartbeats: it is never a worker.",
        "  RSS MiB/agent = the highest VmRSS of each agent process (the host's pid 2) over the "
        "drain, sampled every second: median over the agents (the largest in brackets).",
        "  CPU: /proc every second; server = the Prefect server's process tree (CLI + uvicorn), "
        "API process = its busiest single process, postgres = the postmaster and its backends, "
        "agents = the agent processes' own time, runs = their run processes (sh, mktemp) and "
        "hosts' inits, benchmark = this process (the ceiling's client, the looks), other = "
        "the machine's busy time no process of this benchmark accounts for (other work on the "
        "shared machine: its other users' processes, the kernel), machine = all CPUs "
        f"({os.cpu_count()} cores = {100 * (os.cpu_count() or 1)}%). Window: first Pending -> "
        "last pid ('whole': the drain from its start, when that was under two samples).",
        "  server ms/run, pg ms/run = CPU ms the server's processes (PostgreSQL's) spent per "
        "run taken: their % of a core / drain runs/s x 10; the ceiling's is the least a run "
        "costs the server.",
        "  what limited the drain: the API process at >= 75% of a core (one Python process "
        "cannot use more than one, and a shared machine rarely gives it all of one), else "
        "PostgreSQL at >= 75%, else the machine at >= 90% of its CPUs; and, from 1.2 tries "
        "per run, the races the agents lost (each a Pending the server had to refuse).",
        "  2.20 keeps no status for a pool of type prefect-agent (default-agent-pool, where the "
        "workers of plain queues are listed): its status reads null whoever heartbeats; a "
        "Prefect 3 process pool turns READY with its first ONLINE worker.",
    ]
    for d in results.drains:
        if d.agent_figures:
            per = ", ".join(
                f"{a.host} {_once(a.runs_with_pid)} runs {a.rss_mib_max:.1f} MiB "
                f"{a.cpu_seconds:.1f}s CPU"
                + (f" {a.log_problems} warn/err" if a.log_problems else "")
                for a in d.agent_figures
            )
            notes.append(
                f"  {d.contender} per agent (runs with its host's pid, max RSS, CPU): {per}"
            )
            if any(a.runs_with_pid is None for a in d.agent_figures):
                notes.append(
                    f"    ('-' runs: {d.contender}'s infrastructure_pid names no host, a bare pid)"
                )
        if d.ceiling_retries:
            notes.append(f"  ceiling: {d.ceiling_retries} request(s) tried again (503/429)")
        if d.requests and d.runs_with_pid:
            total = sum(d.requests.values())
            kinds = ", ".join(
                f"{endpoint} {n / d.runs_with_pid:.3f}"
                for endpoint, n in sorted(d.requests.items(), key=lambda item: -item[1])
            )
            notes.append(
                f"  {d.contender} requests per run with a pid, from its first agent's start "
                f"to the end ({total} in all, {total / d.runs_with_pid:.2f} per run): {kinds}"
            )
    pg, lite = by_name.get("one-ours-pg"), by_name.get("one-ours-sqlite")
    if pg is not None and lite is not None:
        ratio = _ratio(drain_rate(pg), drain_rate(lite))
        pg_api = pg.cpu.server_top_percent if pg.cpu else None
        lite_api = lite.cpu.server_top_percent if lite.cpu else None
        notes.append(
            f"PostgreSQL vs SQLite, one agent, {s['compare_runs']} runs, this machine: "
            f"{_fmt(drain_rate(pg), '.1f')} vs {_fmt(drain_rate(lite), '.1f')} runs/s steady "
            f"({_fmt(ratio, '.2f', 'x')}); the API process at {_fmt(pg_api, '.0f', '%')} vs "
            f"{_fmt(lite_api, '.0f', '%')} of a core, postgres {_pct(pg.cpu, 'postgres')}."
        )
    notes.extend(results.skipped)
    notes.append(
        f"{_versions(results)}; PostgreSQL "
        + ("durable (fsync on)" if s["postgres_durable"] else "with fsync, synchronous_commit "
           "and full_page_writes off (examples/harness/postgres.py's default)")
        + f"; {os.cpu_count()} CPUs; load average (1 min) {s.get('load_before', '?')} at the "
        f"start, {load_average()} at the end; the part took {results.seconds / 60:.1f} min."
    )  # fmt: skip
    return notes


def json_report(results: FleetResults, notes: list[str]) -> dict[str, Any]:
    data = asdict(results)
    table = ratios(results)
    for drain, measured in zip(data["drains"], results.drains, strict=True):
        drain["drain_rate"] = drain_rate(measured)
        drain["ratios"] = table[measured.contender]
        cpu = measured.cpu
        if cpu is not None:
            drain["cpu"]["percent"] = {g: cpu.percent(g) for g in cpu.seconds}
            drain["cpu"]["server_top_percent"] = cpu.server_top_percent
            drain["cpu"]["other_percent"] = cpu.other_percent
    data["footnotes"] = notes
    data["table"] = render(results, notes).splitlines()
    return data


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in raw.items() if key in names}


def load(data: dict[str, Any]) -> FleetResults:
    """The results back from their JSON (`json_report`), to render them again."""
    drains = []
    for raw in data["drains"]:
        drain = FleetDrain(**_known(FleetDrain, raw))
        drain.agent_figures = [
            AgentFigures(**_known(AgentFigures, a)) for a in raw["agent_figures"]
        ]
        drain.cpu = CpuSplit(**_known(CpuSplit, raw["cpu"])) if raw.get("cpu") else None
        drains.append(drain)
    targets = {}
    for database, raw in data["targets"].items():
        target = Target(**_known(Target, raw))
        target.server_log = Path(raw["server_log"]) if raw.get("server_log") else None
        targets[database] = target
    return FleetResults(
        settings=data["settings"],
        targets=targets,
        drains=drains,
        seconds=data["seconds"],
        skipped=data.get("skipped", []),
    )


def main(argv: list[str]) -> int:
    """`python -m examples.benchmark.fleet_report REPORT.json`: the fleet's tables again,
    with the notes written when it ran."""
    if len(argv) != 1:
        print("usage: python -m examples.benchmark.fleet_report REPORT.json", file=sys.stderr)
        return 2
    data = json.loads(Path(argv[0]).read_text())
    fleet = data.get("fleet", data)
    print(render(load(fleet), fleet["footnotes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
