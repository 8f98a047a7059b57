"""The containers part's set-up: its contenders, the Docker daemon they share, what each is
given on its server (a `DockerContainer` block on 2.20, a `docker` pool on 3.x), how each is
started, and what the daemon and /proc say of them.

    2.20 ours      examples/agent.py -q Q                     (a DockerContainer block)
    2.20 official  prefect agent start -q Q                   (the block's own run())
    3.x ours       examples/agent.py -p POOL -q Q             (a docker pool)
    3.x worker     prefect worker start -p POOL --type docker (prefect-docker)

Every contender gets the same image, command, volume and network: the flow image
(examples/harness/flow_image.py) runs the benchmark's marker script (pickup.py) with the
image's own Python, `network_mode="host"` (the daemon has no bridge), the work directory as
a volume at its own path, `auto_remove` off (the daemon's `FinishedAt` is read after a stop;
the benchmark removes the containers). A 3.x pool is made with the server's own default base
job template for `docker` (the one its UI offers), so the worker sees what a user would give it.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from examples.benchmark.contenders import LAUNCHER, Agent, Contender, clean_env, prefect_cli
from examples.benchmark.pickup import HOLD_SECONDS
from examples.benchmark.pickup_agents import Entrant, ours_has_events_flag
from examples.benchmark.procs import ProcessGuard, descendants, proc_stat, rss_kib
from examples.benchmark.server import FLOW_DIR, BenchServer
from examples.harness import prefect3
from examples.harness.agent_status import STATUS_HOST, free_port
from examples.harness.docker_daemon import DockerDaemon

BENCH_LABEL = "org.prefect-actor-agent.bench"
# The run's label as Prefect 3 (and ours) write it, and as 2.20's DockerContainer leaves it
FLOW_RUN_LABELS = ("io.prefect.flow-run-id", "prefect.io/flow-run-id")
IMAGE_PYTHON = "/usr/bin/python3"  # the image's own Python: the marker script needs no Prefect

NAMES = ("ours", "official", "ours-3", "worker")
ENTRANTS: dict[str, Entrant] = {
    "ours": Entrant("ours", "2", "examples/agent.py -q Q (a 2.20 DockerContainer block)"),
    "official": Entrant(
        "official", "2", "prefect agent start -q Q (Prefect 2.20: the block's own run())"
    ),
    "ours-3": Entrant("ours", "3", "examples/agent.py -p POOL -q Q (a 3.x docker pool)"),
    "worker": Entrant(
        "worker", "3", "prefect worker start -p POOL -q Q --type docker (prefect-docker)"
    ),
}


@dataclass
class Place:
    """A contender's queue (and 3.x pool), its deployment, and the label on its containers."""

    queue: str
    pool: str | None
    deployment_id: str
    label: str  # BENCH_LABEL's value on every container of this contender


def docker_pool_template() -> dict[str, Any]:
    """Prefect's own base job template of a `docker` pool, as the 3.x server offers it."""
    found = sorted(
        prefect3.VENV.glob(
            "lib/python*/site-packages/prefect/server/api/collections_data/views/"
            "aggregate-worker-metadata.json"
        )
    )
    if not found:
        raise RuntimeError(f"no worker metadata in {prefect3.VENV}")
    metadata = json.loads(found[0].read_text())
    template: dict[str, Any] = metadata["prefect-docker"]["docker"][
        "default_base_job_configuration"
    ]
    return template


def hold_command(script: Path) -> list[str]:
    """The marker script held until SIGTERM (it writes `.start`, then `.term`)."""
    return [IMAGE_PYTHON, "-I", "-S", str(script), "hold", f"{HOLD_SECONDS:g}"]


def make_place(
    bench: BenchServer,
    entrant: Entrant,
    *,
    name: str,
    image: str,
    script: Path,
    work_dir: Path,
    markers: Path,
    daemon_labels: dict[str, str],
) -> Place:
    """A fresh queue (3.x: in a new `docker` pool) and a deployment whose runs start the held
    marker script in a container of `image`."""
    base = f"bench-{bench.tag}-{name}"
    label = f"{bench.tag}-{name}"
    labels = {**daemon_labels, BENCH_LABEL: label}
    command = hold_command(script)
    volumes = [f"{work_dir}:{work_dir}"]
    env = {"MARKER_DIR": str(markers)}
    if entrant.major == "3":
        bench.api.call(
            "POST",
            "work_pools/",
            json={"name": base, "type": "docker", "base_job_template": docker_pool_template()},
        )
        bench.api.create_pool_queue(base, base)
        deployment = bench.api.create_deployment(
            bench.flow_id,
            base,
            work_pool=base,
            work_queue=base,
            path=str(FLOW_DIR),
            entrypoint="demo_flow.py:demo",
            job_variables={
                "image": image,
                "image_pull_policy": "Never",
                "command": shlex.join(command),
                "volumes": volumes,
                "env": env,
                "labels": labels,
                "network_mode": "host",
                "auto_remove": False,
            },
        )
        return Place(base, base, deployment, label)
    bench.api.call("POST", "work_queues/", json={"name": base})
    block = bench.api.create_block_document(
        "docker-container",
        {
            "type": "docker-container",
            "image": image,
            "image_pull_policy": "NEVER",
            "command": command,
            "volumes": volumes,
            "env": env,
            "labels": labels,
            "network_mode": "host",
            "auto_remove": False,
            "stream_output": True,
        },
    )
    deployment = bench.api.create_deployment(
        bench.flow_id,
        base,
        work_queue=base,
        infrastructure_document_id=block,
        path=str(FLOW_DIR),
        entrypoint="demo_flow.py:demo",
    )
    return Place(base, None, deployment, label)


def launch(
    guard: ProcessGuard,
    entrant: Entrant,
    *,
    api_url: str,
    place: Place,
    daemon: DockerDaemon,
    work_dir: Path,
    log_name: str,
    query_interval: float | None,
) -> Agent:
    """Start one contender at its defaults (`query_interval`: every contender's poll, for
    quick checks only), with the daemon in its environment as Docker's tools find it."""
    log = work_dir / f"{log_name}.log"
    env = {**clean_env(work_dir / f"home-{log_name}"), **daemon.environ}
    status_url = None
    if entrant.name == "ours":
        port = free_port()
        status_url = f"http://{STATUS_HOST}:{port}"
        argv = [sys.executable, str(LAUNCHER), "--api", api_url]
        if place.pool is not None:
            argv += ["-p", place.pool]
        argv += ["-q", place.queue, "--status-host", STATUS_HOST, "--status-port", str(port)]
        if ours_has_events_flag():
            argv += ["--events", "auto"]
        if query_interval is not None:
            argv += ["--query-interval", f"{query_interval:g}"]
    elif entrant.name == "worker":
        assert place.pool is not None
        env["PREFECT_API_URL"] = api_url
        argv = [str(prefect3.VENV / "bin" / "prefect"), "worker", "start", "--type", "docker"]
        argv += ["--pool", place.pool, "--work-queue", place.queue]
        if query_interval is not None:
            env["PREFECT_WORKER_QUERY_SECONDS"] = f"{query_interval:g}"
    elif entrant.name == "official":
        env["PREFECT_API_URL"] = api_url
        argv = [prefect_cli(), "agent", "start", "-q", place.queue]
        if query_interval is not None:  # its cancellation check comes every 2 intervals
            env["PREFECT_AGENT_QUERY_INTERVAL"] = f"{query_interval:g}"
    else:
        raise ValueError(f"unknown contender {entrant.name}")
    contender = Contender(entrant.label, "ours" if status_url else "official", entrant.describe)
    return Agent(contender, guard.start(argv, env, log), log, status_url)


def docker_time(text: str | None) -> float | None:
    """A daemon timestamp (RFC 3339, nanoseconds) as epoch seconds; None for Docker's zero
    time (`0001-01-01T00:00:00Z`: never started, or not finished)."""
    if not text or text.startswith("0001-"):
        return None
    head, _, tail = text.rstrip("Z").partition(".")
    fraction = float(f"0.{tail}") if tail else 0.0
    moment = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return moment.timestamp() + fraction


@dataclass(frozen=True)
class ContainerTimes:
    run_id: str
    container_id: str
    running: bool
    started: float | None  # State.StartedAt: the daemon's record of the container's start
    finished: float | None  # State.FinishedAt


class Containers:
    """One contender's containers as the daemon sees them (by BENCH_LABEL)."""

    def __init__(self, daemon: DockerDaemon, label: str) -> None:
        self.client = daemon.client(timeout=120)
        self.label = label

    def close(self) -> None:
        self.client.close()

    def _ids(self) -> list[str]:
        listed = self.client.api.containers(
            all=True, quiet=True, filters={"label": f"{BENCH_LABEL}={self.label}"}
        )
        return [str(c["Id"]) for c in listed]

    def times(self, only: set[str] | None = None) -> dict[str, ContainerTimes]:
        """Run id -> its container's times (one container per run, the first seen)."""
        found: dict[str, ContainerTimes] = {}
        for container_id in self._ids():
            with contextlib.suppress(docker.errors.NotFound):
                attrs = self.client.api.inspect_container(container_id)
                labels = attrs["Config"].get("Labels") or {}
                run_id = next((labels[k] for k in FLOW_RUN_LABELS if labels.get(k)), "")
                if not run_id or (only is not None and run_id not in only) or run_id in found:
                    continue
                state = attrs["State"]
                found[run_id] = ContainerTimes(
                    run_id,
                    container_id,
                    bool(state.get("Running")),
                    docker_time(state.get("StartedAt")),
                    docker_time(state.get("FinishedAt")),
                )
        return found

    def count(self) -> int:
        return len(self._ids())

    def remove_all(self) -> int:
        """Force-remove every container of this contender (8 at a time); how many there were."""
        ids = self._ids()

        def remove(container_id: str) -> None:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                self.client.api.remove_container(container_id, force=True)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(remove, ids))
        return len(ids)


@contextlib.contextmanager
def containers_of(daemon: DockerDaemon, label: str) -> Iterator[Containers]:
    """The contender's containers, every one of them removed when the block ends."""
    containers = Containers(daemon, label)
    try:
        yield containers
    finally:
        containers.remove_all()
        containers.close()


def tree_rss_kib(pid: int) -> int:
    """RSS of the agent's process and every process below it (a container's processes are
    the daemon's shims' children, never the agent's, so none is counted)."""
    return rss_kib(pid) + sum(rss_kib(stat.pid) for stat in descendants(pid))


def tree_cpu_ticks(pid: int) -> int:
    own = proc_stat(pid)
    return (own.cpu_ticks if own else 0) + sum(s.cpu_ticks for s in descendants(pid))
