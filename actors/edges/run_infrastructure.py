"""What a run's infrastructure is made from, read from the server: its deployment, the
deployment's infrastructure block (or, on Prefect 3, the work pool and its job template), as a
`RunSource` that the run's kind (`actors.edges.kinds`) turns into a spec (`prepare`).

It blocks on the server, so the RunSupervisor calls it from the call pool, never its inbox.
"""

from __future__ import annotations

from actors.edges.api_interface import PrefectApiInterface
from actors.edges.infrastructure import RunSource
from actors.edges.prefect_api import NotFoundError
from actors.rules.infrastructure import SubmissionError
from messages.wire.prefect import BlockDocument, Deployment, FlowRun


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
