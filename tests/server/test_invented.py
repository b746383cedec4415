"""The guard against text Whisper invents: credits, outros and sound captions go, whole sentences only; speech
stays (the human transcripts of both speech sets included)."""

from __future__ import annotations

import pytest

from transcriber_server.invented import is_invented, without_invented
from transcriber_server.policy import Word


def words_of(text: str) -> list[Word]:
    return [Word(" " + piece, index, index + 1.0, 0.9) for index, piece in enumerate(text.split())]


def text_of(words: list[Word]) -> str:
    return "".join(word.text for word in words).strip()


@pytest.mark.parametrize("invented", [
    "Редактор субтитров А.Синецкая Корректор А.Егорова",  # written by base on noise (tests/e2e/test_languages.py)
    "Субтитры сделал DimaTorzok",
    "Субтитры создавал DimaTorzok.",
    "Продолжение следует...",
    "Спасибо за просмотр!",
    "Untertitel im Auftrag des ZDF, 2017",
    "Untertitelung des ZDF, 2020",
    "Vielen Dank fürs Zuschauen!",
    "Sous-titres réalisés par la communauté d'Amara.org",
    "Merci d'avoir regardé.",
    "Subtítulos realizados por la comunidad de Amara.org",
    "Gracias por ver el video.",
    "Legendas pela comunidade Amara.org",
    "Obrigado por assistir.",
    "Thank you for watching!",
    "ご視聴ありがとうございました。",
    "字幕由Amara.org社区提供",
    "ТРЕВОЖНАЯ МУЗЫКА",
    "[Music]",
    "(смех)",
    "*applause*",
    "♪ ♪",
])
def test_what_whisper_invents_is_dropped(invented):
    assert is_invented(invented)
    assert without_invented(words_of(invented)) == []


@pytest.mark.parametrize("said", [
    "Thank you for watching, see you tomorrow.",  # an outro counts only as a whole sentence
    "Спасибо.",
    "Включите субтитры, пожалуйста.",
    "Он работает корректором в газете.",
    "NASA launched it.",
    "I.",
    "Die Musik war laut.",
    "Legendas por favor.",
    "The subtitles by default are off.",
])
def test_what_people_say_stays(said):
    assert not is_invented(said)
    assert text_of(without_invented(words_of(said))) == said


def test_only_the_invented_sentence_goes():
    words = words_of("Мы закончили. Продолжение следует... Спасибо, что были с нами.")
    assert text_of(without_invented(words)) == "Мы закончили. Спасибо, что были с нами."


def test_an_initial_ends_no_sentence():
    """Split at "А.", the credit "Редактор субтитров А. Синецкая Корректор А. Егорова" would leave its tail."""
    assert without_invented(words_of("Редактор субтитров А. Синецкая Корректор А. Егорова")) == []


def test_no_sentence_of_the_human_transcripts_reads_as_invented(speech, multilingual_speech):
    references = [item["text"] for item in [*speech.values(), *multilingual_speech.values()]]
    assert [text for text in references if is_invented(text) or without_invented(words_of(text)) != words_of(text)] \
        == []
