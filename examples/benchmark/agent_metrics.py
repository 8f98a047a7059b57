"""Ours' own figures, from the Prometheus text its status endpoint serves on /metrics.

The benchmark starts our agent with `--status-port P` on 127.0.0.1 and reads
`prefect_agent_pending_latency_seconds` (from the admission of a run a poll found to the
server's accepted Pending) before it stops the agent: a histogram, so its quantiles are of
bucket resolution (linear within a bucket, as Prometheus' `histogram_quantile` does).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

PENDING_LATENCY = "prefect_agent_pending_latency_seconds"


class MetricsUnavailableError(RuntimeError):
    """The status endpoint did not answer, or does not serve the metric asked for."""


def read_metrics(status_url: str, *, timeout: float = 10.0) -> str:
    """GET /metrics, tried again for up to `timeout` (the endpoint starts after the agent)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(f"{status_url}/metrics", timeout=5.0)
            response.raise_for_status()
            return response.text
        except httpx.HTTPError as exc:
            if time.monotonic() >= deadline:
                raise MetricsUnavailableError(f"{status_url}/metrics: {exc!r}") from exc
        time.sleep(0.2)


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram: cumulative counts at each bucket's upper bound (+Inf last)."""

    name: str
    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    count: float
    sum: float

    def quantile(self, q: float) -> float | None:
        """The q-quantile, linear within its bucket (from the bucket below's bound, 0 for the
        first); a rank in the +Inf bucket is the largest finite bound. None when empty."""
        if self.count <= 0:
            return None
        rank = q * self.count
        below_bound, below_count = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative >= rank and cumulative > below_count:
                if math.isinf(bound):
                    return below_bound
                share = (rank - below_count) / (cumulative - below_count)
                return below_bound + (bound - below_bound) * share
            below_bound, below_count = bound, cumulative
        return below_bound


def parse_histogram(text: str, name: str) -> Histogram | None:
    """The histogram `name` (unlabelled) in a Prometheus exposition; None when absent."""
    for family in text_string_to_metric_families(text):
        if family.name != name or family.type != "histogram":
            continue
        buckets: list[tuple[float, float]] = []
        count = total = 0.0
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), float(sample.value)))
            elif sample.name == f"{name}_count":
                count = float(sample.value)
            elif sample.name == f"{name}_sum":
                total = float(sample.value)
        buckets.sort()
        return Histogram(
            name,
            tuple(bound for bound, _ in buckets),
            tuple(value for _, value in buckets),
            count,
            total,
        )
    return None


def pending_latency(status_url: str | None) -> tuple[Histogram | None, str]:
    """Ours' pending-latency histogram now, or None and why not."""
    if status_url is None:
        return None, "no status endpoint"
    try:
        text = read_metrics(status_url)
    except MetricsUnavailableError as exc:
        return None, f"the status endpoint did not answer ({exc})"
    histogram = parse_histogram(text, PENDING_LATENCY)
    if histogram is None:
        return None, f"the agent's /metrics has no {PENDING_LATENCY}"
    if histogram.count == 0:
        return None, f"{PENDING_LATENCY} is empty (this agent version records nothing in it)"
    return histogram, ""


def counter_total(text: str, name: str) -> int | None:
    """A counter's value summed over its labels (`name` without `_total`); None when absent."""
    for family in text_string_to_metric_families(text):
        if family.name == name and family.type == "counter":
            return int(sum(s.value for s in family.samples if s.name == f"{name}_total"))
    return None
