"""The Agent's children in one table: who each one is, how a new life of it starts, its ref now.

One row per child, by kind and name. Starting a child, forgetting one that failed, restarting
it, stopping the children and showing them in the tree all go through this table, so a new
kind of child is one more row, not one more branch in each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pykka

from actors.rules.supervision import PERMANENT
from messages.user.tree import ActorKind

TREE_ORDER = list(ActorKind)  # the tree shows children in the order ActorKind lists them


def _nothing() -> None:
    pass


@dataclass
class Child:
    """One child of the Agent."""

    kind: ActorKind
    name: str  # the queue's name, or the singleton's own
    new_life: Callable[[], pykka.ActorRef[Any]]  # start it, from what the Agent knows now
    started: Callable[[], None] = _nothing  # tell those who work with it about the new life
    restart: str = PERMANENT  # OTP restart type, as the tree shows it
    ref: pykka.ActorRef[Any] | None = None  # None while it waits for its restart

    @property
    def key(self) -> tuple[ActorKind, str]:
        return (self.kind, self.name)


class Children:
    """The table, in the order the children were first started (they stop in reverse)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[ActorKind, str], Child] = {}

    def add(self, child: Child) -> None:
        self._rows[child.key] = child

    def get(self, kind: ActorKind, name: str) -> Child | None:
        return self._rows.get((kind, name))

    def remove(self, kind: ActorKind, name: str) -> Child | None:
        return self._rows.pop((kind, name), None)

    def ref(self, kind: ActorKind, name: str) -> pykka.ActorRef[Any] | None:
        child = self._rows.get((kind, name))
        return child.ref if child is not None else None

    def names(self, kind: ActorKind) -> tuple[str, ...]:
        """The names of the children of one kind (running or waiting for a restart), sorted."""
        return tuple(sorted(name for k, name in self._rows if k == kind))

    def of_kind(self, kind: ActorKind) -> list[Child]:
        return [self._rows[(kind, name)] for name in self.names(kind)]

    def live(self) -> list[Child]:
        """The children running now, in start order."""
        return [child for child in self._rows.values() if child.ref is not None]

    def in_tree_order(self) -> list[Child]:
        return sorted(self._rows.values(), key=lambda c: (TREE_ORDER.index(c.kind), c.name))

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self._rows.values()))
