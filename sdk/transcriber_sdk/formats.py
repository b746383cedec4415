"""Transcript -> text in the formats the CLI writes (txt, json, srt, vtt). Pure: no I/O.

Subtitles get one cue per segment; a segment too long to read at once (over MAX_CUE_S or
MAX_CUE_CHARS) is cut between words, when the server sent words, so each cue stays on screen
while it is spoken.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .models import Segment, Transcript, Word

MAX_CUE_S = 7.0  # a common subtitle guideline: no cue longer than ~7 s ...
MAX_CUE_CHARS = 84  # ... or two lines of 42 characters
LINE_CHARS = 42


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def to_txt(transcript: Transcript) -> str:
    return _clean(transcript.text) + "\n"


def to_json(transcript: Transcript) -> str:
    return json.dumps(transcript_dict(transcript), ensure_ascii=False, indent=2) + "\n"


def to_srt(transcript: Transcript) -> str:
    blocks = [f"{number}\n{timestamp(cue.start_s, ',')} --> {timestamp(cue.end_s, ',')}\n{_wrap(cue.text)}\n"
              for number, cue in enumerate(cues(transcript), start=1)]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [f"{timestamp(cue.start_s, '.')} --> {timestamp(cue.end_s, '.')}\n{_wrap(cue.text)}\n"
              for cue in cues(transcript)]
    return "\n".join(["WEBVTT\n", *blocks])


RENDERERS: dict[str, Callable[[Transcript], str]] = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt}
FORMATS = tuple(RENDERERS)


def render(transcript: Transcript, format_name: str) -> str:
    """The transcript as `format_name` (one of FORMATS).

    Raises:
        ValueError: an unknown format.
    """
    try:
        return RENDERERS[format_name](transcript)
    except KeyError:
        raise ValueError(f"unknown format {format_name!r}; choose one of {', '.join(FORMATS)}") from None


def transcript_dict(transcript: Transcript) -> dict[str, Any]:
    return {
        "text": _clean(transcript.text),
        "language": transcript.language,
        "duration_s": transcript.duration_s,
        "model": transcript.model,
        "segments": [{"text": _clean(segment.text), "start_s": segment.start_s, "end_s": segment.end_s,
                      "words": [{"text": word.text.strip(), "start_s": word.start_s, "end_s": word.end_s,
                                 "probability": word.probability} for word in segment.words]}
                     for segment in transcript.segments],
    }


def timestamp(seconds: float, decimal_mark: str) -> str:
    """`HH:MM:SS,mmm` (SRT, decimal_mark ',') or `HH:MM:SS.mmm` (WebVTT, '.')."""
    millis = max(round(seconds * 1000), 0)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"


def cues(transcript: Transcript, max_s: float = MAX_CUE_S, max_chars: int = MAX_CUE_CHARS) -> list[Cue]:
    """Subtitle cues in time order: a segment each, long segments cut between words."""
    out: list[Cue] = []
    for segment in transcript.segments:
        out.extend(_segment_cues(segment, max_s, max_chars))
    return [cue for cue in out if cue.text]


def _segment_cues(segment: Segment, max_s: float, max_chars: int) -> list[Cue]:
    text = _clean(segment.text)
    fits = segment.end_s - segment.start_s <= max_s and len(text) <= max_chars
    if fits or not segment.words:
        return [Cue(segment.start_s, max(segment.end_s, segment.start_s), text)]
    groups: list[list[tuple[Word, str]]] = [[]]
    for word, piece in zip(segment.words, _pieces(text, segment.words)):
        group = groups[-1]
        if group and (word.end_s - group[0][0].start_s > max_s or len(_joined([*group, (word, piece)])) > max_chars):
            groups.append([(word, piece)])
        else:
            group.append((word, piece))
    return [Cue(group[0][0].start_s, max(group[-1][0].end_s, group[0][0].start_s), _joined(group))
            for group in groups]


def _pieces(text: str, words: Sequence[Word]) -> list[str]:
    """The segment's text cut after each word, so cues keep its spacing (none between words in
    Chinese or Japanese); words whose text is not found in order are joined with spaces instead."""
    pieces: list[str] = []
    cursor = 0
    for word in words:
        found = text.find(word.text.strip(), cursor)
        if found < 0 or not word.text.strip():
            return [f" {word.text.strip()}" for word in words]
        end = found + len(word.text.strip())
        pieces.append(text[cursor:end])
        cursor = end
    pieces[-1] += text[cursor:]  # trailing punctuation the words left out stays with the last cue
    return pieces


def _joined(group: Sequence[tuple[Word, str]]) -> str:
    return _clean("".join(piece for _, piece in group))


def _clean(text: str) -> str:
    return " ".join(text.split())


def _wrap(text: str) -> str:
    """At most two lines, cut at the space nearest the middle, for cues over one line's length."""
    if len(text) <= LINE_CHARS or " " not in text:
        return text
    middle = len(text) // 2
    cut = min((index for index, char in enumerate(text) if char == " "), key=lambda index: abs(index - middle))
    return f"{text[:cut]}\n{text[cut + 1:]}"
