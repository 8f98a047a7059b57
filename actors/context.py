"""What every actor of one agent shares: settings, the API edge and the clock.

These are services, not state: the settings are frozen, the API client and the clock are safe
to call from any actor. Mutable state lives only inside an actor and changes only in its inbox.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.api_client import PrefectApi
from actors.settings import AgentSettings
from actors.timers import Clock


@dataclass(frozen=True)
class AgentContext:
    settings: AgentSettings
    api: PrefectApi
    clock: Clock
