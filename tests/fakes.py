"""FakeEngine: a deterministic engine that "hears" words encoded as constant-level audio blocks.

A word is a run of samples at one level (level k means word "w{k}"), separated by silence.
Tests build such audio with `word_audio`, so every transcript is known in advance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from transcriber_server.engine import DecodeOptions, FileSegment, Hypothesis
from transcriber_server.errors import InvalidRequest
from transcriber_server.policy import Word
from transcriber_server.scheduler import Load

RATE = 16_000
LEVEL_STEP = 0.02  # word k is a block at level 0.1 + k * LEVEL_STEP


def word_audio(words: list[int], word_s: float = 0.3, gap_s: float = 0.15, pauses: dict[int, float] | None = None,
               lead_s: float = 0.2) -> bytes:
    """LINEAR16 audio of the given word numbers; `pauses` maps a word index to the silence after it."""
    pauses = pauses or {}
    parts = [np.zeros(int(lead_s * RATE))]
    for index, word in enumerate(words):
        parts.append(np.full(int(word_s * RATE), 0.1 + word * LEVEL_STEP))
        parts.append(np.zeros(int(pauses.get(index, gap_s) * RATE)))
    return (np.concatenate(parts) * 32767).astype("<i2").tobytes()


class FakeEngine:
    """Hears the words of `word_audio`; a block cut by the end of the window is not heard yet."""

    model_name = "fake"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.decodes = 0
        self.current_load = Load(queued=0, busy_ratio=0.0, mean_batch=0.0, cycle_s=0.0)  # tests set it to overload

    def check_language(self, language_code: str) -> str | None:
        if language_code not in ("", "en", "fr"):
            raise InvalidRequest(f"unknown language_code {language_code!r}")
        return language_code or None

    def check_task(self, translate: bool) -> str:
        return "translate" if translate else "transcribe"

    def voice_scorer(self) -> Callable[[np.ndarray], np.ndarray]:
        return lambda frames: (np.abs(frames.reshape(-1, 512)).max(axis=1) > 0.05).astype(np.float32)

    def load(self) -> Load:
        return self.current_load

    async def transcribe(self, audio: np.ndarray, options: DecodeOptions, due_at: float | None = None) -> Hypothesis:
        self.decodes += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return Hypothesis(words=hear(audio, text_start=not (options.context or options.prompt)),
                          language=options.language or "en")

    async def transcribe_file(self, audio: np.ndarray, options: DecodeOptions) -> tuple[list[FileSegment], str]:
        words = hear(audio)
        if not words:
            return [], "en"
        text = "".join(word.text for word in words).strip()
        return [FileSegment(text=text, words=words, start_s=words[0].start_s, end_s=words[-1].end_s)], "en"


def hear(audio: np.ndarray, text_start: bool = False) -> list[Word]:
    """Each loud run of the audio as the word its level encodes ("w7"); like Whisper, a decode with no
    text before it writes its first word with a capital ("W7")."""
    loud = np.abs(audio) > 0.05
    edges = np.flatnonzero(np.diff(np.concatenate([[False], loud, [False]]).astype(np.int8)))
    words = []
    for start, end in zip(edges[::2], edges[1::2]):
        if end >= audio.size:  # still being spoken at the end of the window
            break
        level = float(np.median(audio[start:end]))
        number = round((level - 0.1) / LEVEL_STEP)
        words.append(Word(f" {'W' if text_start and not words else 'w'}{number}", start / RATE, end / RATE, 0.9))
    return words


def words_of(text: str) -> list[int]:
    """The word numbers in a transcript such as 'w1 w2 w3'."""
    return [int(token[1:]) for token in text.split()]
