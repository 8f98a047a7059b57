"""The actor tree as text a person reads at a glance: indented (SIGUSR1, /tree?format=text), and
the event stream's line of /healthz."""

from __future__ import annotations

import time

from messages.user.tree import ActorKind, ActorNode


def _age(since: float, now: float) -> str:
    seconds = max(0, int(now - since))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _line(node: ActorNode, now: float) -> str:
    name = "" if node.name.lower() == node.kind.lower() else f" {node.name}"
    parts = [f"{node.kind}{name}", f"[{node.state}, {_age(node.since, now)}]"]
    if node.restart != "permanent":
        parts.append(node.restart)
    if node.restarts:
        parts.append(f"restarts {node.restarts}")
    if node.last_failure:
        parts.append(f"last failure: {node.last_failure}")
    parts += [f"{key}: {value}" for key, value in node.detail.items() if key != "pid"]
    return "  ".join(parts)


def render_tree(root: ActorNode, now: float | None = None) -> str:
    """One line per actor, children below their supervisor with box-drawing branches."""
    now = time.time() if now is None else now
    lines = [_line(root, now)]

    def walk(node: ActorNode, prefix: str) -> None:
        for index, child in enumerate(node.children):
            last = index == len(node.children) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{_line(child, now)}")
            walk(child, prefix + ("    " if last else "│   "))

    walk(root, "")
    return "\n".join(lines)


def events_line(tree: ActorNode) -> str:
    """The /healthz line of the event stream, read off the EventListener's node in the tree:
    `events: stream`, `events: polling (<reason>)`, `events: off`, or the state of a listener
    being (re)started. An agent with no EventListener (one that runs once) has events off."""
    listener = next((n for n in tree.children if n.kind == ActorKind.EVENT_LISTENER), None)
    if listener is None:
        return "events: off"
    mode, reason = listener.state, listener.detail.get("reason", "")
    return f"events: {mode} ({reason})" if mode == "polling" and reason else f"events: {mode}"


def pools_lines(tree: ActorNode) -> list[str]:
    """The /healthz lines of the work pools, one per pool, in the order their watchers are
    shown: `work pool 'p' (process): served`, or `... refused: <why>` for a pool of a type
    this agent cannot run (its watchers refuse it; the other pools are served). None: no
    pool. A pool is told as its watchers last saw it."""
    lines: dict[str, str] = {}
    for node in tree.children:
        pool = node.detail.get("work pool")
        if node.kind != ActorKind.QUEUE_WATCHER or pool is None:
            continue
        kind = node.detail.get("work pool type")
        named = f"work pool {pool!r}" + (f" ({kind})" if kind else "")
        refused = node.detail.get("refused")
        line = f"{named}: refused: {refused}" if refused else f"{named}: served"
        if pool not in lines or (kind and "(" not in lines[pool]):
            lines[pool] = line
    return list(lines.values())
