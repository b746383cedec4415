"""Engines: what turns 16 kHz audio into words. WhisperEngine runs faster-whisper behind a scheduler.

One engine (one loaded model) serves every stream. Its InferenceScheduler batches the
windows of all streams and runs them in a worker thread, so the event loop stays free.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .batch_decode import BatchDecoder, WindowJob, likeliest
from .invented import without_invented
from .errors import InvalidRequest
from .models import model_path
from .policy import Word
from .scheduler import InferenceScheduler, Load
from .settings import ServerSettings
from .vad import FrameScorer, SileroScorer

log = logging.getLogger(__name__)
logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every decode at INFO

GPU_BATCH = 8  # windows per batch on a GPU unless set (not measured here: no GPU was at hand)


@dataclass(frozen=True)
class Hypothesis:
    words: list[Word]  # offsets relative to the start of the decoded audio
    language: str
    language_probability: float = 1.0  # of a detected language among the candidates; 1 when it was given


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
    prefix: str = ""  # streaming: the start of the window's text, already settled
    context: str = ""  # streaming: settled text before the window
    candidates: tuple[str, ...] = ()  # language None: detect among these (empty: any)
    task: str = "transcribe"  # or "translate" (into English)


class Engine(Protocol):
    model_name: str

    def check_language(self, language_code: str) -> str | None:
        """Returns the language to decode with (None: detect). Raises InvalidRequest for unknown codes."""

    def check_task(self, translate: bool) -> str:
        """Returns the task to decode with. Raises InvalidRequest where the model cannot translate."""

    def voice_scorer(self) -> FrameScorer:
        """A new voice-activity scorer for one stream: 512-sample frames of 16 kHz audio in, in order,
        a speech probability each out."""

    async def transcribe(self, audio: np.ndarray, options: DecodeOptions, due_at: float | None = None) -> Hypothesis:
        """Words heard in one streaming window; `due_at` (time.monotonic) orders the windows of all streams."""

    def load(self) -> Load:
        """What the engine's scheduler did lately."""

    async def transcribe_file(self, audio: np.ndarray, options: DecodeOptions) -> tuple[list[FileSegment], str]:
        """Segments of a whole recording, and its language."""


def resolve_workers(device: str, workers: int, threads: int) -> tuple[int, int]:
    """Decode workers and CPU threads each, for 0 (auto): one worker on a GPU; on a CPU, the cores this
    process may use shared out, one 1-thread worker per core (up to 4) unless threads per worker are set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers == 0:
        workers = 1 if device == "cuda" else max(min(cores // max(threads, 1), 4), 1)
    if threads == 0:
        threads = max(cores // workers, 1)
    if device == "cpu" and workers * threads > cores:
        log.warning("%d decode workers x %d threads on %d cores: they will slow each other down", workers, threads, cores)
    return workers, threads


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

        path = model_path(settings.model, settings.model_cache_dir)
        # A baked-in folder such as /models/large-v3-turbo is named by its last part.
        self.model_name = os.path.basename(settings.model.rstrip("/")) if os.path.isdir(settings.model) else settings.model
        device, compute_type = resolve_device(settings.device, settings.compute_type)
        workers, threads = resolve_workers(device, settings.decode_workers, settings.cpu_threads)
        try:
            self._model = WhisperModel(path, device=device, compute_type=compute_type,
                                       cpu_threads=threads, num_workers=workers)
        except (OSError, ValueError, RuntimeError) as error:
            raise ValueError(f"cannot load model {settings.model!r} on {device}/{compute_type}: {error}") from error
        self._english_only = not self._model.model.is_multilingual
        self._languages = frozenset(_LANGUAGE_CODES)
        self._vad = get_vad_model()
        self._beam_size = settings.beam_size
        decoder = BatchDecoder(self._model, beam_size=settings.beam_size,
                               encoder_pad_s=settings.encoder_pad_s if settings.encoder_pad_s >= 0 else None,
                               encoder_min_s=settings.encoder_min_s)
        max_batch = settings.max_batch or (GPU_BATCH if device == "cuda" else 1)
        self.scheduler = InferenceScheduler(decoder.decode, max_batch=max_batch,
                                            batch_wait_s=settings.batch_wait_s, workers=workers)
        log.info("loaded model %s (%s) on %s with %s, %d decode workers of %d threads, batches of up to %d",
                 settings.model, path, device, compute_type, workers, threads, max_batch)

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

    def check_task(self, translate: bool) -> str:
        if translate and self._english_only:
            raise InvalidRequest(f"model {self.model_name} is English-only and cannot translate: use a multilingual "
                                 "model (such as base or large-v3) for task TRANSLATE")
        return "translate" if translate else "transcribe"

    def voice_scorer(self) -> FrameScorer:
        return SileroScorer(self._vad.session)

    async def transcribe(self, audio: np.ndarray, options: DecodeOptions, due_at: float | None = None) -> Hypothesis:
        decoded = await self.scheduler.decode(
            WindowJob(audio, options.language, prompt=options.prompt, hotwords=options.hotwords, prefix=options.prefix,
                      context=options.context, candidates=options.candidates, task=options.task),
            due_at)
        return Hypothesis(words=decoded.words, language=decoded.language,
                          language_probability=decoded.language_probability)

    async def transcribe_file(self, audio: np.ndarray, options: DecodeOptions) -> tuple[list[FileSegment], str]:
        return await self.scheduler.run_solo(lambda: self._decode_file(audio, options))

    def load(self) -> Load:
        return self.scheduler.load()

    def _decode_file(self, audio: np.ndarray, options: DecodeOptions) -> tuple[list[FileSegment], str]:
        language = options.language
        if language is None and options.candidates:
            try:
                _, _, scores = self._model.detect_language(audio, vad_filter=True)
            except ValueError:  # no speech at all: nothing to choose a language for
                scores = []
            language = likeliest(scores, options.candidates)[0] if scores else options.candidates[0]
        segments, info = self._model.transcribe(
            audio, language=language, task=options.task, beam_size=self._beam_size, word_timestamps=True,
            vad_filter=True, initial_prompt=options.prompt or None, hotwords=options.hotwords or None)
        result = []
        for segment in segments:
            words = without_invented(_words(segment))
            if words:
                result.append(FileSegment(text="".join(word.text for word in words).strip(), start_s=segment.start,
                                          end_s=segment.end, words=words))
        return result, info.language


def _words(segment) -> list[Word]:  # type: ignore[no-untyped-def]
    """faster-whisper's words of a segment as ours."""
    return [Word(word.word, word.start, word.end, word.probability) for word in (segment.words or [])]
