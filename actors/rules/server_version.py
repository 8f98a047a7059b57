"""Which Prefect server the agent talks to, and what that changes: a pure decision.

The agent's calls are the same on every server it knows except in two places: work pools
exist from 2.10 on, and a Prefect 3 deployment carries `job_variables` for its pool's job
template instead of an infrastructure block with dotted overrides. The server's own version
answer (`GET /admin/version`) decides both. A version the agent was not built against is
served as the closest known one, with a warning: refusing would stop a user whose server is
one minor release ahead for nothing.
"""

from __future__ import annotations

import re

import msgspec

KNOWN = "2.7 to 2.20, 3.x"
_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)")


class ServerProfile(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent knows about its server, from the version it reported."""

    version: str  # as the server reported it, e.g. "2.20.27"
    major: int
    minor: int
    known: bool  # a version this agent was built and tested against

    @property
    def has_work_pools(self) -> bool:
        """Work pools and their endpoints arrived in Prefect 2.10."""
        return (self.major, self.minor) >= (2, 10)

    @property
    def filters_runs_like_get_runs(self) -> bool:
        """The flow-run filter can answer a queue's due runs as get_runs does: read in the
        2.20 and 3.x servers' code (both match a run to its queue by name). Older servers
        keep get_runs for every poll."""
        return (self.major, self.minor) >= (2, 20)

    @property
    def job_variables_style(self) -> bool:
        """Prefect 3: a run's process comes from the pool's job variables, not from a block."""
        return self.major >= 3

    @property
    def has_run_labels(self) -> bool:
        """Prefect 3 keeps labels on flow runs (`PATCH /flow_runs/{id}/labels`)."""
        return self.major >= 3

    def heartbeat_pool(self, work_pool: str | None) -> str | None:
        """The pool whose worker row this agent heartbeats: the one it serves, or on a 2.x
        server with pools the one every plain queue lives in; None: nothing to heartbeat
        (a server older than pools, or plain queues on 3.x, which has no such pool)."""
        if work_pool is not None:
            return work_pool
        if self.has_work_pools and not self.job_variables_style:
            return "default-agent-pool"
        return None

    def heartbeat_pools(self, work_pools: tuple[str | None, ...]) -> tuple[str, ...]:
        """The pools this agent heartbeats, one per pool it serves (`heartbeat_pool`)."""
        return tuple(p for pool in work_pools if (p := self.heartbeat_pool(pool)) is not None)

    def describe(self) -> str:
        return f"Prefect server {self.version}"


def profile_for(version: str) -> ServerProfile:
    """The profile for a reported version; an unparsable or unknown one gets the nearest."""
    match = _VERSION.match(version)
    if match is None:
        return ServerProfile(version=version or "unknown", major=2, minor=20, known=False)
    major, minor = int(match.group(1)), int(match.group(2))
    known = (major == 2 and 7 <= minor <= 20) or major == 3
    return ServerProfile(version=version.strip(), major=major, minor=minor, known=known)


def unknown_version_warning(profile: ServerProfile) -> str | None:
    """The warning to log for a server this agent does not know, or None."""
    if profile.known:
        return None
    nearest = "3.x" if profile.job_variables_style else "2.20"
    return (
        f"{profile.describe()} is not a version this agent knows ({KNOWN}); "
        f"serving it as Prefect {nearest}. Report anything that does not work."
    )
