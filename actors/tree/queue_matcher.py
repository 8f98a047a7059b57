"""QueueMatcher: which queues an agent that follows queues serves now (permanent child of the
Agent, started only in that mode).

An agent started with queue prefixes (`-m`), or with `--pool` and no `-q`, serves whatever
queues match at the moment: every `--rematch-interval` this child reads them (each pool's,
those matching the prefixes if any; or every queue matching the prefixes) and tells the Agent
which match, pool by pool (`MatchingQueues`). The Agent starts a watcher for each new one and
stops those of the queues no longer matched. A read that fails is logged and made again at the
next tick; that pool's watchers stay as they are meanwhile, and the other pools go on. An
agent that runs once reads until one read of every pool gets through.

It is a periodic child (`actors.tree.periodic`): like a watcher, it waits on the server in its
own inbox, and the Agent never waits on it.
"""

from __future__ import annotations

import logging
from typing import Any

import pykka

from actors.edges.prefect_api import ApiError
from actors.rules.retry import ONCE
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.runtime.settings import AgentSettings
from actors.tree.periodic import PeriodicChild
from messages.internal.lifecycle import MatchingQueues
from messages.user.tree import ActorKind
from messages.wire.prefect import ApiDecodeError

log = logging.getLogger("prefect_actor_agent.agent")


class QueueMatcher(PeriodicChild):
    """Reads the queues that match, again and again, and tells the Agent."""

    KIND = ActorKind.QUEUE_MATCHER
    NAME = "queues"  # its name in the tree: there is one

    def __init__(self, ctx: AgentContext, agent: pykka.ActorRef[Any]) -> None:
        super().__init__(ctx, agent, self.NAME)
        self.api = ctx.api.with_retry(ONCE)  # the next read is the retry
        self.matched: dict[str | None, tuple[str, ...]] = {}  # pool -> its queues as last read

    def tick(self) -> float | None:
        settings = self.ctx.settings
        failed = []
        for pool in settings.pools:
            try:
                names = tuple(sorted(self._matching(pool)))
            except (ApiError, ApiDecodeError) as exc:
                where = settings.followed() if pool is None else f"work pool {pool!r}"
                log.warning("could not read the work queues of %s: %s", where, exc)
                failed.append(f"{pool}: {exc}" if settings.several_pools else str(exc))
                continue
            if pool not in self.matched and not names:
                log.info("%s", _none_yet(settings, pool))
            self.matched[pool] = names
            tell_if_alive(self.agent, MatchingQueues(names, pool))
        if failed:
            self.set_phase(f"error: {'; '.join(failed)}")
            return settings.rematch_interval  # a run-once agent reads until every pool answers
        count = sum(len(names) for names in self.matched.values())
        self.set_phase(f"{count} queue(s) match")
        return None if settings.run_once else settings.rematch_interval

    def _matching(self, pool: str | None) -> set[str]:
        """The queues to watch now: those of the pool (matching the prefixes, if any), or every
        queue matching the prefixes."""
        settings = self.ctx.settings
        if pool is None:
            matching = self.api.match_work_queues(settings.queue_prefixes)
            return {queue.name for queue in matching}
        names = {queue.name for queue in self.api.pool_queues(pool)}
        if settings.queue_prefixes:
            names = {n for n in names if n.startswith(settings.queue_prefixes)}
        return names

    def detail(self) -> dict[str, str]:
        settings = self.ctx.settings
        detail = {"follows": settings.followed()}
        if not settings.run_once:
            detail["every"] = f"{settings.rematch_interval:g}s"
        return detail


def _none_yet(settings: AgentSettings, pool: str | None) -> str:
    """The line logged when the first read of a pool finds nothing to serve."""
    where = f"work pool {pool!r}" if pool is not None else ""
    if settings.queue_prefixes:
        prefixes = ", ".join(f"{p!r}*" for p in settings.queue_prefixes)
        return f"no work queue matches {prefixes}{' in ' + where if where else ''} yet"
    return f"{where} has no queues yet"
