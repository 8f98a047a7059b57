"""A Prefect 2.20 server with its event stream on, for the event-stream tests.

Prefect 2.20 serves `/api/events/out` and emits flow-run events only with
`PREFECT_EXPERIMENTAL_EVENTS` on (off by default, as the suite's main 2.20 server keeps it), so
"a 2.20 server with events" and "a 2.20 server without" each need a real server of their own.
Its start costs about 20 CPU-seconds (the same as any 2.20 server; events add about one, and
about 0.5% of a core while idle), so the session starts it in a background thread as soon as
collection shows a test that wants it, and that test waits for whatever is left.
"""

from __future__ import annotations

from actors.launcher.local_server import LocalPrefectServer
from examples.harness.background_server import BackgroundServer

EVENTS_ENV = {
    "PREFECT_EXPERIMENTAL_EVENTS": "true",
    # A debugging aid that writes every event to the server's log: noise and CPU, nothing more.
    "PREFECT_API_SERVICES_EVENT_LOGGER_ENABLED": "false",
}


class EventsServer(BackgroundServer):
    """The 2.20 server with events on, started in a background thread; `wait()` joins."""

    name = "prefect-events-server"
    what = "the 2.20 events server"
    kind = "a 2.20 server with events"

    def _make(self) -> LocalPrefectServer:
        return LocalPrefectServer(home=self.home / "home", env=EVENTS_ENV)
