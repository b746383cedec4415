"""AsyncClient: the grpc.aio driver. One channel per endpoint; `Client` runs one on a private loop.

A stream goes to the least loaded healthy endpoint. If that endpoint refuses it, fails, or drains,
the stream continues on another one from the server's last settled point (see `_resume`), so the
caller sees one stream. A call nearing Cloud Run's time limit rolls over the same way at a final.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import replace
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._auth import CallAuth
from ._balancer import Balancer
from ._core import (MAX_FILE_BYTES, MAX_MESSAGE_S, MAX_MESSAGES_PER_S, StreamOptions, channel_target, check_chunk, chunked,
                    language_fields, read_pcm16, request_messages, seconds, to_transcript, to_updates,
                    transcript_of_finals)
from ._resume import AudioTape, Continuity
from .exceptions import (DeadlineExceededError, EndpointUnavailableError, InvalidRequestError, OutOfRangeError,
                         ServerBusyError, ServerError, StreamCancelledError, TranscriberError, from_rpc_error)
from .models import EndpointStatus, Transcript, TranscriptUpdate
from .proto.transcriber.v1 import transcriber_pb2 as pb
from .proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc
from .settings import ClientSettings

log = logging.getLogger(__name__)

MOVE_ON = (ServerBusyError, EndpointUnavailableError)  # another endpoint may well take the call
MAX_LIMIT_ENDS = 3  # calls in a row ended at a length limit without progress before the stream gives up


class AsyncClient:
    """Asyncio client for one or more transcriber endpoints; use it as `async with AsyncClient(...)`.

    Args:
        endpoints: `host:port` (plaintext) or `https://host` (TLS on 443, e.g. a Cloud Run URL); default
            TRANSCRIBER_ENDPOINTS (comma-separated), else 127.0.0.1:8080.
        settings: all other knobs (see ClientSettings); default from TRANSCRIBER_* variables.
        overrides: ClientSettings fields to change, e.g. `timeout_s=30`, `token=...`.
    """

    def __init__(self, endpoints: Sequence[str] | str | None = None, *, settings: ClientSettings | None = None,
                 **overrides: Any) -> None:
        base = settings or ClientSettings.from_env()
        self.settings = replace(base, **{name: value for name, value in
                                         {"endpoints": _endpoint_tuple(endpoints), **overrides}.items()
                                         if value is not None})
        self._balancer = Balancer(self.settings.endpoints, eject_s=self.settings.eject_s,
                                  max_eject_s=self.settings.max_eject_s)
        self._auth = CallAuth(self.settings)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closed = False

    @property
    def endpoints(self) -> list[str]:
        return list(self.settings.endpoints)

    # -- streaming -------------------------------------------------------------------------

    async def stream(self, chunks: Iterable[bytes] | AsyncIterable[bytes], sample_rate: int = 16_000,
                     language: str | Sequence[str] | None = None, **options: Any) -> AsyncIterator[TranscriptUpdate]:
        """Streams LINEAR16 mono chunks and yields interim and final updates as they come.

        Args:
            chunks: audio, any chunk size up to 1 MiB (100 ms is a good size); an iterable (pulled in a
                worker thread, so it may block, as a microphone does) or an async iterable.
            sample_rate: 8000 to 48000 Hz.
            language: a language code ("ru"); several ("ru,en" or ["ru", "en"]) to let the server detect which
                of them is spoken; None to let it detect any.
            options: other StreamOptions fields (translate, interim_results, word_timestamps, prompt, hotwords,
                stream_id).

        Raises:
            TranscriberError: the stream failed and no endpoint could continue it (see exceptions.py).
        """
        wanted = StreamOptions(sample_rate=sample_rate, language=language, **options)
        feed = _Feed(AudioTape(2 * sample_rate, self.settings.replay_s))
        pump = asyncio.create_task(feed.pump(chunks))
        continuity = Continuity()
        deadline = _deadline(self.settings.timeout_s)
        # Endpoints that failed this stream since it last made progress: audio that brings servers down must
        # not go round them for ever.
        refused: dict[str, TranscriberError] = {}
        failed_at_s = 0.0
        internal_retry = True  # an INTERNAL status moves the stream once, not in a loop
        limit_ends = 0  # calls in a row that a length limit ended without progress
        idle_ended = False  # the last call ended for idleness: the next waits for audio the server has not settled
        try:
            while True:
                if idle_ended:
                    idle_ended = False
                    if not await feed.more_audio_after(feed.tape.offset_of(continuity.settled_s)):
                        return  # the caller ended, and the server settled every word it had
                endpoint = await self._choose(refused, deadline)
                if endpoint is None:
                    raise _no_endpoint("stream", refused)
                offset = continuity.resume_at(feed.tape)
                # Words are always asked for: they place the seam after a failover.
                sent = replace(wanted, word_timestamps=True, prompt=continuity.prompt(wanted.prompt))
                call = self._stub(endpoint).StreamingTranscribe(
                    request_messages(sent, feed.chunks_from(offset)), timeout=_remaining(deadline),
                    metadata=await self._auth.metadata(endpoint))
                self._balancer.started(endpoint)
                opened_at, rolling_over = time.monotonic(), False
                try:
                    async for response in call:
                        updates = to_updates(response, endpoint)  # raises the server's in-band error first
                        if response.HasField("server_status"):  # the first response: admitted here
                            self._admitted(endpoint, response.server_status)
                        settled_before_s = continuity.settled_s
                        for update in updates:
                            kept = continuity.take(update)
                            if kept is not None:
                                yield kept if wanted.word_timestamps else replace(kept, words=())
                        if response.HasField("settled_offset"):
                            continuity.settle(seconds(response.settled_offset))
                            await feed.forget_before(feed.tape.offset_of(continuity.settled_s))
                        if continuity.settled_s > failed_at_s:
                            refused.clear()
                            limit_ends = 0
                        feed.raise_error()
                        if continuity.settled_s > settled_before_s and \
                                time.monotonic() - opened_at > self.settings.rollover_s:
                            rolling_over = True  # at a settled point: a final, or a pause
                            break
                    feed.raise_error()
                    if not rolling_over:
                        return
                    log.info("stream moves to a new call after %.0f s on %s (from %.2f s)",
                             time.monotonic() - opened_at, endpoint, continuity.settled_s)
                except (grpc.RpcError, TranscriberError) as failure:
                    if failure is feed.error:
                        raise
                    error = await self._judge(failure, endpoint, deadline) if isinstance(failure, grpc.RpcError) else failure
                    if isinstance(error, OutOfRangeError) and limit_ends < MAX_LIMIT_ENDS:
                        # The server ended the call at its maximum duration or idle timeout, after sending every
                        # final up to its settled point: the stream goes on in a new call (any endpoint).
                        limit_ends += 1
                        failed_at_s = continuity.settled_s
                        idle_ended = error.reason == "IDLE_TIMEOUT"
                        log.info("stream continues in a new call (%s)", error)
                        continue
                    # Our server's own INTERNAL (in band or in the trailers) may be this endpoint's trouble: move once.
                    in_band_internal = error.reason == "INTERNAL"
                    if not (isinstance(error, MOVE_ON) or (in_band_internal and internal_retry)):
                        if error is failure:
                            raise
                        raise error from failure
                    internal_retry = internal_retry and not in_band_internal
                    refused[endpoint] = error
                    failed_at_s = continuity.settled_s
                    self._balancer.failed(endpoint, str(error), error.retry_after_s)
                    log.warning("stream left %s (%s); continuing on another endpoint from %.2f s of audio",
                                endpoint, error, continuity.settled_s)
                finally:
                    call.cancel()
                    self._balancer.finished(endpoint)
        except asyncio.CancelledError:
            if self._closed and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise StreamCancelledError("the client was closed while the stream ran",
                                           code=grpc.StatusCode.CANCELLED) from None
            raise
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    # -- files -----------------------------------------------------------------------------

    async def transcribe_file(self, path: str | os.PathLike[str], language: str | Sequence[str] | None = None,
                              prompt: str = "", translate: bool = False) -> Transcript:
        """Transcribes a whole recording (WAV, FLAC, OGG, MP3, ...). Files over the server's 32 MiB
        limit are decoded here and streamed as fast as the server takes them.

        Raises:
            TranscriberError: the file is unreadable, or no endpoint could transcribe it.
        """
        try:
            content = await asyncio.to_thread(_read_bytes, path)
        except OSError as error:
            raise InvalidRequestError(f"cannot read {path}: {error}", code=grpc.StatusCode.INVALID_ARGUMENT) from error
        if len(content) > MAX_FILE_BYTES:
            pcm, rate = await asyncio.to_thread(read_pcm16, str(path))
            finals = [update async for update in self.stream(chunked(pcm, rate, chunk_s=1.0), rate, language,
                                                              prompt=prompt, translate=translate,
                                                              interim_results=False)]
            return transcript_of_finals(finals, duration_s=len(pcm) / (2 * rate))
        request = pb.TranscribeRequest(content=content, config=pb.StreamingConfig(
            **language_fields(language), prompt=prompt, task=pb.TRANSLATE if translate else pb.TRANSCRIBE))
        deadline = _deadline(self.settings.timeout_s)
        refused: dict[str, TranscriberError] = {}
        while (endpoint := await self._choose(refused, deadline)) is not None:
            self._balancer.started(endpoint)
            try:
                response = await self._stub(endpoint).Transcribe(request, timeout=_remaining(deadline),
                                                                 metadata=await self._auth.metadata(endpoint))
            except grpc.RpcError as rpc_error:
                error = await self._judge(rpc_error, endpoint, deadline)
                # The file can be sent again: a busy or gone endpoint, or our server's own INTERNAL, may go
                # better elsewhere; a bare INTERNAL from a healthy endpoint is raised, as for streams.
                if not (isinstance(error, MOVE_ON) or (isinstance(error, ServerError) and error.reason)):
                    raise error from rpc_error
                refused[endpoint] = error
                self._balancer.failed(endpoint, str(error), error.retry_after_s)
                log.warning("%s failed on %s (%s); trying another endpoint", path, endpoint, error)
            else:
                self._admitted(endpoint, response.server_status)
                return to_transcript(response)
            finally:
                self._balancer.finished(endpoint)
        raise _no_endpoint(f"file {path}", refused)

    # -- endpoints -------------------------------------------------------------------------

    async def endpoint_status(self) -> list[EndpointStatus]:
        """Each endpoint's health, load and model, asked at once."""
        return list(await asyncio.gather(*(self._status_of(endpoint) for endpoint in self.settings.endpoints)))

    async def _status_of(self, endpoint: str) -> EndpointStatus:
        started = time.perf_counter()
        timeout_s = max(self.settings.probe_timeout_s, 3.0)
        try:
            metadata = await self._auth.metadata(endpoint)
            health = await health_pb2_grpc.HealthStub(self._channel(endpoint)).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s, metadata=metadata)
            status = await self._stub(endpoint).GetStatus(pb.GetStatusRequest(), timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as rpc_error:
            error = from_rpc_error(rpc_error, endpoint)
            return EndpointStatus(endpoint=endpoint, health="UNREACHABLE", error=error.details)
        except TranscriberError as error:
            return EndpointStatus(endpoint=endpoint, health="UNREACHABLE", error=error.details)
        self._balancer.report(endpoint, status.active_streams, status.max_streams, status.load)
        return EndpointStatus(endpoint=endpoint, health=health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
                              model=status.model, active_streams=status.active_streams,
                              max_streams=status.max_streams, draining=status.draining, load=status.load,
                              final_lag_p90_s=status.final_lag_p90_s, latency_ms=(time.perf_counter() - started) * 1000)

    async def _choose(self, refused: dict[str, TranscriberError], deadline: float | None) -> str | None:
        """The next endpoint to try, not one that refused this call; an endpoint back from a time
        out must pass a health check first."""
        while (endpoint := self._balancer.pick(exclude=refused)) is not None:
            if self._balancer.needs_probe(endpoint) and not await self._serving(endpoint, deadline):
                refused[endpoint] = EndpointUnavailableError("health check: not serving", endpoint=endpoint,
                                                             code=grpc.StatusCode.UNAVAILABLE)
                self._balancer.failed(endpoint, "health check: not serving")
                continue
            return endpoint
        return None

    async def _judge(self, failure: grpc.RpcError, endpoint: str, deadline: float | None) -> TranscriberError:
        """The SDK error of a failed call: a CANCELLED the caller did not ask for is an endpoint that went
        away. A bare INTERNAL (no reason from our server: "Internal error from Core") is also what grpc.aio
        reports when the connection dies while we write (grpc/grpc#36066): alone it proves nothing, but with
        a failed health check it is an endpoint that went away."""
        error = from_rpc_error(failure, endpoint)
        if error.code == grpc.StatusCode.CANCELLED and not self._closed:
            # Not the caller's cancel (grpc.aio raises CancelledError for that): a server that shuts down
            # cancels the calls it has not handed to a handler yet (grpc/grpc#41785). Another endpoint may
            # take the call.
            return EndpointUnavailableError(f"{error.details}: the endpoint cancelled the call (a server "
                                            "shutting down does so)", code=grpc.StatusCode.UNAVAILABLE,
                                            endpoint=endpoint)
        if error.code == grpc.StatusCode.INTERNAL and not error.reason and \
                not await self._serving(endpoint, deadline):
            return EndpointUnavailableError(f"{error.details}; the endpoint no longer passes its health check",
                                            code=grpc.StatusCode.UNAVAILABLE, endpoint=endpoint)
        return error

    async def _serving(self, endpoint: str, deadline: float | None) -> bool:
        """Whether the endpoint passes a health check. A check made for a call takes no more than the call
        has left: a black-holed endpoint's check runs to its timeout, and the call's deadline held only
        once that was over (7.0 s for a 6 s deadline)."""
        timeout_s = min(self.settings.probe_timeout_s, _remaining(deadline) or math.inf)  # none left: raises
        try:
            reply = await health_pb2_grpc.HealthStub(self._channel(endpoint)).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s,
                metadata=await self._auth.metadata(endpoint))  # Cloud Run's IAM front end checks every call
        except grpc.RpcError:  # an AuthenticationError (no ID token) is not the endpoint's fault: it propagates
            _remaining(deadline)  # a check cut short by the call's deadline says nothing about the endpoint
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def _admitted(self, endpoint: str, status: pb.ServerStatus) -> None:
        self._balancer.succeeded(endpoint)
        if status.max_streams:
            self._balancer.report(endpoint, status.active_streams, status.max_streams, status.load)

    # -- channels --------------------------------------------------------------------------

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        if self._closed:
            raise StreamCancelledError("the client is closed", code=grpc.StatusCode.CANCELLED)
        if endpoint not in self._channels:  # made on first use, inside the running loop
            target, tls = channel_target(endpoint)
            options = channel_options(self.settings)
            self._channels[endpoint] = (grpc.aio.secure_channel(target, self._tls_credentials(), options=options)
                                        if tls else grpc.aio.insecure_channel(target, options=options))
        return self._channels[endpoint]

    def _tls_credentials(self) -> grpc.ChannelCredentials:
        if not self.settings.tls_root_certs:
            return grpc.ssl_channel_credentials()
        with open(self.settings.tls_root_certs, "rb") as roots:
            return grpc.ssl_channel_credentials(root_certificates=roots.read())

    def _stub(self, endpoint: str) -> pb_grpc.TranscriberStub:
        return pb_grpc.TranscriberStub(self._channel(endpoint))

    async def aclose(self) -> None:
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close() for channel in channels))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncClient {self._balancer!r}>"


def channel_options(settings: ClientSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", MAX_FILE_BYTES + (1 << 16)),
        ("grpc.max_receive_message_length", 64 << 20),
        # A dead peer is found within keepalive_s + keepalive_timeout_s, not at the deadline, also while a
        # stream sends nothing (gRPC otherwise stops pinging after two pings without data).
        ("grpc.keepalive_time_ms", int(settings.keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.http2.max_pings_without_data", 0),
        # A restarted server is found again within seconds (gRPC's default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 500),
        # gRPC also takes this as the connect timeout: under Linux's 1 s SYN retransmit, one lost SYN
        # would fail the call (found with 5 % packet loss in tests/faults).
        ("grpc.min_reconnect_backoff_ms", 5_000),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]


class _Feed:
    """The caller's audio on a tape that every call of the stream reads from its own offset.

    The pump pulls the caller's chunks only while the tape has room, so a producer faster than the
    servers waits, as gRPC flow control would make it wait, and no audio is ever dropped.
    """

    def __init__(self, tape: AudioTape) -> None:
        self.tape = tape
        self.error: BaseException | None = None
        self._changed = asyncio.Condition()

    async def pump(self, chunks: Iterable[bytes] | AsyncIterable[bytes]) -> None:
        try:
            async for chunk in _each(chunks):
                check_chunk(chunk)
                async with self._changed:
                    await self._changed.wait_for(lambda: self.tape.has_room)
                    self.tape.append(bytes(chunk))
                    self._changed.notify_all()
        except Exception as error:  # the caller's iterator failed, or a chunk was too large
            self.error = error
        finally:
            async with self._changed:
                self.tape.close()
                self._changed.notify_all()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    async def chunks_from(self, offset: int) -> AsyncIterator[bytes]:
        """The tape from `offset` as wire messages: at most 1 s of audio each, and at most
        MAX_MESSAGES_PER_S of them, so a caller's tiny chunks are merged rather than refused."""
        sent_at = float("-inf")
        while True:
            await asyncio.sleep(max(sent_at + 1 / MAX_MESSAGES_PER_S - time.monotonic(), 0.0))
            async with self._changed:
                await self._changed.wait_for(lambda: offset < self.tape.end or self.tape.closed)
                data = self.tape.read(offset, round(self.tape.bytes_per_s * MAX_MESSAGE_S))
            if not data or self.error is not None:
                return  # the end (half-close), or the caller's error: the driver raises it
            offset += len(data)
            sent_at = time.monotonic()
            yield data

    async def more_audio_after(self, offset: int) -> bool:
        """Waits until the tape holds audio past `offset` (True, at once if it does) or the caller ended the
        stream without (False)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.tape.end > offset or self.tape.closed)
            return self.tape.end > offset

    async def forget_before(self, offset: int) -> None:
        async with self._changed:
            self.tape.forget_before(offset)
            self._changed.notify_all()


async def _each(chunks: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    elif isinstance(chunks, (list, tuple)):
        for chunk in chunks:
            yield chunk
    else:  # may block (a microphone, a paced file): pull it in a worker thread
        iterator = iter(chunks)
        end = object()
        while (chunk := await asyncio.to_thread(next, iterator, end)) is not end:
            yield chunk  # type: ignore[misc]


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _endpoint_tuple(endpoints: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if endpoints is None:
        return None
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    return tuple(endpoint.strip() for endpoint in endpoints if endpoint.strip())


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceededError("the call's deadline (timeout_s) passed while moving between endpoints",
                                    code=grpc.StatusCode.DEADLINE_EXCEEDED)
    return left


def _no_endpoint(what: str, refused: dict[str, TranscriberError]) -> EndpointUnavailableError:
    reasons = "; ".join(f"{endpoint}: {error.details}" for endpoint, error in refused.items())
    return EndpointUnavailableError(f"no endpoint could take the {what}: {reasons}", code=grpc.StatusCode.UNAVAILABLE)
