"""Sentence marks and capitals of a stream's finals against offline decoding of the same audio.

Pure functions over word lists (the seam audit prints them): where a word ends a sentence, where the text
goes on in lower case after a sentence mark, and how often the stream's sentence ends and capitals differ
from offline's on the words both wrote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from transcriber_sdk import Word

SENTENCE_MARKS = ".!?。！？…"
CLOSING = "\"'”’)]}»"  # may follow a sentence mark: 'said "no."'
# A period that shortens a word ("i.e.", "p.m.", "т.е.", "etc."), not one that ends a sentence, where lower case follows.
ABBREVIATION = re.compile(r"^(?:[^\W\d_]{1,2}\.){2,}$|^(?:etc|vs|cf|mr|mrs|ms|dr|st|jr|sr)\.$", re.IGNORECASE)


def ends_sentence(text: str) -> bool:
    last = text.strip().rstrip(CLOSING)[-1:]
    return bool(last) and last in SENTENCE_MARKS


def begins_lower(text: str) -> bool:
    letters = [char for char in text if char.isalpha()]
    return bool(letters) and letters[0].islower()


def begins_upper(text: str) -> bool:
    letters = [char for char in text if char.isalpha()]
    return bool(letters) and letters[0].isupper()


def abbreviated(text: str) -> bool:
    return bool(ABBREVIATION.match(text.strip().rstrip(CLOSING)))


def sentence_ends(words: Sequence[Word]) -> list[bool]:
    """Whether each word ends a sentence: it ends with a sentence mark, and is not an abbreviation that the text
    goes on from in lower case ("i.e. the")."""
    return [ends_sentence(word.text) and not (abbreviated(word.text) and index + 1 < len(words) and
                                              begins_lower(words[index + 1].text))
            for index, word in enumerate(words)]


def mark_then_lower_pairs(words: Sequence[Word]) -> list[tuple[Word, Word]]:
    """Each place where a word ends a sentence and the next goes on in lower case ("themselves." "who");
    abbreviations ("p.m. and") are not sentence ends."""
    return [(before, after) for before, after in zip(words, words[1:])
            if ends_sentence(before.text) and not abbreviated(before.text) and begins_lower(after.text)]


def mark_then_lower(words: Sequence[Word]) -> list[str]:
    return [f"{before.text.strip()} {after.text.strip()}" for before, after in mark_then_lower_pairs(words)]


def boundary_disagreement_pairs(offline: Sequence[Word], stream: Sequence[Word],
                                pairs: Sequence[tuple[Word, Word]]) -> list[tuple[Word, Word]]:
    """The matched (offline, stream) words where one side ends a sentence and the other does not."""
    said_ends = {id(word): end for word, end in zip(offline, sentence_ends(offline))}
    heard_ends = {id(word): end for word, end in zip(stream, sentence_ends(stream))}
    return [(said, heard) for said, heard in pairs if said_ends[id(said)] != heard_ends[id(heard)]]


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
        boundary_disagreements=len(boundary_disagreement_pairs(offline, stream, pairs)),
        case_disagreements=sum(begins_upper(said.text) != begins_upper(heard.text) for said, heard in pairs),
        starts_with_capital=bool(stream) and begins_upper(stream[0].text))
