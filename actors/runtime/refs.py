"""Sending to an actor that may already have stopped."""

from __future__ import annotations

from typing import Any, TypeVar

import pykka


def tell_if_alive(ref: pykka.ActorRef[Any], message: object) -> bool:
    """Tell `ref` unless it has stopped; a message to a finished actor has no one to act on it."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


T = TypeVar("T")


def ask(
    ref: pykka.ActorRef[Any], message: object, answer: type[T], timeout: float | None = None
) -> T:
    """Ask `ref` and check the answer's type, so a wrong reply fails here, not further on."""
    reply = ref.ask(message, timeout=timeout)
    if not isinstance(reply, answer):
        raise TypeError(f"{ref} answered {type(reply).__name__} to {type(message).__name__}")
    return reply
