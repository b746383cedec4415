"""Admission: a fixed number of stream slots, refused at once when full or draining."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .errors import Draining, Overloaded


class Admission:
    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self.active = 0
        self.draining = False

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds one slot for the body.

        Raises:
            Draining: the server is shutting down.
            Overloaded: every slot is taken.
        """
        if self.draining:
            raise Draining("server is shutting down; connect to another endpoint")
        if self.active >= self.max_streams:
            raise Overloaded(f"server at capacity ({self.active}/{self.max_streams} streams); "
                             "use another endpoint or retry in a few seconds")
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def __repr__(self) -> str:
        state = ", draining" if self.draining else ""
        return f"<Admission {self.active}/{self.max_streams} streams{state}>"
