"""Everything the clients do that touches no network: request messages, response reading, audio files."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import soundfile

from .exceptions import InvalidRequestError, from_status
from .models import Segment, Transcript, TranscriptUpdate, Word
from .proto.transcriber.v1 import transcriber_pb2 as pb

CHUNK_S = 0.1  # 100 ms frames: the latency/overhead balance Google and Riva recommend
MAX_CHUNK_BYTES = 1 << 20  # the largest chunk a caller may hand the SDK (it is re-framed for the wire)
MAX_MESSAGE_S = 1.0  # the server's limit of audio per message
MAX_MESSAGES_PER_S = 100  # half the server's default limit (200): smaller chunks are merged
MAX_FILE_BYTES = 32 << 20  # the server's Transcribe limit; larger files are streamed instead


@dataclass(frozen=True)
class StreamOptions:
    sample_rate: int = 16_000
    # A code such as "ru"; several ("ru,en" or ["ru", "en"]): the server detects which, among them only; None: any.
    language: str | Sequence[str] | None = None
    translate: bool = False  # the words in English, whatever the spoken language (multilingual models)
    language_per_utterance: bool = False  # detect each utterance's language afresh (speakers who switch)
    interim_results: bool = True
    word_timestamps: bool = True
    voice_activity_events: bool = False
    prompt: str = ""
    hotwords: str = ""
    stream_id: str = ""

    def to_config(self) -> pb.StreamingConfig:
        return pb.StreamingConfig(
            encoding=pb.LINEAR16, sample_rate_hertz=self.sample_rate, audio_channel_count=1,
            **language_fields(self.language), task=pb.TRANSLATE if self.translate else pb.TRANSCRIBE,
            language_per_utterance=self.language_per_utterance,
            interim_results=self.interim_results,
            enable_word_time_offsets=self.word_timestamps,
            enable_voice_activity_events=self.voice_activity_events,
            prompt=self.prompt, hotwords=self.hotwords, stream_id=self.stream_id)


def language_fields(language: str | Sequence[str] | None) -> dict[str, Any]:
    """A config's language fields: the first code is language_code, the others alternative_language_codes."""
    codes = [code.strip() for code in (language.split(",") if isinstance(language, str) else language or ())
             if code.strip()]
    return {"language_code": codes[0] if codes else "", "alternative_language_codes": codes[1:]}


async def request_messages(options: StreamOptions, chunks: AsyncIterable[bytes]) -> AsyncIterator[pb.StreamingTranscribeRequest]:
    """The config first, then one message per non-empty audio chunk. Must not raise: grpc.aio would
    only cancel the call."""
    yield pb.StreamingTranscribeRequest(config=options.to_config())
    async for chunk in chunks:
        if chunk:
            yield pb.StreamingTranscribeRequest(audio=chunk)


def check_chunk(chunk: bytes) -> None:
    """Refuses a chunk over the server's 1 MiB limit before it is sent: past the transport limit the
    server could only answer RESOURCE_EXHAUSTED, which reads as "busy", not "fix your input".

    Raises:
        InvalidRequestError: the chunk is too large.
    """
    if len(chunk) > MAX_CHUNK_BYTES:
        raise InvalidRequestError(f"audio chunk is {len(chunk)} bytes; the limit is {MAX_CHUNK_BYTES} bytes: "
                                  "send smaller chunks (100 ms, 3,200 bytes at 16 kHz, is a good size)",
                                  code=grpc.StatusCode.INVALID_ARGUMENT)


def channel_target(endpoint: str) -> tuple[str, bool]:
    """`host:port` is plaintext; `https://host[:port]` is TLS, on 443 unless a port is given.

    Returns the gRPC target and whether it needs TLS.
    """
    if endpoint.startswith("https://"):
        host = endpoint[len("https://"):].rstrip("/")
        return (host if ":" in host else f"{host}:443"), True
    if "://" in endpoint:
        raise ValueError(f"endpoint {endpoint!r}: use host:port (plaintext) or https://host (TLS)")
    return endpoint, False


def seconds(duration: object) -> float:
    return duration.seconds + duration.nanos / 1e9  # type: ignore[attr-defined]


def to_words(words: Iterable[pb.WordInfo]) -> tuple[Word, ...]:
    return tuple(Word(text=word.word, start_s=seconds(word.start_offset), end_s=seconds(word.end_offset),
                      probability=word.probability) for word in words)


def to_updates(response: pb.StreamingTranscribeResponse, endpoint: str | None = None) -> list[TranscriptUpdate]:
    """The results of one response.

    Raises:
        TranscriberError: the response carries the server's in-band error.
    """
    raise_in_band_error(response, endpoint)
    return [TranscriptUpdate(text=result.transcript, is_final=result.is_final, start_s=seconds(result.start_offset),
                             end_s=seconds(result.end_offset), words=to_words(result.words),
                             stability=result.stability, confidence=result.confidence,
                             language=result.language_code, endpoint=endpoint or "")
            for result in response.results]


def raise_in_band_error(response: pb.StreamingTranscribeResponse, endpoint: str | None = None) -> None:
    """The server sends its status in band before it aborts: trust it over the call's status."""
    if response.HasField("error"):
        raise from_status(response.error, endpoint)


def to_transcript(response: pb.TranscribeResponse) -> Transcript:
    return Transcript(
        text=response.transcript,
        segments=tuple(Segment(text=segment.text, start_s=seconds(segment.start_offset),
                               end_s=seconds(segment.end_offset), words=to_words(segment.words))
                       for segment in response.segments),
        language=response.language_code, duration_s=seconds(response.audio_duration), model=response.model)


def transcript_of_finals(finals: Sequence[TranscriptUpdate], duration_s: float) -> Transcript:
    """A whole-file transcript from a stream's final results, one segment each."""
    segments = tuple(Segment(text=update.text, start_s=update.start_s, end_s=update.end_s, words=update.words)
                     for update in finals if update.is_final and update.text)
    language = next((update.language for update in finals if update.is_final and update.language), "")
    return Transcript(text=" ".join(segment.text for segment in segments), segments=segments, language=language,
                      duration_s=duration_s)


def read_pcm16(path: str) -> tuple[bytes, int]:
    """Reads any file soundfile reads (WAV, FLAC, OGG, MP3) as mono LINEAR16 bytes and its rate."""
    try:
        samples, rate = soundfile.read(path, dtype="int16", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise InvalidRequestError(f"cannot read audio file {path}: {error}",
                                  code=grpc.StatusCode.INVALID_ARGUMENT) from error
    mono = samples.mean(axis=1).astype("<i2") if samples.shape[1] > 1 else samples[:, 0].astype("<i2")
    return mono.tobytes(), int(rate)


def chunked(pcm: bytes, sample_rate: int, chunk_s: float = CHUNK_S, realtime: bool = False,
            speed: float = 1.0) -> Iterator[bytes]:
    """Splits PCM16 into frames; with `realtime`, yields them no faster than a microphone would
    (`speed` times faster than that, for tests and demos that need pacing but not the full wait)."""
    size = max(2, int(sample_rate * chunk_s) * 2)
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(pcm), size)):
        if realtime:
            delay = started + index * chunk_s / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield pcm[offset: offset + size]


