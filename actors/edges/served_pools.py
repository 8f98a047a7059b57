"""Which pools an agent acts in: those it was given whose type one of its kinds runs.

A pool of a type no kind runs is refused by its watchers (none of its runs is taken); the
agent then is no worker of it either: it sends it no heartbeat (the server would show that
pool READY on its account) and recovers no lost peer's runs there (whose infrastructure it
cannot judge). The pool is read to know its type, through the edge's cache, at most once in
ten minutes (a pool's type cannot be changed; only a pool deleted and made again under the
same name could, and its watchers, which read the pool before they take a run, refuse its
runs at once); a read
that fails counts the pool as served, so the caller's own call says whether the server
answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.edges.api_interface import PrefectApiInterface
from actors.edges.infrastructure import Infrastructure
from actors.edges.kinds import pool_refusal
from actors.edges.prefect_api import ApiError
from messages.wire.prefect import ApiDecodeError

POOL_TYPE_SECONDS = 600.0  # how old a read of the pool may be to say its type


def refused(api: PrefectApiInterface, pool: str, kinds: Sequence[Infrastructure]) -> bool:
    """Whether `pool` (a pool given with -p) is of a type none of `kinds` runs."""
    try:
        found = api.read_work_pool(pool, max_age=POOL_TYPE_SECONDS)
    except (ApiError, ApiDecodeError):
        return False
    return found is not None and pool_refusal(found, kinds) is not None
