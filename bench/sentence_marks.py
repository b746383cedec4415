"""Sentence marks and capitals of a stream's finals against offline decoding of the same audio.

Pure functions over word lists (the seam audit prints them): where a word ends a sentence, where the text
goes on in lower case after a sentence mark, and how often the stream's sentence ends and capitals differ
from offline's on the words both wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transcriber_sdk import Word

SENTENCE_MARKS = ".!?。！？…"
CLOSING = "\"'”’)]}»"  # may follow a sentence mark: 'said "no."'


def ends_sentence(text: str) -> bool:
    last = text.strip().rstrip(CLOSING)[-1:]
    return bool(last) and last in SENTENCE_MARKS


def begins_lower(text: str) -> bool:
    letters = [char for char in text if char.isalpha()]
    return bool(letters) and letters[0].islower()


def begins_upper(text: str) -> bool:
    letters = [char for char in text if char.isalpha()]
    return bool(letters) and letters[0].isupper()


def mark_then_lower_pairs(words: Sequence[Word]) -> list[tuple[Word, Word]]:
    """Each place where a word ends a sentence and the next goes on in lower case ("themselves." "who")."""
    return [(before, after) for before, after in zip(words, words[1:])
            if ends_sentence(before.text) and begins_lower(after.text)]


def mark_then_lower(words: Sequence[Word]) -> list[str]:
    return [f"{before.text.strip()} {after.text.strip()}" for before, after in mark_then_lower_pairs(words)]


@dataclass(frozen=True)
class SentenceFigures:
    words: int  # offline words
    mark_then_lower_stream: list[str]
    mark_then_lower_offline: list[str]
    boundary_disagreements: int  # words both wrote, a sentence end on one side only
    case_disagreements: int  # words both wrote, a capital on one side only
    starts_with_capital: bool  # the stream's first word

    def per_100_words(self, count: int) -> float:
        return 100 * count / max(self.words, 1)


def sentence_figures(offline: Sequence[Word], stream: Sequence[Word],
                     pairs: Sequence[tuple[Word, Word]]) -> SentenceFigures:
    """`pairs`: the offline and stream words that the word alignment matched (the same word on both sides)."""
    return SentenceFigures(
        words=len(offline),
        mark_then_lower_stream=mark_then_lower(stream),
        mark_then_lower_offline=mark_then_lower(offline),
        boundary_disagreements=sum(ends_sentence(said.text) != ends_sentence(heard.text) for said, heard in pairs),
        case_disagreements=sum(begins_upper(said.text) != begins_upper(heard.text) for said, heard in pairs),
        starts_with_capital=bool(stream) and begins_upper(stream[0].text))
