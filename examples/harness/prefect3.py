"""A real Prefect 3 server for the tests and the benchmark, from its own virtual environment.

Prefect 2 and 3 cannot share one environment, so the 3.x server (and the Prefect 3 engine
that runs its flows) live in `.venv-prefect3` at the repository's root, made on first use
from the current 3.x on PyPI, with `prefect-docker` (Prefect 3's docker worker, which the
benchmark's `containers` part runs) added at the same Prefect version. Making it and
starting the server take a minute or more, so the session starts both in the background as
soon as it knows a 3.x test will run; the 2.20 tests run meanwhile, and the first 3.x test
waits for whatever is left.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from actors.launcher.local_server import LocalPrefectServer
from examples.harness.background_server import BackgroundServer
from examples.harness.bytecode import compile_installed

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-prefect3"
REQUIREMENT = "prefect>=3,<4"
# Prefect 3's docker worker (`prefect worker start --type docker`) lives in this collection;
# the benchmark's `containers` part runs it as the anchor of the 3.x docker pool.
DOCKER_WORKER_REQUIREMENT = "prefect-docker"
PYTHON = VENV / "bin" / "python"
INSTALL_TIMEOUT = 900.0
SERVER_ENV = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    # A run refused for its deployment's concurrency limit comes back after this many seconds
    # (30 by default): short, so the test of that waits little.
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
}


def _ensure_venv(log: Path) -> float:
    """Seconds spent making the environment (0 when it was there already)."""
    marker = VENV / ".installed"
    if marker.exists():
        return 0.0
    began = time.monotonic()
    with log.open("ab") as out:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(VENV)],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        subprocess.run(
            [str(PYTHON), "-m", "pip", "install", "-q", REQUIREMENT],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT,
        )
    compile_installed(str(PYTHON))  # once, not in every process that imports Prefect 3
    marker.write_text(REQUIREMENT + "\n")
    return time.monotonic() - began


def ensure_docker_worker(log: Path) -> float:
    """`prefect-docker` in the environment (made first if need be); seconds spent installing
    (0 when both were there). Pinned to the Prefect already installed, so adding the worker
    never upgrades the server the tests run."""
    began = time.monotonic()
    spent = _ensure_venv(log)
    marker = VENV / ".prefect-docker-installed"
    if marker.exists():
        return spent
    with log.open("ab") as out:
        subprocess.run(
            [
                str(PYTHON), "-m", "pip", "install", "-q",
                DOCKER_WORKER_REQUIREMENT, f"prefect=={prefect3_version()}",
            ],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT,
        )  # fmt: skip
    compile_installed(str(PYTHON))
    marker.write_text(DOCKER_WORKER_REQUIREMENT + "\n")
    return time.monotonic() - began


def prefect3_version() -> str:
    answer = subprocess.run(
        [str(PYTHON), "-c", "import prefect; print(prefect.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    )
    return answer.stdout.strip()


class Prefect3Server(BackgroundServer):
    """Makes the environment and starts the server in a background thread; `wait()` joins."""

    name = "prefect3-server"
    what = "the Prefect 3 server"
    kind = "a Prefect 3 server"
    ready_within = INSTALL_TIMEOUT + 240.0
    stop_within = 5.0  # at the session's end, not a wait for an install (it can take minutes)

    def __init__(self) -> None:
        super().__init__()
        self.install_seconds = 0.0

    def _prepare(self) -> None:
        log = self.home / "install.log"
        self.install_seconds = _ensure_venv(log)
        # Prefect 3's docker worker too, while the session's 2.20 tests run: the benchmark's
        # smoke test then finds it. The server needs none of it, so a failed install is left
        # to the benchmark to report (it installs again, and says why it could not).
        try:
            self.install_seconds += ensure_docker_worker(log)
        except (subprocess.SubprocessError, OSError) as exc:
            with log.open("a") as out:
                out.write(f"prefect-docker not installed: {exc}\n")

    def _make(self) -> LocalPrefectServer:
        return LocalPrefectServer(home=self.home / "home", python=str(PYTHON), env=SERVER_ENV)

    def _failure(self, error: BaseException) -> str:
        log = self.home / "install.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        return f"{super()._failure(error)}\n{tail}"
