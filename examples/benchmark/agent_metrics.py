"""Ours' own figures, from the Prometheus text its status endpoint serves on /metrics.

The benchmark starts our agent with `--status-port P` on 127.0.0.1 and reads
`prefect_agent_pending_latency_seconds` (from the admission of a run a poll found to the
server's accepted Pending) before it stops the agent: a histogram, so its quantiles are of
bucket resolution. Reading the endpoint and the exposition is the harness's
(`examples/harness/agent_status.py`), which the tests share.
"""

from __future__ import annotations

from examples.harness.agent_status import (
    Histogram,
    StatusUnavailableError,
    parse_histogram,
    read_metrics,
)

PENDING_LATENCY = "prefect_agent_pending_latency_seconds"


def pending_latency(status_url: str | None) -> tuple[Histogram | None, str]:
    """Ours' pending-latency histogram now, or None and why not."""
    if status_url is None:
        return None, "no status endpoint"
    try:
        text = read_metrics(status_url)
    except StatusUnavailableError as exc:
        return None, f"the status endpoint did not answer ({exc})"
    histogram = parse_histogram(text, PENDING_LATENCY)
    if histogram is None:
        return None, f"the agent's /metrics has no {PENDING_LATENCY}"
    if histogram.count == 0:
        return None, f"{PENDING_LATENCY} is empty (this agent version records nothing in it)"
    return histogram, ""
