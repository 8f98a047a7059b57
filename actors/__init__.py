"""prefect-actor-agent: Prefect's work-queue agent as a tree of pykka actors.

The public surface: build `AgentSettings` (or read them with `settings_from_env`), call
`start_agent`, and hold the returned `AgentHandle`.
"""

from actors.runtime import AgentHandle, start_agent
from actors.settings import AgentSettings, SettingsError, settings_from_env

__all__ = ["AgentHandle", "AgentSettings", "SettingsError", "settings_from_env", "start_agent"]
