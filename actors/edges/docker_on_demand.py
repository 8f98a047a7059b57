"""The Docker kind as every agent holds it: loaded and connected on the first Docker run.

An agent runs 2.x DockerContainer blocks and 3.x docker pools by default, but it must neither
need the `docker` package nor talk to a daemon unless a run asks for a container. This stand-in
answers the registry's questions (its kind, block and pool types; whether a pid is a
container's, read from the pid's form alone) without either, and loads `docker_kind` (which
imports `docker`) and makes the `DockerKind` (which finds its daemon as Docker's tools do, from
the environment at that moment) on the first call that needs the daemon.

Without the package, each Docker run fails with one reason (`MISSING`), logged once. A daemon
that does not answer is the `DockerKind`'s to report: one reason per run, logged once per
change of that reason.

An agent that serves a Prefect 3 `docker` pool knows at start that it will need the daemon, and
`probe()` looks for it then: a daemon that does not answer is told in one line before any run
comes (a 2.x agent learns a run's kind only from its block, so it looks at the first Docker run).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from actors.edges.infrastructure import Reach, RunJob, RunSource
from actors.rules.docker_spec import parse_container_pid
from actors.rules.infrastructure import SubmissionError

if TYPE_CHECKING:
    from actors.edges.docker_kind import DockerKind
    from actors.edges.infrastructure import Infrastructure

log = logging.getLogger("prefect_actor_agent.docker")

MISSING = "the Docker kind needs the `docker` package: pip install 'prefect-actor-agent[docker]'"


class DockerOnDemand:
    """The Docker kind behind the seam, made on first use (see the module's docstring)."""

    kind = "docker"
    block_types = ("docker-container",)
    pool_types = ("docker",)
    outlives_agents = True  # a container is its daemon's: peers adopt it (`kinds`)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kind: DockerKind | None = None
        self._missing_logged = False
        self._probed = False

    def _load(self) -> DockerKind:
        """The real kind; `SubmissionError` (MISSING) when the `docker` package is not there."""
        with self._lock:
            if self._kind is not None:
                return self._kind
            try:
                from actors.edges.docker_kind import DockerKind  # noqa: PLC0415 - on first use
            except ImportError as exc:
                if not self._missing_logged:
                    self._missing_logged = True
                    log.warning("%s (%s)", MISSING, exc)
                raise SubmissionError(MISSING) from None
            self._kind = DockerKind()
            return self._kind

    @property
    def loaded(self) -> DockerKind | None:
        """The real kind once a Docker run made it; None before."""
        return self._kind

    def probe(self) -> None:
        """Look for the daemon now, once (blocks on it: call from an infrastructure call pool).
        It is logged either way: where it answers, or why not (the kind's one line)."""
        with self._lock:
            if self._probed:
                return
            self._probed = True
        try:
            daemon = self._load().daemon()
        except SubmissionError:
            return  # logged once, by the kind (or as MISSING)
        log.info(
            "the Docker daemon at %s answers (engine %s, %s, ID %s)",
            daemon.where,
            daemon.version,
            daemon.os_type,
            daemon.id,
        )

    def prepare(self, source: RunSource) -> object:
        return self._load().prepare(source)

    def create(self, spec: object) -> RunJob:
        return self._load().create(spec)

    def find(self, flow_run_id: str, infrastructure_pid: str | None) -> RunJob | None:
        """By a recorded pid, on the daemon. With none recorded (an earlier life's Pending
        run), no daemon is asked unless a Docker run of this life already connected: a
        container is only ever started after its pid is recorded, so a run with no pid has
        no running container to find."""
        if infrastructure_pid is None and self._kind is None:
            return None
        return self._load().find(flow_run_id, infrastructure_pid)

    def reach(self, infrastructure_pid: str) -> Reach:
        """ "not-mine" from the pid's form alone (no import, no daemon); a container's pid is
        asked of the daemon, and is "elsewhere" when the package is missing (nothing can be
        done to it from here)."""
        if parse_container_pid(infrastructure_pid) is None:
            return "not-mine"
        try:
            kind = self._load()
        except SubmissionError:
            return "elsewhere"
        return kind.reach(infrastructure_pid)

    def close(self) -> None:
        if self._kind is not None:
            self._kind.close()


if TYPE_CHECKING:  # the seam's Protocol, checked by mypy

    def _conforms(kind: DockerOnDemand) -> Infrastructure:
        return kind
