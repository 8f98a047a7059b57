"""poll->Pending: how long a run a poll found waits for its Pending, as median and p95.

Ours reports it itself (a histogram on its /metrics, bucket resolution); the official agent
is judged by its own log lines (1 ms resolution) against the server's Pending timestamps.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from examples.benchmark.agent_metrics import pending_latency
from examples.benchmark.contenders import Agent
from examples.harness.agent_status import Histogram

METRICS = "metrics"  # ours: its pending-latency histogram
LOG = "log"  # the official agent: its "Submitting flow run" lines and the server's states
NO_DATA = "no data"


@dataclass(frozen=True)
class Latency:
    """A median and p95 in ms over `samples` runs, where they came from, or why there are none."""

    median_ms: float | None
    p95_ms: float | None
    samples: int
    source: str
    no_data: str = ""  # the reason, when there is no figure

    @classmethod
    def of_samples(cls, samples_ms: list[float], source: str = LOG) -> Latency:
        if not samples_ms:
            return cls(None, None, 0, source, "no run matched a log line and a Pending state")
        ordered = sorted(samples_ms)
        p95 = ordered[0]
        if len(ordered) > 1:
            p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18]
        return cls(statistics.median(ordered), p95, len(ordered), source)

    @classmethod
    def of_histogram(cls, histogram: Histogram | None, why_not: str = "") -> Latency:
        if histogram is None or histogram.count == 0:
            return cls(None, None, 0, METRICS, why_not or "the histogram is empty")
        median, p95 = histogram.quantile(0.5), histogram.quantile(0.95)
        return cls(
            median * 1000 if median is not None else None,
            p95 * 1000 if p95 is not None else None,
            int(histogram.count),
            METRICS,
        )


def ours_latency(agent: Agent) -> Latency:
    """Every run the agent took so far: read before it stops (its metrics go with it)."""
    histogram, why_not = pending_latency(agent.status_url)
    return Latency.of_histogram(histogram, why_not)


def official_latency(
    found: dict[str, datetime], pending: dict[str, datetime], *, first_poll_only: bool = False
) -> Latency:
    """(server's Pending timestamp) - (the answer of the poll that brought the run, from
    `found_times_official`) over the runs in both, or over those of its first poll only."""
    if first_poll_only:
        first = min(found.values(), default=None)
        found = {run: at for run, at in found.items() if at == first}
    return Latency.of_samples(
        [(pending[run] - at).total_seconds() * 1000 for run, at in found.items() if run in pending]
    )
