"""Client: the blocking driver. One channel per endpoint; a call refused before it starts moves on."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import grpc

from ._core import StreamOptions, channel_target, check_chunk, request_messages, to_transcript, to_updates
from .exceptions import (EndpointUnavailableError, ServerBusyError, TranscriberError, from_rpc_error,
                         InvalidRequestError)
from .models import Transcript, TranscriptUpdate
from .proto.transcriber.v1 import transcriber_pb2 as pb
from .proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc

MAX_FILE_BYTES = 32 << 20  # the server's Transcribe limit
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_FILE_BYTES + (1 << 16)),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 20_000),  # the server accepts pings every 10 s or slower
    ("grpc.keepalive_timeout_ms", 10_000),
]


class Client:
    """Blocking client for one or more transcriber endpoints.

    Args:
        endpoints: `host:port` (plaintext) or `https://host` (TLS on 443, e.g. a Cloud Run URL); defaults to
            TRANSCRIBER_ENDPOINTS (comma-separated), else 127.0.0.1:8080. A call that an endpoint refuses
            before it starts (busy, draining, down) moves to the next one.
        timeout_s: deadline of a whole call, or None for none.
    """

    def __init__(self, endpoints: Sequence[str] | None = None, timeout_s: float | None = None) -> None:
        if endpoints is None:
            endpoints = [e.strip() for e in os.environ.get("TRANSCRIBER_ENDPOINTS", "127.0.0.1:8080").split(",")
                         if e.strip()]
        if not endpoints:
            raise ValueError("give at least one endpoint")
        self.endpoints = list(endpoints)
        self._timeout_s = timeout_s
        self._channels = {endpoint: _channel(endpoint) for endpoint in self.endpoints}
        self._stubs = {endpoint: pb_grpc.TranscriberStub(channel) for endpoint, channel in self._channels.items()}

    def stream(self, chunks: Iterable[bytes], sample_rate: int = 16_000, language: str | None = None,
               **options: object) -> Iterator[TranscriptUpdate]:
        """Streams LINEAR16 mono chunks and yields interim and final updates as they come.

        Args:
            chunks: audio, any chunk size up to 1 MiB (100 ms is a good size).
            sample_rate: 8000 to 48000 Hz.
            language: a language code, or None to let the server detect it.
            options: other StreamOptions fields (interim_results, word_timestamps, prompt, hotwords, stream_id).

        Raises:
            TranscriberError: the call failed (see exceptions.py for the kinds).
        """
        stream_options = StreamOptions(sample_rate=sample_rate, language=language, **options)  # type: ignore[arg-type]
        source = _Replayable(chunks)
        failures: list[TranscriberError] = []
        for endpoint in self.endpoints:
            call = self._stubs[endpoint].StreamingTranscribe(request_messages(stream_options, source.replay()),
                                                             timeout=self._timeout_s)
            try:
                for response in call:
                    updates = to_updates(response, endpoint)
                    source.started()  # the server took the stream: from here on it is this endpoint's
                    source.raise_error()
                    yield from updates
                source.raise_error()
                return
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error, endpoint)
                if source.is_started or not isinstance(error, _MOVE_ON):
                    raise error from rpc_error
                failures.append(error)
            except TranscriberError as error:  # the server's in-band status
                if source.is_started or not isinstance(error, _MOVE_ON):
                    raise
                failures.append(error)
            finally:
                call.cancel()  # a no-op after a clean end; frees the call when the caller stops early
        raise EndpointUnavailableError("no endpoint could take the stream: " + "; ".join(map(str, failures)))

    def transcribe_file(self, path: str | os.PathLike[str], language: str | None = None, prompt: str = "") -> Transcript:
        """Transcribes a whole recording (WAV, FLAC, OGG, MP3; at most 32 MiB).

        Raises:
            TranscriberError: the file is unreadable or too large, or the call failed.
        """
        with open(path, "rb") as file:
            content = file.read()
        if len(content) > MAX_FILE_BYTES:
            raise InvalidRequestError(f"{path} is {len(content)} bytes; transcribe_file takes at most "
                                      f"{MAX_FILE_BYTES} bytes: use stream() for longer recordings")
        request = pb.TranscribeRequest(content=content, config=pb.StreamingConfig(language_code=language or "",
                                                                                   prompt=prompt))
        failures: list[TranscriberError] = []
        for endpoint in self.endpoints:
            try:
                return to_transcript(self._stubs[endpoint].Transcribe(request, timeout=self._timeout_s))
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error, endpoint)
                if not isinstance(error, _MOVE_ON):
                    raise error from rpc_error
                failures.append(error)
        raise EndpointUnavailableError("no endpoint could take the file: " + "; ".join(map(str, failures)))

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {len(self.endpoints)} endpoints: {', '.join(self.endpoints)}>"


_MOVE_ON = (ServerBusyError, EndpointUnavailableError)  # refusals that another endpoint may not share


def _channel(endpoint: str) -> grpc.Channel:
    target, tls = channel_target(endpoint)
    if tls:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS)
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


class _Replayable:
    """The caller's chunks, kept until a server takes the stream, so a refused start loses no audio.

    gRPC pulls the chunks in its own thread, where an exception would only cancel the call: a bad
    chunk ends the audio there instead, and `raise_error` raises it in the caller's thread.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._iterator = iter(chunks)
        self._kept: list[bytes] = []
        self._error: TranscriberError | None = None
        self.is_started = False

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def started(self) -> None:
        self.is_started = True
        self._kept = []

    def replay(self) -> Iterator[bytes]:
        """What was already sent (to a server that refused it), then the rest."""
        yield from list(self._kept)
        for chunk in self._iterator:
            try:
                check_chunk(chunk)
            except TranscriberError as error:
                self._error = error
                return
            if not self.is_started:
                self._kept.append(chunk)
            yield chunk
