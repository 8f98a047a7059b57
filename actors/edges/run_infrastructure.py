"""What a run's infrastructure is made from, read from the server: its deployment, the
deployment's infrastructure block (or, on Prefect 3, the work pool and its job template), as a
`RunSource` that the run's kind (`actors.edges.kinds`) turns into a spec (`prepare`).

On Prefect 3, block documents the job variables name (`{"$ref": {"block_document_id": ..}}`,
as a docker pool's registry credentials are given) are read here and put in place of their
references, as Prefect's workers do, in each layer: the pool's template defaults, the
deployment's job variables, the run's.

It blocks on the server, so the RunSupervisor calls it from the call pool, never its inbox.
"""

from __future__ import annotations

from typing import Any

import msgspec

from actors.edges.api_interface import PrefectApiInterface
from actors.edges.infrastructure import RunSource
from actors.edges.prefect_api import NotFoundError
from actors.rules.block_references import references, resolve
from actors.rules.infrastructure import SubmissionError
from messages.wire.prefect import BlockDocument, Deployment, FlowRun, WorkPool


def read_run_source(
    api: PrefectApiInterface,
    flow_run: FlowRun,
    *,
    api_url: str,
    api_key: str | None,
    worker_name: str,
) -> RunSource:
    """The run's deployment, its block (2.x) or its pool (3.x); the run's infrastructure is
    told the server's `api_url` and `api_key` (those the agent itself uses).

    Raises `SubmissionError` when what the run names no longer exists (the run then fails with
    that reason), `ApiError` or `ApiDecodeError` when the server does not answer well."""
    deployment: Deployment | None = None
    block: BlockDocument | None = None
    if flow_run.deployment_id:
        try:
            deployment = api.read_deployment(flow_run.deployment_id)
        except NotFoundError:
            raise SubmissionError(f"deployment {flow_run.deployment_id} no longer exists") from None
    if deployment is not None and deployment.infrastructure_document_id:
        try:
            block = api.read_block_document(deployment.infrastructure_document_id)
        except NotFoundError:
            raise SubmissionError(
                f"infrastructure block document {deployment.infrastructure_document_id} "
                f"of deployment {deployment.name!r} no longer exists"
            ) from None
    job_variables = block is None and api.server_profile().job_variables_style
    pool = None
    if job_variables and deployment is not None and deployment.work_pool_name:
        pool = api.read_work_pool(deployment.work_pool_name)
    if job_variables:
        flow_run, deployment, pool = _with_blocks(api, flow_run, deployment, pool)
    return RunSource(
        flow_run=flow_run,
        deployment=deployment,
        block=block,
        pool=pool,
        job_variables=job_variables,
        api_url=api_url,
        api_key=api_key,
        worker_name=worker_name,
    )


def _template_defaults(pool: WorkPool) -> dict[str, Any]:
    variables = pool.base_job_template.get("variables")
    properties = variables.get("properties") if isinstance(variables, dict) else None
    if not isinstance(properties, dict):
        return {}
    return {
        name: spec["default"]
        for name, spec in properties.items()
        if isinstance(spec, dict) and spec.get("default") is not None
    }


def _with_pool_defaults(pool: WorkPool, defaults: dict[str, Any]) -> WorkPool:
    template = dict(pool.base_job_template)
    variables = dict(template["variables"])
    properties = dict(variables["properties"])
    for name, value in defaults.items():
        properties[name] = {**properties[name], "default": value}
    variables["properties"] = properties
    template["variables"] = variables
    return msgspec.structs.replace(pool, base_job_template=template)


def _with_blocks(
    api: PrefectApiInterface,
    flow_run: FlowRun,
    deployment: Deployment | None,
    pool: WorkPool | None,
) -> tuple[FlowRun, Deployment | None, WorkPool | None]:
    """The three layers of job variables with the block documents they name in place (each
    read once, with its secrets); unchanged when they name none."""
    defaults = _template_defaults(pool) if pool is not None else {}
    layers = [defaults, flow_run.job_variables or {}]
    if deployment is not None:
        layers.append(deployment.job_variables or {})
    wanted = set().union(*(references(layer) for layer in layers))
    if not wanted:
        return flow_run, deployment, pool
    documents: dict[str, dict[str, Any]] = {}
    for block_id in sorted(wanted):
        try:
            documents[block_id] = dict(api.read_block_document(block_id).data)
        except NotFoundError:
            raise SubmissionError(
                f"the job variables name block document {block_id}, which does not exist"
            ) from None
    if flow_run.job_variables:
        flow_run = msgspec.structs.replace(
            flow_run, job_variables=resolve(flow_run.job_variables, documents)
        )
    if deployment is not None and deployment.job_variables:
        deployment = msgspec.structs.replace(
            deployment, job_variables=resolve(deployment.job_variables, documents)
        )
    if pool is not None and references(defaults):
        pool = _with_pool_defaults(pool, resolve(defaults, documents))
    return flow_run, deployment, pool
