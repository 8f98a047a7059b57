"""What a request to the server is for, in a small fixed set of kinds: what `/metrics` counts
(`prefect_agent_api_requests_total{kind=...}`), so that an operator sees what the agent costs
the server, and which of its duties pays for it.

Most requests say their kind by their path: a heartbeat, a state proposal, a read of a
deployment. The requests that look for runs do not: `POST /flow_runs/filter` is a queue's poll,
a cancellation poll or a recovery's read, and a poll's request is the same whether the clock
or an event started it. Their caller names the purpose (`actors.runtime.request_purpose`),
and the path decides the rest, so that a caller's purpose never relabels its reads.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

RequestKind = Literal[
    "poll",  # a queue's request for due runs, on the poll interval (get_runs and its kin)
    "event_woken_poll",  # the same, in a poll an event of the stream started
    "queue_read",  # a poll's read of its queue or pool (and their creation, matching)
    "state_proposal",  # a proposed state: taking a run, reporting its end, handing it back
    "heartbeat",  # the worker heartbeat, one per pool served
    "cancellation_poll",  # the look for runs to cancel
    "worker_read",  # the pool's worker rows (live peers, lost ones)
    "worker_removal",  # leaving a pool at a clean stop
    "recovery",  # runs of lost peers or of an earlier life, and the held runs checked
    "run_read",  # one run, or its states, read
    "pid_report",  # a run's infrastructure pid recorded
    "run_labels",  # a run's labels set (3.x)
    "deployment_read",
    "block_read",
    "server_version",
    "other",  # none of the above (a request this list does not know yet)
]
REQUEST_KINDS: Final[tuple[RequestKind, ...]] = get_args(RequestKind)

# The kinds a caller may name for a request that looks for runs.
RUN_SEARCHES: Final[frozenset[RequestKind]] = frozenset(
    {"poll", "event_woken_poll", "cancellation_poll", "recovery"}
)


def request_kind(method: str, path: str, purpose: RequestKind | None = None) -> RequestKind:
    """The kind of `method path` (a path under the API's root, with or without a leading
    `/`), its caller having named `purpose` (None: none)."""
    parts = [part for part in path.split("?", 1)[0].strip("/").split("/") if part]
    if not parts:
        return "other"
    head, size, tail = parts[0], len(parts), parts[-1]
    if head == "work_pools":
        return _pool_request(method, parts, purpose)
    if head == "work_queues":
        if size == 3 and tail == "get_runs":
            return _search(purpose, default="poll")
        return "queue_read"
    if head == "flow_runs":
        if size == 2 and tail == "filter":
            return _search(purpose, default="run_read")
        if size == 3 and tail == "set_state":
            return "state_proposal"
        if size == 3 and tail == "labels":
            return "run_labels"
        if size == 2 and method == "PATCH":
            return "pid_report"
        return "run_read" if method == "GET" else "other"
    simple: dict[str, RequestKind] = {
        "flow_run_states": "run_read",
        "deployments": "deployment_read",
        "block_documents": "block_read",
        "admin": "server_version",
    }
    return simple.get(head, "other")


def _pool_request(method: str, parts: list[str], purpose: RequestKind | None) -> RequestKind:
    size, tail = len(parts), parts[-1]
    if size >= 3 and parts[2] == "workers":
        if tail == "heartbeat":
            return "heartbeat"
        if tail == "filter":
            return "worker_read"
        return "worker_removal" if method == "DELETE" else "other"
    if size == 3 and tail == "get_scheduled_flow_runs":
        return _search(purpose, default="poll")
    return "queue_read"


def _search(purpose: RequestKind | None, default: RequestKind) -> RequestKind:
    return purpose if purpose in RUN_SEARCHES and purpose is not None else default
