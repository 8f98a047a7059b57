"""What a run's process needs from the server: its deployment, the deployment's infrastructure
block (or, on Prefect 3, the pool's job template), read through the API edge and turned into a
`ProcessSpec` by the pure rules of `actors.rules.infrastructure`.

It blocks on the server, so the RunSupervisor calls it from the call pool, never its inbox.
"""

from __future__ import annotations

from actors.edges.api_interface import PrefectApiInterface
from actors.edges.prefect_api import NotFoundError
from actors.rules.infrastructure import ProcessSpec, SubmissionError, process_spec
from messages.wire.prefect import BlockDocument, Deployment, FlowRun


def resolve_process_spec(
    api: PrefectApiInterface, flow_run: FlowRun, *, api_url: str, api_key: str | None
) -> ProcessSpec:
    """Deployment -> infrastructure block -> overrides -> argv and environment; the run's
    process is told the server's `api_url` and `api_key` (those the agent itself uses).

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
    return process_spec(
        flow_run,
        deployment,
        block,
        api_url=api_url,
        api_key=api_key,
        job_variables=job_variables,
        pool=pool,
    )
