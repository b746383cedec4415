"""Client: the blocking driver. One channel per endpoint; a stream that cannot start moves on."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import grpc

from ._core import StreamOptions, request_messages, to_transcript, to_updates
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
    """Blocking client for one or more transcriber endpoints (`host:port`, plaintext).

    Args:
        endpoints: where servers listen; defaults to TRANSCRIBER_ENDPOINTS (comma-separated), else 127.0.0.1:8080.
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
        self._channels = {endpoint: grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS) for endpoint in endpoints}
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
        source = _Touched(chunks)
        failures: list[TranscriberError] = []
        for endpoint in self.endpoints:
            call = self._stubs[endpoint].StreamingTranscribe(request_messages(stream_options, source),
                                                             timeout=self._timeout_s)
            try:
                for response in call:
                    yield from to_updates(response, endpoint)
                return
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error, endpoint)
                if source.touched or not isinstance(error, (ServerBusyError, EndpointUnavailableError)):
                    raise error from rpc_error
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
                if not isinstance(error, (ServerBusyError, EndpointUnavailableError)):
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


class _Touched:
    """Wraps the caller's chunks and records whether any was sent: until then a stream may move on."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._iterator = iter(chunks)
        self.touched = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = next(self._iterator)
        self.touched = True
        return chunk
