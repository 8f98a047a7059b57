"""Several work pools, one agent: the queues served, grouped by the pool they belong to.

The server answers a question about runs pool by pool (a flow-run filter names one pool), and
each pool's workers are its own rows, so the actors that look at runs or peers ask once per
pool served, each with that pool's queues. Pure, so that the grouping is tested alone.
"""

from __future__ import annotations

from messages.internal.lifecycle import WatchedQueue


def queues_by_pool(queues: tuple[WatchedQueue, ...]) -> dict[str | None, tuple[str, ...]]:
    """The names of the queues watched, pool by pool (None: plain queues), in their order."""
    pools: dict[str | None, tuple[str, ...]] = {}
    for queue in queues:
        pools[queue.pool] = (*pools.get(queue.pool, ()), queue.name)
    return pools
