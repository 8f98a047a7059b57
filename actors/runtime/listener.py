"""RunListener: the base for a host service's actor that wants the agent's run events.

In the listener style of Mopidy: subclass it, override the methods for the events you care
about, start it, and pass its ref to `AgentHandle.subscribe`. The agent tells it each event;
the methods run in the listener's own actor, so a slow listener never slows the agent. A
method that raises is logged with the event and the listener is kept (as Mopidy's
`Listener.on_event` does): one bad event must not silence every later one.
"""

from __future__ import annotations

import logging
from typing import Any

import pykka

from messages.user.events import RunFinished, RunStarted, RunSubmitted

log = logging.getLogger("prefect_actor_agent.listener")


class RunListener(pykka.ThreadingActor):
    def run_submitted(self, event: RunSubmitted) -> None:
        """A run was admitted; its supervisor is proposing Pending."""

    def run_started(self, event: RunStarted) -> None:
        """The run's infrastructure started, at `event.infrastructure_pid`."""

    def run_finished(self, event: RunFinished) -> None:
        """The run ended for this agent; `event.outcome` says how."""

    def on_receive(self, message: Any) -> Any:
        match message:
            case RunSubmitted() | RunStarted() | RunFinished():
                self._deliver(message)
            case _:
                return super().on_receive(message)
        return None

    def _deliver(self, event: RunSubmitted | RunStarted | RunFinished) -> None:
        try:
            match event:
                case RunSubmitted():
                    self.run_submitted(event)
                case RunStarted():
                    self.run_started(event)
                case RunFinished():
                    self.run_finished(event)
        except Exception:  # the listener's bug: logged with the event, the listener kept
            log.exception(
                "run listener %s failed on %r; it keeps listening", type(self).__name__, event
            )
