"""LanguageChoice and detection among candidates: pure decisions, no model."""

from __future__ import annotations

import pytest

from transcriber_server.batch_decode import likeliest
from transcriber_server.language import FORCE_SPEECH_S, LOCK_PROBABILITY, LOCK_SPEECH_S, LanguageChoice, LanguageRequest


def test_a_fixed_language_is_never_provisional_and_never_changes():
    choice = LanguageChoice(LanguageRequest(fixed="ru", per_utterance=True))
    choice.heard("uk", 0.99, 10.0)
    choice.utterance_ended()
    assert choice.language == "ru" and not choice.provisional


def test_detection_locks_only_when_sure_on_enough_speech():
    choice = LanguageChoice(LanguageRequest())
    choice.heard("fr", 0.84, 0.8)  # Russian read as French on a second of audio (dev set)
    choice.heard("ru", 0.95, LOCK_SPEECH_S - 0.1)
    assert choice.provisional and choice.language is None
    choice.heard("en", LOCK_PROBABILITY - 0.01, 3.0)
    assert choice.provisional
    choice.heard("ru", LOCK_PROBABILITY, LOCK_SPEECH_S)
    assert not choice.provisional and choice.language == "ru"
    choice.heard("en", 1.0, 20.0)
    assert choice.language == "ru", "locked for the rest of the stream"


def test_long_speech_locks_the_likeliest_language_even_when_unsure():
    choice = LanguageChoice(LanguageRequest())
    choice.heard("de", 0.6, FORCE_SPEECH_S)
    assert choice.language == "de"


def test_switching_mode_detects_each_utterance_afresh():
    choice = LanguageChoice(LanguageRequest(candidates=("ru", "en"), per_utterance=True))
    choice.heard("ru", 0.97, 2.0)
    assert choice.language == "ru" and choice.candidates == ("ru", "en")
    choice.utterance_ended()
    assert choice.provisional
    choice.heard("en", 0.93, 2.0)
    assert choice.language == "en"
    locked = LanguageChoice(LanguageRequest())
    locked.heard("ru", 0.97, 2.0)
    locked.utterance_ended()
    assert locked.language == "ru", "without switching mode a pause keeps the language"


def test_detection_chooses_among_the_candidates_with_their_share_of_probability():
    scores = [("uk", 0.5), ("ru", 0.3), ("en", 0.1), ("cs", 0.1)]
    assert likeliest(scores, ()) == ("uk", pytest.approx(0.5))
    assert likeliest(scores, ("ru", "en")) == ("ru", pytest.approx(0.75))
    assert likeliest(scores, ("en",)) == ("en", pytest.approx(1.0))
