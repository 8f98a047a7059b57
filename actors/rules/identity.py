"""Who an agent is: a name that survives a restart on the same host, and an instance id that
does not, so that a peer (and a person) can tell "the same agent, started again" from "the
agent that took this run, still alive"."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

MAX_NAME = 100


@dataclass(frozen=True)
class AgentIdentity:
    name: str  # -n/--name, or derived from the host and what it serves
    instance: str  # new at every start
    host: str  # the hostname its runs' `hostname:pid` names
    pid: int | None = None  # the agent's process on that host (None: not known)


def default_agent_name(
    hostname: str,
    work_pools: tuple[str, ...],
    work_queues: tuple[str, ...],
    queue_prefixes: tuple[str, ...],
) -> str:
    """`actor-agent@HOST queues` (`actor-agent@HOST pool-a,pool-b: queues` with pools, in the
    order of their names): the same on every start with the same flags on the same host (so
    its worker rows on the server are the same), different for two agents of one host that
    serve different queues.

    It never holds a `/`: the server routes a worker's name as a path segment and decodes
    `%2F` first, so a row named with one cannot be removed when the agent stops
    (`DELETE /work_pools/{pool}/workers/{name}` answers 404). A `/` in a queue's or pool's
    name becomes `|`, and such a name, like one too long (cut), ends with a hash of the whole,
    so that two queue sets never share a name."""
    served = sorted(work_queues) + sorted(f"{prefix}*" for prefix in queue_prefixes)
    what = ",".join(served) or "all queues"
    if work_pools:
        what = f"{','.join(sorted(work_pools))}: {what}"
    name = f"actor-agent@{hostname} {what}"
    if "/" not in name and len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{name.replace('/', '|')[: MAX_NAME - 9]}~{digest}"


def removable_worker_name(name: str) -> bool:
    """Whether the server can remove a worker row of this name by its path: not with a `/`."""
    return "/" not in name


def new_instance_id() -> str:
    return uuid.uuid4().hex[:12]
