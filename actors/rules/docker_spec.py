"""From a DockerContainer block (Prefect 2) or a docker pool's job variables (Prefect 3) to the
exact container a flow run is created as: Prefect's own rules, checked before anything is
pulled or created.

Two sources, as for a process: on Prefect 2 a deployment names a `DockerContainer` block and its
`infra_overrides` change the block's fields by dotted path; on Prefect 3 a `docker` pool's job
variables come in layers (the template's defaults, the deployment's, the run's; `env` merged
name by name). Prefect's rules then fill in what is left unset:

- image: `prefecthq/prefect:<the agent's Prefect version>-python<X.Y>`; an agent without
  Prefect installed cannot name one, so it wants an image;
- pull policy: as given, else `Always` for an image with no tag or `latest`, else
  `IfNotPresent` (a digest counts as a tag);
- network mode: the user's; else none when networks are given; else `host` when the daemon runs
  Linux and the API URL's host is `localhost`/`127.0.0.1` (the container then reaches the API on
  the daemon host's loopback); else the daemon's default with `host.docker.internal` mapped to
  the host gateway, and an API URL on loopback rewritten to that name (unless the user set
  `PREFECT_API_URL` themselves);
- labels: the user's, in Docker's reverse-domain form (`prefect.io/x` -> `io.prefect.x`), under
  the run's identity labels (`io.prefect.flow-run-id`, ...): those always win, because a
  restarted agent finds a container again by them;
- name: the block's, else the flow run's name, slugged as Prefect does;
- env: what a process run gets (`run_environment`), but built on only the agent's `PREFECT_*`
  settings, never its whole environment (a container is another machine: the agent's PATH,
  HOME or secrets have nothing to do there), with the block's on top; a null value unsets;
- command: the engine, `python -m prefect.engine`; the image's entrypoint is kept.

Everything here is pure: what the daemon says (its OS, whether it maps `host-gateway`) and the
agent's Prefect version are arguments. Every way the input can be wrong raises
`SubmissionError` naming the problem.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlparse

import msgspec

from actors.rules.infrastructure import (
    SubmissionError,
    apply_overrides,
    merge_job_variables,
    run_environment,
    template_defaults,
)
from messages.wire.prefect import BlockDocument, Deployment, FlowRun, WorkPool

PullPolicy = Literal["Always", "IfNotPresent", "Never", "IfPossible"]

BLOCK_TYPE = "docker-container"
POOL_TYPE = "docker"
DEFAULT_COMMAND = ("python", "-m", "prefect.engine")
HOST_GATEWAY = {"host.docker.internal": "host-gateway"}
LOCAL_HOSTS = ("localhost", "127.0.0.1")
AUTO_REMOVE_LABEL = "io.prefect-actor-agent.auto-remove"
FLOW_RUN_LABEL = "io.prefect.flow-run-id"
LEGACY_FLOW_RUN_LABEL = "prefect.io/flow-run-id"  # what a 2.x agent left on its containers

# The fields of Prefect 2's DockerContainer block (with the Infrastructure base's).
BLOCK_FIELDS = frozenset(
    {
        "type",
        "block_type_slug",
        "image",
        "image_pull_policy",
        "image_registry",
        "networks",
        "network_mode",
        "auto_remove",
        "volumes",
        "stream_output",
        "mem_limit",
        "memswap_limit",
        "privileged",
        "env",
        "labels",
        "name",
        "command",
    }
)
# The variables of Prefect 3's docker pool template that this agent applies.
JOB_VARIABLES = frozenset(
    (BLOCK_FIELDS - {"type", "block_type_slug", "image_registry"})
    | {"registry_credentials", "container_create_kwargs"}
)
BLOCK_PULL_POLICIES: dict[str, PullPolicy] = {
    "ALWAYS": "Always",
    "IF_NOT_PRESENT": "IfNotPresent",
    "NEVER": "Never",
}
POOL_PULL_POLICIES: tuple[PullPolicy, ...] = ("Always", "IfNotPresent", "Never", "IfPossible")
_BYTE_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)b?$", re.IGNORECASE)
_NAME_INVALID = re.compile(r"[^a-zA-Z0-9_.-]+")
_SECRET_HIDDEN = "********"  # noqa: S105 (how the server hides a secret)


class RegistryAuth(msgspec.Struct, frozen=True, kw_only=True):
    """Credentials for the image's registry, sent with a pull (never a login kept on disk)."""

    username: str
    password: str
    registry_url: str | None = None
    reauth: bool = True

    def __repr__(self) -> str:  # the password stays out of every log line
        return f"RegistryAuth(username={self.username!r}, registry_url={self.registry_url!r})"


class DockerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Exactly how one flow run's container is pulled and created."""

    flow_run_id: str
    image: str
    pull_policy: PullPolicy
    registry: RegistryAuth | None = None
    command: tuple[str, ...]
    env: dict[str, str]
    labels: dict[str, str]
    name: str | None  # None: Docker names it
    networks: tuple[str, ...] = ()
    network_mode: str | None = None
    extra_hosts: dict[str, str] | None = None
    auto_remove: bool = False  # done by the agent after the exit is recorded, not by Docker
    binds: tuple[str, ...] = ()  # "source:target[:mode]"
    anonymous_volumes: tuple[str, ...] = ()  # "/path/in/container"
    stream_output: bool = True
    mem_limit: int | None = None  # bytes
    mem_limit_text: str | None = None  # as the user wrote it, for an OOM kill's cause
    memswap_limit: int | None = None  # bytes; -1: unlimited swap
    privileged: bool = False


# -- the pieces ------------------------------------------------------------------------------


def default_image(prefect_version: str | None, python: tuple[int, int] | None = None) -> str:
    """Prefect's default image for this agent's Prefect and Python (`get_prefect_image_name`)."""
    if not prefect_version:
        raise SubmissionError(
            "the Docker infrastructure names no image, and this agent cannot choose Prefect's "
            "default (prefecthq/prefect:<version>-python<X.Y>): Prefect is not installed "
            "with it; set the image in the block or the job variables"
        )
    if "+" in prefect_version:
        raise SubmissionError(
            f"the Docker infrastructure names no image, and this agent's Prefect "
            f"{prefect_version} is a development build with no published image; set the image"
        )
    major, minor = python or sys.version_info[:2]
    return f"prefecthq/prefect:{prefect_version}-python{major}.{minor}"


def image_tag(image: str) -> str | None:
    """The tag (or digest) of an image reference; None when it has none. A registry's port
    (`host:5000/repo`) is not a tag."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def default_pull_policy(image: str) -> PullPolicy:
    """Kubernetes' defaulting, which Prefect copies: no tag or `latest` -> Always."""
    tag = image_tag(image)
    return "Always" if tag in (None, "latest") else "IfNotPresent"


def pull_policy(value: object, *, pool: bool) -> PullPolicy | None:
    """A 2.x block's (ALWAYS, IF_NOT_PRESENT, NEVER) or a 3.x pool's (Always, IfNotPresent,
    Never, IfPossible) policy; None when unset."""
    if value is None or value == "":
        return None
    if pool:
        if value in POOL_PULL_POLICIES:
            return value
        allowed = ", ".join(POOL_PULL_POLICIES)
    else:
        if isinstance(value, str) and value in BLOCK_PULL_POLICIES:
            return BLOCK_PULL_POLICIES[value]
        allowed = ", ".join(BLOCK_PULL_POLICIES)
    raise SubmissionError(f"image_pull_policy {value!r} is not one of {allowed}")


def memory_bytes(field: str, value: object) -> int | None:
    """`mem_limit`/`memswap_limit` as Docker takes them: a number of bytes or "128m", "1g";
    -1 (unlimited) only for memswap_limit."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise SubmissionError(f"{field} {value!r} is not a size such as '128m'")
    if isinstance(value, int | float):
        if field == "memswap_limit" and value == -1:
            return -1
        if value < 0:
            raise SubmissionError(f"{field} {value!r} is negative")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if field == "memswap_limit" and text == "-1":
            return -1
        match = _MEMORY.match(text)
        if match:
            return int(float(match.group(1)) * _BYTE_UNITS[(match.group(2) or "b").lower()])
    raise SubmissionError(
        f"{field} {value!r} is not a size: a number of bytes, or a number with one of the "
        "units b, k, m, g (such as '128m')"
    )


def volumes(values: object, *, pool: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(bind mounts, anonymous volumes). 2.x wants `source:target`; 3.x checks as its
    VolumeStr does: `source:target[:ro|rw]` with an absolute target and a named volume without
    `/`, or an anonymous `/path`."""
    if values is None:
        return (), ()
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise SubmissionError(f"volumes must be a list of strings, got {values!r}")
    binds: list[str] = []
    anonymous: list[str] = []
    for volume in values:
        parts = volume.split(":")
        if not pool:
            if ":" not in volume:
                raise SubmissionError(
                    "Invalid volume specification. Expected format 'path:container_path', "
                    f"but got {volume!r}"
                )
            binds.append(volume)
            continue
        if len(parts) == 1:
            if not volume.startswith("/"):
                raise SubmissionError(
                    f"volume {volume!r}: an anonymous volume needs an absolute container path"
                )
            anonymous.append(volume)
            continue
        if len(parts) > 3 or not all(parts[:2]):
            raise SubmissionError(
                f"volume {volume!r} is not 'source:target[:ro|rw]' or '/container/path'"
            )
        source, target = parts[0], parts[1]
        if not target.startswith("/"):
            raise SubmissionError(f"volume {volume!r}: the container path must be absolute")
        if len(parts) == 3 and parts[2] not in ("ro", "rw"):
            raise SubmissionError(f"volume {volume!r}: the mode must be 'ro' or 'rw'")
        if not source.startswith("/") and "/" in source:
            raise SubmissionError(
                f"volume {volume!r}: a named volume may not contain '/' "
                "(a host path must be absolute)"
            )
        binds.append(volume)
    return tuple(binds), tuple(anonymous)


def docker_label_key(key: str) -> str:
    """Prefect's `convert_labels_to_docker_format`: `ns.io/key` -> `io.ns.key`."""
    if "/" not in key:
        return key
    namespace, _, name = key.partition("/")
    return ".".join(reversed(namespace.split("."))) + "." + name


def container_name(name: str | None) -> str | None:
    """Prefect's container name: slugged, `[^a-zA-Z0-9_.-]+` -> `-`, leading `_-.` dropped, at
    most 250 characters; None (Docker names it) when nothing is left."""
    if not name:
        return None
    slug = _NAME_INVALID.sub("-", name).strip("-")[:250].strip("-")
    return slug.lstrip("_-.") or None


def api_url_host(api_url: str) -> str:
    return urlparse(api_url).netloc.rsplit("@", 1)[-1].split(":")[0]


def network_mode(
    user_mode: str | None, networks: tuple[str, ...], api_url: str, daemon_os: str
) -> str | None:
    """The user's, else None with networks, else `host` for a Linux daemon and an API on
    loopback, else None (the daemon's default)."""
    if user_mode:
        return user_mode
    if networks:
        return None
    if daemon_os == "linux" and api_url_host(api_url) in LOCAL_HOSTS:
        return "host"
    return None


def registry_auth(value: object, field: str) -> RegistryAuth | None:
    """Credentials from a DockerRegistry (2.x) or DockerRegistryCredentials (3.x) block,
    which the server hands over as the block's data, nested."""
    if value is None:
        return None
    if isinstance(value, str) and "{{" in value:
        raise SubmissionError(
            f"{field} {value!r} is a template this agent does not fill in; name the registry "
            'block as {"$ref": {"block_document_id": "<its id>"}}'
        )
    if not isinstance(value, dict):
        raise SubmissionError(f"{field} must be a registry block's fields, got {value!r}")
    if "$ref" in value:
        raise SubmissionError(
            f"{field} is a reference to a block document ({value['$ref']!r}) that was not "
            "resolved: read the deployment's block (or job variables) with its references"
        )
    data = {k: v for k, v in value.items() if k != "block_type_slug"}
    if data.get("password") == _SECRET_HIDDEN:
        raise SubmissionError(
            f"{field}: the registry password is hidden (the block was read without its secrets)"
        )
    try:
        auth = msgspec.convert(data, RegistryAuth)
    except msgspec.ValidationError as exc:
        raise SubmissionError(f"invalid {field}: {exc}") from None
    return auth


def labels(
    flow_run: FlowRun,
    deployment: Deployment | None,
    user: Mapping[str, object],
    *,
    worker_name: str,
    prefect_version: str | None,
    flow_name: str | None = None,
    auto_remove: bool = False,
) -> dict[str, str]:
    """The user's labels (converted), under the run's identity labels."""
    result = {docker_label_key(str(key)): str(value) for key, value in user.items()}
    own = {
        FLOW_RUN_LABEL: flow_run.id,
        "io.prefect.flow-run-name": flow_run.name,
        "io.prefect.worker-name": worker_name,
    }
    if flow_run.flow_id:
        own["io.prefect.flow-id"] = flow_run.flow_id
    if flow_name:
        own["io.prefect.flow-name"] = flow_name
    if deployment is not None:
        own["io.prefect.deployment-id"] = deployment.id
        if deployment.name:
            own["io.prefect.deployment-name"] = deployment.name
    if prefect_version:
        own["io.prefect.version"] = prefect_version
    if auto_remove:
        own[AUTO_REMOVE_LABEL] = "true"
    result.update(own)
    return result


def container_environment(
    flow_run: FlowRun,
    block_env: Mapping[str, str | None],
    *,
    api_url: str,
    api_key: str | None,
    agent_env: Mapping[str, str],
    mode: str | None,
) -> dict[str, str]:
    """The run's env: the agent's PREFECT_* settings, the API's URL and key, the run's id, the
    block's on top (null unsets); a loopback API URL the user did not set is rewritten to
    `host.docker.internal` unless the container shares the host's network."""
    base = {name: value for name, value in agent_env.items() if name.startswith("PREFECT_")}
    env = run_environment(flow_run, block_env, api_url, api_key, base=base)
    if "PREFECT_ACTOR_AGENT_PID" not in block_env:
        # A pid of the agent's host means nothing in a container (a restarted agent finds its
        # containers by label, not by this).
        env.pop("PREFECT_ACTOR_AGENT_PID", None)
    if "PREFECT_API_URL" not in block_env and mode != "host" and "PREFECT_API_URL" in env:
        url = env["PREFECT_API_URL"]
        for host in LOCAL_HOSTS:
            url = url.replace(host, "host.docker.internal")
        env["PREFECT_API_URL"] = url
    return env


# -- the two sources ---------------------------------------------------------------------------


def block_fields(block: BlockDocument, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A DockerContainer block's fields with the deployment's overrides applied."""
    data = dict(block.data)
    kind = str(data.get("type") or (block.block_type.slug if block.block_type else ""))
    if kind != BLOCK_TYPE:
        raise SubmissionError(
            f"infrastructure block {block.name or block.id!r} is of type {kind!r}, "
            f"not {BLOCK_TYPE!r}"
        )
    unknown = sorted(set(data) - BLOCK_FIELDS)
    if unknown:
        raise SubmissionError(
            f"DockerContainer block {block.name or block.id!r} has fields this agent does not "
            f"know: {', '.join(unknown)}"
        )
    return apply_overrides(data, overrides, fields=BLOCK_FIELDS, kind="DockerContainer")


def _nest(layer: Mapping[str, Any]) -> dict[str, Any]:
    """Prefect 3's dot-keys (`env.NAME`) as nested mappings."""
    result: dict[str, Any] = {}
    for key, value in layer.items():
        if "." in key:
            result = apply_overrides(result, {key: value}, fields=JOB_VARIABLES, kind="docker")
        else:
            result[key] = value
    return result


def pool_fields(
    flow_run: FlowRun, deployment: Deployment | None, pool: WorkPool | None
) -> dict[str, Any]:
    """Prefect 3: the template's defaults, the deployment's job variables, the run's; a higher
    layer replaces a variable of a lower one, except `env`, merged name by name."""
    if pool is not None and pool.type and pool.type != POOL_TYPE:
        raise SubmissionError(f"work pool {pool.name!r} is of type {pool.type!r}, not 'docker'")
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("template", template_defaults(pool, JOB_VARIABLES))
    ]
    if deployment is not None:
        layers.append(("deployment", _nest(deployment.job_variables or {})))
    layers.append(("flow run", _nest(flow_run.job_variables or {})))
    merged = merge_job_variables(layers, JOB_VARIABLES, "docker pool")
    if merged.get("container_create_kwargs"):
        raise SubmissionError("job variable container_create_kwargs is not supported by this agent")
    return merged


def _env(value: object) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SubmissionError(f"env must be a mapping of names to values, got {value!r}")
    return {str(k): None if v is None else str(v) for k, v in value.items()}


def _command(value: object) -> tuple[str, ...]:
    if value is None or value in ("", []):
        return DEFAULT_COMMAND
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise SubmissionError(f"command {value!r} cannot be split: {exc}") from None
        return tuple(parts) or DEFAULT_COMMAND
    if isinstance(value, list | tuple) and all(isinstance(p, str) and p for p in value):
        return tuple(value)
    raise SubmissionError(f"command {value!r} is not a list of non-empty strings")


def _flag(fields: Mapping[str, Any], name: str, default: bool) -> bool:
    value = fields.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SubmissionError(f"{name} must be true or false, got {value!r}")
    return value


def _strings(fields: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = fields.get(name)
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise SubmissionError(f"{name} must be a list of strings, got {value!r}")
    return tuple(value)


def docker_spec(
    flow_run: FlowRun,
    deployment: Deployment | None,
    block: BlockDocument | None,
    *,
    api_url: str,
    api_key: str | None,
    worker_name: str,
    agent_env: Mapping[str, str],
    daemon_os: str,
    host_gateway: bool = True,
    prefect_version: str | None,
    python: tuple[int, int] | None = None,
    job_variables: bool = False,
    pool: WorkPool | None = None,
    flow_name: str | None = None,
) -> DockerSpec:
    """Everything needed to pull and create the run's container, checked first.

    `daemon_os` is the daemon's `OSType` ("linux"); `host_gateway` whether it maps
    `host-gateway` (20.10 and later); `prefect_version` the agent's Prefect, for the default
    image and the version label (None: not installed)."""
    pool_source = job_variables and block is None
    if pool_source:
        fields = pool_fields(flow_run, deployment, pool)
        registry = registry_auth(fields.get("registry_credentials"), "registry_credentials")
    else:
        if block is None:
            raise SubmissionError("the deployment names no DockerContainer block")
        overrides = deployment.overrides if deployment is not None else {}
        fields = block_fields(block, overrides)
        registry = registry_auth(fields.get("image_registry"), "image_registry")
    image = fields.get("image") or default_image(prefect_version, python)
    if not isinstance(image, str):
        raise SubmissionError(f"image must be a string, got {image!r}")
    policy = pull_policy(fields.get("image_pull_policy"), pool=pool_source)
    networks = _strings(fields, "networks")
    user_mode = fields.get("network_mode")
    if user_mode is not None and not isinstance(user_mode, str):
        raise SubmissionError(f"network_mode must be a string, got {user_mode!r}")
    block_env = _env(fields.get("env"))
    mode = network_mode(user_mode, networks, block_env.get("PREFECT_API_URL") or api_url, daemon_os)
    extra_hosts = None
    user_url = block_env.get("PREFECT_API_URL")
    if (
        daemon_os == "linux"
        and host_gateway
        and mode != "host"
        and (user_url is None or api_url_host(user_url) in (*LOCAL_HOSTS, "host.docker.internal"))
    ):
        extra_hosts = dict(HOST_GATEWAY)
    env = container_environment(
        flow_run, block_env, api_url=api_url, api_key=api_key, agent_env=agent_env, mode=mode
    )
    user_labels = fields.get("labels") or {}
    if not isinstance(user_labels, dict):
        raise SubmissionError(f"labels must be a mapping, got {user_labels!r}")
    auto_remove = _flag(fields, "auto_remove", False)
    binds, anonymous = volumes(fields.get("volumes"), pool=pool_source)
    mem_text = fields.get("mem_limit")
    name = fields.get("name")
    if name is not None and not isinstance(name, str):
        raise SubmissionError(f"name must be a string, got {name!r}")
    return DockerSpec(
        flow_run_id=flow_run.id,
        image=image,
        pull_policy=policy or default_pull_policy(image),
        registry=registry,
        command=_command(fields.get("command")),
        env=env,
        labels=labels(
            flow_run,
            deployment,
            user_labels,
            worker_name=worker_name,
            prefect_version=prefect_version,
            flow_name=flow_name,
            auto_remove=auto_remove,
        ),
        name=container_name(name or flow_run.name),
        networks=networks,
        network_mode=mode,
        extra_hosts=extra_hosts,
        auto_remove=auto_remove,
        binds=binds,
        anonymous_volumes=anonymous,
        stream_output=_flag(fields, "stream_output", True),
        mem_limit=memory_bytes("mem_limit", mem_text),
        mem_limit_text=None if mem_text in (None, "") else str(mem_text),
        memswap_limit=memory_bytes("memswap_limit", fields.get("memswap_limit")),
        privileged=_flag(fields, "privileged", False),
    )


# -- the infrastructure pid ------------------------------------------------------------------


def format_container_pid(daemon_id: str, container_id: str) -> str:
    """`docker:<daemon id>:<container id>`: the daemon's own unique id, so two hosts' local
    daemons never look alike (their base URLs do)."""
    return f"docker:{daemon_id}:{container_id}"


def parse_container_pid(value: str) -> tuple[str, str] | None:
    """(daemon id, container id), or None when `value` is not a container's pid. A daemon id
    may itself hold colons (dockerd 20.10's `ABCD:EFGH:...`); a container id never does."""
    if not value.startswith("docker:"):
        return None
    daemon_id, sep, container_id = value[len("docker:") :].rpartition(":")
    if not sep or not daemon_id or not container_id:
        return None
    return daemon_id, container_id


def memory_text(value: int) -> str:
    """Bytes as Docker's short form ("64m") when exact, for a cause read back from a
    container (a found container has no spec)."""
    for unit, size in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)
