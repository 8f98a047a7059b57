"""The Agent's permanent children: how each one tells the Agent that it failed.

A permanent child (OTP's word: always restarted) that fails tells the Agent `ChildFailed`, and
the Agent restarts it alone after a backoff, within the restart intensity
(`actors.rules.supervision`). pykka calls `on_failure` only for a failure in `on_receive`: an
exception raised in `on_start` is logged and the actor stopped with no hook called, so a child
whose start-up failed would be gone from the tree without anyone restarting it. Here
`on_start` runs the child's `start_up`, and a failure there is reported exactly as one in
`on_receive` is, before pykka stops the actor.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, ClassVar

import pykka

from actors.runtime.refs import tell_if_alive
from messages.internal.lifecycle import ChildFailed
from messages.user.tree import ActorKind


class PermanentChild(pykka.ThreadingActor):
    """A child the Agent restarts whenever it fails, at start-up too."""

    KIND: ClassVar[ActorKind]

    def __init__(self, agent: pykka.ActorRef[Any], name: str) -> None:
        super().__init__()
        self.agent = agent
        self.name = name  # the queue's name, or the singleton's own name

    def start_up(self) -> None:
        """What the child does first, in its own thread, before its first message."""

    def clean_up(self) -> None:
        """What the child gives back when it stops or fails: timers, workers, sessions."""

    def on_start(self) -> None:
        try:
            self.start_up()
        except Exception as exc:
            self._failed(exc)
            raise  # pykka logs it and stops the actor

    def on_stop(self) -> None:
        self.clean_up()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._failed(exception_value)

    def _failed(self, error: BaseException | None) -> None:
        try:
            self.clean_up()
        finally:
            tell_if_alive(self.agent, ChildFailed(self.KIND, self.name, repr(error)))
