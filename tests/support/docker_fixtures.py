"""Session fixtures for the container tests: a Docker daemon, the images, a private registry.

Real parts only (examples/harness/): the machine's daemon when one answers, else a private
`dockerd` started as root; images built from Debian's mirror and PyPI and kept in the
daemon's data root across sessions; Debian's registry with a password on loopback. A machine
that cannot have them (not root, not Debian, no daemon) skips these tests with the reason.

Each part starts on first use only, so a session with no container test pays for none of
them, and stops at the session's end. What a part cost (apt installs, image builds, starts)
is told in the terminal summary: a first session on a machine spends minutes here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest

from examples.harness.debian_packages import INSTALL_SECONDS, UnavailableError
from examples.harness.docker_daemon import DockerDaemon
from examples.harness.flow_image import ImageBuild, ensure_flow_image, ensure_plain_image
from examples.harness.registry import Registry

IMAGE_BUILD_TIMEOUT = 900  # a docker client's read timeout while an image is imported

_costs: list[str] = []  # what the parts cost this session, for the terminal summary


def _image_cost(build: ImageBuild) -> str:
    size = f"{build.size_bytes / 1e6:.0f} MB"
    if not build.built:
        return f"{build.tag}: found ({size})"
    steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in build.seconds.items())
    return f"{build.tag}: built ({size}): {steps}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _costs and not INSTALL_SECONDS:
        return
    terminalreporter.write_sep("-", "docker harness")
    for package, seconds in INSTALL_SECONDS.items():
        terminalreporter.write_line(f"apt-get install {package}: {seconds:.1f}s")
    for line in _costs:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[DockerDaemon]:
    """The machine's Docker daemon when it answers, else a private one (root only)."""
    daemon = DockerDaemon()
    try:
        daemon.start()
    except UnavailableError as error:
        pytest.skip(f"no Docker daemon: {error}")
    kind = "private" if daemon.private else "the machine's"
    _costs.append(f"daemon ({kind}, {daemon.base_url}): ready in {daemon.start_seconds:.1f}s")
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def flow_image(docker_daemon: DockerDaemon) -> ImageBuild:
    """Debian with Prefect 2.20 in /opt/prefect2 and Prefect 3 in /opt/prefect3 (minutes to
    build the first time on a machine, then kept in the daemon's data root)."""
    client = docker_daemon.client(timeout=IMAGE_BUILD_TIMEOUT)
    try:
        build = ensure_flow_image(client)
    except UnavailableError as error:
        pytest.skip(f"cannot build the flow image: {error}")
    finally:
        client.close()
    _costs.append(_image_cost(build))
    return build


@pytest.fixture(scope="session")
def plain_image(docker_daemon: DockerDaemon) -> ImageBuild:
    """A static busybox and nothing else (a second to build)."""
    client = docker_daemon.client(timeout=IMAGE_BUILD_TIMEOUT)
    try:
        build = ensure_plain_image(client)
    except UnavailableError as error:
        pytest.skip(f"cannot build the plain image: {error}")
    finally:
        client.close()
    _costs.append(_image_cost(build))
    return build


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A registry on 127.0.0.1 that wants a user and a password (`auth_config`)."""
    registry = Registry()
    try:
        registry.start()
    except UnavailableError as error:
        pytest.skip(f"no registry: {error}")
    _costs.append(f"registry {registry.host}: ready in {registry.start_seconds:.1f}s")
    try:
        yield registry
    finally:
        registry.stop()


@contextlib.contextmanager
def daemon_seen_by_agents(
    docker_daemon: DockerDaemon, monkeypatch: pytest.MonkeyPatch, label: str, session: str
) -> Iterator[Any]:
    """The daemon as an agent of the test finds it (its environment names it), and a client
    for the test; afterwards every container labelled `label=session` is removed, unless it
    is gone or going (an agent removing it meanwhile)."""
    for name, value in docker_daemon.environ.items():
        monkeypatch.setenv(name, value)
    client = docker_daemon.client()
    try:
        yield client
    finally:
        for container in client.containers.list(all=True, filters={"label": f"{label}={session}"}):
            remove_container(container)
        client.close()


def remove_container(container: Any) -> None:
    """Remove a container, unless it is gone or going (an agent removing it meanwhile)."""
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        container.remove(force=True)
