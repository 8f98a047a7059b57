"""Messages a RunSupervisor sends itself on the way through one flow run's life.

Each step of the submission is its own message, so a `Cancel` that arrives between two steps
is handled before the next one: a run cancelled while Pending never starts its process.
"""

from __future__ import annotations

import msgspec


class ProposePending(msgspec.Struct, frozen=True):
    """First step: ask the server for the run (Scheduled -> Pending)."""


class StartProcess(msgspec.Struct, frozen=True):
    """Second step, once Pending was accepted: resolve the infrastructure and start it."""


class ProcessExited(msgspec.Struct, frozen=True):
    """Sent by the helper that waits on the run's process, when it exits."""

    pid: int
    returncode: int  # negative: killed by that signal


class GraceExpired(msgspec.Struct, frozen=True):
    """Scheduled after SIGTERM: if the process group is still alive, SIGKILL it."""

    pid: int
