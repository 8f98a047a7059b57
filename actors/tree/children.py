"""The Agent's children in one table: who each one is, how a new life of it starts, its ref now
and what it last told of itself.

One row per child, by kind and name. Starting a child, forgetting one that failed, restarting
it, stopping the children, showing them in the tree and working out what they must hear of
each other (`actors.tree.switchboard`) all go through this table, so a new kind of child is
one more row, not one more branch in each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import time
from typing import Any

import pykka
from msgspec.structs import replace

from actors.rules.supervision import PERMANENT, ChildRecord, Supervisor
from messages.user.tree import ActorKind, ActorNode

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
    node: ActorNode | None = None  # its node as it last told it (`ChildStatus`), if it did

    @property
    def key(self) -> tuple[ActorKind, str]:
        return (self.kind, self.name)

    def shown(self, record: ChildRecord, answer: ActorNode | None, since: float) -> ActorNode:
        """Its node in the tree: as it answered (the Dispatcher) or last told (the others),
        with what supervision remembers of it. A child that has told nothing yet is starting
        (since the agent started, `since`); one whose ref is gone is restarting."""
        node = answer if answer is not None else self.node if self.ref is not None else None
        if node is None:
            state, when = ("starting", since) if self.ref is not None else ("restarting", None)
            node = ActorNode(kind=self.kind, name=self.name, state=state, since=when or time())
        return replace(
            node,
            restart=record.restart,
            restarts=record.restarts,
            last_failure=record.last_failure,
        )


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

    def live(self) -> list[pykka.ActorRef[Any]]:
        """The refs of the children running now, in start order."""
        return [child.ref for child in self._rows.values() if child.ref is not None]

    def in_tree_order(self) -> list[Child]:
        return sorted(self._rows.values(), key=lambda c: (TREE_ORDER.index(c.kind), c.name))

    def shown(
        self,
        supervisor: Supervisor,
        answers: dict[tuple[ActorKind, str], ActorNode],
        since: float,
    ) -> tuple[ActorNode, ...]:
        """Every child's node in the tree, in tree order (`answers`: those asked just now)."""
        return tuple(
            child.shown(supervisor.record(child.kind, child.name), answers.get(child.key), since)
            for child in self.in_tree_order()
        )

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self._rows.values()))
