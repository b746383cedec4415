"""StreamPolicy with scripted hypotheses: no gRPC, no model."""

from __future__ import annotations

import numpy as np
import pytest

from transcriber_server.policy import (PolicyOptions, StreamPolicy, Word, common_prefix_length, drop_repetition_loop,
                                       drop_unplaced_tail, drop_unsure_tail)
from transcriber_server.settings import ServerSettings
from transcriber_server.vad import VoiceActivity

RATE = 16_000


def loud(seconds: float) -> np.ndarray:
    return np.full(int(seconds * RATE), 0.3, dtype=np.float32)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def energy(frames: np.ndarray) -> np.ndarray:
    return (np.abs(frames.reshape(-1, 512)).max(axis=1) > 0.05).astype(np.float32)


def policy(prompted: bool = True, **options: float) -> StreamPolicy:
    """A policy at the server's defaults, except that agreement is not held back unless asked, and that
    text precedes the stream unless asked (a stream's first words are their own tests)."""
    defaults = ServerSettings()
    values = {"step_s": defaults.step_s, "max_window_s": defaults.max_window_s,
              "trim_window_s": defaults.trim_window_s, "holdback_s": 0.0, **options}
    return StreamPolicy(PolicyOptions(**values), VoiceActivity(energy, threshold=0.5, min_silence_s=0.6), prompted)


def words(*spec: tuple[str, float, float]) -> list[Word]:
    """Words with times relative to the window start."""
    return [Word(f" {text}", start, end, 0.9) for text, start, end in spec]


def texts(found: tuple[Word, ...] | list[Word]) -> list[str]:
    return [word.text.strip() for word in found]


def test_no_window_until_a_step_of_new_audio():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(0.3))
    assert stream.next_window() is None
    stream.add_audio(loud(0.3))
    window = stream.next_window()
    assert window is not None and window.start_s == 0 and window.end_s == pytest.approx(0.6, abs=0.01)
    assert not window.final


def test_local_agreement_commits_only_what_two_hypotheses_share():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.0))
    first = stream.commit(stream.next_window(), words(("hello", 0.0, 0.4), ("word", 0.5, 0.9)))
    assert texts(first.final) == [] and texts(first.interim) == ["hello", "word"]
    stream.add_audio(loud(0.5))
    second = stream.commit(stream.next_window(),
                           words(("hello", 0.0, 0.4), ("world", 0.5, 0.9), ("again", 1.0, 1.4)))
    assert texts(second.final) == ["hello"] and texts(second.interim) == ["world", "again"]
    stream.add_audio(loud(0.5))
    third = stream.commit(stream.next_window(),
                          words(("hello", 0.0, 0.4), ("world,", 0.5, 0.9), ("again", 1.0, 1.4), ("now", 1.5, 1.9)))
    assert texts(third.final) == ["world,", "again"], "case and punctuation do not block agreement"
    assert texts(third.interim) == ["now"]


def test_a_sure_word_heard_well_past_its_end_settles_in_one_decode():
    stream = policy(one_decode_margin_s=1.0)
    stream.add_audio(loud(3.0))
    window = stream.next_window()
    assert window.end_s == pytest.approx(2.5, abs=0.05)
    update = stream.commit(window, words(("under", 0.0, 0.4), ("load", 0.5, 1.0), ("steps", 1.1, 1.5),
                                         ("grow", 1.7, 2.2)))
    assert texts(update.final) == ["under", "load", "steps"], "each ends 1 s or more before the audio does"
    assert texts(update.interim) == ["grow"]


def test_one_decode_settles_nothing_after_an_unsure_word_or_one_read_otherwise_before():
    stream = policy(one_decode_margin_s=1.0)
    stream.add_audio(loud(3.0))
    unsure = [Word(" quiet", 0.5, 1.0, 0.6)]
    update = stream.commit(stream.next_window(), [*words(("a", 0.0, 0.4)), *unsure, *words(("word", 1.2, 1.6))])
    assert texts(update.final) == ["a"] and texts(update.interim) == ["quiet", "word"]
    stream.add_audio(loud(2.0))
    # The decode before read "quiet word" and this one "wired word": two readings, so two decodes must agree.
    update = stream.commit(stream.next_window(), words(("a", 0.0, 0.4), ("wired", 0.5, 1.0), ("word", 1.2, 1.6),
                                                       ("now", 2.0, 2.4)))
    assert texts(update.final) == [] and texts(update.interim) == ["wired", "word", "now"]


def test_without_a_margin_every_word_waits_for_a_second_decode():
    stream = policy()
    stream.add_audio(loud(3.0))
    update = stream.commit(stream.next_window(), words(("under", 0.0, 0.4), ("load", 0.5, 1.0)))
    assert texts(update.final) == [] and texts(update.interim) == ["under", "load"]


def test_committed_words_heard_again_are_not_repeated_even_when_times_jitter():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.0))
    stream.commit(stream.next_window(), words(("one", 0.0, 0.4), ("two", 0.5, 0.9)))
    stream.add_audio(loud(0.5))
    stream.commit(stream.next_window(), words(("one", 0.0, 0.4), ("two", 0.5, 0.9), ("three", 1.0, 1.4)))
    stream.add_audio(loud(0.5))
    # The model re-hears the committed words with shifted times: they must not come back.
    update = stream.commit(stream.next_window(),
                           words(("one", 0.2, 0.5), ("two", 0.3, 0.6), ("three", 1.0, 1.4), ("four", 1.5, 1.9)))
    assert texts(update.final) == ["three"]
    assert texts(update.interim) == ["four"]


def test_a_word_reaching_back_into_the_last_committed_word_is_new_audio():
    """Two decodes agreed on "there for"; the next heard "therefore that", with "that" starting before "for"
    ended. "therefore" re-hears committed audio; "that" lies mostly after it and is new."""
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.6))
    stream.commit(stream.next_window(), words(("natural", 0.0, 0.4), ("there", 0.45, 0.75), ("for", 0.75, 1.05)))
    stream.add_audio(loud(0.5))
    agreed = stream.commit(stream.next_window(), words(("natural", 0.0, 0.4), ("there", 0.45, 0.75),
                                                       ("for", 0.75, 1.05), ("the", 1.5, 1.6)))
    assert texts(agreed.final) == ["natural", "there", "for"]
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("natural", 0.0, 0.4), ("therefore", 0.45, 0.9),
                                                       ("that", 0.9, 1.5), ("the", 1.5, 1.6), ("forms", 1.6, 2.0)))
    assert texts(update.final + update.interim)[0] == "that"


def test_the_same_word_seconds_apart_is_no_agreement():
    """A decode skipped three words and wrote the next "the" 2.4 s later: the texts agree, the audio does not."""
    stream = policy(step_s=0.5)
    stream.add_audio(loud(3.0))
    stream.commit(stream.next_window(), words(("type,", 0.0, 0.5), ("the", 0.6, 0.7), ("aforesaid", 0.7, 1.2)))
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("type,", 0.0, 0.5), ("the", 3.0, 3.1)))
    assert texts(update.final) == ["type,"] and texts(update.interim) == ["the"]


def test_end_of_input_settles_everything():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.0))
    stream.commit(stream.next_window(), words(("alpha", 0.0, 0.4), ("beta", 0.5, 0.9)))
    stream.end_input()
    window = stream.next_window()
    assert window is not None and window.final
    update = stream.commit(window, words(("alpha", 0.0, 0.4), ("beta", 0.5, 0.9)))
    assert texts(update.final) == ["alpha", "beta"] and update.interim == ()
    assert stream.next_window() is None and stream.done


def test_silence_costs_no_decode_and_is_forgotten():
    stream = policy(step_s=0.5, trim_window_s=12, max_window_s=25)
    for _ in range(600):  # ten minutes of silence
        stream.add_audio(quiet(1.0))
        assert stream.next_window() is None
    assert stream.processed_s == pytest.approx(600, abs=0.6)
    assert stream._audio.size <= 13 * RATE  # the window did not grow with the stream


def test_a_pause_settles_sure_interim_words_without_a_new_decode():
    stream = policy(step_s=1.0)
    stream.add_audio(np.concatenate([loud(0.9), quiet(0.2)]))  # the decode hears past the last word
    stream.commit(stream.next_window(), words(("hi", 0.0, 0.4), ("there", 0.45, 0.85)))
    stream.add_audio(quiet(1.0))  # a pause: the voice tracker reports the end of speech
    window = stream.next_window()
    assert window is not None and window.final and not window.decode
    update = stream.commit(window, [])
    assert texts(update.final) == ["hi", "there"] and update.interim == ()
    assert stream.next_window() is None


def test_a_pause_after_unsure_words_decodes_again_and_drops_an_unsure_tail():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.0))
    shaky = [Word(" hi", 0.0, 0.4, 0.9), Word(" hopes", 0.5, 0.95, 0.1)]
    stream.commit(stream.next_window(), shaky)
    stream.add_audio(quiet(1.0))
    window = stream.next_window()
    assert window is not None and window.final and window.decode
    assert window.end_s - window.start_s < 1.4, "trailing silence is not decoded"
    update = stream.commit(window, shaky)
    assert texts(update.final) == ["hi"]


def test_words_over_silence_are_dropped():
    stream = policy(step_s=0.5)
    stream.add_audio(np.concatenate([loud(0.5), quiet(0.5)]))
    window = stream.next_window()
    update = stream.commit(window, words(("real", 0.0, 0.45), ("thanks", 0.7, 0.9)))
    assert texts(update.interim) == ["real"]


def test_a_word_squeezed_into_the_pause_before_the_next_word_is_kept():
    """After a long pause the aligner may give a real word no length at the pause's end, before the speech it
    belongs to; it is heard (not a hallucination) when there is speech before the next word starts."""
    stream = policy(step_s=0.5)
    stream.add_audio(np.concatenate([loud(0.5), quiet(1.0), loud(0.8), quiet(0.5)]))
    window = stream.next_window()
    heard = words(("types.", 0.0, 0.45), ("Now,", 1.2, 1.2), ("as", 1.7, 2.2), ("all", 2.2, 2.3), ("thanks", 2.6, 2.75))
    update = stream.commit(window, heard)
    assert texts(update.final + update.interim) == ["types.", "Now,", "as", "all"]


def test_a_sure_word_given_no_time_where_the_next_word_starts_is_kept_an_unsure_one_is_not():
    for probability, kept in ((0.9, ["types.", "Now,", "as", "all"]), (0.01, ["types.", "as", "all"])):
        stream = policy(step_s=0.5)
        stream.add_audio(np.concatenate([loud(0.5), quiet(1.0), loud(0.8), quiet(0.5)]))
        heard = words(("types.", 0.0, 0.45), ("Now,", 1.2, 1.2), ("as", 1.2, 2.2), ("all", 2.2, 2.3))
        heard[1] = Word(" Now,", 1.2, 1.2, probability)
        update = stream.commit(stream.next_window(), heard)
        assert texts(update.final + update.interim) == kept, probability


def test_a_cut_before_the_aligned_end_of_a_word_does_not_match_it_with_a_repeat_after_the_cut():
    """"again" is settled, the window is cut in the pause after it, before the end the aligner gave it; the
    next window hears "and again": its "again" is new audio, not the settled word."""
    stream = policy(step_s=0.5, trim_window_s=2.0, max_window_s=6.0, holdback_s=2.0)
    stream.add_audio(np.concatenate([loud(2.0), quiet(0.3), loud(1.5)]))
    heard = words(("over", 0.0, 1.2), ("again", 1.2, 2.2), ("and", 2.3, 2.6), ("again.", 2.6, 3.2))
    stream.commit(stream.next_window(), heard)
    stream.add_audio(loud(0.5))
    settled = stream.commit(stream.next_window(), heard + words(("It", 3.3, 3.6)))
    assert texts(settled.final) == ["over", "again"]
    assert "window 2.1" in repr(stream), f"cut in the pause, before 'again' ends (2.2 s): {stream!r}"
    stream.add_audio(loud(0.5))
    window = stream.next_window()
    update = stream.commit(window, [word.shifted(-window.start_s) for word in
                                    words(("and", 2.3, 2.6), ("again.", 2.6, 3.2), ("It", 3.3, 3.6))])
    assert texts(update.final + update.interim)[:2] == ["and", "again."]


def test_window_stays_short_over_a_long_stream():
    stream = policy(step_s=0.5, trim_window_s=12, max_window_s=25)
    longest_s = 0.0
    committed: list[str] = []
    for second in range(300):  # five minutes of speech with a short pause every 4 s
        stream.add_audio(loud(0.8) if second % 4 else np.concatenate([loud(0.5), quiet(0.3)]))
        while (window := stream.next_window()) is not None:
            longest_s = max(longest_s, window.end_s - window.start_s)
            # One word per 0.8 s of window, named by its absolute time so agreement is stable.
            heard = [Word(f" w{int((window.start_s + t) * 10)}", t, t + 0.5, 0.9)
                     for t in np.arange(0.0, window.end_s - window.start_s - 0.6, 0.8)]
            committed += texts(stream.commit(window, heard).final)
    assert longest_s <= 25.0
    assert len(committed) == len(set(committed)), "a word was committed twice"


def test_window_at_the_cap_settles_instead_of_growing():
    stream = policy(step_s=0.5, trim_window_s=12, max_window_s=25)
    stream.add_audio(loud(40))
    window = stream.next_window()
    assert window.end_s - window.start_s == pytest.approx(25, abs=0.01) and window.final


def test_finalize_request_settles_at_that_point():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.0))
    stream.commit(stream.next_window(), words(("go", 0.0, 0.4)))
    stream.finalize()
    window = stream.next_window()
    assert window is not None and window.final


def test_helpers():
    looping = [Word(f" {text}", i, i + 0.5) for i, text in enumerate("a b c b c b c b c d".split())]
    assert texts(drop_repetition_loop(looping)) == ["a"]
    assert texts(drop_repetition_loop(looping[:7])) == texts(looping[:7]), "three times is still speech"
    said = [Word(f" {text}", i, i + 0.5) for i, text in enumerate("words words words words and".split())]
    assert texts(drop_repetition_loop(said)) == texts(said)
    assert texts(drop_repetition_loop(said[:1] * 6)) == []
    squeezed = [Word(" end", 0, 0.5), Word(" thanks", 1.0, 1.0), Word(" for", 1.0, 1.0)]
    assert texts(drop_unplaced_tail(squeezed)) == ["end"]
    unsure = [Word(" sure", 0, 0.5, 0.9), Word(" maybe", 0.5, 1.0, 0.1)]
    assert texts(drop_unsure_tail(unsure)) == ["sure"]
    going_on = [Word(" siquiera", 0, 0.4, 0.9), Word(" próxima", 0.5, 0.7, 0.14), Word(" alción", 0.7, 1.1, 0.49),
                Word(" sacapuntas.", 1.1, 1.8, 0.65)]
    assert texts(drop_unsure_tail(going_on)) == texts(going_on), "a sure word after an unsure one: speech goes on"
    assert texts(drop_unsure_tail(going_on[:3])) == ["siquiera"]
    assert common_prefix_length(words(("Hello,", 0, 1)), words(("hello", 0, 1), ("x", 1, 2))) == 1


def test_holdback_keeps_agreed_words_at_the_very_end_interim():
    stream = policy(step_s=0.5, holdback_s=0.5)
    stream.add_audio(loud(1.0))
    stream.commit(stream.next_window(), words(("one", 0.0, 0.3), ("two", 0.6, 0.9)))
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("one", 0.0, 0.3), ("two", 1.05, 1.4), ("three", 1.42, 1.5)))
    assert texts(update.final) == ["one"], "'two' ends within 0.5 s of the audio end: it waits"
    assert texts(update.interim) == ["two", "three"]


def test_an_unsure_word_heard_cut_off_is_no_evidence_until_a_decode_hears_past_it():
    """JFK's "ask", first heard to 0.02 s past its end, was "asked" twice in a row: agreement settled it."""
    stream = policy(step_s=0.5, holdback_s=0.5)
    stream.add_audio(loud(2.0))
    unsure_at_the_end = [Word(" asked", 1.0, 1.98, 0.39)]
    stream.commit(stream.next_window(), words(("not", 0.0, 0.9)) + unsure_at_the_end)
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("not", 0.0, 0.9)) + [Word(" asked", 1.0, 1.86, 0.41)] +
                           words(("not", 1.9, 2.45)))
    assert texts(update.final) == ["not"] and texts(update.interim) == ["asked", "not"]
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("not", 0.0, 0.9)) + [Word(" ask", 1.0, 1.86, 0.44)] +
                           words(("not", 1.9, 2.5), ("what", 2.6, 2.95)))
    assert texts(update.final) == [] and texts(update.interim) == ["ask", "not", "what"]
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("not", 0.0, 0.9)) + [Word(" ask", 1.0, 1.86, 0.46)] +
                           words(("not", 1.9, 2.5), ("what", 2.6, 2.95), ("your", 3.0, 3.4)))
    assert texts(update.final) == ["ask", "not", "what"], "heard past its end, the same unsure word agrees"


def test_a_sure_word_heard_at_the_end_still_agrees_at_the_next_decode():
    stream = policy(step_s=0.5, holdback_s=0.5)
    stream.add_audio(loud(1.5))
    stream.commit(stream.next_window(), words(("one", 0.0, 0.4), ("two", 0.6, 1.48)))
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("one", 0.0, 0.4), ("two", 0.6, 1.4), ("three", 1.6, 1.9)))
    assert texts(update.final) == ["one", "two"]


def test_final_words_never_start_before_the_last_final_word_ends():
    """The aligner of a later decode placed "is" at 5.22 s, after "It" had been sent at 5.24 s."""
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.0))
    stream.commit(stream.next_window(), words(("It", 0.2, 0.24)))
    stream.add_audio(loud(0.5))
    first = stream.commit(stream.next_window(), words(("It", 0.24, 0.28), ("is", 0.3, 0.6)))
    stream.add_audio(loud(0.5))
    second = stream.commit(stream.next_window(), words(("It", 0.1, 0.22), ("is", 0.22, 0.6), ("the", 0.6, 0.8)))
    assert texts(first.final) == ["It"] and texts(second.final) == ["is"]
    assert second.final[0].start_s == pytest.approx(first.final[-1].end_s)
    assert second.final[0].end_s == pytest.approx(0.6)


def test_a_shutdown_settles_at_the_last_pause_not_inside_the_word_being_spoken():
    stream = policy(step_s=0.5)
    for part in (loud(1.0), quiet(0.3), loud(0.7)):  # "one two", a pause, then a word cut off mid-way
        stream.add_audio(part)
    heard = words(("one", 0.0, 0.45), ("two", 0.5, 1.0), ("three", 1.3, 2.0))
    finals = list(stream.commit(stream.next_window(), heard).final)
    stream.end_at_pause()
    while (window := stream.next_window()) is not None:
        length_s = window.end_s - window.start_s
        finals += stream.commit(window, [word for word in heard if word.end_s <= length_s]).final
    assert texts(finals) == ["one", "two"]
    assert stream.done and 1.0 <= stream.settled_s <= 1.3, stream.settled_s


def test_a_shutdown_in_a_pause_settles_everything():
    stream = policy(step_s=0.5)
    for part in (loud(1.0), quiet(0.5)):
        stream.add_audio(part)
    heard = words(("one", 0.0, 0.45), ("two", 0.5, 1.0))
    stream.commit(stream.next_window(), heard)
    stream.end_at_pause()
    finals: list[Word] = []
    while (window := stream.next_window()) is not None:
        finals += stream.commit(window, heard).final
    assert texts(finals) == ["one", "two"] and stream.done and 1.0 < stream.settled_s <= 1.5


def test_a_call_that_starts_with_a_backlog_settles_it_without_waiting_for_new_audio():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(3.0))  # a resumed stream: 3 s arrive at once
    heard = words(("one", 0.0, 0.5), ("two", 0.6, 1.1), ("three", 1.2, 1.7), ("four", 1.8, 2.3), ("five", 2.4, 2.9))
    first = stream.next_window()
    assert first.end_s == pytest.approx(2.5, abs=0.01), "the first hypothesis stops a step short"
    stream.commit(first, [word for word in heard if word.end_s <= 2.5])
    second = stream.next_window()
    assert second is not None and second.end_s == pytest.approx(3.0, abs=0.01), "the second decode comes at once"
    assert texts(stream.commit(second, heard).final) == ["one", "two", "three", "four"]
    stream.add_audio(loud(1.0))
    assert stream.next_window().end_s == pytest.approx(4.0, abs=0.01), "later windows reach the end again"


def paused_after(sentence: list[Word], pause_s: float) -> tuple[StreamPolicy, list]:
    """A stream that heard `sentence` (0.9 s of speech, all of it interim), then `pause_s` of silence."""
    stream = policy(step_s=0.5)
    stream.add_audio(loud(0.9))
    stream.commit(stream.next_window(), sentence)
    stream.add_audio(quiet(pause_s))
    updates = []
    while (window := stream.next_window()) is not None:
        updates.append(stream.commit(window, sentence))
    return stream, updates


def test_a_sentence_mark_at_a_short_pause_waits_for_the_words_after_it():
    """A window that ends in a pause makes Whisper end the sentence there ("themselves."); the next window,
    hearing what follows, goes on in lower case ("who are"). The marked word waits for that decode."""
    sentence = words(("It", 0.0, 0.2), ("is", 0.25, 0.45), ("themselves.", 0.5, 0.85))
    stream, updates = paused_after(sentence, 0.7)
    assert [texts(update.final) for update in updates] == [["It", "is"]]
    assert texts(updates[-1].interim) == ["themselves."]
    stream.add_audio(loud(0.6))  # the speaker goes on
    update = stream.commit(stream.next_window(), sentence[:2] + words(
        ("themselves", 0.5, 0.85), ("who", 1.6, 1.8), ("are", 1.85, 2.0)))
    assert texts(update.final) == ["themselves"], "settled as the decode that heard both sides wrote it"
    assert texts(update.interim) == ["who", "are"]


def test_a_sentence_mark_stands_once_the_silence_after_it_is_long():
    sentence = words(("It", 0.0, 0.2), ("is", 0.25, 0.45), ("themselves.", 0.5, 0.85))
    stream, updates = paused_after(sentence, 0.7)
    assert texts(updates[-1].interim) == ["themselves."]
    stream.add_audio(quiet(0.5))
    window = stream.next_window()
    assert window is not None and window.final and not window.decode, "silence is not decoded again"
    update = stream.commit(window, [])
    assert texts(update.final) == ["themselves."] and update.interim == ()
    stream.add_audio(quiet(2.0))
    assert stream.next_window() is None


@pytest.mark.parametrize("ending", ["finalize", "end_input"])
def test_a_held_sentence_mark_settles_at_a_finalize_request_and_at_the_end(ending):
    sentence = words(("It", 0.0, 0.2), ("is", 0.25, 0.45), ("themselves.", 0.5, 0.85))
    stream, _ = paused_after(sentence, 0.7)
    getattr(stream, ending)()
    window = stream.next_window()
    assert window is not None and window.final
    assert texts(stream.commit(window, []).final) == ["themselves."]


def test_a_comma_at_a_pause_settles_at_once():
    sentence = words(("It", 0.0, 0.2), ("is", 0.25, 0.45), ("themselves,", 0.5, 0.85))
    _, updates = paused_after(sentence, 0.7)
    assert [texts(update.final) for update in updates] == [["It", "is", "themselves,"]]


def test_the_first_words_wait_for_a_decode_that_writes_them_as_the_start_of_a_text():
    stream = policy(prompted=False, step_s=0.5)
    stream.add_audio(loud(1.0))
    stream.commit(stream.next_window(), words(("printing", 0.0, 0.5), ("in", 0.55, 0.7)))
    stream.add_audio(loud(0.5))
    fragment = stream.commit(stream.next_window(), words(("printing", 0.0, 0.5), ("in", 0.55, 0.7), ("the", 0.75, 0.9)))
    assert fragment.final == (), "two decodes agree, but both read a fragment"
    stream.add_audio(loud(0.5))
    text = stream.commit(stream.next_window(), [Word(" Printing,", 0.0, 0.5, 0.9)] + words(
        ("in", 0.55, 0.7), ("the", 0.75, 0.9), ("only", 1.0, 1.3)))
    assert texts(text.final) == ["Printing,", "in", "the"]


def test_first_words_in_lower_case_settle_once_the_window_is_long():
    stream = policy(prompted=False, step_s=0.5)
    heard = words(*[(f"word{index}", index * 0.5, index * 0.5 + 0.4) for index in range(12)])
    stream.add_audio(loud(5.5))
    stream.commit(stream.next_window(), heard[:11])
    stream.add_audio(loud(0.5))
    assert texts(stream.commit(stream.next_window(), heard).final) == ["Word0", *texts(heard[1:11])], \
        "a transcript starts with a capital, as offline decoding writes it"


def test_first_words_after_a_prompt_do_not_wait():
    stream = policy(prompted=True, step_s=0.5)
    stream.add_audio(loud(1.0))
    stream.commit(stream.next_window(), words(("for", 0.0, 0.4), ("although", 0.5, 0.9)))
    stream.add_audio(loud(0.5))
    assert texts(stream.commit(stream.next_window(), words(("for", 0.0, 0.4), ("although", 0.5, 0.9))).final) == \
        ["for", "although"]


def test_a_sentence_mark_on_the_last_word_two_decodes_heard_waits_for_a_word_after_it():
    stream = policy(step_s=0.5)
    sentence = words(("It", 0.0, 0.2), ("is", 0.25, 0.45), ("themselves.", 0.5, 0.85))
    stream.add_audio(loud(1.0))
    stream.commit(stream.next_window(), sentence)
    stream.add_audio(loud(0.5))  # "who" has begun, and is cut off
    update = stream.commit(stream.next_window(), sentence)
    assert texts(update.final) == ["It", "is"] and texts(update.interim) == ["themselves."]
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), sentence[:2] + words(("themselves", 0.5, 0.85), ("who", 1.0, 1.4)))
    assert texts(update.final) == ["themselves"]


def test_interim_decodes_that_hear_no_word_commit_nothing_and_keep_the_stream_going():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.0))
    assert texts(stream.commit(stream.next_window(), []).final) == []
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), [])
    assert texts(update.final) == [] and texts(update.interim) == []


def test_a_pause_right_after_the_end_of_the_audio_decoded_decodes_the_word_that_was_cut_off():
    stream = policy(step_s=0.5)
    stream.add_audio(np.concatenate([loud(0.4), quiet(0.1), loud(0.4)]))
    stream.commit(stream.next_window(), words(("hi", 0.0, 0.4)))  # "there" ends where the audio ends: not heard
    stream.add_audio(quiet(1.0))
    window = stream.next_window()
    assert window is not None and window.final and window.decode
    update = stream.commit(window, words(("hi", 0.0, 0.4), ("there", 0.5, 0.9)))
    assert texts(update.final) == ["hi", "there"]


def test_a_word_after_a_final_sentence_end_has_a_capital_when_the_decode_read_no_sentence_end_there():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.0))
    stream.commit(stream.next_window(), words(("been", 0.0, 0.3), ("surpassed.", 0.35, 0.8)))
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("been", 0.0, 0.3), ("surpassed.", 0.35, 0.8),
                                                       ("Printing", 1.0, 1.4)))
    assert texts(update.final) == ["been", "surpassed."] and texts(update.interim) == ["Printing"]
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("been", 0.0, 0.3), ("surpassed,", 0.35, 0.8),
                                                       ("printing", 1.0, 1.4), ("then", 1.5, 1.9)))
    assert texts(update.final) == ["Printing"] and texts(update.interim) == ["then"]


def test_a_word_the_decode_wrote_in_lower_case_after_the_same_mark_keeps_it():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.5))
    stream.commit(stream.next_window(), words(("that", 0.0, 0.3), ("i.e.", 0.35, 0.8), ("the", 1.0, 1.2)))
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("that", 0.0, 0.3), ("i.e.", 0.35, 0.8), ("thee", 1.0, 1.2)))
    assert texts(update.final) == ["that", "i.e."]
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), words(("that", 0.0, 0.3), ("i.e.", 0.35, 0.8), ("the", 1.0, 1.2),
                                                       ("letter", 1.3, 1.8)))
    assert texts(update.interim)[0] == "the"


def test_of_two_agreeing_readings_that_differ_in_case_the_surer_one_is_final():
    """After "ages." one decode read "The" (p 0.93), the next "the" (p 0.04)."""
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.5))
    stream.commit(stream.next_window(), words(("middle", 0.0, 0.3), ("ages.", 0.35, 0.8)))
    stream.add_audio(loud(0.5))
    surer = [Word(" The", 1.0, 1.2, 0.93), Word(" earliest", 1.2, 1.6, 0.99)]
    update = stream.commit(stream.next_window(), words(("middle", 0.0, 0.3), ("ages.", 0.35, 0.8)) + surer)
    assert texts(update.final) == ["middle", "ages."]
    stream.add_audio(loud(0.5))
    unsure = [Word(" the", 1.02, 1.2, 0.04), Word(" Earliest", 1.2, 1.6, 0.995), Word(" book", 1.6, 1.9, 0.99)]
    update = stream.commit(stream.next_window(), words(("middle", 0.0, 0.3), ("ages.", 0.35, 0.8)) + unsure)
    assert texts(update.final) == ["The", "Earliest"] and update.final[0].start_s == pytest.approx(1.02)


def test_provisional_decodes_settle_nothing_until_the_window_does():
    """Before the language is sure, agreeing decodes may agree on the wrong language: only a pause settles."""
    stream = policy(step_s=0.5)
    stream.add_audio(loud(1.0))
    heard = words(("privet", 0.0, 0.4), ("mir", 0.5, 0.9))
    stream.commit(stream.next_window(), heard, provisional=True)
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), heard + words(("kak", 1.0, 1.4)), provisional=True)
    assert texts(update.final) == [] and texts(update.interim) == ["privet", "mir", "kak"]
    stream.add_audio(quiet(2.0))
    window = stream.next_window()
    assert window.final and window.speech_s == pytest.approx(1.5, abs=0.05)
    update = stream.commit(window, heard + words(("kak", 1.0, 1.4)), provisional=True)
    assert texts(update.final) == [] and stream.next_window() is None, "a pause in an unsure language settles nothing"
    stream.add_audio(loud(1.0))  # more speech: the language is now sure
    update = stream.commit(stream.next_window(), words(("privet", 0.0, 0.4), ("mir", 0.5, 0.9), ("kak", 1.0, 1.4),
                                                       ("dela", 3.6, 3.9)))
    assert texts(update.final) == ["privet", "mir", "kak"]
    stream.finalize()
    window = stream.next_window()
    update = stream.commit(window, words(("dela", 3.6, 3.9)), provisional=True)
    assert window.final and texts(update.final) == ["dela"], "a FINALIZE settles even an unsure language"


def test_a_lone_short_utterance_in_an_unsure_language_settles_after_a_long_silence():
    stream = policy(step_s=0.5)
    stream.add_audio(np.concatenate([loud(1.0), quiet(1.0)]))
    heard = words(("da", 0.0, 0.4), ("konechno", 0.5, 0.9))
    updates = [stream.commit(window, heard, provisional=True) for window in iter(stream.next_window, None)]
    assert updates and not any(update.final for update in updates)
    stream.add_audio(quiet(2.0))
    window = stream.next_window()
    assert window is not None and not window.decode
    assert texts(stream.commit(window, [], provisional=True).final) == ["da", "konechno"]


def level(value: float, seconds: float) -> np.ndarray:
    return np.full(int(seconds * RATE), value, dtype=np.float32)


def quiet_ask(silence_after_s: float) -> np.ndarray:
    """0.5 s of silence, then 0.4 s of a word too quiet to begin speech ("ask" at 8 kHz), then silence."""
    return np.concatenate([level(0.0, 0.5), level(0.45, 0.4), level(0.0, silence_after_s)])


def spoken_then_paused(stream: StreamPolicy, heard: list[Word]) -> list[list[str]]:
    """0.9 s of speech that every decode hears as `heard`, then a 0.7 s pause: the finals of each window."""
    stream.add_audio(level(0.9, 0.9))
    stream.commit(stream.next_window(), heard)
    stream.add_audio(level(0.0, 0.7))
    return [texts(stream.commit(window, heard).final) for window in iter(stream.next_window, None)]


def graded_policy() -> StreamPolicy:
    """A policy whose voice score of a frame is its loudest sample: 0.45 is a word too quiet to begin speech
    (the bar is 0.5) that still holds speech up (0.35)."""
    def peak(frames: np.ndarray) -> np.ndarray:
        return np.abs(frames.reshape(-1, 512)).max(axis=1)

    defaults = ServerSettings()
    return StreamPolicy(PolicyOptions(step_s=0.5, max_window_s=defaults.max_window_s,
                                      trim_window_s=defaults.trim_window_s, holdback_s=0.0),
                        VoiceActivity(peak, threshold=0.5, min_silence_s=0.6), prompted=True)


def test_a_quiet_word_after_a_held_sentence_mark_is_decoded_before_the_mark_settles():
    """Sent at 8 kHz, JFK's "ask" scores 0.45 with the voice-activity model, under the bar that begins
    speech (0.5). After the pause that held "America.", audio that arrived at once through "ask" settled
    the held word without a decode, and all of it counted as committed: the next decode read "Americans
    ask not", and "ask", inside the committed audio, went with the committed word it read differently."""
    stream = graded_policy()
    sentence = words(("so", 0.0, 0.2), ("my", 0.25, 0.45), ("America.", 0.5, 0.85))
    spoken_then_paused(stream, sentence)
    stream.add_audio(quiet_ask(0.1))  # "ask" at 2.1-2.5 s
    window = stream.next_window()
    assert window is not None and window.decode and window.end_s >= 2.5
    heard = sentence[:2] + words(("Americans", 0.5, 0.95), ("ask", 2.1, 2.5))
    first = stream.commit(window, heard)
    stream.add_audio(level(0.9, 0.5))  # "not"
    second = stream.commit(stream.next_window(), heard + words(("not", 2.6, 3.0)))
    assert texts(first.final + second.final) == ["Americans", "ask"]


def test_the_settled_point_stops_before_a_quiet_word_that_no_decode_heard():
    """Where a client resumes on another endpoint: a quiet word after settled speech, not yet decoded
    (it does not begin speech), lies after that point."""
    stream = graded_policy()
    sentence = words(("so", 0.0, 0.2), ("my", 0.25, 0.45), ("Americans,", 0.5, 0.85))
    assert spoken_then_paused(stream, sentence) == [["so", "my", "Americans,"]]
    stream.add_audio(quiet_ask(0.3))  # "ask" at 2.1-2.5 s
    while (window := stream.next_window()) is not None:
        stream.commit(window, [])
    assert stream.settled_s <= 2.1
    stream.add_audio(level(0.9, 0.5))  # "not"
    update = stream.commit(stream.next_window(), sentence + words(("ask", 2.1, 2.5), ("not", 2.8, 3.2)))
    assert texts(update.final + update.interim) == ["ask", "not"]


# One stretch of 8 kHz speech as the last interim decode read it, and as the decode at the pause read it.
MY_FELLOW = words(("so", 0.0, 0.2), ("my", 0.25, 0.45), ("fellow", 0.5, 0.85))
AM_I_FELLOW = words(("so", 0.0, 0.2), ("am", 0.25, 0.35), ("I", 0.35, 0.45), ("fellow", 0.5, 0.85))


def test_words_that_the_decode_at_a_pause_reads_otherwise_than_the_last_one_wait_for_what_follows():
    """At 8 kHz the last interim decode read "my fellow Americans.", the decode at the pause "am I fellow
    America.", and that settled; offline decoding, hearing "ask not" after it, reads "my fellow Americans"."""
    stream = policy(step_s=0.5)
    stream.add_audio(loud(0.9))
    stream.commit(stream.next_window(), MY_FELLOW)
    stream.add_audio(quiet(0.7))
    window = stream.next_window()
    assert window.final and window.decode
    update = stream.commit(window, AM_I_FELLOW)
    assert texts(update.final) == ["so"] and texts(update.interim) == ["am", "I", "fellow"]
    assert stream.next_window() is None, "no decode of the silence"
    stream.add_audio(loud(0.6))  # the speaker goes on
    followed = MY_FELLOW + words(("Americans", 1.6, 2.1))
    assert texts(stream.commit(stream.next_window(), followed).final) == []
    stream.add_audio(loud(0.5))
    update = stream.commit(stream.next_window(), followed + words(("ask", 2.2, 2.5)))
    assert texts(update.final) == ["my", "fellow", "Americans"]


def test_words_a_pause_read_otherwise_settle_as_it_read_them_once_the_silence_is_long():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(0.9))
    stream.commit(stream.next_window(), MY_FELLOW)
    stream.add_audio(quiet(0.7))
    stream.commit(stream.next_window(), AM_I_FELLOW)
    stream.add_audio(quiet(0.5))
    window = stream.next_window()
    assert window is not None and not window.decode
    assert texts(stream.commit(window, []).final) == ["am", "I", "fellow"]


def test_a_decode_at_a_pause_that_only_adds_words_settles_at_once():
    stream = policy(step_s=0.5)
    stream.add_audio(loud(0.9))
    stream.commit(stream.next_window(), words(("so", 0.0, 0.2), ("my", 0.25, 0.45)))
    stream.add_audio(quiet(0.7))
    update = stream.commit(stream.next_window(), words(("so", 0.0, 0.2), ("my", 0.25, 0.45), ("fellow", 0.5, 0.85)))
    assert texts(update.final) == ["so", "my", "fellow"] and update.interim == ()


def test_words_held_at_a_pause_wait_for_a_decode_of_a_quiet_word_after_it():
    """At 8 kHz "ask" scores 0.45, under the bar that begins speech: the words held at the pause before it
    settled after a second of "silence", and no decode heard "ask" with them."""
    stream = graded_policy()
    stream.add_audio(level(0.9, 0.9))
    stream.commit(stream.next_window(), MY_FELLOW)
    stream.add_audio(level(0.0, 0.7))
    stream.commit(stream.next_window(), AM_I_FELLOW)
    stream.add_audio(quiet_ask(0.3))  # "ask" at 2.1-2.5 s
    window = stream.next_window()
    assert window is not None and window.decode and window.end_s >= 2.5


def test_with_utterances_apart_a_pause_holds_nothing_over_and_the_next_window_starts_after_it():
    stream = policy(step_s=0.5, utterances_apart=True)
    stream.add_audio(np.concatenate([loud(1.0), quiet(1.0)]))
    heard = words(("privet", 0.0, 0.4), ("mir.", 0.5, 0.9))
    assert [texts(stream.commit(window, heard).final) for window in iter(stream.next_window, None)] == [["privet", "mir."]]
    stream.add_audio(loud(1.0))
    window = stream.next_window()
    assert window.start_s >= 1.0 and window.end_s == pytest.approx(3.0, abs=0.01)
    assert window.prompt == "", "the last utterance's text, maybe in another language, does not lead the next"
