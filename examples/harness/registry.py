"""A private image registry on loopback, with a user and a password, for the pull tests.

Why: the container work has to pull a deployment's image with credentials (a private
registry is the usual case), and the machines this project runs on reach no registry at all.
So this starts one: Debian's `docker-registry` package (the CNCF distribution registry 2.8,
`docker-registry serve CONFIG`, installed by apt when missing), listening on 127.0.0.1 on a
free port, storage in a temporary directory, and basic authentication against an htpasswd
file with one bcrypt entry (the only hash the registry accepts): made with the `bcrypt`
package when it is installed, else with `htpasswd -B` from Debian's `apache2-utils`.

Plain HTTP is enough: dockerd treats 127.0.0.0/8 as an insecure registry by default (its
`RegistryConfig.InsecureRegistryCIDRs`), so it pulls from and pushes to `127.0.0.1:PORT`
without TLS and without any daemon setting. The test of this harness checks that.

`push(client, image)` tags a local image as `127.0.0.1:PORT/NAME:TAG` and pushes it with the
credentials; `stop()` (also the `with` block's end and the interpreter's exit) ends the
registry (SIGTERM, then SIGKILL after a deadline) and removes its directory.

Use::

    with DockerDaemon() as daemon, Registry() as registry:
        client = daemon.client()
        ref = registry.push(client, "prefect-actor-agent/plain:v1", "plain", "v1")
        client.images.pull(ref, auth_config=registry.auth_config)
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import docker
import docker.errors

from examples.harness.debian_packages import INSTALL_SECONDS, ensure_program

__all__ = ["Registry"]

START_TIMEOUT = 30.0
STOP_GRACE = 10.0
START_ATTEMPTS = 3  # a free port may be taken between finding it and the registry binding it
_LOG_TAIL_CHARS = 4000

_running: set[Registry] = set()
_running_lock = threading.Lock()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bcrypt_line(user: str, password: str) -> str:
    """`user:$2...$hash`, an htpasswd line the registry accepts."""
    try:
        bcrypt: Any = importlib.import_module("bcrypt")
    except ImportError:
        htpasswd = ensure_program("htpasswd", "apache2-utils")
        # -i: the password from stdin, not on a command line that `ps` shows.
        answer = subprocess.run(
            [htpasswd, "-B", "-i", "-n", user],
            input=password,
            capture_output=True,
            text=True,
            check=True,
        )
        return answer.stdout.strip()
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
    return f"{user}:{hashed}"


class Registry:
    """A registry of its own on 127.0.0.1: `host` (`127.0.0.1:PORT`), `auth_config`."""

    def __init__(self, *, user: str = "tester") -> None:
        self.user = user
        self.password = secrets.token_hex(12)
        self.port: int | None = None
        self.root: Path | None = None
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def host(self) -> str:
        if self.port is None:
            raise RuntimeError("the registry is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def auth_config(self) -> dict[str, str]:
        """Credentials as docker-py's `push`/`pull` take them."""
        return {"username": self.user, "password": self.password}

    def log_tail(self) -> str:
        if self.root is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.root / "registry.log").read_text(errors="replace")[-_LOG_TAIL_CHARS:]
        return ""

    # -- start and stop -------------------------------------------------------------------

    def start(self) -> Registry:
        began = time.monotonic()
        installed_before = sum(INSTALL_SECONDS.values())
        binary = ensure_program("docker-registry", "docker-registry")
        self.root = Path(tempfile.mkdtemp(prefix="paa-registry-"))
        htpasswd = self.root / "htpasswd"
        htpasswd.write_text(_bcrypt_line(self.user, self.password) + "\n")
        (self.root / "storage").mkdir()
        with _running_lock:
            _running.add(self)
        try:
            for attempt in range(START_ATTEMPTS):
                self.port = _free_port()
                if self._try_start(binary, htpasswd):
                    break
                if attempt == START_ATTEMPTS - 1:
                    raise RuntimeError(f"the registry did not start:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise
        # Not counting apt installs on a new machine: INSTALL_SECONDS tells those.
        installs = sum(INSTALL_SECONDS.values()) - installed_before
        self.start_seconds = time.monotonic() - began - installs
        return self

    def _try_start(self, binary: str, htpasswd: Path) -> bool:
        assert self.root is not None
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
            "auth": {"htpasswd": {"realm": "prefect-actor-agent", "path": str(htpasswd)}},
        }
        path = self.root / "config.yml"
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML too
        if self._log is not None:
            self._log.close()
        self._log = (self.root / "registry.log").open("ab")
        self._proc = subprocess.Popen(
            [binary, "serve", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if self._answers():
                return True
            time.sleep(0.05)
        self._end_process()
        return False

    def _answers(self) -> bool:
        """Whether `/v2/` answers: 401 (credentials wanted) is the healthy answer."""
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2):
                return True
        except urllib.error.HTTPError as error:
            return error.code == 401
        except OSError:
            return False

    def _end_process(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        with _running_lock:
            _running.discard(self)
        self._end_process()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    # -- images ---------------------------------------------------------------------------

    def push(self, client: docker.DockerClient, image: str, name: str, tag: str) -> str:
        """Push the local `image` as `NAME:TAG` with the credentials; its reference here."""
        repository = f"{self.host}/{name}"
        client.images.get(image).tag(repository, tag)
        for line in client.images.push(
            repository, tag, auth_config=self.auth_config, stream=True, decode=True
        ):
            if "error" in line:
                raise docker.errors.APIError(f"push of {repository}:{tag}: {line['error']}")
        return f"{repository}:{tag}"

    # -- with -----------------------------------------------------------------------------

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Registry {self.host if self.port else 'stopped'}>"


def _stop_all() -> None:
    with _running_lock:
        left = list(_running)
    for registry in left:
        registry.stop()


atexit.register(_stop_all)
