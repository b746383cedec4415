"""What a stream needs to continue on a new call without losing or repeating a word. Pure, no I/O.

`AudioTape` keeps the audio sent since the server's last settled point (bounded: the producer waits
when it is full). `Continuity` maps each call's results onto the one stream the caller sees: it shifts
offsets by where the call's audio began and drops words the caller already has as final.
"""

from __future__ import annotations

import re
from collections import deque
from difflib import SequenceMatcher

from .models import TranscriptUpdate, Word

SEAM_TOLERANCE_S = 0.05  # a word of a new call ending this close to a seam is no new audio
SEAM_SLACK_S = 1.5  # a new call's timestamps near its start can be off by this much
CONTEXT_CHARS = 200  # final text sent as the prompt of a resumed call, as the server keeps for a window
REMEMBERED_WORDS = 200  # final words kept to recognise them in a replay (far more than a window holds)


class AudioTape:
    """The stream's audio from `start` (a byte offset in the stream) to `end`."""

    def __init__(self, bytes_per_s: int, keep_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self.keep_bytes = int(keep_s * bytes_per_s)
        self._chunks: deque[tuple[int, bytes]] = deque()  # (offset, bytes)
        self.start = 0
        self.end = 0
        self.closed = False

    @property
    def has_room(self) -> bool:
        return self.end - self.start < self.keep_bytes

    def append(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append((self.end, chunk))
            self.end += len(chunk)

    def close(self) -> None:
        self.closed = True

    def forget_before(self, offset: int) -> None:
        """Drops whole chunks that end at or before `offset` (never past `end`)."""
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= offset:
            self._chunks.popleft()
        self.start = self._chunks[0][0] if self._chunks else self.end

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Up to `max_bytes` from `offset` on, across the caller's chunks (empty when nothing is there yet),
        so a replay or a run of small chunks goes out in few messages.

        Raises:
            ValueError: that audio was already forgotten.
        """
        if offset < self.start:
            raise ValueError(f"audio at byte {offset} was forgotten (the tape starts at {self.start})")
        parts: list[bytes] = []
        wanted = max_bytes
        for chunk_offset, chunk in self._chunks:
            if wanted <= 0:
                break
            if chunk_offset + len(chunk) > offset:
                part = chunk[max(offset - chunk_offset, 0):][:wanted]
                parts.append(part)
                wanted -= len(part)
        return b"".join(parts)

    def offset_of(self, seconds: float) -> int:
        """The byte offset of a time in the stream, on a sample boundary."""
        return int(max(seconds, 0.0) * self.bytes_per_s) // 2 * 2

    def __repr__(self) -> str:
        state = ", closed" if self.closed else ""
        return f"<AudioTape {(self.end - self.start) / self.bytes_per_s:.1f} s kept of {self.end / self.bytes_per_s:.1f} s{state}>"


class Continuity:
    """Joins the results of successive calls into one stream."""

    def __init__(self) -> None:
        self.settled_s = 0.0  # stream time before which every word is final and none spans it
        self.final_end_s = 0.0  # end of the last final word the caller got
        self.calls = 0
        self._shift_s = 0.0  # where the current call's audio starts in the stream
        self._finals: deque[Word] = deque(maxlen=REMEMBERED_WORDS)  # the caller's last final words
        self._replayed: list[str] = []  # final words in the replayed audio that the new call has not yet repeated
        self._seam_end_s = 0.0  # the end of the last final word when the current call began

    def resume_at(self, tape: AudioTape) -> int:
        """Starts a new call; returns the byte offset its audio starts from."""
        offset = max(tape.offset_of(self.settled_s if self.calls else 0.0), tape.start)
        self._shift_s = offset / tape.bytes_per_s
        self._seam_end_s = self.final_end_s
        self._replayed = [normalized(word.text) for word in self._finals if word.end_s > self._shift_s]
        self.calls += 1
        return offset

    def prompt(self, own: str) -> str:
        """The prompt of the current call: the caller's own, then, on a resumed call, the final text before
        its audio, as the server's window would have had it. Without it, the new call's first decode reads
        the replay as a fragment and writes on in lower case without punctuation."""
        before = " ".join(word.text.strip() for word in self._finals if word.end_s <= self._shift_s)
        return " ".join(part for part in (own, before[-CONTEXT_CHARS:].lstrip()) if part)

    def settle(self, settled_s: float) -> None:
        """The server's settled offset in the current call."""
        self.settled_s = max(self.settled_s, self._shift_s + settled_s)

    def take(self, update: TranscriptUpdate) -> TranscriptUpdate | None:
        """The update in stream time, without the words the caller already has as final.

        Returns None for a final with nothing new; an interim with nothing new comes back empty,
        so it still replaces the previous interim.
        """
        words = tuple(word_shifted(word, self._shift_s) for word in update.words)
        if self.calls > 1 and words:
            words, repeated = self._unseen(words)
            if update.is_final:
                self._replayed = self._replayed[repeated:]
            if not words and update.is_final:
                return None
            text = " ".join(word.text for word in words)
            start_s, end_s = (words[0].start_s, words[-1].end_s) if words else (self.final_end_s,) * 2
        else:
            text, start_s, end_s = update.text, update.start_s + self._shift_s, update.end_s + self._shift_s
        if update.is_final and words:
            self._finals.extend(words)
            self.final_end_s = max(self.final_end_s, words[-1].end_s)
        return TranscriptUpdate(text=text, is_final=update.is_final, start_s=start_s, end_s=end_s, words=words,
                                stability=update.stability, confidence=update.confidence, language=update.language,
                                endpoint=update.endpoint)

    def _unseen(self, words: tuple[Word, ...]) -> tuple[tuple[Word, ...], int]:
        """The words of a new call that the caller does not have yet, and how many of the replayed final
        words they repeat.

        The replay starts in a pause before the last final words, so the new call says them again first.
        They are found by their text, as the server finds committed words in a re-decoded window:
        timestamps of a fresh window drift by up to a word. Words that end where the replay starts are
        echoes of the prompt, not audio.
        """
        kept = [word for word in words if word.end_s > self._shift_s + SEAM_TOLERANCE_S]
        if not self._replayed:
            return tuple(kept), 0
        heard = [normalized(word.text) for word in kept]
        blocks = [block for block in SequenceMatcher(None, self._replayed, heard, autojunk=False).get_matching_blocks()
                  if block.size and kept[block.b].start_s < self._seam_end_s + SEAM_SLACK_S]
        if not blocks:  # nothing heard again by text (misheard, or not yet): fall back on the timestamps
            return tuple(word for word in kept if word.end_s > self._seam_end_s + SEAM_TOLERANCE_S), 0
        last = blocks[-1]
        return tuple(kept[last.b + last.size:]), last.a + last.size


def word_shifted(word: Word, seconds: float) -> Word:
    return Word(text=word.text, start_s=word.start_s + seconds, end_s=word.end_s + seconds, probability=word.probability)


def normalized(text: str) -> str:
    return re.sub(r"[^\w']", "", text.lower())
