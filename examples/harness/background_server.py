"""A local Prefect server started in a background thread, for the servers a session shares.

A real server takes tens of CPU-seconds to start, so the session starts it at collection and
the other tests run meanwhile; the first test that needs it waits for whatever is left
(examples/harness/prefect3.py, examples/harness/events_server.py).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from actors.launcher.local_server import LocalPrefectServer


class BackgroundServer:
    """Starts the server in a daemon thread; `wait()` joins and returns it.

    A failure in the thread is kept and raised by `wait()`, so that it fails the test that
    wanted the server, in that test's own thread, rather than vanishing with the thread.
    """

    name = "background-server"  # the thread's, and its home's prefix
    what = "the server"  # "... was not ready after N s"
    kind = "a server"  # "could not start ..."
    ready_within = 240.0  # wait()'s default timeout
    stop_within = 200.0  # how long stop() lets a start under way end, to stop what it started

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.server: LocalPrefectServer | None = None
        self.error: BaseException | None = None
        self.start_seconds = 0.0
        self._done = threading.Event()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive() and not self._done.is_set():
            self._thread.start()

    def _prepare(self) -> None:
        """Work the server needs first (none here); a `stop()` meanwhile keeps it from starting."""

    def _make(self) -> LocalPrefectServer:
        raise NotImplementedError

    def _failure(self, error: BaseException) -> str:
        return f"could not start {self.kind}: {error}"

    def _run(self) -> None:
        try:
            self._prepare()
            if self._cancelled.is_set():
                return
            began = time.monotonic()
            server = self._make()
            server.start(timeout=180.0)
            self.server = server
            self.start_seconds = time.monotonic() - began
        except BaseException as exc:  # noqa: BLE001 - reported by wait() in the test thread
            self.error = exc
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> LocalPrefectServer:
        timeout = self.ready_within if timeout is None else timeout
        self.start()
        if not self._done.wait(timeout):
            raise RuntimeError(f"{self.what} was not ready after {timeout:.0f}s")
        if self.error is not None:
            raise RuntimeError(self._failure(self.error))
        assert self.server is not None
        return self.server

    def stop(self) -> None:
        self._cancelled.set()  # a server not started yet never starts
        if self._thread.is_alive():
            self._done.wait(self.stop_within)
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.home, ignore_errors=True)
