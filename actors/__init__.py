"""prefect-actor-agent: Prefect's work-queue agent as a tree of pykka actors.

The public surface: build `AgentSettings` (or read them with `settings_from_env`), call
`start_agent`, and hold the returned `AgentHandle`: `tree()`, `cancel()`, `subscribe()` a
`RunListener`, `stop()`. `StatusServer` serves the tree, health and metrics over HTTP;
`render_tree` prints the tree for people.
"""

from actors.runtime.handle import AgentHandle, start_agent
from actors.runtime.listener import RunListener
from actors.runtime.settings import AgentSettings, SettingsError, settings_from_env
from actors.status.http import StatusServer
from actors.status.text import render_tree

__all__ = [
    "AgentHandle",
    "AgentSettings",
    "RunListener",
    "SettingsError",
    "StatusServer",
    "render_tree",
    "settings_from_env",
    "start_agent",
]
