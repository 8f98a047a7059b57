"""The containers part's table, its targets (ours against the anchors of the same run) and
its JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

from examples.benchmark.containers import ContainerFigures, ContainerResults

# Each of ours beside the anchor on its own server: 2.20's agent, Prefect 3's worker.
PAIRS = (("2.20 ours", "2.20 official"), ("3.x ours", "3.x worker"))
SIGTERM_TARGET = 0.3


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(f: ContainerFigures) -> list[str]:
    reached = f"{f.inflight_reached}/{f.inflight_target}" + (
        " timed out" if f.inflight_timed_out else ""
    )
    return [
        f.contender,
        _f(f.pending_to_running.median),
        _f(f.pending_to_running.p95),
        _f(f.pending_to_script.median),
        f"{f.pending_to_running.samples}/{f.latency_runs}",
        _f(f.cancel_to_sigterm.median),
        _f(f.cancel_to_sigterm.p95),
        _f(f.cancel_to_stopped.median),
        _f(f.cancel_to_stopped.p95),
        f"{f.cancel_to_stopped.samples}/{f.cancels}",
        reached,
        _f(f.rss_mib, 1),
        _f(f.agent_cpu_seconds, 1),
        _f(f.drain_runs_per_second),
        _f(f.drain_seconds, 1),
    ]


HEADER = [
    "contender",
    "Pending->running s",
    "p95",
    "->script s",
    "n",
    "cancel->SIGTERM s",
    "p95",
    "->stopped s",
    "p95",
    "n",
    "in flight",
    "RSS MiB",
    "agent CPU s",
    "drain runs/s",
    "drain s",
]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(HEADER, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def targets(results: ContainerResults) -> list[dict[str, Any]]:
    """Each target of issue 23, for each of ours against the anchor on the same server: ours'
    figure, the anchor's, their ratio and whether it was met."""
    by_name = {f.contender: f for f in results.figures}
    found: list[dict[str, Any]] = []
    for ours_name, anchor_name in PAIRS:
        ours, anchor = by_name.get(ours_name), by_name.get(anchor_name)
        if ours is None:
            continue
        term = ours.cancel_to_sigterm.median
        found.append(
            {
                "target": f"{ours_name}: cancel->SIGTERM within {SIGTERM_TARGET} s (median)",
                "ours": term,
                "anchor": None,
                "ratio": None,
                "met": term is not None and term <= SIGTERM_TARGET and ours.cancel_missed == 0,
            }
        )
        if anchor is None:
            continue
        ratio = _ratio(ours.pending_to_running.median, anchor.pending_to_running.median)
        found.append(
            {
                "target": f"{ours_name}: Pending->running median at most 0.5x {anchor_name}'s",
                "ours": ours.pending_to_running.median,
                "anchor": anchor.pending_to_running.median,
                "ratio": ratio,
                "met": ratio is not None and ratio <= 0.5,
            }
        )
        ratio = _ratio(ours.rss_mib, anchor.rss_mib)
        found.append(
            {
                "target": f"{ours_name}: RSS in flight at most 0.5x {anchor_name}'s",
                "ours": ours.rss_mib,
                "anchor": anchor.rss_mib,
                "ratio": ratio,
                "met": ratio is not None
                and ratio <= 0.5
                and ours.inflight_reached == ours.inflight_target,
            }
        )
        ratio = _ratio(ours.drain_runs_per_second, anchor.drain_runs_per_second)
        found.append(
            {
                "target": f"{ours_name}: drain faster than {anchor_name}",
                "ours": ours.drain_runs_per_second,
                "anchor": anchor.drain_runs_per_second,
                "ratio": ratio,
                "met": (ratio is not None and ratio > 1)
                or (ours.drain_runs_per_second is not None and anchor.drain_seconds is None),
            }
        )
    return found


def render(results: ContainerResults) -> str:
    lines = ["containers: flow runs in Docker containers", ""]
    lines.append(_table([_row(f) for f in results.figures]))
    lines.append("")
    for target in targets(results):
        ratio = "" if target["ratio"] is None else f", {target['ratio']:.2f}x"
        lines.append(
            f"- {target['target']}: ours {_f(target['ours'], 3)} against "
            f"{_f(target['anchor'], 3)}{ratio}: {'met' if target['met'] else 'NOT met'}"
        )
    for figure in results.figures:
        if figure.cancelled_states:
            lines.append(f"- {figure.contender}: cancelled runs ended {figure.cancelled_states}")
    if any(f.contender == "3.x worker" and f.cancel_missed for f in results.figures):
        lines.append(
            "- 3.x worker: Prefect 3.9's worker cancels only the runs it is still submitting; "
            "a submitted run is its engine's to cancel from inside the container, and the "
            "marker script has no engine, so the worker stopped none of its containers."
        )
    for failure in results.failures:
        lines.append(f"- failed: {failure[:500]}")
    lines.append(
        "- Pending->running: the daemon's State.StartedAt minus the run's first Pending "
        "(server); ->script: the script's own start. Cancel: from the Cancelling state's "
        "timestamp to the script's SIGTERM handler and to the container's FinishedAt. Drain: "
        "first Pending to the last container's StartedAt (containers started, not runs "
        "completed). RSS: the agent's process tree while the runs were in flight."
    )
    return "\n".join(lines)


def json_report(results: ContainerResults) -> dict[str, Any]:
    return {**dataclasses.asdict(results), "target_checks": targets(results)}
