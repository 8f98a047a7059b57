"""The purpose of the requests a caller is about to make, for the metrics' count by kind
(`actors.rules.request_kinds`): a context variable, so that the edge's signature stays as it
is and each thread or greenlet (an actor's inbox, a call pool's worker) has its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from actors.rules.request_kinds import RequestKind

_PURPOSE: ContextVar[RequestKind | None] = ContextVar("request_purpose", default=None)


@contextmanager
def requests_for(purpose: RequestKind) -> Iterator[None]:
    """The requests made inside count as `purpose` where their path does not say more."""
    token = _PURPOSE.set(purpose)
    try:
        yield
    finally:
        _PURPOSE.reset(token)


def current_purpose() -> RequestKind | None:
    return _PURPOSE.get()
