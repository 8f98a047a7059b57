"""The Docker kind behind the infrastructure seam: a flow run in a container of a Docker daemon.

The daemon is found as Docker's own tools find it (`docker.from_env()`: DOCKER_HOST,
DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, the CLI context, the default socket). A daemon that does
not answer is one `SubmissionError` naming it, for each run that wants it, never a traceback.

What this kind does differently from Prefect's DockerContainer, and why:

- A container is created, not started, by `create`: its pid (`docker:<daemon ID>:<container
  id>`, the daemon's unique `ID` from `/info`) is known before it starts, so the server can
  record it first and no started container is ever without its pid.
- Docker's `AutoRemove` is never asked for: the exit code is read from the wait API's answer
  and `State.OOMKilled` from an inspect after it (the daemon may record an OOM kill late, or
  miss it: a SIGKILL exit of a memory-limited container the agent did not kill is then
  "most likely out of memory"), and only then, in `after_exit`, is the
  container removed (when the block asked for `auto_remove`). Prefect lost exit codes to that
  race (PrefectHQ/prefect#6648).
- A daemon that stops answering while a container runs (a restart, an upgrade) is waited for
  (`DAEMON_RETURN_SECONDS`): back, the container's end is read as usual (its code, with "the
  Docker daemon restarted while the container ran"), or it is watched on if it still runs
  (live restore); gone for good, the run ends with "the Docker daemon went away".
- A pull's streamed errors are errors (docker/docker-py#2286: a failed pull that looked fine
  ran a stale image); credentials are sent with the pull only, and only when it pulls.

Every call here blocks on the daemon: the supervisor makes them from a helper, off its inbox.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import docker
import docker.errors
import requests

from actors.edges.infrastructure import ExitStatus, Infrastructure, Reach, RunJob, RunSource
from actors.rules.docker_spec import (
    AUTO_REMOVE_LABEL,
    FLOW_RUN_LABEL,
    LEGACY_FLOW_RUN_LABEL,
    DockerSpec,
    docker_spec,
    format_container_pid,
    memory_text,
    parse_container_pid,
)
from actors.rules.infrastructure import SubmissionError

log = logging.getLogger("prefect_actor_agent.docker")

NAME_CONFLICT_RETRIES = 100
LOG_DRAIN_SECONDS = 5.0
# Each running container holds a connection while it is waited for, and one more while its
# output is streamed: a pool as small as docker-py's default (10) would drop and reopen them.
MAX_POOL_SIZE = 64
# A daemon that stops answering while containers run is waited for this long (a restart, an
# upgrade) before their runs are ended as "the daemon went away"; polled this often.
DAEMON_RETURN_SECONDS = 60.0
DAEMON_POLL_SECONDS = 0.5
# A container killed from outside the agent: the daemon shutting down does it (dockerd stops its
# containers, answering their waits, then goes, within its --shutdown-timeout, 15 s by default),
# and so does an operator's `docker stop`. Watched this long to tell them apart.
OUTSIDE_STOP_WINDOW_SECONDS = 20.0
EVENTS_LOOKBACK_SECONDS = 7 * 24 * 3600
# After the daemon did not answer, it is asked again (by the next run) no sooner than this.
DAEMON_RETRY_SECONDS = 2.0
SIGKILL_EXIT = 128 + int(signal.SIGKILL)
OOM_SETTLE_SECONDS = 0.5
OOM_SETTLE_POLL = 0.05
# What runc says when a container's command is not in its image, and dockerd when a network
# the container joins does not exist: both come at start, in words a user must dig out.
_MISSING_COMMAND = re.compile(
    r'unable to start container process: exec: "([^"]*)": (.*?)(?:: unknown)?$'
)
_MISSING_NETWORK = re.compile(r"^network (\S+) not found$")


def agent_prefect_version() -> str | None:
    """The Prefect installed next to the agent (the agent never imports it), or None."""
    try:
        return importlib.metadata.version("prefect")
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class DaemonInfo:
    """What the kind needs to know of its daemon, read once from `/info`."""

    id: str
    os_type: str  # "linux"
    version: str  # "20.10.24"
    where: str  # DOCKER_HOST, or the client's base URL, for messages

    @property
    def host_gateway(self) -> bool:
        """Whether the daemon maps `host-gateway` in extra hosts (20.10 and later)."""
        try:
            major, minor = (int(p) for p in self.version.split("-")[0].split(".")[:2])
        except ValueError:
            return True
        return (major, minor) >= (20, 10)


class DockerUnavailableError(SubmissionError):
    """The daemon does not answer: one message that says where it was looked for."""


class DockerKind:
    """The Docker kind: one daemon, the one `docker.from_env()` finds; 2.x DockerContainer
    blocks and 3.x docker pools."""

    kind = "docker"
    block_types = ("docker-container",)
    pool_types = ("docker",)
    outlives_agents = True  # a container is its daemon's: peers adopt it (`kinds`)

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        timeout: int = 60,
        output: TextIO | None = None,
        daemon_return_seconds: float = DAEMON_RETURN_SECONDS,
    ) -> None:
        self.daemon_return_seconds = daemon_return_seconds
        self._environ = dict(os.environ if environ is None else environ)
        self._timeout = timeout
        self._output = output
        self._lock = threading.Lock()
        self._client: docker.DockerClient | None = None
        self._info: DaemonInfo | None = None
        self._unavailable: str | None = None  # the last failure, logged once
        self._retry_at = 0.0  # monotonic: the daemon is not asked again before then

    # -- the daemon ------------------------------------------------------------------------

    def client(self) -> docker.DockerClient:
        """The daemon's client (made on first use; kept)."""
        self.daemon()
        client = self._client
        if client is None:  # closed meanwhile
            raise DockerUnavailableError("the Docker kind was closed")
        return client

    def daemon(self) -> DaemonInfo:
        """The daemon's identity; `DockerUnavailableError` when it does not answer."""
        with self._lock:
            if self._info is not None and self._client is not None:
                return self._info
            if self._unavailable is not None and time.monotonic() < self._retry_at:
                # Runs that queued behind a daemon that did not answer (a read timeout can be
                # a minute) fail with its reason at once, not one timeout after another.
                raise DockerUnavailableError(self._unavailable)
            where = self._environ.get("DOCKER_HOST") or "the default Docker socket"
            try:
                client = docker.from_env(
                    environment=self._environ,
                    timeout=self._timeout,
                    max_pool_size=MAX_POOL_SIZE,
                )
                if "DOCKER_HOST" not in self._environ:
                    # A socket's base URL is `http+docker://localhost` whichever it is.
                    base = str(client.api.base_url)
                    where = "the default Docker socket" if base.startswith("http+docker") else base
                info = client.info()
            except docker.errors.DockerException as exc:
                message = (
                    f"the Docker daemon at {where} does not answer: "
                    f"{_unreachable_reason(exc, self._timeout)}"
                )
                self._retry_at = time.monotonic() + DAEMON_RETRY_SECONDS
                if message != self._unavailable:
                    log.warning("%s", message)
                    self._unavailable = message
                raise DockerUnavailableError(message) from None
            if self._unavailable is not None:
                log.info("the Docker daemon at %s answers again", where)
                self._unavailable = None
            self._client = client
            self._info = DaemonInfo(
                id=str(info["ID"]),
                os_type=str(info.get("OSType") or "linux"),
                version=str(info.get("ServerVersion") or ""),
                where=where,
            )
            return self._info

    def where(self) -> str:
        """Where the daemon is (the client's base URL once connected), for messages."""
        info = self._info
        return (
            info.where
            if info is not None
            else (self._environ.get("DOCKER_HOST") or "the default Docker socket")
        )

    def answers_again(self) -> bool:
        """After the daemon stopped answering a container's watcher: whether it answers again
        within `daemon_return_seconds` (a restart), polled every half second; False: it went
        away. Blocks: a watcher's helper calls it, never an inbox."""
        deadline = time.monotonic() + self.daemon_return_seconds
        while True:
            with contextlib.suppress(
                requests.exceptions.RequestException, OSError, docker.errors.DockerException
            ):
                if self.client().api.ping():
                    log.info("the Docker daemon at %s answers again", self.where())
                    return True
            if time.monotonic() >= deadline:
                log.warning(
                    "the Docker daemon at %s did not answer again within %.0fs",
                    self.where(),
                    self.daemon_return_seconds,
                )
                return False
            time.sleep(DAEMON_POLL_SECONDS)

    def stops_answering(self, within: float) -> bool:
        """Whether the daemon stops answering within `within` seconds (it is shutting down:
        it stops its containers first, answering their waits, then goes); polled."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                self.client().api.ping()
            except (requests.exceptions.RequestException, OSError, docker.errors.DockerException):
                return True
            time.sleep(DAEMON_POLL_SECONDS / 2)
        return False

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None
            self._info = None

    # -- the seam --------------------------------------------------------------------------

    def prepare(self, source: RunSource) -> DockerSpec:
        """The container's spec; the daemon is asked once (its OS decides the network rule)."""
        daemon = self.daemon()
        return docker_spec(
            source.flow_run,
            source.deployment,
            source.block,
            api_url=source.api_url,
            api_key=source.api_key,
            worker_name=source.worker_name,
            agent_env=os.environ if source.base_env is None else source.base_env,
            daemon_os=daemon.os_type,
            host_gateway=daemon.host_gateway,
            prefect_version=agent_prefect_version(),
            job_variables=source.job_variables,
            pool=source.pool,
        )

    def create(self, spec: object) -> ContainerJob:
        """Pull as the policy says, then create the container (not started). Whatever the
        daemon answers wrong is a `SubmissionError` with its short message (the run is
        Failed with it), not docker-py's request dump."""
        if not isinstance(spec, DockerSpec):
            raise TypeError(f"the Docker kind creates from a DockerSpec, not {spec!r}")
        try:
            return self._create_job(spec)
        except SubmissionError:
            raise
        except (docker.errors.DockerException, OSError) as exc:
            raise SubmissionError(
                f"container for image {spec.image!r} could not be created: {_short(exc)}"
            ) from None

    def _create_job(self, spec: DockerSpec) -> ContainerJob:
        daemon = self.daemon()
        api = self.client().api
        self._pull(api, spec)
        host_config = api.create_host_config(
            binds=list(spec.binds) or None,
            network_mode=spec.networks[0] if spec.networks else spec.network_mode,
            extra_hosts=spec.extra_hosts,
            mem_limit=spec.mem_limit,
            memswap_limit=spec.memswap_limit,
            privileged=spec.privileged,
        )
        networking = None
        if spec.networks:
            networking = api.create_networking_config(
                {spec.networks[0]: api.create_endpoint_config()}
            )
        container_id, name = self._create(api, spec, host_config, networking)
        try:
            for network in spec.networks[1:]:
                api.connect_container_to_network(container_id, network)
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container_id, force=True)
            raise SubmissionError(
                f"container {name!r} could not join its networks: {_short(exc)}"
            ) from None
        log.info("created container %s (%s) from %s", name, container_id[:12], spec.image)
        return ContainerJob(
            self,
            daemon.id,
            container_id,
            name,
            stream_output=spec.stream_output,
            auto_remove=spec.auto_remove,
            mem_limit_text=spec.mem_limit_text,
            image=spec.image,
        )

    def find(self, flow_run_id: str, infrastructure_pid: str | None) -> ContainerJob | None:
        """The run's container again: by its pid, or by its flow-run label when no pid was
        recorded (2.x's unconverted label too); None when it is gone."""
        daemon = self.daemon()
        api = self.client().api
        if infrastructure_pid is not None:
            parsed = parse_container_pid(infrastructure_pid)
            if parsed is None or parsed[0] != daemon.id:
                raise ValueError(f"{infrastructure_pid!r} is not a container of this daemon")
            try:
                attrs = api.inspect_container(parsed[1])
            except docker.errors.NotFound:
                return None
        else:
            found: list[dict[str, Any]] = []
            for label in (FLOW_RUN_LABEL, LEGACY_FLOW_RUN_LABEL):
                found += api.containers(all=True, filters={"label": f"{label}={flow_run_id}"})
            if not found:
                return None
            # The one that runs, else the newest.
            found.sort(key=lambda c: (c.get("State") == "running", c.get("Created", 0)))
            try:
                attrs = api.inspect_container(found[-1]["Id"])
            except docker.errors.NotFound:
                return None
        labels = attrs.get("Config", {}).get("Labels") or {}
        memory = attrs.get("HostConfig", {}).get("Memory") or 0
        return ContainerJob(
            self,
            daemon.id,
            attrs["Id"],
            attrs.get("Name", "").lstrip("/"),
            stream_output=False,
            auto_remove=labels.get(AUTO_REMOVE_LABEL) == "true",
            mem_limit_text=memory_text(memory) if memory else None,
            started=(attrs.get("State") or {}).get("Status") != "created",
        )

    def reach(self, infrastructure_pid: str) -> Reach:
        """Here for a container of this daemon; "elsewhere" for another daemon's (or when
        this daemon does not answer: nothing can be done to it from here)."""
        parsed = parse_container_pid(infrastructure_pid)
        if parsed is None:
            return "not-mine"
        try:
            daemon = self.daemon()
        except DockerUnavailableError:
            return "elsewhere"
        return "here" if parsed[0] == daemon.id else "elsewhere"

    # -- pulling and creating ----------------------------------------------------------------

    def _pull(self, api: Any, spec: DockerSpec) -> None:
        image = spec.image
        if spec.pull_policy in ("IfNotPresent", "Never"):
            if self._present(api, image):
                return
            if spec.pull_policy == "Never":
                raise SubmissionError(
                    f"image {image!r} is not present and image_pull_policy is Never"
                )
        try:
            self._pull_now(api, spec)
        except SubmissionError as pull_error:
            if spec.pull_policy != "IfPossible":
                raise
            if self._present(api, image):
                log.warning("%s; the local image is used (IfPossible)", pull_error)
                return
            raise SubmissionError(
                f"{pull_error}, and the image is not present (image_pull_policy IfPossible)"
            ) from None

    def _present(self, api: Any, image: str) -> bool:
        try:
            api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.NotFound:
            return False
        return True

    def _pull_now(self, api: Any, spec: DockerSpec) -> None:
        auth = None
        if spec.registry is not None:
            auth = {"username": spec.registry.username, "password": spec.registry.password}
            if spec.registry.registry_url:
                auth["serveraddress"] = spec.registry.registry_url
        log.info("pulling image %s", spec.image)
        try:
            for chunk in api.pull(spec.image, stream=True, decode=True, auth_config=auth):
                if isinstance(chunk, dict) and chunk.get("error"):
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    hint = _pull_hint(spec, str(detail))
                    raise SubmissionError(f"pulling image {spec.image!r} failed: {detail}{hint}")
        except docker.errors.APIError as exc:
            detail = _short(exc)
            hint = _pull_hint(spec, detail)
            raise SubmissionError(f"pulling image {spec.image!r} failed: {detail}{hint}") from None
        if not self._present(api, spec.image):
            raise SubmissionError(f"pulling image {spec.image!r} left no such image")

    def _create(
        self, api: Any, spec: DockerSpec, host_config: Any, networking: Any
    ) -> tuple[str, str]:
        base = spec.name
        name = base
        for attempt in range(NAME_CONFLICT_RETRIES + 1):
            if attempt and base is not None:
                name = f"{base}-{attempt}"
            try:
                created = api.create_container(
                    spec.image,
                    command=list(spec.command),
                    environment=spec.env,
                    labels=spec.labels,
                    name=name,
                    host_config=host_config,
                    networking_config=networking,
                    volumes=list(spec.anonymous_volumes) or None,
                )
            except docker.errors.APIError as exc:
                text = str(exc)
                if base is not None and "Conflict" in text and "container name" in text:
                    log.info("container name %r is taken; retrying", name)
                    continue
                raise SubmissionError(
                    f"container for image {spec.image!r} could not be created: {_short(exc)}"
                ) from None
            container_id = str(created["Id"])
            if name is None:
                name = str(api.inspect_container(container_id)["Name"]).lstrip("/")
            return container_id, name
        raise SubmissionError(
            f"container name {base!r} and {NAME_CONFLICT_RETRIES} numbered variants are taken"
        )


class ContainerJob:
    """One run's container (the seam's `RunJob`)."""

    def __init__(
        self,
        kind: DockerKind,
        daemon_id: str,
        container_id: str,
        name: str,
        *,
        stream_output: bool,
        auto_remove: bool,
        mem_limit_text: str | None,
        started: bool = False,
        image: str | None = None,
    ) -> None:
        self._kind = kind
        self._image = image
        self.container_id = container_id
        self.name = name
        self._pid = format_container_pid(daemon_id, container_id)
        self._stream_output = stream_output
        self._auto_remove = auto_remove
        self._mem_limit_text = mem_limit_text
        self._started = started
        self._streamer: threading.Thread | None = None
        self._signalled = False  # the agent sent it a signal (a cancel, a stop, a kill)
        self._killed = False  # the agent sent SIGKILL: a 137 is its own doing

    @property
    def infrastructure_pid(self) -> str | None:
        return self._pid

    @property
    def label(self) -> str:
        return f"container {self.name} ({self.container_id[:12]})"

    def _api(self) -> Any:
        return self._kind.client().api

    def _state(self) -> dict[str, Any] | None:
        try:
            attrs = self._api().inspect_container(self.container_id)
        except docker.errors.NotFound:
            return None
        state: dict[str, Any] = attrs.get("State") or {}
        return state

    def _gone_now(self) -> bool:
        """The daemon answers that the container no longer exists (False when it does not
        answer: that is for the daemon watch to tell)."""
        try:
            return self._state() is None
        except (requests.exceptions.RequestException, OSError, docker.errors.DockerException):
            return False

    @property
    def running(self) -> bool:
        state = self._state()
        return bool(state and state.get("Running"))

    def start(self) -> None:
        """Start it; a container that cannot start is removed and the error says why."""
        api = self._api()
        try:
            api.start(self.container_id)
        except (docker.errors.DockerException, OSError) as exc:
            # A container that cannot start (a missing executable, a bad bind path) would stay
            # "created" for ever: nothing of it is worth keeping, its pid then names nothing.
            with contextlib.suppress(docker.errors.DockerException, OSError):
                api.remove_container(self.container_id, force=True)
            why = _start_failure(_short(exc), self._image, self._kind)
            raise SubmissionError(f"{self.label} could not start: {why}") from None
        self._started = True
        if self._stream_output:
            self._streamer = threading.Thread(
                target=self._stream, name=f"logs-{self.name}", daemon=True
            )
            self._streamer.start()

    def _stream(self) -> None:
        """The container's output, line by line, to the agent's stdout (as a process's)."""
        out = self._kind._output or sys.stdout
        try:
            pending = b""
            for chunk in self._api().logs(self.container_id, stream=True, follow=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    out.write(line.decode(errors="replace") + "\n")
                out.flush()
            if pending:
                out.write(pending.decode(errors="replace") + "\n")
                out.flush()
        except (docker.errors.DockerException, OSError, ValueError) as exc:
            log.warning("the output of %s stopped: %s", self.label, _short(exc))

    def wait(self) -> ExitStatus:
        """Until the container exits: the wait API's StatusCode; an OOM kill from an inspect
        after it. A container never started (an agent died between create and start) has no
        exit to wait for: code None."""
        api = self._api()
        if not self._started:
            state = self._state()
            if state is None:
                return ExitStatus(None, "the container is gone")
            if state.get("Status") == "created":
                return ExitStatus(None, "the container was never started")
        restarted = False  # the daemon stopped answering while the container ran, and came back
        while True:
            try:
                answer = api.wait(self.container_id, timeout=None)
                break
            except docker.errors.NotFound:
                gone = "the container was removed before its exit was read"
                if restarted:
                    gone += " (after the Docker daemon restarted)"
                return ExitStatus(None, gone)
            except (requests.exceptions.RequestException, OSError, docker.errors.APIError) as exc:
                if isinstance(exc, docker.errors.APIError) and not exc.is_server_error():
                    raise
                where = self._kind.where()
                log.warning(
                    "%s: the Docker daemon at %s stopped answering while it ran (%s); waiting "
                    "up to %.0fs for the daemon to answer again",
                    self.label,
                    where,
                    _short(exc),
                    self._kind.daemon_return_seconds,
                )
                if not self._kind.answers_again():
                    return ExitStatus(
                        None, f"the Docker daemon at {where} went away while the container ran"
                    )
                restarted = True
                api = self._api()
        code = answer.get("StatusCode")
        error = (answer.get("Error") or {}).get("Message")
        if self._streamer is not None:
            self._streamer.join(LOG_DRAIN_SECONDS)
        return self._ending(None if code is None else int(code), error or None, restarted)

    def _ending(self, code: int | None, cause: str | None, restarted: bool) -> ExitStatus:
        """How the container ended, once its code is read: an OOM kill (recorded, or most
        likely), a stop from outside the agent, or the daemon's restart or going away."""
        limit = f" (mem_limit {self._mem_limit_text})" if self._mem_limit_text else ""
        suspect = (
            code == SIGKILL_EXIT
            and bool(self._mem_limit_text)
            and not self._killed
            and not restarted
        )
        try:
            oom = self._oom_killed(suspect)
        except (requests.exceptions.RequestException, OSError, docker.errors.APIError):
            oom = False  # the daemon went as the container ended: its code is known
        if oom:
            cause = f"out of memory{limit}"
        elif code and not restarted and not self._signalled:
            outside = self._killed_from_outside()
            if outside is not None:
                # dockerd stopping answers the wait before it goes: which was it? A container
                # already removed says at once (a daemon shutting down removes none: the agent
                # never hands it `AutoRemove`); one merely stopped is told by watching it.
                where = self._kind.where()
                if self._gone_now():
                    cause = f"removed from outside the agent ({outside}, not by the agent)"
                elif not self._kind.stops_answering(OUTSIDE_STOP_WINDOW_SECONDS):
                    cause = f"stopped from outside the agent ({outside}, not by the agent)"
                elif self._kind.answers_again():
                    restarted = True
                else:
                    gone = f"the Docker daemon at {where} went away while the container ran"
                    return ExitStatus(code, gone)
            elif suspect:  # the kernel's OOM killer sends no kill event; nobody else did
                cause = (
                    f"killed by SIGKILL, not by the agent: most likely out of memory{limit}, "
                    "though the Docker daemon recorded no OOM kill"
                )
        if restarted:
            restart = "the Docker daemon restarted while the container ran"
            cause = f"{restart}; {cause}" if cause else restart
        return ExitStatus(code, cause)

    def _killed_from_outside(self) -> str | None:
        """The signals the daemon's events say the container was sent (`docker stop`, `docker
        kill`, the daemon stopping it as it shuts down), when the agent sent none: "signal 15,
        then 9"; None when it was sent none (it ended by itself), or the daemon cannot say."""
        try:
            events = self._api().events(
                since=int(time.time()) - EVENTS_LOOKBACK_SECONDS,
                until=int(time.time()) + 1,
                filters={"container": self.container_id, "event": "kill"},
                decode=True,
            )
            signals = [
                str((event.get("Actor") or {}).get("Attributes", {}).get("signal", "?"))
                for event in events
            ]
        except (requests.exceptions.RequestException, OSError, docker.errors.DockerException):
            return "the daemon stopped answering as it ended"
        return f"signal {', then '.join(signals)}" if signals else None

    def _oom_killed(self, suspect: bool) -> bool:
        """Whether the daemon recorded an OOM kill (`State.OOMKilled`). It hears of an OOM
        kill and of the exit as two events, and may record the exit first: a `suspect` exit
        (SIGKILL of a container with a memory limit, not sent by the agent) is read again for
        up to `OOM_SETTLE_SECONDS`. The daemon may also miss the OOM event altogether (it
        races the container's cgroup being removed): then `wait` says "most likely"."""
        deadline = time.monotonic() + OOM_SETTLE_SECONDS
        while True:
            state = self._state()
            if state is None:
                return False
            if state.get("OOMKilled"):
                return True
            if not suspect or time.monotonic() >= deadline:
                return False
            time.sleep(OOM_SETTLE_POLL)

    def _stop_signal(self) -> str:
        try:
            config = self._api().inspect_container(self.container_id).get("Config") or {}
        except docker.errors.NotFound:
            return "SIGTERM"
        return str(config.get("StopSignal") or "SIGTERM")

    def _signal(self, sig: str | int) -> bool:
        if not self.running:
            return False
        self._signalled = True
        try:
            self._api().kill(self.container_id, signal=sig)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # not running any more
                return False
            raise
        return True

    def terminate(self) -> bool:
        return self._signal(self._stop_signal())

    def grace_over(self) -> bool:
        self._killed = True
        return self._signal(int(signal.SIGKILL))

    def kill(self) -> bool:
        self._killed = True
        return self._signal(int(signal.SIGKILL))

    def after_exit(self) -> list[str]:
        """Once it ended: removed when the block asked for `auto_remove`; a container that
        was created but never started (a stop came before its start, or its start failed)
        is removed whatever the block says: nothing of it is worth keeping."""
        done: list[str] = []
        if self._streamer is not None:
            self._streamer.join(LOG_DRAIN_SECONDS)
        if not self._started:
            try:
                self._api().remove_container(self.container_id, v=True, force=True)
                done.append(f"removed {self.label}, never started")
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException as exc:
                done.append(f"{self.label} could not be removed: {_short(exc)}")
            return done
        if self._auto_remove:
            try:
                self._api().remove_container(self.container_id, v=True)
                done.append(f"removed {self.label}")
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                done.append(f"{self.label} could not be removed: {_short(exc)}")
        return done


def _unreachable_reason(exc: BaseException, timeout: int) -> str:
    """Why the daemon did not answer, in words (docker-py wraps the socket's error in a
    request library's repr); its own text when it is none of the usual ones."""
    text = _short(exc)
    if "FileNotFoundError" in text or "No such file or directory" in text:
        return "no socket at that path (is dockerd running? is DOCKER_HOST right?)"
    if "Permission denied" in text or "PermissionError" in text:
        return "permission denied (may the agent's user use the Docker socket?)"
    if "Connection refused" in text or "ConnectionRefusedError" in text:
        return "connection refused (is dockerd running? is DOCKER_HOST right?)"
    if "timed out" in text.lower():
        return f"no answer within {timeout}s"
    return text


def _pull_hint(spec: DockerSpec, detail: str) -> str:
    """What a refused pull means: no credentials were given, or the registry refused the
    ones given (named by user, never by password)."""
    if spec.registry is None:
        return " (no registry credentials were given)"
    lowered = detail.lower()
    if "unauthorized" in lowered or "authentication required" in lowered or "denied" in lowered:
        return f" (the registry refused the credentials of user {spec.registry.username!r})"
    return ""


def _start_failure(text: str, image: str | None, kind: DockerKind) -> str:
    """Why a container did not start, in a user's words where the daemon's are buried: a
    command the image does not have, a network the daemon does not have."""
    command = _MISSING_COMMAND.search(text)
    if command:
        program, detail = command.groups()
        where = f"image {image!r}" if image else "the image"
        return f"its command {program!r} cannot be run in {where}: {detail}"
    network = _MISSING_NETWORK.match(text)
    if network:
        info = kind._info
        at = f" at {info.where}" if info is not None else ""
        return f"network {network.group(1)!r} does not exist on the Docker daemon{at}"
    return text


def _short(exc: BaseException) -> str:
    """An exception's message without docker-py's request dump."""
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc).strip() or type(exc).__name__


if TYPE_CHECKING:  # the seam's Protocols, checked by mypy

    def _conforms(kind: DockerKind, job: ContainerJob) -> tuple[Infrastructure, RunJob]:
        return kind, job
