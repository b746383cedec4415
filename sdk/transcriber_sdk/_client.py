"""Client: the blocking API. It runs an AsyncClient on a private event loop in a daemon thread, so both
APIs share one driver and behave the same."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from ._async_client import AsyncClient
from .exceptions import StreamCancelledError
from .models import EndpointStatus, Transcript, TranscriptUpdate
from .settings import ClientSettings

T = TypeVar("T")
_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _caller_error(error: BaseException) -> BaseException:
    """What the caller's thread raises: a cancellation it did not ask for means close() ended the call."""
    if isinstance(error, asyncio.CancelledError):
        return StreamCancelledError("the client was closed while the call ran", code=grpc.StatusCode.CANCELLED)
    return error


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

    def stream(self, chunks: Iterable[bytes], sample_rate: int = 16_000, language: str | Sequence[str] | None = None,
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
            except BaseException as error:  # handed to the caller's thread, even a cancellation by close()
                updates.put(_Failed(error))
                raise
            updates.put(_END)

        future = asyncio.run_coroutine_threadsafe(drive(), self._loop)
        try:
            while (item := updates.get()) is not _END:
                if isinstance(item, _Failed):
                    raise _caller_error(item.error)
                yield item  # type: ignore[misc]
        finally:
            future.cancel()  # the caller stopped early: end the call and free its endpoint slot

    def transcribe_file(self, path: str | os.PathLike[str], language: str | Sequence[str] | None = None,
                        prompt: str = "", translate: bool = False) -> Transcript:
        """Transcribes a whole recording (see AsyncClient.transcribe_file)."""
        return self._run(self._client.transcribe_file(path, language, prompt, translate))

    def endpoint_status(self) -> list[EndpointStatus]:
        """Each endpoint's health, load and model."""
        return self._run(self._client.endpoint_status())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError as error:  # close() from another thread
            raise _caller_error(asyncio.CancelledError()) from error
        finally:
            future.cancel()

    def close(self) -> None:
        """Ends every call still running (their callers get StreamCancelledError) and closes the channels."""
        if self._loop.is_closed():
            return

        async def shutdown() -> None:
            running = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await self._client.aclose()
            await self._loop.shutdown_asyncgens()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
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
