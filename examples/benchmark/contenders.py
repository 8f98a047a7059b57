"""The contenders: how each is started on its queue, and what the benchmark keeps of it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from examples.benchmark.procs import ROOT, ProcessGuard
from examples.harness.agent_status import STATUS_HOST, free_port

LAUNCHER = ROOT / "examples" / "agent.py"
HOSTNAME = socket.gethostname()
ALL_CONTENDERS = ("ceiling", "official-1s", "official", "ours")

Kind = Literal["ceiling", "official", "ours"]


@dataclass(frozen=True)
class Contender:
    """One way of moving runs from Scheduled to a process; `env` is what differs from defaults."""

    name: str
    kind: Kind
    describe: str
    env: dict[str, str] = field(default_factory=dict)


CONTENDERS: dict[str, Contender] = {
    "ceiling": Contender(
        "ceiling",
        "ceiling",
        "httpx, 8 threads: POST set_state Pending + PATCH infrastructure_pid per run, no agent",
    ),
    "official-1s": Contender(
        "official-1s",
        "official",
        "prefect agent start -q Q, PREFECT_AGENT_QUERY_INTERVAL=1",
        {"PREFECT_AGENT_QUERY_INTERVAL": "1"},
    ),
    "official": Contender(
        "official", "official", "prefect agent start -q Q (defaults: 15 s interval, 15 s prefetch)"
    ),
    "ours": Contender(
        "ours",
        "ours",
        f"examples/agent.py --api URL -q Q (defaults; --status-port P on {STATUS_HOST})",
    ),
}


class ContenderError(RuntimeError):
    """A contender exited by itself or misbehaved; the message carries its log's tail."""


@dataclass
class Agent:
    """A contender's agent process, started here; `status_url` is ours' status endpoint."""

    contender: Contender
    process: subprocess.Popen[bytes]
    log: Path
    status_url: str | None = None

    def check_alive(self, doing: str = "") -> None:
        if self.process.poll() is not None:
            raise ContenderError(
                f"the agent exited with {self.process.returncode}{doing}; its log ends:\n"
                f"{log_tail(self.log)}"
            )


def prefect_cli() -> str:
    """The `prefect` next to this interpreter: the same installation as the server's."""
    candidate = Path(sys.executable).parent / "prefect"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("prefect")
    if found is None:
        raise RuntimeError("the `prefect` CLI was not found next to the interpreter or on PATH")
    return found


def clean_env(home: Path) -> dict[str, str]:
    """This environment without any Prefect setting, so every agent runs at its defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if os.environ.get("PREFECT_API_KEY"):
        env["PREFECT_API_KEY"] = os.environ["PREFECT_API_KEY"]
    # A fresh home: no profile of the user's can change the official agent's settings.
    env["PREFECT_HOME"] = str(home)
    return env


def launch(
    guard: ProcessGuard,
    contender: Contender,
    api_url: str,
    queue: str,
    work_dir: Path,
    *,
    limit: int | None = None,
) -> Agent:
    """Start one agent on its queue, its output in a log (the official agent's log is also a
    measurement); ours serves its status endpoint, whose /metrics the benchmark reads.

    `limit`: ours gets `--limit` (the official agent has no such flag)."""
    log = work_dir / f"{contender.name}-{queue}.log"
    env = clean_env(work_dir / "prefect-home")
    status_url = None
    if contender.kind == "official":
        env["PREFECT_API_URL"] = api_url
        env.update(contender.env)
        argv = [prefect_cli(), "agent", "start", "-q", queue]
    elif contender.kind == "ours":
        port = free_port()
        status_url = f"http://{STATUS_HOST}:{port}"
        argv = [sys.executable, str(LAUNCHER), "--api", api_url, "-q", queue]
        argv += ["--status-host", STATUS_HOST, "--status-port", str(port)]
        if limit is not None:
            argv += ["--limit", str(limit)]
    else:
        raise ValueError(f"{contender.name} is not an agent")
    return Agent(contender, guard.start(argv, env, log), log, status_url)


def log_tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


def local_pids(infrastructure_pids: Iterable[str]) -> list[int]:
    """The pids of `hostname:pid` values recorded on this host."""
    pids = []
    for value in infrastructure_pids:
        host, _, pid = value.rpartition(":")
        if host == HOSTNAME and pid.isdigit():
            pids.append(int(pid))
    return pids
