"""StreamSession: one streaming call, from its config to its last final result.

One reader task turns request messages into 16 kHz audio for the policy; the
decode loop asks the policy for windows, runs the engine and yields responses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb

from . import messages
from .audio import PcmDecoder, check_format
from .capacity import ArrivalClock, LagTracker
from .engine import DecodeOptions, Engine
from .errors import Draining, IdleTimeout, InvalidRequest, StreamTooLong, TooManyMessages, TranscriberFault
from .language import LanguageChoice, LanguageRequest
from .policy import PolicyOptions, StreamPolicy, Window, Word
from .settings import ServerSettings
from .vad import VoiceActivity, VoiceEvent

log = logging.getLogger(__name__)
PROGRESS_S = 1.0  # in silence, a response without results tells the client how far it may forget its audio


async def read_config(requests: AsyncIterator[pb.StreamingTranscribeRequest]) -> pb.StreamingConfig:
    """Reads the first message, which must carry the config and nothing else.

    Raises:
        InvalidRequest: the stream is empty or starts with audio or a control.
    """
    async for request in requests:
        if request.WhichOneof("request") != "config":
            raise InvalidRequest("the first message must carry `config` (and no audio); "
                                 f"got {request.WhichOneof('request') or 'an empty message'}")
        return request.config
    raise InvalidRequest("the stream ended before its config: send a `config` message first")


def config_rate(config: pb.StreamingConfig) -> int:
    """Checks the audio format of a config (InvalidRequest) and returns its sample rate."""
    encoding = pb.AudioEncoding.Name(config.encoding) if config.encoding in pb.AudioEncoding.values() \
        else f"unknown value {config.encoding}"
    return check_format(encoding, config.sample_rate_hertz, config.audio_channel_count)


def language_request(config: pb.StreamingConfig, engine: Engine) -> LanguageRequest:
    """The languages a config asks for: one is fixed, several are the candidates of detection (InvalidRequest
    for a code the model does not know)."""
    codes = [code for code in (config.language_code, *config.alternative_language_codes) if code.strip()]
    languages = tuple(dict.fromkeys(engine.check_language(code) for code in codes))  # in order, once each
    if len(languages) > 1:
        return LanguageRequest(candidates=languages,  # type: ignore[arg-type]  (check_language gave each a code)
                               per_utterance=config.language_per_utterance)
    return LanguageRequest(fixed=languages[0] if languages else engine.check_language(""),
                           per_utterance=config.language_per_utterance)


def check_model(config: pb.StreamingConfig, engine: Engine) -> None:
    """A config may name a model only if it is the one this server runs (InvalidRequest)."""
    if config.model not in ("", engine.model_name):
        raise InvalidRequest(f"unknown model {config.model!r}: this server runs {engine.model_name!r}; "
                             "leave `model` empty or connect to a server that runs that model")


class StreamSession:
    """Runs one stream. Validates its config on construction (InvalidRequest)."""

    def __init__(self, config: pb.StreamingConfig, engine: Engine, settings: ServerSettings,
                 lags: LagTracker | None = None) -> None:
        rate = config_rate(config)
        check_model(config, engine)
        self.stream_id = config.stream_id
        self._config = config
        self._engine = engine
        self._settings = settings
        languages = language_request(config, engine)
        self._language = LanguageChoice(languages)
        self._task = engine.check_task(config.task == pb.TRANSLATE)
        self._decoded_language = self._language.language or ""  # of the last decode: its results carry it
        self._decoder = PcmDecoder(rate, settings.max_chunk_s)
        voice = VoiceActivity(engine.voice_scorer(), settings.vad_threshold, settings.endpoint_silence_s)
        self._policy = StreamPolicy(PolicyOptions(step_s=settings.step_s, max_window_s=settings.max_window_s,
                                                  trim_window_s=settings.trim_window_s,
                                                  holdback_s=settings.holdback_s,
                                                  one_decode_margin_s=settings.one_decode_margin_s,
                                                  utterances_apart=languages.switching),
                                    voice,
                                    prompted=bool(config.prompt))
        self._events: list[VoiceEvent] = []
        self._arrivals = ArrivalClock()  # when each message's audio arrived: windows are due then, lags count from it
        self._lags = lags or LagTracker()
        self._wakeup = asyncio.Event()  # new audio, end of input, or a stop
        self._room = asyncio.Event()  # the decoder caught up: the reader may queue more
        self._stop: _Stop | None = None
        self._decodes = 0
        self._sent_settled_s = 0.0
        self._sent_processed_s = 0.0
        self._decode_s = 0.0
        self._last_message_at = time.monotonic()
        self._reader_waits = False  # back-pressure: silence from the client is then our doing, not idling
        self._message_tokens = settings.max_messages_per_s
        self._tokens_at = self._last_message_at

    def stop(self, fault: type[TranscriberFault] = Draining, why: str = "server is shutting down",
             advice: str = "send the audio after that to another endpoint", *, everything: bool = False) -> None:
        """Ends the stream early: settles the words up to the last pause (or all of them with
        `everything`, when no more audio is coming), sends them, then raises `fault`. The first stop wins."""
        if self._stop is None:
            self._stop = _Stop(fault, why, advice, everything)
        self._wakeup.set()

    async def run(self, requests: AsyncIterator[pb.StreamingTranscribeRequest]) -> AsyncIterator[pb.StreamingTranscribeResponse]:
        """Yields responses until the client half-closed and everything is final.

        Raises:
            InvalidRequest: a later message breaks the contract.
            TooManyMessages: the client sends messages faster than the limit.
            Draining, StreamTooLong, IdleTimeout: the stream was stopped (after its words were settled and sent).
        """
        reader = asyncio.create_task(self._read(requests))
        watchdog = asyncio.create_task(self._watch_limits(reader))
        stopped = False
        try:
            # Admitted: say so at once, so a client knows this endpoint took the stream.
            yield pb.StreamingTranscribeResponse(stream_id=self.stream_id, model=self._engine.model_name,
                                                 audio_processed=messages.duration(0))
            while True:
                # Cleared before the state is read: a wake-up during any yield below is kept for the wait.
                self._wakeup.clear()
                if reader.done() and not reader.cancelled() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
                if self._stop is not None and not stopped:
                    stopped = True
                    input_ended = reader.done()  # the client half-closed: the reader flushed and ended it
                    reader.cancel()
                    if not self._stop.everything:
                        self._policy.end_at_pause()
                    elif not input_ended:
                        self._events.extend(self._policy.add_audio(self._decoder.flush()))
                        self._policy.end_input()
                if self._events:
                    if self._config.enable_voice_activity_events:
                        for event in self._events:
                            yield self._response(speech_event=messages.speech_event(event))
                    self._events.clear()
                window = self._policy.next_window()
                self._room.set()  # skipped silence makes room too, not only decodes
                if window is None:
                    if self._policy.done:
                        if self._policy.processed_s > self._sent_processed_s:
                            yield self._response()  # acknowledge the trailing silence too: all audio was heard
                        break
                    if self._policy.settled_s - self._sent_settled_s >= PROGRESS_S:
                        yield self._response()  # in long silence: tell the client what it may forget
                        continue  # the input may have ended while the response was sent: look again
                    await self._wakeup.wait()
                    continue
                heard = await self._decode(window) if window.decode else []
                update = self._policy.commit(window, heard, provisional=self._language.provisional)
                if window.at_pause:
                    self._language.utterance_ended()
                self._record_lags(update.final)
                results = messages.results(update, interim=self._config.interim_results,
                                           language=self._decoded_language,
                                           with_words=self._config.enable_word_time_offsets)
                if results:
                    yield self._response(results=results)
            if stopped:
                stop = self._stop
                assert stop is not None
                sent = "every word received" if stop.everything else f"every word up to {self._policy.settled_s:.2f} s"
                raise stop.fault(f"{stop.why}; {sent} was sent as final: {stop.advice}")
        finally:
            reader.cancel()
            watchdog.cancel()
            await asyncio.gather(reader, watchdog, return_exceptions=True)
            log.info("stream %r closed: %.1f s of audio, %d decodes, %.3f s mean decode", self.stream_id,
                     self._policy.received_s, self._decodes, self._decode_s / max(self._decodes, 1))

    async def _decode(self, window: Window) -> list[Word]:
        started = time.perf_counter()
        hypothesis = await self._engine.transcribe(
            window.audio, DecodeOptions(language=self._language.language, prompt=self._config.prompt,
                                        hotwords=self._config.hotwords, prefix=window.prefix, context=window.prompt,
                                        candidates=self._language.candidates, task=self._task),
            due_at=self._arrivals.at(window.end_s))
        self._decodes += 1
        self._decode_s += time.perf_counter() - started
        if hypothesis.words:
            self._language.heard(hypothesis.language, hypothesis.language_probability, window.speech_s)
            self._decoded_language = hypothesis.language
        return hypothesis.words

    def _record_lags(self, final: tuple[Word, ...]) -> None:
        """How long after its audio arrived each final word is sent (the server's share of the lag)."""
        now = time.monotonic()
        for word in final:
            arrived = self._arrivals.at(word.end_s)
            if arrived is not None:  # audio sent faster than real time is not due yet: no lag
                self._lags.record(max(now - arrived, 0.0), now)
        self._arrivals.forget_before(self._policy.settled_s - 1.0)

    def _response(self, *, results: list[pb.StreamingResult] | None = None,
                  speech_event: pb.SpeechEvent | None = None) -> pb.StreamingTranscribeResponse:
        self._sent_settled_s = self._policy.settled_s
        self._sent_processed_s = self._policy.processed_s
        return pb.StreamingTranscribeResponse(
            results=results or [], speech_event=speech_event, stream_id=self.stream_id,
            audio_processed=messages.duration(self._policy.processed_s),
            settled_offset=messages.duration(self._sent_settled_s))

    async def _watch_limits(self, reader: asyncio.Task[None]) -> None:
        """Stops the stream at its maximum duration, or when the client sent nothing for the idle timeout."""
        settings = self._settings
        ends_at = time.monotonic() + settings.max_stream_s
        while True:
            now = time.monotonic()
            if now >= ends_at:
                minutes = settings.max_stream_s / 60
                self.stop(StreamTooLong, f"maximum stream duration of {minutes:g} min reached",
                          "continue with a new stream from there (the SDK does this on its own)")
                return
            idle_at = self._last_message_at + settings.idle_timeout_s
            if reader.done() or self._reader_waits:
                idle_at = now + settings.idle_timeout_s
            elif now >= idle_at:
                self.stop(IdleTimeout, f"no message for {settings.idle_timeout_s:g} s (idle timeout)",
                          f"send audio at least every {settings.idle_timeout_s:g} s (silence counts), "
                          "or open a new stream when there is more", everything=True)
                return
            await asyncio.sleep(min(idle_at, ends_at) - now)

    def _count_message(self) -> None:
        """A token bucket: `max_messages_per_s` sustained, as many in a burst.

        Raises:
            TooManyMessages: the client sends faster than that.
        """
        now = time.monotonic()
        rate = self._settings.max_messages_per_s
        self._message_tokens = min(rate, self._message_tokens + (now - self._tokens_at) * rate) - 1
        self._last_message_at = self._tokens_at = now
        if self._message_tokens < 0:
            raise TooManyMessages(f"more than {rate:g} messages per second: send fewer, larger audio chunks "
                                  "(100 ms each is a good size)")

    async def _read(self, requests: AsyncIterator[pb.StreamingTranscribeRequest]) -> None:
        try:
            async for request in requests:
                self._count_message()
                kind = request.WhichOneof("request")
                if kind == "audio":
                    self._events.extend(self._policy.add_audio(self._decoder.decode(request.audio)))
                    self._arrivals.add(self._policy.received_s, self._last_message_at)
                elif kind == "control":
                    if request.control.action != pb.Control.FINALIZE:
                        raise InvalidRequest("control.action must be FINALIZE")
                    self._policy.finalize()
                elif kind == "config":
                    raise InvalidRequest("config may only be sent once, in the first message")
                else:
                    raise InvalidRequest("empty message: set `audio` or `control`")
                self._wakeup.set()
                while self._policy.pending_s > self._settings.max_pending_audio_s:
                    self._room.clear()  # back-pressure: stop reading until the decoder catches up
                    self._reader_waits = True
                    await self._room.wait()
                if self._reader_waits:  # the wait was ours, not the client's: its idle clock starts again
                    self._reader_waits = False
                    self._last_message_at = time.monotonic()
            self._events.extend(self._policy.add_audio(self._decoder.flush()))
            self._policy.end_input()
        finally:
            self._wakeup.set()


@dataclass(frozen=True)
class _Stop:
    """Why and how a stream ends early."""

    fault: type[TranscriberFault]
    why: str
    advice: str
    everything: bool  # settle all the audio received (none is coming), not only up to the last pause
