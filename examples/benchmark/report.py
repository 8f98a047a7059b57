"""The report: a table with a row per contender, the notes that say how each figure is
computed, and the same results as JSON (`--json PATH`)."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from actors.status.metrics import PENDING_LATENCY_BUCKETS
from examples.benchmark.agent_metrics import PENDING_LATENCY
from examples.benchmark.contenders import CONTENDERS
from examples.benchmark.drain import DrainResult
from examples.benchmark.figures import Ratios, Results, drain_rate
from examples.benchmark.first_poll import FirstPollResult
from examples.benchmark.footprint import FootprintResult
from examples.benchmark.latency import NO_DATA
from examples.benchmark.procs import CLOCK_TICKS, load_average
from examples.harness.agent_status import STATUS_HOST

HEADERS = [
    "contender",
    "drain runs/s",
    "each round",
    "from start",
    "took s",
    "runs w/ pid",
    "vs ceiling",
    "ours/this",
    "agent CPU s",
    "poll->Pending ms",
    "p95",
    "first poll ms",
    "p95",
    "in flight",
    "RSS MiB",
    "ours/this",
    "CPU %",
    "ours/this",
]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _latency_cells(
    median: float | None, p95: float | None, source: str | None, no_data: str
) -> list[str]:
    if source is None:  # not measured (the ceiling polls nothing)
        return ["-", "-"]
    if no_data:
        return [NO_DATA, "-"]
    return [_fmt(median, ".0f"), _fmt(p95, ".0f")]


def render(results: Results, table: dict[str, Ratios], notes: list[str]) -> str:
    """The table (a row per contender: its median round, `table`'s ratios) and its notes."""
    drains = results.drains()
    rows = []
    for name, row in table.items():
        drain = drains.get(name)
        first = results.first_polls.get(name)
        fp = results.footprints.get(name)
        done = "-"
        if drain is not None:
            done = f"{drain.runs_with_pid}/{drain.runs}" + (" timed out" if drain.timed_out else "")
        flight = "-"
        if fp is not None:
            flight = f"{fp.in_flight}/{fp.target}" + (" timed out" if fp.timed_out else "")
        drain_latency = ["-", "-"]
        if drain is not None:
            drain_latency = _latency_cells(
                drain.median_poll_to_pending_ms,
                drain.p95_poll_to_pending_ms,
                drain.latency_source,
                drain.latency_no_data,
            )
        first_latency = ["-", "-"]
        if first is not None:
            first_latency = _latency_cells(
                first.median_ms, first.p95_ms, first.latency_source, first.latency_no_data
            )
        rows.append(
            [
                name,
                _fmt(drain_rate(drain), ".1f"),
                " ".join(_fmt(drain_rate(r), ".1f") for r in results.rounds.get(name, [])) or "-",
                _fmt(drain.runs_per_second if drain else None, ".1f"),
                _fmt(drain.elapsed_seconds if drain else None, ".1f"),
                done,
                _fmt(row["drain_vs_ceiling"], ".2f", "x"),
                _fmt(row["ours_over_this_drain"], ".2f", "x"),
                _fmt(drain.agent_cpu_seconds if drain else None, ".1f"),
                *drain_latency,
                *first_latency,
                flight,
                _fmt(fp.rss_mib if fp else None, ".1f"),
                _fmt(row["ours_over_this_rss"], ".2f", "x"),
                _fmt(fp.cpu_percent if fp else None, ".2f"),
                _fmt(row["ours_over_this_cpu"], ".2f", "x"),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [line(HEADERS), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
    lines.append("")
    lines.extend(notes)
    return "\n".join(lines)


def _buckets_ms() -> str:
    return ", ".join(f"{bound * 1000:g}" for bound in PENDING_LATENCY_BUCKETS)


def _no_data_notes(results: Results) -> list[str]:
    """Why a latency cell says "no data", per contender and part."""
    reasons: list[str] = []
    for name, drain in results.drains().items():
        if drain.latency_no_data:
            reasons.append(f"  {name}, drain: {drain.latency_no_data}")
    for name, first in results.first_polls.items():
        if first.latency_no_data:
            reasons.append(f"  {name}, first poll: {first.latency_no_data}")
    return reasons


def footnotes(results: Results, args: argparse.Namespace) -> list[str]:
    drains, footprints, first_polls = results.drains(), results.footprints, results.first_polls
    notes = [f"{name:<12} {CONTENDERS[name].describe}" for name in results.contenders()]
    notes += [
        "",
        f"drain: {args.runs} runs due now per contender, command `true`, each contender on a "
        "fresh queue, started after its runs exist; --rounds "
        f"{args.rounds}: every contender drains once a round, the order turned by one each "
        "round (the official agent at its defaults in the first round only: its pace is its "
        "15 s interval). The row is the contender's median round; 'each round' lists them "
        "all, in order.",
        "  drain runs/s = (runs with an infrastructure_pid - 1) / (server `updated` time of "
        "the last pid PATCH - server timestamp of the first PENDING state): the pace once the "
        "contender takes runs, on the server's clock, the same for every contender (the "
        "ceiling included); a contender that timed out shows its from-start rate.",
        "  from start = runs with a pid / (last pid PATCH - contender process start): agent "
        "start-up (imports, first poll) included; for the ceiling, from its first request.",
        f"  timed out: the drain was cut at --drain-timeout {args.drain_timeout:.0f}s; "
        "runs/s = runs with a pid by then / that time.",
        f"  the benchmark looks every {args.poll_interval:g}s: one POST /flow_runs/count of "
        "the queue's runs past Scheduled, and once all are, POST /flow_runs/filter for their "
        "pids; the end is the server's record, so a slower look loses no precision and leaves "
        "the server to the contender (reading every run each second cost it a tenth of its time).",
        "  vs ceiling = this / ceiling; ours/this = ours / this (above 1: ours is faster); "
        "each the median over rounds of the ratio within a round, since the server's pace "
        "drifts between rounds (the ceiling's own spread is in its row).",
        "  agent CPU s = utime+stime of the agent process from its start to the end of the "
        "drain (start-up included).",
        "  poll->Pending = how long a run a poll found waits for its Pending, median and p95 "
        f"over the runs. ours: its own histogram {PENDING_LATENCY} (from the admission of a "
        "run a poll found to the server's timestamp of its accepted Pending state), read from "
        f"its /metrics (--status-port on {STATUS_HOST}) before it stops; median and p95 are "
        "interpolated linearly within the histogram's buckets, so they are of bucket "
        f"resolution (bounds {_buckets_ms()} ms). official: (server timestamp of the run's "
        "PENDING state, GET /flow_run_states) - (the first of the block of 'Submitting flow "
        "run ID' lines it logs for a poll's runs before proposing any Pending), same host and "
        "clock, 1 ms log resolution. Both spans end at the Pending state's server timestamp. "
        "During a drain a poll's runs queue "
        "behind the agent's own earlier runs (and ours asks for the next page while the last "
        "half of a page is with the server).",
    ]
    if first_polls:
        notes.append(
            f"first poll: {args.first_poll_runs} runs due now (command `true`) on a fresh "
            "queue per agent, started once they exist: poll->Pending (as above) of the runs of "
            "its first poll, with nothing of its own ahead of them; for ours, every run it "
            "took (all of them come with its first poll while they fit one page of 8)."
        )
    reasons = _no_data_notes(results)
    if reasons:
        notes.append(f"{NO_DATA}: the source of a latency figure had nothing to read:")
        notes.extend(reasons)
    if footprints:
        notes += [
            f"footprint: up to {args.inflight} runs in flight (command `sleep`), no limit; once "
            "all have a pid (or after --footprint-timeout "
            f"{args.footprint_timeout:.0f}s), RSS = VmRSS of the agent's own process(es), "
            "flow processes excluded; CPU = utime+stime delta over "
            f"{args.cpu_window:.0f}s as % of one core (one clock tick = "
            f"{100 / CLOCK_TICKS / args.cpu_window:.2f}%). ours/this below 1: ours is lighter. "
            "A contender that timed out was still taking runs during its window. ours runs "
            "with --limit N.",
        ]
        problems = ", ".join(f"{name} {fp.log_problems}" for name, fp in footprints.items())
        notes.append(
            "  WARNING/ERROR/CRITICAL lines each agent logged before its stop (the first level "
            f"name in a line, whatever the log's format): {problems}"
        )
        ours = footprints.get("ours")
        if ours is not None and ours.api_errors is not None:
            notes.append(
                f"  ours' /metrics before its stop: {ours.api_errors} failed API attempt(s), "
                f"{ours.actor_restarts} actor restart(s)"
            )
        stops = ", ".join(
            f"{name} {fp.stop_seconds:.1f}s ({fp.leftover_processes} left)"
            for name, fp in footprints.items()
        )
        notes.append(
            f"  stop after footprint (SIGTERM -> exit; flow processes then left): {stops}; "
            "the official agent waits for its flows, so the benchmark kills them first."
        )
    notes.append(
        f"machine: {os.cpu_count()} CPUs; load average (1 min) {args.load_before} at the start, "
        f"{load_average()} at the end (other work on the machine shares the CPUs with the "
        "server)."
    )
    first = ", ".join(
        f"{name} {d.first_pid_seconds:.1f}s"
        for name, d in drains.items()
        if d.first_pid_seconds is not None
    )
    if first:
        notes.append(f"first pid recorded, after contender start (start-up and queueing): {first}")
    return notes


def _reported(
    result: DrainResult | FirstPollResult | FootprintResult | None, keep_logs: str | None
) -> dict[str, Any] | None:
    """A result for the JSON; its log is named where --keep-logs puts it (the rest is deleted)."""
    if result is None:
        return None
    data = asdict(result)
    if data.get("log_path"):
        data["log_path"] = str(Path(keep_logs) / Path(data["log_path"]).name) if keep_logs else None
    return data


def json_report(
    results: Results,
    table: dict[str, Ratios],
    notes: list[str],
    args: argparse.Namespace,
    api_url: str,
) -> dict[str, Any]:
    drains = results.drains()
    return {
        "api_url": api_url,
        "settings": {
            "runs": args.runs,
            "inflight": args.inflight,
            "first_poll_runs": args.first_poll_runs,
            "parts": args.part_list,
            "contenders": args.contender_list,
            "drain_timeout": args.drain_timeout,
            "rounds": args.rounds,
            "footprint_timeout": args.footprint_timeout,
            "cpu_window": args.cpu_window,
            "cpus": os.cpu_count(),
            "load_before": args.load_before,
            "load_after": load_average(),
            "poll_interval": args.poll_interval,
        },
        "contenders": {
            name: {
                "describe": CONTENDERS[name].describe,
                "drain": _reported(drains.get(name), args.keep_logs),
                "drain_rounds": [drain_rate(r) for r in results.rounds.get(name, [])],
                "first_poll": _reported(results.first_polls.get(name), args.keep_logs),
                "footprint": _reported(results.footprints.get(name), args.keep_logs),
                "ratios": row,
            }
            for name, row in table.items()
        },
        "footnotes": notes,
    }
