"""From deployment + block + overrides to the process spec; every bad input has a clear error."""

import os
import sys

import pytest

from actors.rules.infrastructure import (
    SubmissionError,
    apply_overrides,
    job_variables_block,
    process_block,
    process_spec,
    run_environment,
)
from messages.wire.prefect import BlockDocument, BlockTypeRef, Deployment, FlowRun, WorkPool

RUN = FlowRun(id="run-1")
PROCESS = BlockTypeRef(slug="process")


def block(**data: object) -> BlockDocument:
    return BlockDocument(
        id="b", name="my-process", data={"type": "process", **data}, block_type=PROCESS
    )


def test_dotted_override_sets_a_nested_value_on_a_copy() -> None:
    data = {"env": {"A": "1"}, "command": None}
    result = apply_overrides(data, {"env.B": "2", "working_dir": "/tmp"})
    assert result == {"env": {"A": "1", "B": "2"}, "command": None, "working_dir": "/tmp"}
    assert data == {"env": {"A": "1"}, "command": None}


def test_override_creates_missing_mapping() -> None:
    assert apply_overrides({}, {"env.X": "y"}) == {"env": {"X": "y"}}


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("nonsense.field", "no field 'nonsense'"),
        ("env..X", "empty part"),
        ("working_dir.sub", "'working_dir' is a str, not a mapping"),
    ],
)
def test_bad_override_path_is_a_submission_error(override: str, words: str) -> None:
    with pytest.raises(SubmissionError, match=words):
        apply_overrides({"working_dir": "/tmp"}, {override: "v"})


def test_unknown_infrastructure_type_is_named() -> None:
    docker = BlockDocument(
        id="d", name="dock", data={"image": "x"}, block_type=BlockTypeRef(slug="docker-container")
    )
    with pytest.raises(SubmissionError, match=r"type 'docker-container'.*cannot run"):
        process_block(docker, {})


def test_override_of_wrong_type_is_a_submission_error() -> None:
    with pytest.raises(SubmissionError, match="invalid Process infrastructure"):
        process_block(block(), {"command": "echo hi"})


def test_environment_layers_like_the_official_agent() -> None:
    env = run_environment(
        RUN,
        {"KEEP": "block", "DROP": None},
        "http://api",
        "secret",
        base={"KEEP": "os", "DROP": "os", "OTHER": "os"},
    )
    assert env == {
        "KEEP": "block",
        "OTHER": "os",
        "PREFECT_API_URL": "http://api",
        "PREFECT_API_KEY": "secret",
        "PREFECT__FLOW_RUN_ID": "run-1",
        "PREFECT_ACTOR_AGENT_PID": str(os.getpid()),
    }


def test_default_process_runs_the_prefect_engine() -> None:
    spec = process_spec(
        RUN, None, None, api_url="http://api", api_key=None, base_env={"PATH": "/usr/bin"}
    )
    assert spec.command == (sys.executable, "-m", "prefect.engine")
    assert spec.working_dir is None
    assert "PREFECT_API_KEY" not in spec.env


def test_deployment_overrides_apply_to_the_block() -> None:
    deployment = Deployment(id="d", infra_overrides={"env.FOO": "bar"})
    spec = process_spec(
        RUN,
        deployment,
        block(env={"A": "1"}),
        api_url="u",
        api_key=None,
        base_env={"PATH": "/usr/bin"},
    )
    assert spec.env["FOO"] == "bar"
    assert spec.env["A"] == "1"


def test_job_variables_win_over_infra_overrides() -> None:
    deployment = Deployment(
        id="d", infra_overrides={"env.FOO": "old"}, job_variables={"env.FOO": "new"}
    )
    assert deployment.overrides == {"env.FOO": "new"}


def test_missing_command_is_a_submission_error() -> None:
    with pytest.raises(SubmissionError, match="'no-such-command-xyz' was not found"):
        process_spec(
            RUN,
            None,
            block(command=["no-such-command-xyz"]),
            api_url="u",
            api_key=None,
            base_env={"PATH": "/usr/bin"},
        )


def test_missing_working_dir_is_a_submission_error() -> None:
    with pytest.raises(SubmissionError, match="working directory '/no/such/dir' does not exist"):
        process_spec(
            RUN,
            None,
            block(command=["true"], working_dir="/no/such/dir"),
            api_url="u",
            api_key=None,
            base_env={"PATH": "/usr/bin:/bin"},
        )


def _pool(**variables: object) -> WorkPool:
    properties = {name: {"default": value} for name, value in variables.items()}
    return WorkPool(
        id="p", name="pool", base_job_template={"variables": {"properties": properties}}
    )


def test_prefect3_job_variables_layer_pool_deployment_and_run() -> None:
    pool = _pool(env={"A": "pool", "B": "pool"}, command="python -m prefect.engine")
    deployment = Deployment(id="d", job_variables={"env": {"B": "deployment", "C": "d"}})
    run = FlowRun(id="r", job_variables={"env": {"C": "run"}, "working_dir": "/srv/flows"})
    fields = job_variables_block(run, deployment, pool)
    assert fields.env == {"A": "pool", "B": "deployment", "C": "run"}
    assert fields.command == ["python", "-m", "prefect.engine"]
    assert fields.working_dir == "/srv/flows"


def test_prefect3_command_string_is_split_without_a_shell() -> None:
    deployment = Deployment(id="d", job_variables={"command": "run 'a b' ; rm -rf /"})
    fields = job_variables_block(FlowRun(id="r"), deployment, None)
    assert fields.command == ["run", "a b", ";", "rm", "-rf", "/"]


@pytest.mark.parametrize(
    ("job_variables", "words"),
    [
        ({"env": ["A=1"]}, "job variable env must be a mapping"),
        ({"command": "run 'unclosed"}, "cannot be split"),
        ({"command": 42}, "invalid job variables for a process"),
    ],
)
def test_bad_prefect3_job_variables_are_submission_errors(
    job_variables: dict[str, object], words: str
) -> None:
    with pytest.raises(SubmissionError, match=words):
        job_variables_block(FlowRun(id="r", job_variables=job_variables), None, None)


def test_prefect3_deployments_without_a_block_use_job_variables() -> None:
    deployment = Deployment(id="d", job_variables={"env": {"X": "1"}, "command": "true"})
    spec = process_spec(
        RUN, deployment, None, api_url="http://x/api", api_key=None, job_variables=True
    )
    assert spec.command == ("true",)
    assert spec.env["X"] == "1"
    assert spec.env["PREFECT__FLOW_RUN_ID"] == RUN.id
