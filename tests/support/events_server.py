"""A Prefect 2.20 server with its event stream on, for the event-stream tests.

Prefect 2.20 serves `/api/events/out` and emits flow-run events only with
`PREFECT_EXPERIMENTAL_EVENTS` on (off by default, as the suite's main 2.20 server keeps it), so
"a 2.20 server with events" and "a 2.20 server without" each need a real server of their own.
Its start costs about 20 CPU-seconds (the same as any 2.20 server; events add about one, and
about 0.5% of a core while idle), so the session starts it in a background thread as soon as
collection shows a test that wants it, and that test waits for whatever is left.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from actors.launcher.local_server import LocalPrefectServer

EVENTS_ENV = {
    "PREFECT_EXPERIMENTAL_EVENTS": "true",
    # A debugging aid that writes every event to the server's log: noise and CPU, nothing more.
    "PREFECT_API_SERVICES_EVENT_LOGGER_ENABLED": "false",
}


class EventsServer:
    """Starts the server in a background thread; `wait()` joins and returns it."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="prefect-events-server-"))
        self.server: LocalPrefectServer | None = None
        self.error: BaseException | None = None
        self.start_seconds = 0.0
        self._done = threading.Event()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._start, name="events-server", daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive() and not self._done.is_set():
            self._thread.start()

    def _start(self) -> None:
        try:
            if self._cancelled.is_set():
                return
            began = time.monotonic()
            server = LocalPrefectServer(home=self.home / "home", env=EVENTS_ENV)
            server.start(timeout=180.0)
            self.server = server
            self.start_seconds = time.monotonic() - began
        except BaseException as exc:  # noqa: BLE001 - reported by wait() in the test thread
            self.error = exc
        finally:
            self._done.set()

    def wait(self, timeout: float = 240.0) -> LocalPrefectServer:
        self.start()
        if not self._done.wait(timeout):
            raise RuntimeError(f"the 2.20 events server was not ready after {timeout:.0f}s")
        if self.error is not None:
            raise RuntimeError(f"could not start a 2.20 server with events: {self.error}")
        assert self.server is not None
        return self.server

    def stop(self) -> None:
        self._cancelled.set()  # a server not started yet never starts
        if self._thread.is_alive():
            self._done.wait(200.0)  # one being started is stopped once up, never left behind
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.home, ignore_errors=True)
