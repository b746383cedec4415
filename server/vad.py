"""Streaming voice-activity tracking over 32 ms frames.

Fed with 16 kHz audio as it arrives, it keeps the speech regions of the stream
and reports when speech begins and ends. The frame scorer is passed in (a
SileroScorer for the real model, an energy gate in tests).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

FRAME_SAMPLES = 512
FRAME_S = FRAME_SAMPLES / 16_000

FrameScorer = Callable[[np.ndarray], np.ndarray]  # (n * 512,) samples -> (n,) speech probabilities
SILERO_CONTEXT_SAMPLES = 64  # Silero reads each frame with the last samples of the one before


class SileroScorer:
    """Silero's speech probabilities for one stream, frame by frame as the audio arrives.

    Silero is recurrent: faster-whisper's wrapper starts every call from a zero state and
    zero context, so the same audio split into other messages scored differently (a word at
    0.6 in one pass fell under 0.5 in 1 s pieces, and the policy dropped it as silence). The
    state and the context carry from call to call here, so the scores are those of one pass
    over the whole stream, however it was split.
    """

    def __init__(self, session: Any) -> None:  # an onnxruntime InferenceSession of Silero VAD
        self._session = session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(SILERO_CONTEXT_SAMPLES, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        frames = samples.reshape(-1, FRAME_SAMPLES)
        context = np.concatenate([self._context[None], frames[:-1, -SILERO_CONTEXT_SAMPLES:]])
        scores, self._h, self._c = self._session.run(
            None, {"input": np.concatenate([context, frames], axis=1), "h": self._h, "c": self._c})
        self._context = frames[-1, -SILERO_CONTEXT_SAMPLES:].copy()
        return np.asarray(scores).reshape(-1)


class VoiceEventType(enum.Enum):
    BEGIN = "begin"
    END = "end"


@dataclass(frozen=True)
class VoiceEvent:
    type: VoiceEventType
    offset_s: float


class VoiceActivity:
    """Speech regions of one stream, with hysteresis so short pauses do not split speech."""

    def __init__(self, scorer: FrameScorer, threshold: float, min_silence_s: float, pad_s: float = 0.2) -> None:
        self._scorer = scorer
        self._threshold = threshold
        self._release = max(threshold - 0.15, 0.01)  # a lower bar to leave speech than to enter it
        self._min_silence_frames = max(1, round(min_silence_s / FRAME_S))
        self._pad_s = pad_s
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames_seen = 0
        self._speech_start_s: float | None = None
        self._silent_frames = 0
        self._regions: list[tuple[float, float]] = []  # closed speech regions, oldest first
        self._probabilities: list[float] = []  # per frame, from frame _first_kept on
        self._first_kept = 0

    @property
    def in_speech(self) -> bool:
        return self._speech_start_s is not None

    def feed(self, samples: np.ndarray) -> list[VoiceEvent]:
        """Scores the new samples and returns the speech begin/end events they complete."""
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        whole = len(data) - len(data) % FRAME_SAMPLES
        self._pending = data[whole:].copy()
        if whole == 0:
            return []
        probabilities = np.asarray(self._scorer(data[:whole])).reshape(-1)
        self._probabilities.extend(float(probability) for probability in probabilities)
        events: list[VoiceEvent] = []
        for probability in probabilities:
            frame_start_s = self._frames_seen * FRAME_S
            self._frames_seen += 1
            if self._speech_start_s is None:
                if probability >= self._threshold:
                    self._speech_start_s = max(0.0, frame_start_s - self._pad_s)
                    self._silent_frames = 0
                    events.append(VoiceEvent(VoiceEventType.BEGIN, self._speech_start_s))
            elif probability < self._release:
                self._silent_frames += 1
                if self._silent_frames >= self._min_silence_frames:
                    silence_start_s = (self._frames_seen - self._silent_frames) * FRAME_S
                    end_s = silence_start_s + self._pad_s
                    self._regions.append((self._speech_start_s, end_s))
                    self._speech_start_s = None
                    events.append(VoiceEvent(VoiceEventType.END, end_s))
            else:
                self._silent_frames = 0
        return events

    def has_speech(self, start_s: float, end_s: float) -> bool:
        """Whether any speech region overlaps [start_s, end_s)."""
        if self._speech_start_s is not None and self._speech_start_s < end_s:
            return True
        return any(region_start < end_s and region_end > start_s for region_start, region_end in self._regions)

    def speech_in(self, start_s: float, end_s: float) -> bool:
        """Whether any frame in [start_s, end_s) may be speech; time not scored yet counts as speech.

        The bar is the one speech must fall under to end, not the one it must pass to begin: a word inside
        speech need not sound like the start of speech. Sent at 8 kHz, the "ask" of JFK's "Americans, ask"
        peaks at 0.48 (0.62 at 16 kHz), where silence scores under 0.1.
        """
        first = max(int(start_s / FRAME_S) - self._first_kept, 0)
        last = int(np.ceil(end_s / FRAME_S)) - self._first_kept
        if first >= len(self._probabilities):
            return True
        return any(probability >= self._release for probability in self._probabilities[first:last])

    def speech_s(self, start_s: float, end_s: float) -> float:
        """Seconds of [start_s, end_s) that are surely speech (frames over the bar speech must pass to begin)."""
        first = max(int(start_s / FRAME_S) - self._first_kept, 0)
        last = max(int(np.ceil(end_s / FRAME_S)) - self._first_kept, 0)
        return FRAME_S * sum(probability >= self._threshold for probability in self._probabilities[first:last])

    def speech_end_before(self, time_s: float) -> float:
        """The end of the last frame before time_s that may be speech, by the bar speech must fall under to
        end (0 when none is kept): the quiet end of a word, or a quiet word, is still speech to decode."""
        last = min(int(time_s / FRAME_S) - self._first_kept, len(self._probabilities))
        for index in range(last - 1, -1, -1):
            if self._probabilities[index] >= self._release:
                return (self._first_kept + index + 1) * FRAME_S
        return 0.0

    def quiet_point(self, after_s: float, before_s: float, min_gap_s: float = 0.15) -> float | None:
        """The middle of the latest pause of at least min_gap_s inside [after_s, before_s], if any.

        Pauses inside speech are too short for the hysteresis above; this finds them in the raw scores.
        """
        first = max(round(after_s / FRAME_S) - self._first_kept, 0)
        last = min(int(before_s / FRAME_S) - self._first_kept, len(self._probabilities))
        needed = max(1, round(min_gap_s / FRAME_S))
        run_end = None
        for index in range(last - 1, first - 1, -1):
            if self._probabilities[index] < self._release:
                run_end = index if run_end is None else run_end
                if run_end - index + 1 >= needed:
                    return (self._first_kept + (index + run_end + 1) / 2) * FRAME_S
            else:
                run_end = None
        return None

    def forget_before(self, time_s: float) -> None:
        """Drops what lies before time_s, so a long stream keeps a short history."""
        self._regions = [region for region in self._regions if region[1] > time_s]
        drop = min(int(time_s / FRAME_S) - self._first_kept, len(self._probabilities))
        if drop > 0:
            del self._probabilities[:drop]
            self._first_kept += drop

    def __repr__(self) -> str:
        state = "speech" if self.in_speech else "silence"
        return f"<VoiceActivity {state} at {self._frames_seen * FRAME_S:.2f}s, {len(self._regions)} regions kept>"
