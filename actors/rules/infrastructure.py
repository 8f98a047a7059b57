"""From a deployment's infrastructure block to the exact process a flow run starts as.

Two sources, by server: on Prefect 2 a deployment names a Process infrastructure block and
`infra_overrides` change its fields by dotted path ("env.NAME"); on Prefect 3 there are no
blocks, and the process pool's job variables (env, command, working_dir) come in layers: the
pool's template defaults, the deployment's `job_variables`, the run's own `job_variables`.

All of this is pure: the RunSupervisor fetches the deployment and the block, then the Process
kind of infrastructure (`actors.edges.process_kind`) asks these functions what to run. Every
way the inputs can be wrong raises `SubmissionError` with a message that names the problem,
so the run is Failed with a reason a user can fix and the agent carries on with every other
run.
"""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import msgspec

from messages.wire.prefect import BlockDocument, Deployment, FlowRun, ProcessBlock, WorkPool

_PROCESS_FIELDS = frozenset(
    {"type", "command", "env", "working_dir", "stream_output", "name", "labels", "block_type_slug"}
)


class SubmissionError(RuntimeError):
    """A run cannot be started as configured; the message says why."""


class ProcessSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Exactly how one flow run's process is started (an argv list: no shell is involved)."""

    command: tuple[str, ...]
    env: dict[str, str]
    working_dir: str | None  # None: a fresh temporary directory, removed after the exit
    stream_output: bool = True


def default_command() -> tuple[str, ...]:
    """The Prefect engine, in this interpreter's environment, as the official agent runs it."""
    return (sys.executable, "-m", "prefect.engine")


def apply_overrides(
    data: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    fields: frozenset[str] = _PROCESS_FIELDS,
    kind: str = "Process",
) -> dict[str, Any]:
    """Apply `infra_overrides` such as {"env.NAME": "x"} to a copy of the block's fields.

    A dotted path walks nested mappings; the last part is set. A path whose first part is not
    one of `fields` (a Process block's, unless another kind names its own), or that walks
    through something that is not a mapping, is an error.
    """
    result = copy.deepcopy(dict(data))
    for path, value in overrides.items():
        parts = path.split(".")
        if not all(parts):
            raise SubmissionError(f"infra_overrides path {path!r} has an empty part")
        if parts[0] not in fields:
            known = ", ".join(sorted(fields - {"block_type_slug"}))
            raise SubmissionError(
                f"infra_overrides path {path!r}: {kind} infrastructure has no field "
                f"{parts[0]!r} (fields: {known})"
            )
        node: Any = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                walked = ".".join(parts[: depth + 1])
                raise SubmissionError(
                    f"infra_overrides path {path!r}: {walked!r} is a "
                    f"{type(child).__name__}, not a mapping, "
                    f"so it has no field {parts[depth + 1]!r}"
                )
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return result


def process_block(block: BlockDocument | None, overrides: Mapping[str, Any]) -> ProcessBlock:
    """The Process fields for a run: the block's (or the defaults), with overrides applied."""
    data: dict[str, Any] = dict(block.data) if block is not None else {"type": "process"}
    kind = str(data.get("type") or (block.block_type.slug if block and block.block_type else ""))
    if kind != "process":  # the kind was chosen by type (`actors.edges.kinds`): a bug
        name = f" {block.name!r}" if block is not None and block.name else ""
        raise SubmissionError(
            f"infrastructure block{name} is of type {kind!r}, which the Process kind cannot run"
        )
    merged = apply_overrides(data, overrides)
    try:
        return msgspec.convert(merged, ProcessBlock)
    except msgspec.ValidationError as exc:
        raise SubmissionError(f"invalid Process infrastructure: {exc}") from exc


JOB_VARIABLES = ("env", "command", "working_dir", "stream_output")


def template_defaults(
    pool: WorkPool | None, names: Collection[str] = JOB_VARIABLES
) -> dict[str, Any]:
    """The defaults a pool's base job template gives the job variables `names` (those this
    agent applies for the pool's kind)."""
    if pool is None:
        return {}
    variables = pool.base_job_template.get("variables")
    properties = variables.get("properties") if isinstance(variables, dict) else None
    if not isinstance(properties, dict):
        return {}
    defaults: dict[str, Any] = {}
    for name in names:
        spec = properties.get(name)
        if isinstance(spec, dict) and spec.get("default") is not None:
            defaults[name] = spec["default"]
    return defaults


def merge_job_variables(
    layers: Sequence[tuple[str, Mapping[str, Any]]],
    known: Collection[str] | None = None,
    kind: str = "",
) -> dict[str, Any]:
    """A run's job variables from their layers, lowest first (the pool's template defaults,
    the deployment's, the run's), as Prefect's workers layer them: a higher layer replaces a
    variable of a lower one, except `env`, merged name by name. With `known`, a layer naming
    a variable a pool of `kind` does not have is an error that names the layer."""
    merged: dict[str, Any] = {}
    env: dict[str, Any] = {}
    for where, layer in layers:
        unknown = sorted(set(layer) - set(known)) if known is not None else []
        if unknown:
            raise SubmissionError(
                f"the {where}'s job variables name variables a {kind} does not have: "
                f"{', '.join(unknown)}"
            )
        merged.update(layer)
        layer_env = layer.get("env")
        if layer_env is not None and not isinstance(layer_env, dict):
            raise SubmissionError(
                "job variable env must be a mapping of names to values, "
                f"got {type(layer_env).__name__}: {layer_env!r}"
            )
        env.update(layer_env or {})
    merged["env"] = env
    return merged


def job_variables_block(
    flow_run: FlowRun, deployment: Deployment | None, pool: WorkPool | None
) -> ProcessBlock:
    """Prefect 3: the Process fields from the pool's defaults, the deployment's job variables
    and the run's, as Prefect's own process worker layers them: a higher layer replaces a
    variable of a lower one, except `env`, which is merged name by name."""
    layers: list[tuple[str, Mapping[str, Any]]] = [("template", template_defaults(pool))]
    if deployment is not None:
        layers.append(("deployment", deployment.job_variables or {}))
    layers.append(("flow run", flow_run.job_variables or {}))
    merged = merge_job_variables(layers)
    env = merged["env"]
    fields: dict[str, Any] = {"type": "process"}
    command = merged.get("command")
    if isinstance(command, str):
        try:
            fields["command"] = shlex.split(command) or None
        except ValueError as exc:
            raise SubmissionError(
                f"job variable command {command!r} cannot be split: {exc}"
            ) from None
    elif command is not None:
        fields["command"] = command
    fields["env"] = {name: None if value is None else str(value) for name, value in env.items()}
    for name in ("working_dir", "stream_output"):
        if merged.get(name) is not None:
            fields[name] = merged[name]
    try:
        return msgspec.convert(fields, ProcessBlock)
    except msgspec.ValidationError as exc:
        raise SubmissionError(f"invalid job variables for a process: {exc}") from exc


def run_environment(
    flow_run: FlowRun,
    block_env: Mapping[str, str | None],
    api_url: str,
    api_key: str | None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The run's environment, layered as the official agent does; a null value unsets a name."""
    layered: dict[str, str | None] = dict(os.environ if base is None else base)
    layered["PREFECT_API_URL"] = api_url
    if api_key:
        layered["PREFECT_API_KEY"] = api_key
    layered["PREFECT__FLOW_RUN_ID"] = flow_run.id
    # Names the agent that started the process, so a restarted agent can tell its own
    # orphans from the runs of another agent alive on this host.
    layered["PREFECT_ACTOR_AGENT_PID"] = str(os.getpid())
    layered.update(block_env)
    return {name: value for name, value in layered.items() if value is not None}


def process_spec(
    flow_run: FlowRun,
    deployment: Deployment | None,
    block: BlockDocument | None,
    *,
    api_url: str,
    api_key: str | None,
    base_env: Mapping[str, str] | None = None,
    job_variables: bool = False,
    pool: WorkPool | None = None,
) -> ProcessSpec:
    """Everything needed to start the run's process, checked before anything is started.

    `job_variables` (a Prefect 3 server, a deployment without a block) takes the fields from
    the job variables of `pool`, the deployment and the run instead of a block.
    """
    if job_variables and block is None:
        fields = job_variables_block(flow_run, deployment, pool)
    else:
        overrides = deployment.overrides if deployment is not None else {}
        fields = process_block(block, overrides)
    env = run_environment(flow_run, fields.env, api_url, api_key, base_env)
    command = tuple(fields.command) if fields.command else default_command()
    if not all(isinstance(part, str) and part for part in command):
        raise SubmissionError(f"infrastructure command {list(command)!r} has an empty part")
    if shutil.which(command[0], path=env.get("PATH")) is None:
        raise SubmissionError(
            f"command {command[0]!r} was not found (PATH={env.get('PATH', '')!r})"
        )
    if fields.working_dir is not None and not os.path.isdir(fields.working_dir):
        raise SubmissionError(f"working directory {fields.working_dir!r} does not exist")
    return ProcessSpec(
        command=command,
        env=env,
        working_dir=fields.working_dir,
        stream_output=fields.stream_output,
    )
