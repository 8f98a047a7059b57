"""prefect-actor-agent: Prefect's work-queue agent as a tree of pykka actors.

The public surface: build `AgentSettings` (or read them with `settings_from_env`), call
`start_agent`, and hold the returned `AgentHandle`: `tree()`, `cancel()`, `subscribe()` a
`RunListener`, `stop()`. `StatusServer` serves the tree, health and metrics over HTTP;
`render_tree` prints the tree for people.

The names are imported on first use (PEP 562), not with the package: the command
(`actors.__main__`) must patch gevent in before pykka and httpx are imported, and importing
any module of the package imports this file first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.agent_handle import AgentHandle, start_agent
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

_HOMES = {
    "AgentHandle": "actors.agent_handle",
    "start_agent": "actors.agent_handle",
    "RunListener": "actors.runtime.listener",
    "AgentSettings": "actors.runtime.settings",
    "SettingsError": "actors.runtime.settings",
    "settings_from_env": "actors.runtime.settings",
    "StatusServer": "actors.status.http",
    "render_tree": "actors.status.text",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
