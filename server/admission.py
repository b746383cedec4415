"""Admission: stream slots, refused at once when full, when the model cannot keep up, or when draining."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .errors import Draining, Overloaded


class Admission:
    def __init__(self, max_streams: int, refusal: Callable[[], str | None] = lambda: None) -> None:
        """`refusal` says why the server cannot take one more stream now (its model is behind), or None."""
        self.max_streams = max_streams
        self._refusal = refusal
        self.active = 0
        self.draining = False

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds one slot for the body.

        Raises:
            Draining: the server is shutting down.
            Overloaded: every slot is taken, or the model is behind.
        """
        if self.draining:
            raise Draining("server is shutting down; connect to another endpoint")
        if self.active >= self.max_streams:
            raise Overloaded(f"server at capacity ({self.active}/{self.max_streams} streams); "
                             "use another endpoint or retry in a few seconds")
        if self.active and (why := self._refusal()):
            raise Overloaded(f"server at capacity: {why} with {self.active} streams; "
                             "use another endpoint or retry in a few seconds")
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def __repr__(self) -> str:
        state = ", draining" if self.draining else ""
        return f"<Admission {self.active}/{self.max_streams} streams{state}>"
