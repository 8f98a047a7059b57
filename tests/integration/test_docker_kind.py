"""The Docker kind against a real daemon: a run's container created (not started) with its
spec's env and labels, started, waited for with its own exit code and an OOM kill's cause;
stopped with a grace; removed only after its exit was read; found again by label; pulled as
its policy says, with and without a registry's credentials.

Every container a test makes carries this module's label and the harness's, and is removed in
the test's teardown, whatever the test did.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest

from actors.edges.docker_kind import ContainerJob, DockerKind, DockerUnavailableError
from actors.edges.infrastructure import RunSource
from actors.rules.docker_spec import DockerSpec
from actors.rules.infrastructure import SubmissionError
from examples.harness.docker_daemon import DockerDaemon
from examples.harness.flow_image import ImageBuild
from examples.harness.registry import Registry
from messages.wire.prefect import BlockDocument, BlockTypeRef, Deployment, FlowRun, WorkPool

pytestmark = [pytest.mark.integration, pytest.mark.docker]

TEST_LABEL = "prefect-actor-agent.test"
SESSION = uuid.uuid4().hex  # this module's containers, this session
API_URL = "http://127.0.0.1:4200/api"  # never called: a loopback URL puts runs on the host network


@pytest.fixture
def kind(docker_daemon: DockerDaemon) -> Iterator[DockerKind]:
    kind = DockerKind(docker_daemon.environ)
    label = f"{TEST_LABEL}={SESSION}"
    LABELS.update(docker_daemon.labels)
    try:
        yield kind
    finally:
        client = docker_daemon.client()
        try:
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
        finally:
            client.close()
            kind.close()


LABELS = {TEST_LABEL: SESSION}  # and the harness's, which removes them too if a test could not


def labels_of(kind: DockerKind) -> dict[str, str]:
    return dict(LABELS)


def run(name: str = "kind test") -> FlowRun:
    return FlowRun(id=str(uuid.uuid4()), name=f"{name} {uuid.uuid4().hex[:6]}", flow_id="f-1")


def block_source(kind: DockerKind, flow_run: FlowRun, **data: Any) -> RunSource:
    data.setdefault("image_pull_policy", "NEVER")
    data["labels"] = {**labels_of(kind), **data.get("labels", {})}
    block = BlockDocument(
        id="b",
        name="dock",
        data={"type": "docker-container", **data},
        block_type=BlockTypeRef(slug="docker-container"),
    )
    return RunSource(
        flow_run=flow_run,
        deployment=Deployment(id="d-1", name="kind-tests"),
        block=block,
        pool=None,
        job_variables=False,
        api_url=API_URL,
        api_key="the-key",
        worker_name="kind-tester",
        base_env={"PREFECT_LOGGING_LEVEL": "DEBUG", "HOME": "/agent"},
    )


def pool_source(kind: DockerKind, flow_run: FlowRun, **variables: Any) -> RunSource:
    variables.setdefault("image_pull_policy", "Never")
    variables["labels"] = labels_of(kind)
    pool = WorkPool(
        id="p",
        name="docker-pool",
        type="docker",
        base_job_template={"variables": {"properties": {"stream_output": {"default": False}}}},
    )
    return RunSource(
        flow_run=flow_run,
        deployment=Deployment(id="d-1", name="kind-tests", job_variables=variables),
        block=None,
        pool=pool,
        job_variables=True,
        api_url=API_URL,
        api_key=None,
        worker_name="kind-tester",
        base_env={},
    )


def inspect(daemon: DockerDaemon, container_id: str) -> dict[str, Any]:
    client = daemon.client()
    try:
        attrs: dict[str, Any] = client.api.inspect_container(container_id)
        return attrs
    finally:
        client.close()


def create(kind: DockerKind, source: RunSource) -> tuple[DockerSpec, ContainerJob]:
    spec = kind.prepare(source)
    return spec, kind.create(spec)


@pytest.mark.parametrize("code", [0, 3])
@pytest.mark.parametrize("prefect", ["2.x block", "3.x job variables"])
def test_create_start_wait(
    docker_daemon: DockerDaemon,
    plain_image: ImageBuild,
    kind: DockerKind,
    code: int,
    prefect: str,
) -> None:
    flow_run = run()
    if prefect == "2.x block":
        source = block_source(
            kind,
            flow_run,
            image=plain_image.tag,
            command=["sh", "-c", f"exit {code}"],
            env={"FROM_BLOCK": "1"},
            stream_output=False,
        )
    else:
        source = pool_source(
            kind,
            flow_run,
            image=plain_image.tag,
            command=f"sh -c 'exit {code}'",
            env={"FROM_BLOCK": "1"},
        )
    spec, job = create(kind, source)
    daemon_id = kind.daemon().id
    assert job.infrastructure_pid == f"docker:{daemon_id}:{job.container_id}"
    attrs = inspect(docker_daemon, job.container_id)
    assert attrs["State"]["Status"] == "created"  # not started by create
    assert not job.running
    assert attrs["HostConfig"]["AutoRemove"] is False
    assert attrs["HostConfig"]["NetworkMode"] == "host"
    assert attrs["Name"] == f"/{spec.name}"
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["FROM_BLOCK"] == "1"
    assert env["PREFECT__FLOW_RUN_ID"] == flow_run.id
    assert env["PREFECT_API_URL"] == API_URL
    assert "HOME" not in env or env["HOME"] != "/agent"  # the agent's own env stays out
    labels = attrs["Config"]["Labels"]
    assert labels["io.prefect.flow-run-id"] == flow_run.id
    assert labels["io.prefect.flow-run-name"] == flow_run.name
    assert labels["io.prefect.worker-name"] == "kind-tester"
    assert labels["io.prefect.deployment-name"] == "kind-tests"
    job.start()
    status = job.wait()
    assert (status.code, status.cause) == (code, None)
    assert not job.running
    assert job.after_exit() == []  # not auto_remove: the container stays
    assert inspect(docker_daemon, job.container_id)["State"]["ExitCode"] == code


def test_an_oom_kill_says_so(plain_image: ImageBuild, kind: DockerKind) -> None:
    grow = "x=0123456789; while true; do x=$x$x; done"
    source = block_source(
        kind,
        run(),
        image=plain_image.tag,
        command=["sh", "-c", grow],
        mem_limit="16m",
        memswap_limit="16m",
        stream_output=False,
    )
    _, job = create(kind, source)
    job.start()
    status = job.wait()
    assert status.code == 137
    # The daemon's OOMKilled, or (when it missed the OOM event) "most likely" with the limit.
    assert status.cause is not None
    assert "out of memory (mem_limit 16m)" in status.cause, status.cause


def test_terminate_then_grace_over(plain_image: ImageBuild, kind: DockerKind) -> None:
    deaf = "trap '' TERM; while true; do sleep 1; done"
    source = block_source(
        kind, run(), image=plain_image.tag, command=["sh", "-c", deaf], stream_output=False
    )
    _, job = create(kind, source)
    assert not job.terminate()  # not started: nothing to stop
    job.start()
    assert job.running
    assert job.terminate()
    time.sleep(2)
    assert job.running  # SIGTERM ignored
    assert job.grace_over()
    status = job.wait()
    assert status.code == 137
    assert not job.grace_over()
    assert not job.kill()


def test_auto_remove_waits_for_the_exit_code(
    docker_daemon: DockerDaemon, plain_image: ImageBuild, kind: DockerKind
) -> None:
    source = block_source(
        kind,
        run(),
        image=plain_image.tag,
        command=["sh", "-c", "exit 5"],
        auto_remove=True,
        stream_output=False,
    )
    _, job = create(kind, source)
    job.start()
    assert job.wait().code == 5
    # Still there after the exit: the code was read from it, not lost to Docker's AutoRemove.
    assert inspect(docker_daemon, job.container_id)["State"]["ExitCode"] == 5
    assert job.after_exit() == [f"removed {job.label}"]
    with pytest.raises(docker.errors.NotFound):
        inspect(docker_daemon, job.container_id)


def test_stream_output_copies_the_containers_output(
    docker_daemon: DockerDaemon, plain_image: ImageBuild, kind: DockerKind
) -> None:
    """Also: a run longer than the client's timeout is waited for (and streamed) to its end."""
    out = io.StringIO()
    patient = DockerKind(docker_daemon.environ, timeout=1, output=out)
    source = block_source(
        kind,
        run(),
        image=plain_image.tag,
        command=["sh", "-c", "echo one; sleep 3; echo two >&2"],
    )
    try:
        _, job = create(patient, source)
        job.start()
        assert job.wait().code == 0
        job.after_exit()
    finally:
        patient.close()
    assert out.getvalue().splitlines() == ["one", "two"]


def test_a_container_that_cannot_start_is_removed(
    docker_daemon: DockerDaemon, plain_image: ImageBuild, kind: DockerKind
) -> None:
    source = block_source(kind, run(), image=plain_image.tag, command=["/no/such/program"])
    _, job = create(kind, source)
    with pytest.raises(SubmissionError, match=r"could not start: .*no/such/program"):
        job.start()
    with pytest.raises(docker.errors.NotFound):
        inspect(docker_daemon, job.container_id)
    assert kind.find(source.flow_run.id, job.infrastructure_pid) is None


def test_a_container_created_but_never_started_is_removed_by_after_exit(
    docker_daemon: DockerDaemon, plain_image: ImageBuild, kind: DockerKind
) -> None:
    """A stop that came between create and start: the supervisor calls `after_exit`, and the
    created container is removed (whatever `auto_remove` says)."""
    source = block_source(kind, run(), image=plain_image.tag, command=["true"], auto_remove=False)
    _, job = create(kind, source)
    assert inspect(docker_daemon, job.container_id)["State"]["Status"] == "created"
    assert job.after_exit() == [f"removed {job.label}, never started"]
    with pytest.raises(docker.errors.NotFound):
        inspect(docker_daemon, job.container_id)


def test_a_taken_name_gets_a_number(plain_image: ImageBuild, kind: DockerKind) -> None:
    flow_run = run("same name")
    source = block_source(kind, flow_run, image=plain_image.tag, command=["true"])
    first_spec, first = create(kind, source)
    _, second = create(kind, source)
    assert first.name == first_spec.name
    assert second.name == f"{first_spec.name}-1"


def test_never_with_a_missing_image(kind: DockerKind) -> None:
    source = block_source(kind, run(), image="prefect-actor-agent/absent:never")
    spec = kind.prepare(source)
    with pytest.raises(
        SubmissionError,
        match="image 'prefect-actor-agent/absent:never' is not present and "
        "image_pull_policy is Never",
    ):
        kind.create(spec)


def test_if_possible_falls_back_to_the_local_image(
    plain_image: ImageBuild, registry: Registry, kind: DockerKind
) -> None:
    """The plain image is only local: its pull fails (no registry has it), IfPossible runs it;
    an image that is neither pullable nor local fails with both reasons."""
    local = pool_source(
        kind, run(), image=plain_image.tag, image_pull_policy="IfPossible", command="true"
    )
    _, job = create(kind, local)
    job.start()
    assert job.wait().code == 0
    absent = pool_source(
        kind,
        run(),
        image=f"{registry.host}/absent:{uuid.uuid4().hex[:8]}",
        image_pull_policy="IfPossible",
    )
    with pytest.raises(SubmissionError, match=r"failed: .*and the image is not present"):
        kind.create(kind.prepare(absent))


def test_pull_from_a_private_registry(
    docker_daemon: DockerDaemon, plain_image: ImageBuild, registry: Registry, kind: DockerKind
) -> None:
    client = docker_daemon.client()
    tag = uuid.uuid4().hex[:8]
    reference = registry.push(client, plain_image.tag, "kind", tag)
    client.images.remove(reference)
    try:
        without = block_source(
            kind, run(), image=reference, image_pull_policy="ALWAYS", command=["true"]
        )
        with pytest.raises(SubmissionError, match=r"pulling image .* failed: .*credentials"):
            kind.create(kind.prepare(without))
        auth = {**registry.auth_config, "registry_url": registry.host}
        with_credentials = block_source(
            kind,
            run(),
            image=reference,
            image_pull_policy="IF_NOT_PRESENT",
            image_registry=auth,
            command=["sh", "-c", "exit 4"],
            stream_output=False,
        )
        _, job = create(kind, with_credentials)
        job.start()
        assert job.wait().code == 4
    finally:
        for container in client.containers.list(all=True, filters={"ancestor": reference}):
            container.remove(force=True)
        client.images.remove(reference, force=True)
        client.close()


def test_find_by_label_after_the_job_is_dropped(
    docker_daemon: DockerDaemon, plain_image: ImageBuild, kind: DockerKind
) -> None:
    flow_run = run()
    source = block_source(
        kind,
        flow_run,
        image=plain_image.tag,
        command=["sleep", "600"],
        stream_output=False,
        mem_limit="64m",
    )
    _, job = create(kind, source)
    job.start()
    pid = job.infrastructure_pid
    container_id = job.container_id
    del job
    again = DockerKind(docker_daemon.environ)
    try:
        assert again.reach(pid or "") == "here"
        found = again.find(flow_run.id, None)
        assert found is not None
        assert found.container_id == container_id
        assert found.infrastructure_pid == pid
        assert found.running
        by_pid = again.find(flow_run.id, pid)
        assert by_pid is not None and by_pid.container_id == container_id
        assert found.kill()
        assert found.wait().code == 137
        inspect(docker_daemon, container_id)  # still there: not auto_remove
        client = docker_daemon.client()
        client.api.remove_container(container_id)
        client.close()
        assert again.find(flow_run.id, None) is None
        assert again.find(flow_run.id, pid) is None
    finally:
        again.close()


def test_reach(kind: DockerKind) -> None:
    ours = kind.daemon().id
    assert kind.reach(f"docker:{ours}:abc123") == "here"
    assert kind.reach("docker:ANOTHER:DAEMON:ID:abc123") == "elsewhere"
    assert kind.reach("somehost:1234") == "not-mine"


def test_an_unreachable_daemon_is_one_clear_error() -> None:
    kind = DockerKind({"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, timeout=2)
    source = RunSource(
        flow_run=run(),
        deployment=None,
        block=None,
        pool=None,
        job_variables=True,
        api_url=API_URL,
        api_key=None,
        worker_name="w",
    )
    with pytest.raises(DockerUnavailableError, match="does not answer") as caught:
        kind.prepare(source)
    assert "Traceback" not in str(caught.value)
    assert kind.reach("docker:x:y") == "elsewhere"


def test_a_daemon_that_never_answers_holds_up_one_run_not_each() -> None:
    """A daemon that accepts connections and never answers (a hung dockerd, a proxy to
    nowhere): runs that queued behind the first attempt fail with its reason once it timed
    out, not each after a timeout of its own."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # connections are accepted by the kernel; nothing ever answers
        host = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        kind = DockerKind({"DOCKER_HOST": host}, timeout=2)
        errors: list[str] = []

        def prepare() -> None:
            source = RunSource(
                flow_run=run(),
                deployment=None,
                block=None,
                pool=None,
                job_variables=True,
                api_url=API_URL,
                api_key=None,
                worker_name="w",
            )
            try:
                kind.prepare(source)
            except DockerUnavailableError as exc:
                errors.append(str(exc))

        began = time.monotonic()
        threads = [threading.Thread(target=prepare) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - began
        kind.close()
    assert len(errors) == 4, errors
    said = f"the Docker daemon at {host} does not answer: no answer within 2s"
    assert all(e == said for e in errors), errors
    assert elapsed < 5, f"4 runs took {elapsed:.1f}s: one 2 s timeout each, not one in all"
