"""RunListener: the base for a host service's actor that wants the agent's run events.

In the listener style of Mopidy: subclass it, override the methods for the events you care
about, start it, and pass its ref to `AgentHandle.subscribe`. The agent tells it each event;
the methods run in the listener's own actor, so a slow listener never slows the agent.
"""

from __future__ import annotations

from typing import Any

import pykka

from messages.user.events import RunFinished, RunStarted, RunSubmitted


class RunListener(pykka.ThreadingActor):
    def run_submitted(self, event: RunSubmitted) -> None:
        """A run was admitted; its supervisor is proposing Pending."""

    def run_started(self, event: RunStarted) -> None:
        """The run's process started with `event.pid`."""

    def run_finished(self, event: RunFinished) -> None:
        """The run ended for this agent; `event.outcome` says how."""

    def on_receive(self, message: Any) -> Any:
        match message:
            case RunSubmitted():
                self.run_submitted(message)
            case RunStarted():
                self.run_started(message)
            case RunFinished():
                self.run_finished(message)
            case _:
                return super().on_receive(message)
        return None
