"""The Docker harness itself (examples/harness/), before any container test relies on it.

What the container work (issue 23) will take for granted, checked on the real parts: the
daemon answers; the flow image runs both Prefect versions; a container on the host's network
reaches a server on loopback (the daemon has no bridge); a private daemon leaves no process
behind, not even a zombie shim; the registry wants its credentials, over plain HTTP on
loopback with no daemon setting.
"""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from examples.harness.debian_packages import UnavailableError
from examples.harness.docker_daemon import DockerDaemon
from examples.harness.flow_image import (
    PREFECT2_PYTHON,
    PREFECT3_PYTHON,
    ImageBuild,
    ensure_plain_image,
)
from examples.harness.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.docker]

VERSION_SCRIPT = "import prefect; print(prefect.__version__)"


def _run(daemon: DockerDaemon, image: str, command: list[str]) -> str:
    client = daemon.client()
    try:
        out: bytes = client.containers.run(
            image, command, network_mode="host", remove=True, labels=daemon.labels
        )
    finally:
        client.close()
    return out.decode().strip()


def test_the_daemon_answers(docker_daemon: DockerDaemon) -> None:
    client = docker_daemon.client()
    try:
        assert client.ping()
        api = client.version()["ApiVersion"]
    finally:
        client.close()
    assert tuple(int(part) for part in api.split(".")) >= (1, 41)


@pytest.mark.timeout(1500)  # the first session on a machine builds the image: minutes
@pytest.mark.parametrize(
    ("python", "expected"), [(PREFECT2_PYTHON, "2.20."), (PREFECT3_PYTHON, "3.")]
)
def test_the_flow_image_runs_both_prefects(
    docker_daemon: DockerDaemon, flow_image: ImageBuild, python: str, expected: str
) -> None:
    version = _run(docker_daemon, flow_image.tag, [python, "-c", VERSION_SCRIPT])
    assert version.startswith(expected), version


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_container_on_the_host_network_reaches_loopback(
    docker_daemon: DockerDaemon, plain_image: ImageBuild, loopback_server: int
) -> None:
    url = f"http://127.0.0.1:{loopback_server}/"
    assert _run(docker_daemon, plain_image.tag, ["wget", "-q", "-O", "-", url]) == (
        "hello from the host"
    )


def _naming(path: Path) -> dict[int, list[str]]:
    """Processes (pid -> argv) whose command line names `path` or something below it."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(part == str(path) or f"{path}/" in part for part in argv):
            found[int(entry.name)] = argv
    return found


def _mounts_under(path: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [point for point in points if point == str(path) or point.startswith(f"{path}/")]


def test_a_private_daemon_leaves_nothing_behind(tmp_path: Path) -> None:
    """Its own daemon, not the session's: this one is stopped with a container running, then
    the machine is searched for anything left of it. A zombie counts (its /proc entry stays):
    the shims must be reaped, not only killed."""
    data_root = tmp_path / "docker-data"
    daemon = DockerDaemon(use_machine_daemon=False, data_root=data_root)
    try:
        daemon.start()
    except UnavailableError as error:
        pytest.skip(f"no private Docker daemon: {error}")
    try:
        assert daemon.run_dir is not None
        run_dir = daemon.run_dir
        client = daemon.client()
        image = ensure_plain_image(client)
        container = client.containers.run(
            image.tag, ["sleep", "600"], network_mode="host", detach=True
        )
        container.reload()
        sleeper = container.attrs["State"]["Pid"]
        client.close()
        ours = _naming(run_dir)
        shims = [pid for pid, argv in ours.items() if "containerd-shim" in argv[0]]
        assert shims, ours
        assert Path(f"/proc/{sleeper}").exists()
    finally:
        daemon.stop()
    try:
        for pid in [*ours, *shims, sleeper]:
            assert not Path(f"/proc/{pid}").exists(), (pid, ours.get(pid))
        assert _naming(run_dir) == {}
        assert _naming(data_root) == {}
        assert not run_dir.exists()
        assert _mounts_under(data_root) == []
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


def test_the_registry_wants_its_credentials(
    docker_daemon: DockerDaemon, plain_image: ImageBuild, registry: Registry
) -> None:
    client = docker_daemon.client()
    try:
        # Plain HTTP to 127.0.0.1 needs no daemon setting: loopback is insecure by default.
        cidrs = client.info()["RegistryConfig"]["InsecureRegistryCIDRs"]
        assert "127.0.0.0/8" in cidrs
        reference = registry.push(client, plain_image.tag, "plain", "pulled")
        client.images.remove(reference)
        with pytest.raises(docker.errors.APIError, match="no basic auth credentials"):
            client.images.pull(reference)
        with pytest.raises(docker.errors.APIError, match="unauthorized"):
            client.images.pull(reference, auth_config={"username": "tester", "password": "no"})
        pulled = client.images.pull(reference, auth_config=registry.auth_config)
        assert reference in pulled.tags
        client.images.remove(reference)
    finally:
        client.close()
