"""The figures the table shows: each contender's median round and the ratios between them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from examples.benchmark.contenders import ALL_CONTENDERS
from examples.benchmark.drain import DrainResult
from examples.benchmark.first_poll import FirstPollResult
from examples.benchmark.footprint import FootprintResult

Ratios = dict[str, float | None]


@dataclass
class Results:
    """Everything measured, by contender name."""

    rounds: dict[str, list[DrainResult]] = field(default_factory=dict)
    first_polls: dict[str, FirstPollResult] = field(default_factory=dict)
    footprints: dict[str, FootprintResult] = field(default_factory=dict)

    def drains(self) -> dict[str, DrainResult]:
        """Each contender's median round: the row of the table."""
        return {name: median_round(results) for name, results in self.rounds.items()}

    def contenders(self) -> list[str]:
        """The contenders measured in any part, in the table's order."""
        measured = {*self.rounds, *self.first_polls, *self.footprints}
        return [name for name in ALL_CONTENDERS if name in measured]


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def drain_rate(drain: DrainResult | None) -> float | None:
    """The rate the ratios compare: the steady drain; a contender that timed out is judged by
    its rate from its start, which is all it managed."""
    if drain is None:
        return None
    if drain.timed_out or drain.steady_runs_per_second is None:
        return drain.runs_per_second
    return drain.steady_runs_per_second


def paired_ratio(rounds: dict[str, list[DrainResult]], ours: str, theirs: str) -> float | None:
    """The median over rounds of (ours / theirs) within a round: two contenders measured
    minutes apart share the machine's and the server's drift, so their ratio is steadier than
    the ratio of their medians. A contender measured in one round only is paired with it."""
    mine, other = rounds.get(ours, []), rounds.get(theirs, [])
    pairs = [ratio(drain_rate(a), drain_rate(b)) for a, b in zip(mine, other, strict=False)]
    if len(other) == 1 and len(mine) > 1:
        pairs = [ratio(drain_rate(a), drain_rate(other[0])) for a in mine]
    known = [p for p in pairs if p is not None]
    return statistics.median(known) if known else None


def ratios(results: Results) -> dict[str, Ratios]:
    """Per contender: drain vs the ceiling, and ours divided by it (drain, RSS, CPU)."""
    rounds, footprints = results.rounds, results.footprints
    ours_fp = footprints.get("ours")
    table: dict[str, Ratios] = {}
    for name in results.contenders():
        fp = footprints.get(name)
        table[name] = {
            "drain_vs_ceiling": paired_ratio(rounds, name, "ceiling"),
            "ours_over_this_drain": paired_ratio(rounds, "ours", name),
            "ours_over_this_rss": ratio(
                ours_fp.rss_mib if ours_fp else None, fp.rss_mib if fp else None
            ),
            "ours_over_this_cpu": ratio(
                ours_fp.cpu_percent if ours_fp else None, fp.cpu_percent if fp else None
            ),
        }
    return table


def median_round(results: list[DrainResult]) -> DrainResult:
    """The round whose drain rate is the median (the lower one of an even count): the row
    the table shows, a real measurement rather than an average of several."""
    ranked = sorted(results, key=lambda r: drain_rate(r) or 0.0)
    return ranked[(len(ranked) - 1) // 2]
