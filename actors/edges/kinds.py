"""Which kind of infrastructure runs a flow run: the registry behind the seam.

An agent holds the kinds it can run (`AgentContext.infrastructures`: `default_infrastructures`,
the Process and Docker kinds, unless a test or a host service passes others,
`start_agent(..., infrastructures=...)`). A run's
kind is its 2.x block's type (`data["type"]`, else the block type's slug; no block: a process,
as Prefect's agent has it) or, on 3.x, its work pool's type. A type no kind answers to is
refused with a reason (`SubmissionError`), never run as another kind. Which block and pool
types are served is derived from the kinds here and nowhere else.

A recorded infrastructure pid names its kind by its form: the kind whose `reach` is not
"not-mine" owns it (`kind_of_pid`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from actors.edges.docker_on_demand import DockerOnDemand
from actors.edges.infrastructure import Infrastructure, Reach, RunJob, RunSource
from actors.edges.process_kind import Process
from actors.rules.infrastructure import SubmissionError
from messages.wire.prefect import WorkPool

# A 2.x agent pool names no infrastructure: its runs' blocks are checked run by run.
AGENT_POOL_TYPE = "prefect-agent"

log = logging.getLogger("prefect_actor_agent.agent")


def default_infrastructures() -> tuple[Infrastructure, ...]:
    """The kinds an agent runs unless told otherwise: processes, and containers (2.x
    DockerContainer blocks, 3.x docker pools), the Docker kind loaded and connected to its
    daemon only when a run first asks for a container (`docker_on_demand`)."""
    return (Process(), DockerOnDemand())


def block_types(kind: Infrastructure) -> tuple[str, ...]:
    """The 2.x block types a kind runs (its `block_types`, else its name)."""
    return tuple(getattr(kind, "block_types", (kind.kind,)))


def pool_types(kind: Infrastructure) -> tuple[str, ...]:
    """The work pool types a kind runs (its `pool_types`, else its name)."""
    return tuple(getattr(kind, "pool_types", (kind.kind,)))


def supported_types(kinds: Sequence[Infrastructure]) -> tuple[str, ...]:
    """Every 2.x block type these kinds run."""
    return tuple(t for kind in kinds for t in block_types(kind))


def served_pool_types(kinds: Sequence[Infrastructure]) -> tuple[str, ...]:
    """Every pool type whose runs these kinds may take (and agent pools)."""
    return (*(t for kind in kinds for t in pool_types(kind)), AGENT_POOL_TYPE)


def pool_refusal(pool: WorkPool, kinds: Sequence[Infrastructure]) -> str | None:
    """Why this agent takes no run of `pool` (None: it serves it). A pool with no type (a
    server older than pool types) is served: its runs' blocks are checked one by one."""
    served = served_pool_types(kinds)
    if not pool.type or pool.type in served:
        return None
    return (
        f"work pool {pool.name!r} is of type {pool.type!r}, which this agent cannot run "
        f"(it serves pools of type {', '.join(repr(t) for t in served)})"
    )


def probe_pool(pool: WorkPool, kinds: Sequence[Infrastructure]) -> None:
    """The kind that runs `pool`'s runs looks for what it needs (its `probe`, when it has
    one: the Docker kind, its daemon) and logs what it found, so that an agent serving a
    docker pool on a daemon that does not answer says so at start, once, not at each run.
    Blocks on the infrastructure: call it from the infrastructure call pool."""
    for kind in kinds:
        if pool.type in pool_types(kind):
            probe = getattr(kind, "probe", None)
            if callable(probe):
                probe()
            return


def kind_for(source: RunSource, kinds: Sequence[Infrastructure]) -> Infrastructure:
    """The kind that runs this run, by its block's type (2.x) or its pool's type (3.x)."""
    block = source.block
    if block is not None:
        data = block.data
        named = str(data.get("type") or (block.block_type.slug if block.block_type else ""))
        for kind in kinds:
            if named in block_types(kind):
                return kind
        name = f" {block.name!r}" if block.name else ""
        raise SubmissionError(
            f"infrastructure block{name} is of type {named!r}, which this agent cannot run "
            f"(supported: {', '.join(supported_types(kinds))})"
        )
    pool = source.pool
    if source.job_variables and pool is not None and pool.type and pool.type != AGENT_POOL_TYPE:
        for kind in kinds:
            if pool.type in pool_types(kind):
                return kind
        raise SubmissionError(pool_refusal(pool, kinds) or f"work pool {pool.name!r}")
    for kind in kinds:  # no block, no typed pool: a process, as Prefect's agent runs it
        if "process" in block_types(kind):
            return kind
    raise SubmissionError(
        "the run names no infrastructure block, and this agent runs no processes "
        f"(supported: {', '.join(supported_types(kinds))})"
    )


def kind_of_pid(infrastructure_pid: str, kinds: Sequence[Infrastructure]) -> Infrastructure | None:
    """The kind whose pid this is (None: no kind of this agent's)."""
    for kind in kinds:
        if kind.reach(infrastructure_pid) != "not-mine":
            return kind
    return None


def reach(infrastructure_pid: str, kinds: Sequence[Infrastructure]) -> Reach:
    """Whether a recorded pid is within this agent's reach, whatever its kind."""
    kind = kind_of_pid(infrastructure_pid, kinds)
    return "not-mine" if kind is None else kind.reach(infrastructure_pid)


def watched(infrastructure_pid: str, kinds: Sequence[Infrastructure]) -> bool:
    """Whether a live agent still watches that run's infrastructure (then it is left alone):
    asked of the kind (its `watched`, when it has one; a kind without says no)."""
    kind = kind_of_pid(infrastructure_pid, kinds)
    if kind is None:
        return False
    ask = getattr(kind, "watched", None)
    return bool(ask(infrastructure_pid)) if callable(ask) else False


def outlives_agents(infrastructure_pid: str, kinds: Sequence[Infrastructure]) -> bool:
    """Whether the run's infrastructure belongs to something other than the agent that started
    it (a container belongs to its daemon): then a peer that reaches it adopts a lost agent's
    run, and an earlier life takes back only the runs its own claim names. Asked of the kind
    (its `outlives_agents`; a kind without says no: a process is its agent's)."""
    kind = kind_of_pid(infrastructure_pid, kinds)
    return kind is not None and bool(getattr(kind, "outlives_agents", False))


def find_unrecorded(flow_run_id: str, kinds: Sequence[Infrastructure]) -> RunJob | None:
    """The run's infrastructure, found by the run's id in every kind (no pid was recorded)."""
    for kind in kinds:
        job = kind.find(flow_run_id, None)
        if job is not None:
            return job
    return None


def close_kinds(kinds: Sequence[Infrastructure]) -> None:
    """Let go of what the kinds hold open (the Docker kind's connection to its daemon), for a
    kind that has a `close`; runs they started are not touched (containers outlive agents)."""
    for kind in kinds:
        close = getattr(kind, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - a stop goes on whatever one kind says
                log.warning("closing the %s kind failed: %s", kind.kind, exc)
