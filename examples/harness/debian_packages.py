"""Programs the Docker harness needs, installed from Debian's packages when they are missing.

Why apt and not a download: the machines this project runs on (developers', CI's) reach
Debian's mirror and PyPI only, and a new machine has none of `dockerd`, `debootstrap`,
`docker-registry` or `htpasswd`; the project's own files must install what its tests use.
`ensure_program("dockerd", "docker.io")` installs the package only when the program is not on
PATH, only as root on Debian, and otherwise raises `UnavailableError` with the reason, which the
fixtures turn into a skip. `apt-get update` runs once per process, before the first install.

Installing must not start a service: a package's maintainer script would start a system
daemon (Debian's `docker.io` ships an init script) that nobody stops. Debian's way to forbid
that is `/usr/sbin/policy-rc.d` answering 101; when the machine has none, one is put there
for the install and removed afterwards.

Each install's seconds are kept in `INSTALL_SECONDS` (package name -> seconds), for the
reports of how long a first session takes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["INSTALL_SECONDS", "UnavailableError", "ensure_program"]

INSTALL_TIMEOUT = 900.0
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

INSTALL_SECONDS: dict[str, float] = {}
_updated = False
_lock = threading.Lock()


class UnavailableError(RuntimeError):
    """A part the harness needs cannot be had on this machine; the message says why."""


def _which(program: str) -> str | None:
    """Like `shutil.which`, also looking where Debian puts daemons (a non-login PATH may lack
    /usr/sbin, where `dockerd` lives)."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    return shutil.which(program, path=path)


def _is_debian() -> bool:
    return Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Forbid maintainer scripts to start services, unless the machine forbids it already."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text(
        "#!/bin/sh\n# put here by prefect-actor-agent's test harness\nexit 101\n"
    )
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def _apt_get(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    answer = subprocess.run(
        ["apt-get", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if answer.returncode != 0:
        raise UnavailableError(
            f"apt-get {' '.join(args)} failed ({answer.returncode}): {answer.stderr[-2000:]}"
        )


def ensure_program(program: str, package: str) -> str:
    """The path of `program`, after installing Debian's `package` if it was missing."""
    found = _which(program)
    if found:
        return found
    if os.geteuid() != 0 or not _is_debian():
        raise UnavailableError(
            f"`{program}` is missing, and only root on Debian installs it here "
            f"(apt-get install {package})"
        )
    global _updated  # noqa: PLW0603 - one index update per process is enough
    with _lock:
        found = _which(program)
        if found:
            return found
        began = time.monotonic()
        if not _updated:
            _apt_get("update")
            _updated = True
        with _no_service_starts():
            _apt_get("install", "-y", package)
        INSTALL_SECONDS[package] = time.monotonic() - began
    found = _which(program)
    if not found:
        raise UnavailableError(f"installed {package}, yet `{program}` is not on PATH")
    return found
