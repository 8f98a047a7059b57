"""From a DockerContainer block or a docker pool's job variables to the container's spec:
Prefect's rules (image, pull policy, network, labels, name, env), and a clear error for each
way the input can be wrong. No daemon: what it would say is an argument."""

from __future__ import annotations

from typing import Any

import pytest

from actors.rules.docker_spec import (
    DEFAULT_COMMAND,
    DockerSpec,
    container_name,
    default_pull_policy,
    docker_label_key,
    docker_spec,
    format_container_pid,
    image_tag,
    memory_bytes,
    memory_text,
    parse_container_pid,
)
from actors.rules.infrastructure import SubmissionError
from messages.wire.prefect import BlockDocument, BlockTypeRef, Deployment, FlowRun, WorkPool

RUN = FlowRun(id="run-1", name="  _crafty lemur/42!!", flow_id="flow-1")
DEPLOYMENT = Deployment(id="dep-1", name="nightly")
AGENT_ENV = {"PREFECT_HOME": "/agent/home", "PATH": "/agent/bin", "SECRET": "s3cr3t"}
LOCAL_API = "http://127.0.0.1:4200/api"


def block(**data: Any) -> BlockDocument:
    return BlockDocument(
        id="b",
        name="dock",
        data={"type": "docker-container", **data},
        block_type=BlockTypeRef(slug="docker-container"),
    )


def from_block(
    data: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    api_url: str = LOCAL_API,
    daemon_os: str = "linux",
    prefect_version: str | None = "2.20.27",
) -> DockerSpec:
    deployment = Deployment(id="dep-1", name="nightly", infra_overrides=overrides)
    return docker_spec(
        RUN,
        deployment,
        block(**(data or {})),
        api_url=api_url,
        api_key="key-1",
        worker_name="agent-a",
        agent_env=AGENT_ENV,
        daemon_os=daemon_os,
        prefect_version=prefect_version,
        python=(3, 11),
    )


def from_pool(
    template: dict[str, Any] | None = None,
    deployment_vars: dict[str, Any] | None = None,
    run_vars: dict[str, Any] | None = None,
    *,
    api_url: str = LOCAL_API,
) -> DockerSpec:
    properties = {name: {"default": value} for name, value in (template or {}).items()}
    pool = WorkPool(
        id="p",
        name="docker-pool",
        type="docker",
        base_job_template={"variables": {"properties": properties}},
    )
    run = FlowRun(id="run-1", name="crafty-lemur", job_variables=run_vars)
    deployment = Deployment(id="dep-1", name="nightly", job_variables=deployment_vars)
    return docker_spec(
        run,
        deployment,
        None,
        api_url=api_url,
        api_key=None,
        worker_name="agent-a",
        agent_env=AGENT_ENV,
        daemon_os="linux",
        prefect_version="3.1.0",
        python=(3, 12),
        job_variables=True,
        pool=pool,
    )


# -- a 2.x block ---------------------------------------------------------------------------


def test_a_block_with_every_field_and_overrides() -> None:
    spec = from_block(
        {
            "image": "repo/flow:1.2",
            "image_pull_policy": "ALWAYS",
            "networks": ["net-a", "net-b"],
            "auto_remove": True,
            "volumes": ["/data:/data:ro"],
            "stream_output": False,
            "mem_limit": "64m",
            "memswap_limit": -1,
            "privileged": True,
            "env": {"A": "1", "PREFECT_HOME": None},
            "labels": {"team/x": "1", "prefect.io/owner": "me"},
            "name": None,
            "command": ["python", "flow.py"],
        },
        {"env.B": "2", "mem_limit": "1g"},
    )
    assert spec.image == "repo/flow:1.2"
    assert spec.pull_policy == "Always"
    assert spec.networks == ("net-a", "net-b")
    assert spec.network_mode is None  # networks given
    assert spec.auto_remove
    assert spec.binds == ("/data:/data:ro",)
    assert not spec.stream_output
    assert spec.mem_limit == 1024**3
    assert spec.mem_limit_text == "1g"
    assert spec.memswap_limit == -1
    assert spec.privileged
    assert spec.command == ("python", "flow.py")
    assert spec.env["A"] == "1"
    assert spec.env["B"] == "2"
    assert "PREFECT_HOME" not in spec.env  # null unsets what the agent had
    assert spec.labels["team.x"] == "1"
    assert spec.labels["io.prefect.owner"] == "me"
    assert spec.name == "crafty-lemur-42"


def test_the_defaults_follow_prefect() -> None:
    spec = from_block()
    assert spec.image == "prefecthq/prefect:2.20.27-python3.11"
    assert spec.pull_policy == "IfNotPresent"
    assert spec.command == DEFAULT_COMMAND == ("python", "-m", "prefect.engine")
    assert spec.stream_output
    assert not spec.auto_remove
    assert spec.mem_limit is None
    assert spec.registry is None


def test_labels_name_the_run_and_win_over_the_users() -> None:
    spec = from_block({"labels": {"prefect.io/flow-run-id": "forged", "team": "data"}})
    assert spec.labels == {
        "io.prefect.flow-run-id": "run-1",
        "io.prefect.flow-run-name": RUN.name,
        "io.prefect.flow-id": "flow-1",
        "io.prefect.deployment-id": "dep-1",
        "io.prefect.deployment-name": "nightly",
        "io.prefect.worker-name": "agent-a",
        "io.prefect.version": "2.20.27",
        "team": "data",
    }


def test_env_is_the_agents_prefect_settings_only() -> None:
    spec = from_block({"env": {"EXTRA": "x"}})
    assert spec.env == {
        "PREFECT_HOME": "/agent/home",
        "PREFECT_API_URL": LOCAL_API,  # host network: the loopback URL works as it is
        "PREFECT_API_KEY": "key-1",
        "PREFECT__FLOW_RUN_ID": "run-1",
        "EXTRA": "x",
    }


@pytest.mark.parametrize(
    ("url", "daemon_os", "mode", "extra_hosts", "container_url"),
    [
        (LOCAL_API, "linux", "host", None, LOCAL_API),
        ("http://localhost:4200/api", "linux", "host", None, "http://localhost:4200/api"),
        (
            LOCAL_API,
            "windows",
            None,
            None,
            "http://host.docker.internal:4200/api",
        ),
        (
            "http://prefect.example:4200/api",
            "linux",
            None,
            {"host.docker.internal": "host-gateway"},
            "http://prefect.example:4200/api",
        ),
    ],
)
def test_the_network_rule(
    url: str,
    daemon_os: str,
    mode: str | None,
    extra_hosts: dict[str, str] | None,
    container_url: str,
) -> None:
    spec = from_block(api_url=url, daemon_os=daemon_os)
    assert spec.network_mode == mode
    assert spec.extra_hosts == extra_hosts
    assert spec.env["PREFECT_API_URL"] == container_url


def test_a_bridge_network_rewrites_a_loopback_api_url() -> None:
    spec = from_block({"network_mode": "bridge"})
    assert spec.network_mode == "bridge"
    assert spec.extra_hosts == {"host.docker.internal": "host-gateway"}
    assert spec.env["PREFECT_API_URL"] == "http://host.docker.internal:4200/api"


def test_the_users_api_url_is_kept() -> None:
    spec = from_block({"network_mode": "bridge", "env": {"PREFECT_API_URL": LOCAL_API}})
    assert spec.env["PREFECT_API_URL"] == LOCAL_API


def test_a_nested_registry_block() -> None:
    registry = {
        "username": "u",
        "password": "p",
        "registry_url": "127.0.0.1:5000",
        "reauth": False,
        "block_type_slug": "docker-registry",
    }
    spec = from_block({"image_registry": registry})
    assert spec.registry is not None
    assert (spec.registry.username, spec.registry.password) == ("u", "p")
    assert spec.registry.registry_url == "127.0.0.1:5000"
    assert "p" not in repr(spec.registry).replace("username", "").replace("registry_url", "")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"volumes": ["/no-colon"]}, "Invalid volume specification"),
        ({"mem_limit": "12x"}, "mem_limit '12x' is not a size"),
        ({"colour": "blue"}, "fields this agent does not know: colour"),
        ({"image_pull_policy": "Always"}, "image_pull_policy 'Always' is not one of ALWAYS"),
        ({"image_registry": {"$ref": {"block_document_id": "x"}}}, "not resolved"),
        ({"image_registry": {"username": "u", "password": "********"}}, "hidden"),
        ({"image_registry": {"username": "u"}}, "invalid image_registry"),
        (
            {"image_registry": "{{ prefect.blocks.docker-registry.mine }}"},
            "a template this agent does not fill in; name the registry block as",
        ),
        ({"privileged": "yes"}, "privileged must be true or false"),
    ],
)
def test_bad_block_input_is_a_submission_error(data: dict[str, Any], words: str) -> None:
    with pytest.raises(SubmissionError, match=words):
        from_block(data)


def test_an_override_of_an_unknown_field_is_a_submission_error() -> None:
    with pytest.raises(SubmissionError, match="DockerContainer infrastructure has no field"):
        from_block({}, {"working_dir": "/tmp"})


def test_a_block_of_another_type_is_refused() -> None:
    other = BlockDocument(id="b", name="proc", data={"type": "process"})
    with pytest.raises(SubmissionError, match="not 'docker-container'"):
        docker_spec(
            RUN,
            DEPLOYMENT,
            other,
            api_url=LOCAL_API,
            api_key=None,
            worker_name="a",
            agent_env={},
            daemon_os="linux",
            prefect_version="2.20.27",
        )


def test_no_image_and_no_prefect_is_a_submission_error() -> None:
    with pytest.raises(SubmissionError, match=r"names no image.*Prefect is not installed"):
        from_block(prefect_version=None)
    assert from_block({"image": "x:1"}, prefect_version=None).image == "x:1"


# -- 3.x job variables -------------------------------------------------------------------------


def test_job_variables_in_layers() -> None:
    spec = from_pool(
        template={"auto_remove": False, "stream_output": True, "image": "tmpl:1"},
        deployment_vars={
            "image": "dep:2",
            "env": {"A": "1", "B": "1"},
            "command": "python -c 'print(1)'",
            "image_pull_policy": "Never",
            "volumes": ["named:/data", "/anon"],
            "mem_limit": "16m",
        },
        run_vars={"env": {"B": "2", "PREFECT_HOME": None}, "auto_remove": True, "env.C": "3"},
    )
    assert spec.image == "dep:2"
    assert spec.pull_policy == "Never"
    assert spec.command == ("python", "-c", "print(1)")
    assert spec.env["A"] == "1"
    assert spec.env["B"] == "2"
    assert spec.env["C"] == "3"
    assert "PREFECT_HOME" not in spec.env
    assert spec.auto_remove
    assert spec.binds == ("named:/data",)
    assert spec.anonymous_volumes == ("/anon",)
    assert spec.mem_limit == 16 * 1024**2
    assert spec.name == "crafty-lemur"
    assert spec.labels["io.prefect.version"] == "3.1.0"
    assert spec.labels["io.prefect.flow-run-id"] == "run-1"


def test_job_variable_defaults() -> None:
    spec = from_pool()
    assert spec.image == "prefecthq/prefect:3.1.0-python3.12"
    assert spec.pull_policy == "IfNotPresent"
    assert spec.command == DEFAULT_COMMAND
    assert spec.network_mode == "host"


def test_registry_credentials_from_job_variables() -> None:
    creds = {"username": "u", "password": "p", "registry_url": "r:5000"}
    spec = from_pool(deployment_vars={"registry_credentials": creds})
    assert spec.registry is not None
    assert spec.registry.registry_url == "r:5000"


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"image_pull_policy": "ALWAYS"}, "is not one of Always, IfNotPresent, Never, IfPossible"),
        ({"volumes": ["data/x:/data"]}, "a named volume may not contain '/'"),
        ({"volumes": ["/src:relative"]}, "container path must be absolute"),
        ({"volumes": ["/src:/dst:zz"]}, "mode must be 'ro' or 'rw'"),
        ({"volumes": ["anon"]}, "anonymous volume needs an absolute"),
        ({"mem_limit": "12x"}, "is not a size"),
        ({"working_dir": "/tmp"}, "a docker pool does not have: working_dir"),
        ({"command": "python 'unclosed"}, "cannot be split"),
        ({"env": ["A=1"]}, "env must be a mapping"),
        ({"container_create_kwargs": {"cpu_count": 1}}, "not supported"),
    ],
)
def test_bad_job_variables_are_submission_errors(variables: dict[str, Any], words: str) -> None:
    with pytest.raises(SubmissionError, match=words):
        from_pool(deployment_vars=variables)


def test_if_possible_is_a_pool_policy() -> None:
    assert from_pool(run_vars={"image_pull_policy": "IfPossible"}).pull_policy == "IfPossible"


# -- the pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "tag", "policy"),
    [
        ("busybox", None, "Always"),
        ("busybox:latest", "latest", "Always"),
        ("busybox:1.36", "1.36", "IfNotPresent"),
        ("host:5000/repo", None, "Always"),
        ("host:5000/team/repo:v1", "v1", "IfNotPresent"),
        ("repo@sha256:abc", "sha256:abc", "IfNotPresent"),
    ],
)
def test_pull_policy_default(image: str, tag: str | None, policy: str) -> None:
    assert image_tag(image) == tag
    assert default_pull_policy(image) == policy


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("  _my flow/run name!!", "my-flow-run-name"),
        ("crafty-lemur", "crafty-lemur"),
        ("._-x", "x"),
        ("!!!", None),
        ("a" * 300, "a" * 250),
    ],
)
def test_container_name_slug(name: str, slug: str | None) -> None:
    assert container_name(name) == slug


@pytest.mark.parametrize(
    ("key", "converted"),
    [("prefect.io/flow-run-id", "io.prefect.flow-run-id"), ("team/x", "team.x"), ("k", "k")],
)
def test_label_keys_in_docker_form(key: str, converted: str) -> None:
    assert docker_label_key(key) == converted


@pytest.mark.parametrize(
    ("value", "size"),
    [("64m", 64 * 1024**2), ("1g", 1024**3), ("512", 512), (1000, 1000), ("128mb", 128 * 1024**2)],
)
def test_memory_sizes(value: object, size: int) -> None:
    assert memory_bytes("mem_limit", value) == size


def test_memory_text() -> None:
    assert memory_text(64 * 1024**2) == "64m"
    assert memory_text(1024**3) == "1g"
    assert memory_text(1000) == "1000"


def test_container_pid_round_trip_with_a_colon_daemon_id() -> None:
    daemon = "ABCD:EFGH:IJKL"
    pid = format_container_pid(daemon, "f00d")
    assert pid == "docker:ABCD:EFGH:IJKL:f00d"
    assert parse_container_pid(pid) == (daemon, "f00d")
    assert parse_container_pid("host:123") is None
    assert parse_container_pid("docker:") is None
