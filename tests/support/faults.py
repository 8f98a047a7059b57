"""Faults injected through the API client, for supervision tests.

The real server still answers every request these transports let through; a matching request
raises an exception that is not an HTTP error, the way a bug in the agent would, so that the
actor making the call fails and its supervisor must act.
"""

from __future__ import annotations

import threading

import httpx


class InjectedFaultError(RuntimeError):
    """The fault a test asked for; its message names it, so logs and the tree can be checked."""


class FaultyTransport(httpx.HTTPTransport):
    """Raise on the first `times` requests whose method and path contain the given parts."""

    def __init__(self, method: str, path_part: str, times: int | None = None) -> None:
        super().__init__()
        self.method = method
        self.path_part = path_part
        self.remaining = times  # None: every matching request
        self.raised = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == self.method and self.path_part in request.url.path:
            with self._lock:
                fire = self.remaining is None or self.remaining > 0
                if fire:
                    self.raised += 1
                    if self.remaining is not None:
                        self.remaining -= 1
            if fire:
                raise InjectedFaultError(f"injected fault on {request.method} {request.url.path}")
        return super().handle_request(request)
