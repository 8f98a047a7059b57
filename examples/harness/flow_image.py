"""The images the container tests run, built here from Debian's packages and PyPI.

Why built and not pulled: the machines this project runs on reach no image registry, only
Debian's mirror and PyPI. So an image is a root filesystem made by `debootstrap` from
Debian's mirror, with Prefect installed into it by pip from PyPI, then streamed as a tar
(`tar -C ROOT -c .`) into the daemon's `POST /images/create?fromSrc=-`, which is what
`docker import` does; no tar file is written.

- `FLOW_IMAGE` (`ensure_flow_image`): Debian bookworm (minbase, with python3, python3-venv and
  ca-certificates), and two virtual environments: `/opt/prefect2` with Prefect 2.20 and
  `/opt/prefect3` with the current Prefect 3, so one image serves a flow run of either server
  (a 2.x run is `/opt/prefect2/bin/python -m prefect.engine`, a 3.x one
  `/opt/prefect3/bin/python -m prefect.engine`). PATH leads to `/opt/prefect2/bin`.
- `PLAIN_IMAGE` (`ensure_plain_image`): nothing but a static busybox (Debian's
  `busybox-static`), for tests that need a container and no Prefect; built in a second.

Each is built once per Docker data root and reused (the daemon's data root outlives the
session: examples/harness/docker_daemon.py): `ensure_*` looks the tag up first. The tag
carries the recipe's version; bump `FLOW_RECIPE` or `PLAIN_RECIPE` when the recipe changes,
so that a machine with the old image builds the new one.

The root filesystem is built in a temporary directory and removed afterwards, whatever
happens; mounts that a stopped `debootstrap` may leave inside it (/proc, /sys) are undone
first, and the removal never crosses into another file system. The chroot commands run with
an environment of their own (none of this machine's pip settings, which name paths outside
the chroot), and trust this machine's CA bundle, copied in for the install and removed again
(pip reaches PyPI through whatever TLS the machine has; the image keeps Debian's bundle).

Building needs root on Debian (debootstrap, chroot); `UnavailableError` says so otherwise.
`ImageBuild.seconds` holds each step's time, for the reports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from examples.harness.debian_packages import UnavailableError, ensure_program
from examples.harness.docker_daemon import cache_dir, process_alive

__all__ = [
    "FLOW_IMAGE",
    "PLAIN_IMAGE",
    "PREFECT2_PYTHON",
    "PREFECT3_PYTHON",
    "ImageBuild",
    "ensure_flow_image",
    "ensure_plain_image",
]

FLOW_RECIPE = 1
PLAIN_RECIPE = 1
FLOW_REPOSITORY = "prefect-actor-agent/flow"
FLOW_TAG = f"2.20-3-v{FLOW_RECIPE}"
FLOW_IMAGE = f"{FLOW_REPOSITORY}:{FLOW_TAG}"
PLAIN_REPOSITORY = "prefect-actor-agent/plain"
PLAIN_TAG = f"v{PLAIN_RECIPE}"
PLAIN_IMAGE = f"{PLAIN_REPOSITORY}:{PLAIN_TAG}"

SUITE = "bookworm"
PREFECT2_REQUIREMENT = "prefect==2.20.*"
PREFECT3_REQUIREMENT = "prefect>=3,<4"
PREFECT2_PYTHON = "/opt/prefect2/bin/python"
PREFECT3_PYTHON = "/opt/prefect3/bin/python"
IMAGE_PATH = "/opt/prefect2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_ROOT = "/tmp/host-ca-certificates.crt"
STEP_TIMEOUT = 900.0
_OUTPUT_TAIL_CHARS = 3000


@dataclass
class ImageBuild:
    """An image ready in the daemon: built now (`built`), or found there."""

    tag: str
    built: bool
    size_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)


def _found(client: docker.DockerClient, tag: str) -> int | None:
    """The image's size when the daemon has it (`docker image inspect TAG`), else None."""
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return int(image.attrs.get("Size", 0))


def _run(argv: list[str], *, env: dict[str, str] | None = None) -> None:
    answer = subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    if answer.returncode != 0:
        output = (answer.stdout + answer.stderr)[-_OUTPUT_TAIL_CHARS:]
        raise RuntimeError(f"{argv[:4]} ... failed ({answer.returncode}):\n{output}")


def _mounts_under(root: Path) -> list[str]:
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(root) or point.startswith(f"{root}/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_root(root: Path) -> None:
    """Remove a build directory: its mounts undone first, and never crossing into one."""
    for point in _mounts_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if _mounts_under(root):
        raise RuntimeError(f"{root} still has mounts inside; left in place: {_mounts_under(root)}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


def _remove_stale_builds(parent: Path) -> None:
    """Remove build directories left by a process that died while building (each is named
    after its builder's pid), so a stopped session costs no disk for long."""
    for entry in parent.glob("*-rootfs-*"):
        pid = entry.name.split("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(RuntimeError):
                _remove_root(entry)


@contextlib.contextmanager
def _build_dir(prefix: str) -> Iterator[Path]:
    # Under the cache, not /tmp: /tmp may be a small tmpfs, and the root is a few hundred MB.
    parent = cache_dir() / "build"
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(parent)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-rootfs-{os.getpid()}-", dir=parent))
    try:
        yield path
    finally:
        _remove_root(path)


def _import(
    client: docker.DockerClient, root: Path, repository: str, tag: str, changes: list[str]
) -> None:
    """`tar -C root -c . | docker import -c ... - repository:tag`, without a tar file."""
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(root), "-c", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tar.stdout is not None and tar.stderr is not None
    try:
        client.api.import_image_from_stream(
            tar.stdout, repository=repository, tag=tag, changes=changes
        )
    finally:
        tar.stdout.close()
        error = tar.stderr.read().decode(errors="replace")
        tar.stderr.close()
        tar.wait()
    if tar.returncode != 0:
        raise RuntimeError(f"tar of {root} failed ({tar.returncode}): {error[-2000:]}")


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise UnavailableError(f"building {what} needs root (debootstrap, chroot)")


def _chroot_env() -> dict[str, str]:
    """The environment of the commands run inside the new root: its own, plus the proxy
    settings a machine may need to reach PyPI."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PIP_CERT": CA_IN_ROOT,
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_DEFAULT_TIMEOUT": "180",
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _venv(root: Path, venv: str, requirement: str) -> None:
    env = _chroot_env()
    _run(["chroot", str(root), "python3", "-m", "venv", venv], env=env)
    _run(["chroot", str(root), f"{venv}/bin/pip", "install", "-q", requirement], env=env)


def ensure_flow_image(client: docker.DockerClient) -> ImageBuild:
    """`FLOW_IMAGE` in the daemon: found, or built now (a few minutes)."""
    size = _found(client, FLOW_IMAGE)
    if size is not None:
        return ImageBuild(FLOW_IMAGE, built=False, size_bytes=size)
    _need_root("the flow image")
    seconds: dict[str, float] = {}
    began = time.monotonic()
    debootstrap = ensure_program("debootstrap", "debootstrap")
    seconds["install debootstrap"] = time.monotonic() - began
    with _build_dir("flow") as root:
        step = time.monotonic()
        _run(
            [
                debootstrap,
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                SUITE,
                str(root),
            ]
        )
        seconds["debootstrap"] = time.monotonic() - step
        ca = root / CA_IN_ROOT.lstrip("/")
        if HOST_CA_BUNDLE.exists():
            shutil.copyfile(HOST_CA_BUNDLE, ca)
        else:  # a machine without a bundle: the root's own, from Debian's ca-certificates
            shutil.copyfile(root / HOST_CA_BUNDLE.relative_to("/"), ca)
        step = time.monotonic()
        _venv(root, "/opt/prefect2", PREFECT2_REQUIREMENT)
        seconds["pip prefect 2.20"] = time.monotonic() - step
        step = time.monotonic()
        _venv(root, "/opt/prefect3", PREFECT3_REQUIREMENT)
        seconds["pip prefect 3"] = time.monotonic() - step
        ca.unlink()
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        step = time.monotonic()
        _import(
            client,
            root,
            FLOW_REPOSITORY,
            FLOW_TAG,
            [
                f"ENV PATH={IMAGE_PATH}",
                "ENV LANG=C.UTF-8",
                "ENV PYTHONUNBUFFERED=1",
                f"LABEL org.prefect-actor-agent.recipe={FLOW_RECIPE}",
                f'CMD ["{PREFECT2_PYTHON}"]',
            ],
        )
        seconds["docker import"] = time.monotonic() - step
    seconds["total"] = time.monotonic() - began
    size = _found(client, FLOW_IMAGE)
    if size is None:
        raise RuntimeError(f"imported {FLOW_IMAGE}, yet the daemon does not have it")
    return ImageBuild(FLOW_IMAGE, built=True, size_bytes=size, seconds=seconds)


def ensure_plain_image(client: docker.DockerClient) -> ImageBuild:
    """`PLAIN_IMAGE` in the daemon: a static busybox and its applets, nothing else."""
    size = _found(client, PLAIN_IMAGE)
    if size is not None:
        return ImageBuild(PLAIN_IMAGE, built=False, size_bytes=size)
    _need_root("the plain image")
    seconds: dict[str, float] = {}
    began = time.monotonic()
    busybox = ensure_program("busybox", "busybox-static")
    seconds["install busybox-static"] = time.monotonic() - began
    if subprocess.run(["ldd", busybox], capture_output=True, check=False).returncode == 0:
        raise UnavailableError(f"{busybox} is not static; the plain image needs busybox-static")
    with _build_dir("plain") as root:
        step = time.monotonic()
        for part in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            (root / part).mkdir()
        (root / "tmp").chmod(0o1777)
        shutil.copy2(busybox, root / "bin" / "busybox")
        applets = subprocess.run(
            [busybox, "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc" / "group").write_text("root:x:0:\n")
        _import(
            client,
            root,
            PLAIN_REPOSITORY,
            PLAIN_TAG,
            ["ENV PATH=/bin", f"LABEL org.prefect-actor-agent.recipe={PLAIN_RECIPE}", 'CMD ["sh"]'],
        )
        seconds["docker import"] = time.monotonic() - step
    seconds["total"] = time.monotonic() - began
    size = _found(client, PLAIN_IMAGE)
    if size is None:
        raise RuntimeError(f"imported {PLAIN_IMAGE}, yet the daemon does not have it")
    return ImageBuild(PLAIN_IMAGE, built=True, size_bytes=size, seconds=seconds)
