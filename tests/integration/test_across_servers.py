"""The core of the agent against both servers it serves: Prefect 2.20 and Prefect 3.x.

Execution, the limit, a crash, a submission failure and cancellation, each run by the real
engine of the server's own version: on 2.20 a deployment with a Process block and dotted
overrides, served by queue; on 3.x a deployment on a pool of type `process` whose job
variables (env, command, working_dir) say how its runs start, served with `--pool`.

2.20 runs twice: on its default SQLite database (`2.20`) and on a real PostgreSQL server
(`2.20-postgres`, examples/harness/postgres.py), as production servers run.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from actors.launcher.local_server import LocalPrefectServer
from examples.harness import prefect3
from tests.conftest import AgentFactory
from tests.integration.helpers import FINAL, FLOWS, history, process_gone
from tests.support.prefect_objects import (
    call_api,
    create_run,
    deploy,
    read_marker,
    read_run,
    run_state,
    set_run_state,
    wait_for,
)
from tests.support.served import BaseServed

pytestmark = pytest.mark.integration

FINISHED = "prefect_agent_runs_finished_total"  # by outcome (messages/user/events.py)

POOL = "agent-tests"  # the 3.x process pool every 3.x test deploys to


class Served(BaseServed):
    """One server and how to make deployments and runs on it, as its users do."""

    pool = POOL

    def deploy(
        self,
        flow: str,
        *,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        concurrency_limit: int | None = None,
    ) -> str:
        name = f"{flow}-{self.queue}"
        if self.version == "2.20":
            overrides = {f"env.{key}": value for key, value in (env or {}).items()}
            return deploy(
                self.api_url,
                FLOWS / f"{flow}.py",
                flow,
                name=name,
                work_queue=self.queue,
                command=command,
                infra_overrides=overrides,
            )
        engine = command or [str(prefect3.PYTHON), "-m", "prefect.engine"]
        return self.deploy_on_pool(
            flow,
            name=name,
            entrypoint=f"{flow}.py:{flow}",
            directory=FLOWS,
            command=" ".join(engine),
            env=env or {},
            concurrency_limit=concurrency_limit,
        )

    def run(
        self,
        deployment: str,
        parameters: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        if self.version == "2.20" or env is None:
            return create_run(self.api_url, deployment, parameters=parameters)
        body = {"parameters": parameters or {}, "job_variables": {"env": env}}
        created = call_api(self.api_url, "POST", f"/deployments/{deployment}/create_flow_run", body)
        return str(created["id"])


@pytest.fixture(params=["2.20", "2.20-postgres", "3.x"])
def served(request: pytest.FixtureRequest) -> Served:
    # Each server is asked for only when a test runs on it (each starts on first use).
    if request.param == "2.20":
        return Served("2.20", request.getfixturevalue("api_url"))
    if request.param == "2.20-postgres":
        # The same version, so the same deployments and expectations: only the database differs.
        return Served("2.20", request.getfixturevalue("postgres_api_url"))
    return Served.on_3x(request.getfixturevalue("prefect3_server"))


@pytest.fixture
def served_3x(prefect3_server: LocalPrefectServer) -> Served:
    return Served.on_3x(prefect3_server)


def _state(served: Served, run: str) -> str:
    return run_state(served.api_url, run)[0]


def _ended(served: Served, runs: list[str]) -> bool:
    return all(_state(served, run) in FINAL for run in runs)


def test_runs_complete_with_pid_and_environment(
    served: Served, library_agent: AgentFactory, markers: Path
) -> None:
    deployment = served.deploy("hello", env={"GREETING": "from the deployment", "KEPT": "yes"})
    params = {"marker_dir": str(markers), "env_name": "GREETING"}
    plain = served.run(deployment, params)
    # On 3.x a run's own job variables win over the deployment's, name by name.
    override = served.run(deployment, params, env={"GREETING": "from the run"})

    agent = library_agent(**served.agent_options())

    wait_for(lambda: _ended(served, [plain, override]), 120, "both runs to end")
    assert _state(served, plain) == _state(served, override) == "COMPLETED"
    for run in (plain, override):
        pid = read_marker(markers, run, "start")["pid"]
        recorded = read_run(served.api_url, run)["infrastructure_pid"]
        assert recorded == f"{socket.gethostname()}:{pid}"
    assert read_marker(markers, plain, "env")["value"] == "from the deployment"
    expected = "from the run" if served.version == "3.x" else "from the deployment"
    assert read_marker(markers, override, "env")["value"] == expected
    wanted = "3." if served.version == "3.x" else "2.20."
    # Which server the agent takes this one for shows only in its log (no metric or tree field).
    assert f"serving Prefect server {wanted}" in agent.logs()


def test_limit_holds_runs_back(served: Served, library_agent: AgentFactory, markers: Path) -> None:
    deployment = served.deploy("hello")
    runs = [served.run(deployment, {"marker_dir": str(markers), "sleep": 1.0}) for _ in range(2)]

    library_agent(**served.agent_options(), limit=1)

    wait_for(lambda: _ended(served, runs), 180, "both runs to end")
    assert {_state(served, run) for run in runs} == {"COMPLETED"}
    spans = sorted(
        (read_marker(markers, run, "start")["time"], read_marker(markers, run, "end")["time"])
        for run in runs
    )
    assert spans[1][0] >= spans[0][1], f"runs overlapped under --limit 1: {spans}"


def test_nonzero_exit_is_crashed(served: Served, library_agent: AgentFactory) -> None:
    run = served.run(served.deploy("crash"), {"code": 3})

    agent = library_agent(**served.agent_options())

    wait_for(lambda: _ended(served, [run]), 120, "the crashing run to end")
    type_, _, message = run_state(served.api_url, run)
    assert type_ == "CRASHED"
    assert message is not None and "non-zero status code 3" in message
    wait_for(lambda: agent.metric(FINISHED, outcome="crashed") == 1, 10, "the crash counted")


def test_missing_command_fails_that_run(served: Served, library_agent: AgentFactory) -> None:
    missing = f"/nonexistent/{uuid.uuid4().hex[:6]}/python"
    run = served.run(served.deploy("hello", command=[missing, "-m", "prefect.engine"]))

    agent = library_agent(**served.agent_options())

    wait_for(lambda: _ended(served, [run]), 60, "the run to fail")
    type_, _, message = run_state(served.api_url, run)
    assert type_ == "FAILED"
    assert message is not None and missing in message and "was not found" in message
    wait_for(lambda: agent.metric(FINISHED, outcome="failed") == 1, 10, "the failure counted")


def test_cancelling_kills_the_process(
    served: Served, library_agent: AgentFactory, markers: Path
) -> None:
    run = served.run(served.deploy("hello"), {"marker_dir": str(markers), "sleep": 120.0})

    library_agent(**served.agent_options(), cancel_grace_seconds=5.0)

    started = wait_for(lambda: read_marker(markers, run, "start"), 120, "the flow to start")
    set_run_state(served.api_url, run, "CANCELLING", "Cancelling")

    wait_for(lambda: _state(served, run) == "CANCELLED", 60, "the run to be Cancelled")
    wait_for(lambda: process_gone(started["pid"]), 15, "the flow process to be gone")


def test_deployment_concurrency_slot_wait_is_not_an_error(
    served_3x: Served, library_agent: AgentFactory, markers: Path
) -> None:
    """Prefect 3 refuses Pending while the deployment's limit is taken (AwaitingConcurrencySlot):
    the run stays Scheduled for a later poll, and nothing is reported as failed."""
    served = served_3x
    deployment = served.deploy("hello", concurrency_limit=1)
    runs = [served.run(deployment, {"marker_dir": str(markers), "sleep": 2.0}) for _ in range(2)]

    agent = library_agent(**served.agent_options())

    wait_for(lambda: _ended(served, runs), 180, "both runs to end, one after the other")
    assert {_state(served, run) for run in runs} == {"COMPLETED"}
    # One of them waited for the slot: the server put it in AwaitingConcurrencySlot, and the
    # agent let it be (deferred, taken again later), failing nothing.
    waited = [
        run
        for run in runs
        if "AwaitingConcurrencySlot" in {s["name"] for s in history(served.api_url, run)}
    ]
    assert waited, [history(served.api_url, run) for run in runs]
    assert agent.metric(FINISHED, outcome="deferred") >= 1
    assert agent.metric(FINISHED, outcome="failed") == 0
    assert agent.metric(FINISHED, outcome="crashed") == 0
