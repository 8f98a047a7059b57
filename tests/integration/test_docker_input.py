"""What a user sees of a Docker run's input through the agent, against real 2.20 and 3.x
servers and the real daemon: the fields a user sets, as the daemon shows the container; an OOM
kill; pulls from a private registry with credentials under each pull policy; missing images;
bad input of every kind; an unreachable daemon; the container's output in the agent's.

Each bad run fails alone, with a message that says what was wrong, while a good run served by
the same agent completes; the registry's password appears in no line of the agent's log.
The plain busybox image keeps these fast: no engine runs here; a run that should complete
reports Completed to the API itself (busybox's wget, with the URL and run id the agent gave
the container), as the engine would.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import shlex
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from actors.launcher.local_server import LocalPrefectServer
from examples.harness.docker_daemon import DockerDaemon
from examples.harness.flow_image import ImageBuild
from examples.harness.registry import Registry
from tests.conftest import AgentFactory, AgentUnderTest, ThreadAgent
from tests.integration.helpers import FINAL, FLOWS, deploy_marker_command, state_type
from tests.integration.test_docker_runs import docker_pool_template
from tests.support.docker_fixtures import daemon_seen_by_agents, remove_container
from tests.support.prefect_objects import (
    call_api,
    create_run,
    deploy,
    deploy_with_block_data,
    prefect_objects,
    run_state,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

TEST_LABEL = "prefect-actor-agent.test-input"
SESSION = uuid.uuid4().hex
UNSERVED_SOCKET = "unix:///nonexistent/prefect-actor-agent/docker.sock"


@pytest.fixture
def daemon(docker_daemon: DockerDaemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The daemon as the agent finds it (its environment names it); every container of the
    test removed afterwards."""
    with daemon_seen_by_agents(docker_daemon, monkeypatch, TEST_LABEL, SESSION) as client:
        yield client


def labels(docker_daemon: DockerDaemon | None) -> dict[str, str]:
    return {**(docker_daemon.labels if docker_daemon else {}), TEST_LABEL: SESSION}


def deploy_block(
    api_url: str,
    queue: str,
    docker_daemon: DockerDaemon,
    name: str,
    /,
    *,
    overrides: dict[str, Any] | None = None,
    **data: Any,
) -> str:
    """A 2.20 deployment whose infrastructure is a `docker-container` block document (and its
    `infra_overrides`)."""
    data.setdefault("image_pull_policy", "NEVER")
    data.setdefault("stream_output", False)
    data["labels"] = {**labels(docker_daemon), **data.get("labels", {})}
    return deploy_with_block_data(
        api_url,
        FLOWS / "hello.py",
        "hello",
        name=f"{name}-{queue}",
        work_queue=queue,
        block_type_slug="docker-container",
        data=data,
        infra_overrides=overrides,
    )


def docker_pool(api_url: str) -> str:
    """A 3.x `docker` pool with Prefect's own template."""
    pool = f"docker-{uuid.uuid4().hex[:8]}"
    body = {"name": pool, "type": "docker", "base_job_template": docker_pool_template()}
    call_api(api_url, "POST", "/work_pools/", body)
    return pool


def deploy_pool(
    api_url: str,
    pool: str,
    queue: str,
    docker_daemon: DockerDaemon | None,
    name: str,
    /,
    **variables: Any,
) -> str:
    """A 3.x deployment of the docker pool with these job variables."""
    variables.setdefault("image_pull_policy", "Never")
    variables.setdefault("stream_output", False)
    variables["labels"] = {**labels(docker_daemon), **variables.get("labels", {})}
    flow_id = call_api(api_url, "POST", "/flows/", {"name": "hello"})["id"]
    body = {
        "name": f"{name}-{queue}",
        "flow_id": flow_id,
        "work_pool_name": pool,
        "work_queue_name": queue,
        "entrypoint": "hello.py:hello",
        "path": str(FLOWS),
        "job_variables": variables,
    }
    return str(call_api(api_url, "POST", "/deployments/", body)["id"])


def pool_run(api_url: str, deployment: str, **job_variables: Any) -> str:
    """A run of the 3.x deployment, with job variables of its own (the top layer)."""
    body = {"job_variables": job_variables} if job_variables else {}
    path = f"/deployments/{deployment}/create_flow_run"
    return str(call_api(api_url, "POST", path, body)["id"])


def ended(api_url: str, run: str, timeout: float = 60) -> tuple[str, str]:
    """The run's final state type and message, once it has one."""
    wait_for(lambda: state_type(api_url, run) in FINAL, timeout, f"run {run} to end")
    type_, _, message = run_state(api_url, run)
    return type_, message or ""


def failed_with(api_url: str, run: str, *parts: str) -> str:
    """The run ended Failed, its message naming every one of `parts`."""
    type_, message = ended(api_url, run)
    assert type_ == "FAILED", (type_, message)
    for part in parts:
        assert part in message, (part, message)
    return message


# A busybox container that ends its run as the engine would: it reports COMPLETED to the API
# the agent gave it (PREFECT_API_URL, its run's id), then exits 0.
REPORT_COMPLETED = (
    "wget -q -O /dev/null --header 'Content-Type: application/json' "
    """--post-data '{"state": {"type": "COMPLETED"}, "force": true}' """
    '"$PREFECT_API_URL/flow_runs/$PREFECT__FLOW_RUN_ID/set_state"'
)
COMPLETES = ["sh", "-c", REPORT_COMPLETED]


def completed(api_url: str, run: str) -> None:
    type_, message = ended(api_url, run)
    assert type_ == "COMPLETED", (type_, message)


# -- an OOM kill ---------------------------------------------------------------------------

GROW = "x=0123456789; while true; do x=$x$x; done"


def test_an_oom_kill_is_crashed_with_the_cause(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    plain_image: ImageBuild,
) -> None:
    deployment = deploy_block(
        api_url,
        queue,
        docker_daemon,
        "oom",
        image=plain_image.tag,
        command=["sh", "-c", GROW],
        mem_limit="16m",
        memswap_limit="16m",
    )
    run = create_run(api_url, deployment)
    library_agent(work_queues=(queue,))

    type_, message = ended(api_url, run)
    assert type_ == "CRASHED", (type_, message)
    assert "out of memory (mem_limit 16m)" in message, message
    assert "137" in message, message


# -- the fields, through the agent -----------------------------------------------------------


@pytest.fixture
def network(daemon: Any, docker_daemon: DockerDaemon) -> Iterator[str]:
    """A user-defined network on the daemon, removed with whatever joined it."""
    name = f"paa-net-{uuid.uuid4().hex[:8]}"
    made = daemon.networks.create(name, driver="bridge", labels=docker_daemon.labels)
    try:
        yield name
    finally:
        for container in daemon.containers.list(all=True, filters={"network": name}):
            remove_container(container)
        made.remove()


def runs_containers(daemon: Any, run: str) -> list[Any]:
    return list(
        daemon.containers.list(all=True, filters={"label": f"io.prefect.flow-run-id={run}"})
    )


@pytest.mark.parametrize("served", ["2.20", "3.x"])
def test_every_field_reaches_the_container(
    request: pytest.FixtureRequest,
    library_agent: AgentFactory,
    queue: str,
    markers: Path,
    network: str,
    *,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    daemon: Any,
    plain_image: ImageBuild,
    served: str,
) -> None:
    """The fields a user sets, as the daemon shows the run's container: its name (the block's,
    slugged; a number on a conflict), labels (the user's in Docker's form, under the run's),
    memory and swap limits, env (the agent's PREFECT_* settings and nothing else of its
    environment, the block's or the deployment's on top, a null unsetting on 2.x (the 3.x
    template takes strings only), the override's or the run's on top of those), volumes;
    auto_remove removes the container once its run ended (Completed: the exit was read
    first); a network given by name is joined. (`privileged` is not here: this machine's
    daemon, itself in a container, cannot grant it.)"""
    monkeypatch.setenv("PREFECT_KEPT_FROM_AGENT", "agent")
    monkeypatch.setenv("PREFECT_UNSET_BY_BLOCK", "agent")
    monkeypatch.setenv("NOT_PREFECT_OF_AGENT", "agent")
    name = f"fields {uuid.uuid4().hex[:6]}/\u00fc"  # slugged: "fields-xxxxxx"
    slug = name.split("/", maxsplit=1)[0].replace(" ", "-")
    write_env = f'env > "/markers/$PREFECT__FLOW_RUN_ID.env"; {REPORT_COMPLETED}'
    fields: dict[str, Any] = {
        "image": plain_image.tag,
        "command": ["sh", "-c", write_env],
        "name": name,
        "labels": {"prefect.io/custom": "yes", "team": "data"},
        "mem_limit": "64m",
        "memswap_limit": "128m",
        "env": {"FROM_BLOCK": "block", "OVERRIDDEN": "block", "PREFECT_UNSET_BY_BLOCK": None},
        "volumes": [f"{markers}:/markers"],
    }
    removed = {"image": plain_image.tag, "command": COMPLETES, "auto_remove": True}
    joined = {"image": plain_image.tag, "command": ["true"], "networks": [network]}
    if served == "2.20":
        api_url = request.getfixturevalue("api_url")
        override = {"env.OVERRIDDEN": "override"}
        deployment = deploy_block(
            api_url, queue, docker_daemon, "fields", overrides=override, **fields
        )
        runs = [create_run(api_url, deployment) for _ in range(2)]
        auto = create_run(api_url, deploy_block(api_url, queue, docker_daemon, "auto", **removed))
        net = create_run(api_url, deploy_block(api_url, queue, docker_daemon, "net", **joined))
        agent = library_agent(work_queues=(queue,))
    else:
        api_url = request.getfixturevalue("prefect3_server").api_url
        pool = docker_pool(api_url)
        fields["command"] = shlex.join(fields["command"])
        del fields["env"]["PREFECT_UNSET_BY_BLOCK"]  # 3.x's template wants strings only
        monkeypatch.delenv("PREFECT_UNSET_BY_BLOCK")
        removed["command"] = shlex.join(removed["command"])
        joined["command"] = "true"
        deployment = deploy_pool(api_url, pool, queue, docker_daemon, "fields", **fields)
        runs = [pool_run(api_url, deployment, env={"OVERRIDDEN": "override"}) for _ in range(2)]
        auto = pool_run(
            api_url, deploy_pool(api_url, pool, queue, docker_daemon, "auto", **removed)
        )
        net = pool_run(api_url, deploy_pool(api_url, pool, queue, docker_daemon, "net", **joined))
        agent = library_agent(api_url=api_url, work_queues=(queue,), work_pool=pool)

    for run in runs:
        completed(api_url, run)
    names = set()
    for run in runs:
        (container,) = runs_containers(daemon, run)
        attrs = container.attrs
        names.add(attrs["Name"].lstrip("/"))
        labels = attrs["Config"]["Labels"]
        assert labels["io.prefect.custom"] == "yes"
        assert labels["team"] == "data"
        assert labels["io.prefect.flow-run-id"] == run
        host = attrs["HostConfig"]
        assert (host["Memory"], host["MemorySwap"]) == (64 * 2**20, 128 * 2**20)
        assert host["AutoRemove"] is False
        env = dict(
            line.split("=", 1)
            for line in (markers / f"{run}.env").read_text().splitlines()
            if "=" in line
        )
        assert env["FROM_BLOCK"] == "block"
        assert env["OVERRIDDEN"] == "override"
        assert env["PREFECT__FLOW_RUN_ID"] == run
        assert env["PREFECT_KEPT_FROM_AGENT"] == "agent"  # the agent's PREFECT_* settings
        assert "PREFECT_UNSET_BY_BLOCK" not in env  # null unsets
        assert "NOT_PREFECT_OF_AGENT" not in env  # nothing else of the agent's environment
    assert names == {slug, f"{slug}-1"}

    completed(api_url, auto)
    wait_for(lambda: runs_containers(daemon, auto) == [], 30, "the auto_remove container to go")

    assert isinstance(agent, ThreadAgent)
    agent.wait_finished(net, 60, "the networked container to exit")
    (container,) = runs_containers(daemon, net)
    assert list(container.attrs["NetworkSettings"]["Networks"]) == [network]
    assert container.attrs["State"]["ExitCode"] == 0


# -- pulls from a private registry -----------------------------------------------------------

POLICIES = [
    ("2.20", "ALWAYS"),
    ("2.20", "IF_NOT_PRESENT"),
    ("2.20", "NEVER"),
    ("3.x", "Always"),
    ("3.x", "IfNotPresent"),
    ("3.x", "Never"),
    ("3.x", "IfPossible"),
]


@pytest.fixture(scope="module")
def pushed(
    docker_daemon: DockerDaemon, plain_image: ImageBuild, registry: Registry
) -> Iterator[str]:
    """The plain image in the private registry (removed from the daemon by each test that
    wants it pulled)."""
    client = docker_daemon.client()
    reference = registry.push(client, plain_image.tag, "input", uuid.uuid4().hex[:8])
    try:
        yield reference
    finally:
        for container in client.containers.list(all=True, filters={"ancestor": reference}):
            remove_container(container)
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(reference, force=True)
        client.close()


def registry_block(api_url: str, registry: Registry, slug: str) -> str:
    """A named registry block with the registry's credentials (2.20's `docker-registry`, or
    prefect-docker's `docker-registry-credentials` on 3.x)."""
    data = {
        "username": registry.user,
        "password": registry.password,
        "registry_url": registry.host,
        "reauth": True,
    }
    return prefect_objects(api_url).create_block_document(
        slug, data, name=f"registry-{uuid.uuid4().hex[:8]}", register_missing_type=True
    )


@pytest.mark.parametrize(("served", "policy"), POLICIES, ids=["-".join(p) for p in POLICIES])
def test_pulls_from_a_private_registry_with_credentials(
    request: pytest.FixtureRequest,
    library_agent: AgentFactory,
    queue: str,
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    registry: Registry,
    pushed: str,
    served: str,
    policy: str,
) -> None:
    """The image is pulled with the block's credentials (Always, IfNotPresent, IfPossible:
    it is not on the daemon first) or used as it is there (Never: it is); the run's container
    runs the pulled image to its end, and the password is in no line of the agent's log."""
    never = policy.lower() == "never"
    if never:
        daemon.images.pull(pushed, auth_config=registry.auth_config)
    else:
        with contextlib.suppress(docker.errors.ImageNotFound):
            daemon.images.remove(pushed)
    agent: AgentUnderTest
    if served == "2.20":
        api_url = request.getfixturevalue("api_url")
        reference = {
            "$ref": {"block_document_id": registry_block(api_url, registry, "docker-registry")}
        }
        deployment = deploy_block(
            api_url,
            queue,
            docker_daemon,
            f"pull-{policy.lower()}",
            image=pushed,
            image_pull_policy=policy,
            image_registry=reference,
            command=COMPLETES,
        )
        run = create_run(api_url, deployment)
        agent = library_agent(work_queues=(queue,))
    else:
        api_url = request.getfixturevalue("prefect3_server").api_url
        pool = docker_pool(api_url)
        credentials = registry_block(api_url, registry, "docker-registry-credentials")
        deployment = deploy_pool(
            api_url,
            pool,
            queue,
            docker_daemon,
            f"pull-{policy.lower()}",
            image=pushed,
            image_pull_policy=policy,
            registry_credentials={"$ref": {"block_document_id": credentials}},
            command=shlex.join(COMPLETES),
        )
        run = pool_run(api_url, deployment)
        agent = library_agent(api_url=api_url, work_queues=(queue,), work_pool=pool)

    completed(api_url, run)
    containers = daemon.containers.list(
        all=True, filters={"label": f"io.prefect.flow-run-id={run}"}
    )
    assert [c.attrs["State"]["ExitCode"] for c in containers] == [0]
    assert containers[0].attrs["Config"]["Image"] == pushed
    logs = agent.logs()
    assert ("pulling image" in logs) is not never, logs[-3000:]
    assert registry.password not in logs


def test_a_3x_pools_own_registry_credentials_are_used(
    prefect3_server: LocalPrefectServer,
    library_agent: AgentFactory,
    queue: str,
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    registry: Registry,
    pushed: str,
) -> None:
    """The credentials as a pool's operator gives them: a block referenced by the default of
    the pool's `registry_credentials` variable; the deployment names only its image."""
    with contextlib.suppress(docker.errors.ImageNotFound):
        daemon.images.remove(pushed)
    api_url = prefect3_server.api_url
    credentials = registry_block(api_url, registry, "docker-registry-credentials")
    template = docker_pool_template()
    variable = template["variables"]["properties"]["registry_credentials"]
    variable["default"] = {"$ref": {"block_document_id": credentials}}
    pool = f"docker-{uuid.uuid4().hex[:8]}"
    body = {"name": pool, "type": "docker", "base_job_template": template}
    call_api(api_url, "POST", "/work_pools/", body)
    deployment = deploy_pool(
        api_url,
        pool,
        queue,
        docker_daemon,
        "pool-credentials",
        image=pushed,
        image_pull_policy="Always",
        command=shlex.join(COMPLETES),
    )
    run = pool_run(api_url, deployment)
    agent = library_agent(api_url=api_url, work_queues=(queue,), work_pool=pool)

    completed(api_url, run)
    assert registry.password not in agent.logs()


def test_a_missing_image_fails_only_its_run(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    plain_image: ImageBuild,
    registry: Registry,
    pushed: str,
) -> None:
    """Never with an image the daemon does not have, an image the registry does not have, no
    image at all (Prefect's default for the agent's Prefect and Python, not on the daemon), and
    credentials the registry refuses: each run Failed naming its image (and the refused user,
    never a password); a good run of the same agent ends well."""
    absent_local = f"prefect-actor-agent/absent:{uuid.uuid4().hex[:8]}"
    absent_remote = f"{registry.host}/absent:{uuid.uuid4().hex[:8]}"
    reference = {
        "$ref": {"block_document_id": registry_block(api_url, registry, "docker-registry")}
    }
    never = deploy_block(api_url, queue, docker_daemon, "never", image=absent_local)
    remote = deploy_block(
        api_url,
        queue,
        docker_daemon,
        "remote",
        image=absent_remote,
        image_pull_policy="IF_NOT_PRESENT",
        image_registry=reference,
    )
    default = deploy_block(api_url, queue, docker_daemon, "default")  # no image: Prefect's
    wrong_password = "not-the-password-" + uuid.uuid4().hex[:8]
    wrong = prefect_objects(api_url).create_block_document(
        "docker-registry",
        {"username": registry.user, "password": wrong_password, "registry_url": registry.host},
        name=f"wrong-{uuid.uuid4().hex[:8]}",
    )
    refused = deploy_block(
        api_url,
        queue,
        docker_daemon,
        "refused",
        image=pushed,
        image_pull_policy="ALWAYS",
        image_registry={"$ref": {"block_document_id": wrong}},
    )
    good = deploy_block(
        api_url, queue, docker_daemon, "good", image=plain_image.tag, command=COMPLETES
    )
    runs = [create_run(api_url, d) for d in (never, remote, good, default, refused)]
    agent = library_agent(work_queues=(queue,))

    message = failed_with(api_url, runs[0], absent_local, "Never")
    assert message.startswith("Submission failed."), message
    failed_with(api_url, runs[1], absent_remote)
    python = "python{}.{}".format(*sys.version_info[:2])
    prefect = importlib.metadata.version("prefect")
    failed_with(api_url, runs[3], f"'prefecthq/prefect:{prefect}-{python}'", "Never")
    failed_with(
        api_url,
        runs[4],
        f"pulling image {pushed!r} failed",
        f"the registry refused the credentials of user {registry.user!r}",
    )
    completed(api_url, runs[2])
    logs = agent.logs()
    assert registry.password not in logs
    assert wrong_password not in logs


# -- bad input -------------------------------------------------------------------------------

# (what is wrong, the 2.20 block's fields, the 3.x job variables, what the message must name)
ABSENT = "prefect-actor-agent/absent:bad-input"
BAD_INPUT: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    (
        "missing image",
        {"image": ABSENT, "image_pull_policy": "NEVER"},
        {"image": ABSENT, "image_pull_policy": "Never"},
        (f"image {ABSENT!r} is not present and image_pull_policy is Never",),
    ),
    (
        "volume",
        {"volumes": ["just-a-path"]},
        {"volumes": ["relative/path:/data"]},
        ("volume", "path"),
    ),
    (
        "mem_limit",
        {"mem_limit": "64 zebibytes"},
        {"mem_limit": "64 zebibytes"},
        ("mem_limit", "64 zebibytes", "is not a size"),
    ),
    (
        "unknown field",
        {"overrides": {"image_pul_policy": "NEVER"}},
        {"image_pul_policy": "Never"},
        ("image_pul_policy",),
    ),
    (
        "network",
        {"networks": ["no-such-network"]},
        {"networks": ["no-such-network"]},
        ("network 'no-such-network' does not exist on the Docker daemon",),
    ),
    (
        "command",
        {"command": ["/no/such/program"]},
        {"command": "/no/such/program --flag"},
        ("could not start: its command '/no/such/program' cannot be run in image", "no such file"),
    ),
]


@pytest.mark.parametrize("served", ["2.20", "3.x"])
def test_bad_input_fails_only_its_run_and_says_what_was_wrong(
    request: pytest.FixtureRequest,
    library_agent: AgentFactory,
    queue: str,
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    plain_image: ImageBuild,
    served: str,
) -> None:
    """One agent, one queue: a run of each kind of bad input, and a good one. Each bad run is
    Failed with a message naming what was wrong; the good one completes; no container of a
    bad run is left on the daemon."""
    runs: dict[str, str] = {}
    if served == "2.20":
        api_url = request.getfixturevalue("api_url")
        for what, fields, _, _ in [*BAD_INPUT, ("good", {"command": COMPLETES}, {}, ())]:
            block = {"image": plain_image.tag, **fields}
            overrides = block.pop("overrides", None)
            deployment = deploy_block(
                api_url, queue, docker_daemon, what.replace(" ", "-"), overrides=overrides, **block
            )
            runs[what] = create_run(api_url, deployment)
        library_agent(work_queues=(queue,))
    else:
        api_url = request.getfixturevalue("prefect3_server").api_url
        pool = docker_pool(api_url)
        for what, _, variables, _ in [
            *BAD_INPUT,
            ("good", {}, {"command": shlex.join(COMPLETES)}, ()),
        ]:
            deployment = deploy_pool(
                api_url,
                pool,
                queue,
                docker_daemon,
                what.replace(" ", "-"),
                **{"image": plain_image.tag, **variables},
            )
            runs[what] = pool_run(api_url, deployment)
        library_agent(api_url=api_url, work_queues=(queue,), work_pool=pool)

    completed(api_url, runs.pop("good"))
    for what, _, _, parts in BAD_INPUT:
        failed_with(api_url, runs[what], "Submission failed.", *parts)
        left = daemon.containers.list(
            all=True, filters={"label": f"io.prefect.flow-run-id={runs[what]}"}
        )
        assert left == [], (what, left)


# -- an unreachable daemon -------------------------------------------------------------------

DAEMON_LINE = "WARNING prefect_actor_agent.docker: the Docker daemon at " + UNSERVED_SOCKET


def daemon_lines(agent: AgentUnderTest) -> list[str]:
    """The agent's lines that say the daemon does not answer (not a run's own failure)."""
    return [line for line in agent.logs().splitlines() if line.startswith(DAEMON_LINE)]


def test_an_unreachable_daemon_is_one_line_and_fails_only_docker_runs(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    markers: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """2.20: blocks are known run by run, so the daemon is looked for at the first Docker run:
    one line says it does not answer; each Docker run is Failed with that reason; the process
    run of the same queue completes."""
    monkeypatch.setenv("DOCKER_HOST", UNSERVED_SOCKET)
    docker_runs = []
    for number in range(3):
        block = prefect_objects(api_url).create_block_document(
            "docker-container",
            {"image": "prefect-actor-agent/plain:v1", "image_pull_policy": "NEVER"},
            register_missing_type=True,
        )
        deployment = deploy_docker_block(api_url, queue, f"unreachable-{number}", block)
        docker_runs.append(create_run(api_url, deployment))
    process = deploy_marker_command(
        api_url, queue, markers, name="process", env={"MARKER_COMPLETE": "1"}
    )
    process_run = create_run(api_url, process)
    agent = library_agent(work_queues=(queue,))

    completed(api_url, process_run)
    for run in docker_runs:
        failed_with(api_url, run, "Submission failed.", UNSERVED_SOCKET, "does not answer")
    lines = daemon_lines(agent)
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        "does not answer: no socket at that path (is dockerd running? is DOCKER_HOST right?)"
    ), lines


def deploy_docker_block(api_url: str, queue: str, name: str, block: str) -> str:
    return prefect_objects(api_url).deploy(
        "hello",
        f"{name}-{queue}",
        work_queue=queue,
        path=str(FLOWS),
        entrypoint="hello.py:hello",
        infrastructure_document_id=block,
    )


def test_a_3x_docker_pool_on_an_unreachable_daemon_says_so_at_start(
    prefect3_server: LocalPrefectServer,
    library_agent: AgentFactory,
    queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """3.x: the agent knows at start that it serves a docker pool: one line says the daemon
    does not answer before any run comes; each run is then Failed with the reason, and no
    second line is logged."""
    monkeypatch.setenv("DOCKER_HOST", UNSERVED_SOCKET)
    api_url = prefect3_server.api_url
    pool = docker_pool(api_url)
    agent = library_agent(api_url=api_url, work_queues=(queue,), work_pool=pool)
    wait_for(lambda: daemon_lines(agent), 30, "the line that says the daemon does not answer")

    deployment = deploy_pool(api_url, pool, queue, None, "unreachable", image="busybox")
    runs = [pool_run(api_url, deployment) for _ in range(3)]
    for run in runs:
        failed_with(api_url, run, "Submission failed.", UNSERVED_SOCKET, "does not answer")
    lines = daemon_lines(agent)
    assert len(lines) == 1, lines


# -- stream_output ---------------------------------------------------------------------------


def test_a_containers_output_joins_the_agents_as_a_process_runs_does(
    agent_factory: AgentFactory,
    api_url: str,
    queue: str,
    capfd: pytest.CaptureFixture[str],
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    plain_image: ImageBuild,
) -> None:
    """With stream_output, what the container writes (stdout and stderr) is in the agent's
    output, under the gevent launcher (`examples/agent.py`) as with threads; a process run's
    output of the same agent is there too. Without it, nothing of the container's is."""
    token = uuid.uuid4().hex[:12]
    speak = f"echo out-{token}-$PREFECT__FLOW_RUN_ID; echo err-{token}-$PREFECT__FLOW_RUN_ID >&2"
    loud = deploy_block(
        api_url,
        queue,
        docker_daemon,
        "loud",
        image=plain_image.tag,
        command=["sh", "-c", f"{speak}; {REPORT_COMPLETED}"],
        stream_output=True,
    )
    quiet = deploy_block(
        api_url,
        queue,
        docker_daemon,
        "quiet",
        image=plain_image.tag,
        command=["sh", "-c", f"{speak}; {REPORT_COMPLETED}"],
        stream_output=False,
    )
    process = deploy(
        api_url,
        FLOWS / "hello.py",
        "hello",
        name=f"process-{queue}",
        work_queue=queue,
        command=["sh", "-c", f"echo process-{token}-$PREFECT__FLOW_RUN_ID"],
    )
    loud_run, quiet_run, process_run = (create_run(api_url, d) for d in (loud, quiet, process))
    agent = agent_factory(work_queues=(queue,))

    captured: list[str] = []

    def output() -> str:
        got = capfd.readouterr()
        captured.append(got.out + got.err)
        return "".join(captured) + agent.logs()

    completed(api_url, loud_run)
    completed(api_url, quiet_run)
    wanted = [
        f"out-{token}-{loud_run}",
        f"err-{token}-{loud_run}",
        f"process-{token}-{process_run}",
    ]
    wait_for(lambda: all(line in output() for line in wanted), 30, "the runs' output")
    seen = output()
    assert f"out-{token}-{quiet_run}" not in seen, "the quiet container's output was streamed"
    assert f"err-{token}-{quiet_run}" not in seen, "the quiet container's output was streamed"
