"""The latency part's table (a row per contender and server), its notes, and its JSON."""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import asdict
from typing import Any

from examples.benchmark.latency_part import LatencyResults
from examples.benchmark.pickup import CANCEL_GAP, HOLD_SECONDS, CancelResult, RunNowResult, Spread
from examples.benchmark.pickup_agents import ENTRANTS
from examples.benchmark.pickup_cost import IDLE_QUEUES, DrainRound
from examples.benchmark.procs import load_average

HEADERS = [
    "contender",
    "events",
    "now->Pending s",
    "p95",
    "now->start s",
    "p95",
    "n",
    "cancel->SIGTERM s",
    "p95",
    "n",
    f"idle req/min ({IDLE_QUEUES} q)",
    "per queue",
    "drain runs/s",
    "each round",
]


def _s(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else f"{value:{spec}}"


def _spread(spread: Spread | None) -> list[str]:
    if spread is None:
        return ["-", "-"]
    return [_s(spread.median), _s(spread.p95)]


def _order(results: LatencyResults) -> list[str]:
    seen: list[str] = []
    for major, entrants in ENTRANTS.items():
        for entrant in entrants.values():
            label = entrant.label
            if major in results.targets and label not in seen:
                seen.append(label)
    return seen


def median_drain(rounds: list[DrainRound]) -> float | None:
    rates = [r.steady_runs_per_second or r.runs_per_second for r in rounds]
    return statistics.median(rates) if rates else None


def rows(results: LatencyResults) -> list[list[str]]:
    now = {r.contender: r for r in results.run_now}
    cancels = {r.contender: r for r in results.cancels}
    idle = {r.contender: r for r in results.idle}
    out = []
    for label in _order(results):
        n, c, i = now.get(label), cancels.get(label), idle.get(label)
        drains = [d for d in results.drains if d.contender == label]
        if not (n or c or i or drains):
            continue
        modes = [x.events_mode for x in (n, c, i) if x is not None and x.events_mode]
        modes += [d.events_mode for d in drains if d.events_mode]
        mode = modes[0] if modes and len(set(modes)) == 1 else ("/".join(sorted(set(modes))) or "-")
        out.append(
            [
                label,
                mode,
                *_spread(n.pending if n else None),
                *_spread(n.start if n else None),
                f"{n.pending.samples}/{n.runs}" if n else "-",
                *_spread(c.sigterm if c else None),
                f"{c.sigterm.samples}/{c.runs}" if c else "-",
                _s(i.per_minute if i else None, ".1f"),
                _s(i.per_queue_per_minute if i else None, ".2f"),
                _s(median_drain(drains), ".1f"),
                " ".join(
                    _s(d.steady_runs_per_second or d.runs_per_second, ".1f")
                    + ("(t/o)" if d.timed_out else "")
                    + (f"({d.runs_with_pid}/{d.runs})" if d.runs_with_pid < d.runs else "")
                    for d in drains
                )
                or "-",
            ]
        )
    return out


def table(results: LatencyResults) -> list[str]:
    body = rows(results)
    widths = [max(len(h), *(len(r[k]) for r in body)) for k, h in enumerate(HEADERS)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if k < 2 else cell.rjust(w)
            for k, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(HEADERS), "  ".join("-" * w for w in widths), *(line(r) for r in body)]


def footnotes(results: LatencyResults) -> list[str]:
    s = results.settings
    notes = []
    for major, info in results.targets.items():
        for entrant in ENTRANTS[major].values():  # type: ignore[index]
            notes.append(f"{entrant.label:<13} {entrant.describe}")
        extra = f", {info['events_setting']}" if info.get("events_setting") else ""
        notes.append(f"{'':<13} server: Prefect {info['version']} on SQLite{extra}")
    notes += [
        "",
        f"run now: {s['runs']} runs per contender, one at a time, each created due now on the "
        "idle contender (alone on a fresh queue, after its first poll; ours with the stream "
        "once /healthz says `events: stream`) after a gap of 1 s + U(0, its poll interval) "
        "from the previous run's start, so runs land at every phase of a poll. now->Pending = "
        "server timestamp of the run's first PENDING state - that of its SCHEDULED state (both "
        "GET /flow_run_states); now->start = the time the run's command wrote as its first act "
        "(python -I -S, about 10 ms after exec) - the SCHEDULED timestamp; one host, one clock.",
        f"cancel: {s['cancels']} runs per contender whose command traps SIGTERM, started "
        "together; once every one runs and has its pid on the server, each is set Cancelling "
        "as the UI does (POST /flow_runs/{id}/set_state CANCELLING, force) in a random order "
        f"at gaps of U({CANCEL_GAP[0]}, {CANCEL_GAP[1]}) s; cancel->SIGTERM = the time the "
        "process's handler wrote - the CANCELLING state's server timestamp. The runs stay "
        "Pending (their command is no Prefect engine), which is the state Prefect 3's worker "
        "cancels itself (a Running flow is cancelled by its own engine, in-process); a run "
        f"left running ends by itself after {HOLD_SECONDS:.0f} s.",
        f"idle: every contender of a server at once, each on {IDLE_QUEUES} queues of its own "
        "(3.x: of a pool of its own; ours -p POOL and -q per queue, the worker --work-queue "
        "per queue, the official agent -q per queue), each talking to the server through a "
        "counting proxy of its own: HTTP requests it sent (request lines in its bytes; a "
        "websocket upgrade is one request, its frames none) over "
        f"{s['idle_seconds']:.0f} s after a {s['idle_warmup']:.0f} s warm-up past the first "
        "poll, per minute.",
        f"drain: {s['drain_runs']} runs due now (command `true`) created before the contender "
        "starts; runs/s = (runs with a pid - 1) / (last pid PATCH - first PENDING), server "
        f"clock; ours in {s['drain_rounds']} rounds (the order turned each round), the official "
        "contenders in the first; the cell is the median round.",
    ]
    for result in results.idle:
        top = sorted(result.by_endpoint.items(), key=lambda kv: -kv[1])
        calls = ", ".join(f"{name} {rate:.1f}" for name, rate in top)
        notes.append(
            f"  idle {result.contender}: {calls} (per minute); "
            f"{result.sent_bytes_per_minute / 1024:.1f} KiB/min sent, "
            f"{result.received_bytes_per_minute / 1024:.1f} KiB/min received, "
            f"{result.connections} connection(s) opened in the window"
        )
    for d in results.drains:
        if d.runs_with_pid < d.runs:
            states = ", ".join(f"{n} {k}" for k, n in sorted(d.without_pid.items()))
            how = "timed out" if d.timed_out else "stalled" if d.stalled else "ended"
            notes.append(
                f"  drain {d.contender}: {d.runs_with_pid}/{d.runs} runs got a pid ({how}); "
                f"the others: {states or 'not read'}; its rate is over the runs with a pid"
            )
    timed: list[RunNowResult | CancelResult] = [*results.run_now, *results.cancels]
    for one in timed:
        if one.event_metrics:
            counters = ", ".join(f"{k} {v:g}" for k, v in sorted(one.event_metrics.items()))
            notes.append(f"  {one.contender} /metrics after {type(one).__name__}: {counters}")
        if one.missed:
            notes.append(f"  {one.contender}: {one.missed} run(s) missed the deadline")
    if not results.events_flag:
        notes.append("this agent has no --events flag: ours and ours-off ran without it")
    for failure in results.failures:
        notes.append(f"failed: {failure}")
    notes.append(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; load average "
        f"(1 min) {load_average()} at the end"
    )
    return notes


def render(results: LatencyResults) -> str:
    return "\n".join(
        [
            "latency: pickup, cancellation, idle cost, drain",
            *table(results),
            "",
            *footnotes(results),
        ]
    )


def json_report(results: LatencyResults) -> dict[str, Any]:
    data = asdict(results)
    data["table"] = {"headers": HEADERS, "rows": rows(results)}
    data["footnotes"] = footnotes(results)
    return data
