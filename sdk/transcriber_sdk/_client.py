"""Client: the blocking API. It runs an AsyncClient on a private event loop in a daemon thread, so both
APIs share one driver and behave the same."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from ._async_client import AsyncClient
from .models import EndpointStatus, Transcript, TranscriptUpdate
from .settings import ClientSettings

T = TypeVar("T")
_END = object()


class Client:
    """Blocking client for one or more transcriber endpoints; use it as `with Client(...) as client`.

    Takes the same arguments as AsyncClient (endpoints, settings, ClientSettings overrides).
    """

    def __init__(self, endpoints: Sequence[str] | str | None = None, *, settings: ClientSettings | None = None,
                 **overrides: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="transcriber-sdk", daemon=True)
        self._thread.start()
        try:
            self._client = AsyncClient(endpoints, settings=settings, **overrides)
        except BaseException:
            self._stop_loop()
            raise

    @property
    def settings(self) -> ClientSettings:
        return self._client.settings

    @property
    def endpoints(self) -> list[str]:
        return self._client.endpoints

    def stream(self, chunks: Iterable[bytes], sample_rate: int = 16_000, language: str | None = None,
               **options: Any) -> Iterator[TranscriptUpdate]:
        """Streams LINEAR16 mono chunks and yields interim and final updates as they come (see AsyncClient.stream).

        Raises:
            TranscriberError: the stream failed and no endpoint could continue it.
        """
        updates: queue.SimpleQueue[object] = queue.SimpleQueue()

        async def drive() -> None:
            try:
                async for update in self._client.stream(chunks, sample_rate, language, **options):
                    updates.put(update)
            finally:
                updates.put(_END)

        future = asyncio.run_coroutine_threadsafe(drive(), self._loop)
        try:
            while (update := updates.get()) is not _END:
                yield update  # type: ignore[misc]
            future.result()
        finally:
            future.cancel()  # the caller stopped early: end the call and free its endpoint slot

    def transcribe_file(self, path: str | os.PathLike[str], language: str | None = None, prompt: str = "") -> Transcript:
        """Transcribes a whole recording (see AsyncClient.transcribe_file)."""
        return self._run(self._client.transcribe_file(path, language, prompt))

    def endpoint_status(self) -> list[EndpointStatus]:
        """Each endpoint's health, load and model."""
        return self._run(self._client.endpoint_status())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        finally:
            future.cancel()

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.aclose())
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self._client._balancer!r}>"
