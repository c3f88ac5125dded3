"""Listeners: the callbacks an application registers for one kind of
event, called in registration order."""

from __future__ import annotations

import logging
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger("switchboard_client")


class Listeners(Generic[T]):
    """Callbacks for one kind of event. A listener that raises is logged and
    the others still run: an application's bug must not break the client's
    reading of the connection."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._listeners: list[Callable[[T], None]] = []

    def add(self, listener: Callable[[T], None]) -> Callable[[], None]:
        """Adds ``listener``; returns the function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def emit(self, value: T) -> None:
        for listener in list(self._listeners):
            try:
                listener(value)
            except Exception:
                log.exception("a %s listener raised", self._name)
