"""QueueMatcher: which queues an agent that follows queues serves now (permanent child of the
Agent, started only in that mode).

An agent started with queue prefixes (`-m`), or with `--pool` and no `-q`, serves whatever
queues match at the moment: every `--rematch-interval` this child reads them (the pool's,
those matching the prefixes if any; or every queue matching the prefixes) and tells the Agent
which match (`MatchingQueues`). The Agent starts a watcher for each new one and stops those of
the queues no longer matched. A read that fails is logged and made again at the next tick; the
watchers stay as they are meanwhile. An agent that runs once reads until one read gets through.

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
        self.matched: tuple[str, ...] | None = None  # as last read

    def tick(self) -> float | None:
        settings = self.ctx.settings
        try:
            names = tuple(sorted(self._matching()))
        except (ApiError, ApiDecodeError) as exc:
            log.warning("could not read the work queues of %s: %s", settings.followed(), exc)
            self.set_phase(f"error: {exc}")
            return settings.rematch_interval
        if self.matched is None and not names:
            log.info("%s", _none_yet(settings))
        self.matched = names
        tell_if_alive(self.agent, MatchingQueues(names))
        self.set_phase(f"{len(names)} queue(s) match")
        return None if settings.run_once else settings.rematch_interval

    def _matching(self) -> set[str]:
        """The queues to watch now: those of the pool (matching the prefixes, if any), or every
        queue matching the prefixes."""
        settings = self.ctx.settings
        if settings.work_pool is None:
            matching = self.api.match_work_queues(settings.queue_prefixes)
            return {queue.name for queue in matching}
        names = {queue.name for queue in self.api.pool_queues(settings.work_pool)}
        if settings.queue_prefixes:
            names = {n for n in names if n.startswith(settings.queue_prefixes)}
        return names

    def detail(self) -> dict[str, str]:
        settings = self.ctx.settings
        detail = {"follows": settings.followed()}
        if not settings.run_once:
            detail["every"] = f"{settings.rematch_interval:g}s"
        return detail


def _none_yet(settings: AgentSettings) -> str:
    """The line logged when the first read finds nothing to serve."""
    if settings.queue_prefixes:
        pool = settings.work_pool
        where = f" in work pool {pool!r}" if pool is not None else ""
        prefixes = ", ".join(f"{p!r}*" for p in settings.queue_prefixes)
        return f"no work queue matches {prefixes}{where} yet"
    return f"{settings.followed()} has no queues yet"
