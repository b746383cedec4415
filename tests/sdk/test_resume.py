"""AudioTape and Continuity: a stream continued on a new call loses and repeats no word."""

from __future__ import annotations

import pytest

from transcriber_sdk._resume import AudioTape, Continuity
from transcriber_sdk.models import TranscriptUpdate, Word

RATE_BYTES = 32_000  # 16 kHz LINEAR16


def update(words: list[tuple[str, float, float]], final: bool = True) -> TranscriptUpdate:
    items = tuple(Word(text, start, end, 0.9) for text, start, end in words)
    return TranscriptUpdate(text=" ".join(text for text, _, _ in words), is_final=final,
                            start_s=items[0].start_s, end_s=items[-1].end_s, words=items)


def resumed(first_call: list[tuple[str, float, float]], settled_s: float) -> tuple[AudioTape, Continuity, int]:
    """A stream whose first call gave these finals and settled here, moved to a second call; returns the
    tape, the continuity and the byte offset the second call starts from."""
    tape, joined = AudioTape(RATE_BYTES, 60), Continuity()
    tape.append(b"\0" * RATE_BYTES * 20)
    joined.resume_at(tape)
    joined.take(update(first_call))
    joined.settle(settled_s)
    return tape, joined, joined.resume_at(tape)


def test_tape_reads_from_any_offset_and_forgets_whole_chunks():
    tape = AudioTape(RATE_BYTES, keep_s=60)
    for index in range(4):
        tape.append(bytes([index]) * 100)
    assert tape.read(150, 1000) == bytes([1]) * 50 + bytes([2]) * 100 + bytes([3]) * 100  # across chunks
    assert tape.read(150, 120) == bytes([1]) * 50 + bytes([2]) * 70
    assert tape.read(400, 1000) == b""
    tape.forget_before(250)
    assert tape.start == 200
    with pytest.raises(ValueError, match="forgotten"):
        tape.read(100, 10)


def test_tape_has_room_until_keep_s_is_held():
    tape = AudioTape(RATE_BYTES, keep_s=1)
    tape.append(b"\0" * (RATE_BYTES - 2))
    assert tape.has_room
    tape.append(b"\0" * 2)
    assert not tape.has_room
    tape.forget_before(RATE_BYTES)
    assert tape.has_room


def test_offsets_are_on_sample_boundaries():
    assert AudioTape(2 * 44_100, keep_s=60).offset_of(0.5) % 2 == 0
    assert AudioTape(RATE_BYTES, keep_s=60).offset_of(-1) == 0


def test_the_first_call_passes_results_through():
    tape, joined = AudioTape(RATE_BYTES, 60), Continuity()
    assert joined.resume_at(tape) == 0
    result = joined.take(update([("hello", 0.5, 0.9), ("world", 1.0, 1.4)]))
    assert result.text == "hello world" and result.start_s == 0.5


def test_a_resumed_call_is_shifted_and_drops_words_heard_again():
    # The server settled in the pause between "one" and "two" (1.4-1.5 s): the replay starts there.
    tape, joined, offset = resumed([("one", 1.0, 1.4), ("two", 1.5, 2.0)], 1.45)
    assert offset == tape.offset_of(1.45)
    result = joined.take(update([("two", 0.05, 0.55), ("three", 0.65, 1.05), ("four", 1.15, 1.55)]))
    assert result.text == "three four"
    assert result.start_s == pytest.approx(2.1) and result.words[-1].end_s == pytest.approx(3.0)


def test_the_last_final_word_heard_again_with_a_later_end_is_dropped_once():
    _, joined, _ = resumed([("one", 1.0, 1.4), ("two", 1.5, 2.0)], 1.45)
    result = joined.take(update([("two", 0.1, 0.65), ("two", 0.85, 1.15)]))  # "two" said twice: keep the second
    assert result.text == "two" and result.start_s == pytest.approx(2.3)


def test_an_interim_of_only_old_words_comes_back_empty_and_a_final_not_at_all():
    _, joined, _ = resumed([("one", 1.0, 1.4)], 0.95)
    empty = joined.take(update([("one", 0.05, 0.45)], final=False))
    assert empty is not None and empty.text == "" and not empty.is_final
    assert joined.take(update([("one", 0.05, 0.45)], final=True)) is None


def test_a_resume_at_a_word_end_keeps_the_next_word():
    _, joined, _ = resumed([("the", 8.7, 8.94), ("furrow", 8.94, 9.32)], 9.32)  # no pause: the word's end
    result = joined.take(update([("plowed.", 0.0, 0.5), ("It", 0.74, 0.78)]))
    assert result.text == "plowed. It" and result.start_s == pytest.approx(9.32)


def test_only_the_replayed_stretch_is_filtered_not_the_rest_of_the_call():
    _, joined, _ = resumed([("one", 1.0, 1.4)], 1.45)
    joined.take(update([("two", 0.05, 0.5)]))  # 1.5-1.95
    # A zero-length word right at the end of the previous final is still new in this call.
    result = joined.take(update([("United", 0.5, 0.5), ("States", 0.5, 0.9)]))
    assert result.text == "United States"


def test_replayed_words_are_recognised_by_text_when_their_timestamps_drift():
    # Measured: the new call put "Confederation" 0.9 s early, ending where the previous call's last final
    # word ("of") ended; by time alone it looked old and was lost.
    old = [("because", 34.27, 34.6), ("the", 34.6, 34.8), ("articles", 34.8, 35.5), ("of", 35.5, 35.97)]
    _, joined, _ = resumed(old, 34.2)
    heard = [("because", 0.05, 0.3), ("the", 0.3, 0.5), ("articles", 0.5, 0.9), ("of", 0.9, 0.92),
             ("Confederation", 0.92, 1.78), ("under", 1.78, 2.66)]
    assert joined.take(update(heard)).text == "Confederation under"


def test_replayed_words_split_over_two_finals_are_all_dropped():
    _, joined, _ = resumed([("it", 5.2, 5.4), ("is", 5.4, 5.6), ("the", 5.6, 5.9), ("american", 5.9, 6.36)], 5.1)
    assert joined.take(update([("is", 0.0, 0.5), ("the", 0.5, 0.9)])) is None  # "it" not heard again
    result = joined.take(update([("American", 0.9, 1.1), ("people", 1.1, 1.64)]))
    assert result.text == "people"
    assert joined.take(update([("American", 1.7, 2.0)])).text == "American", "later words pass, even repeated"


def test_prompt_echoes_at_the_start_of_the_replay_are_dropped():
    _, joined, _ = resumed([("themselves.", 11.2, 12.16)], 12.16)  # no pause: resumed at the word's end
    result = joined.take(update([("It", 0.0, 0.0), ("is", 0.0, 0.0), ("who", 0.34, 1.24)]))
    assert result.text == "who"


def test_a_resumed_call_is_prompted_with_the_final_text_before_its_audio():
    tape, joined = AudioTape(RATE_BYTES, 60), Continuity()
    tape.append(b"\0" * RATE_BYTES * 20)
    joined.resume_at(tape)
    assert joined.prompt("Names: Subiaco.") == "Names: Subiaco."
    joined.take(update([("Printing,", 0.0, 0.5), ("in", 0.5, 0.7), ("the", 0.7, 0.8), ("only", 1.3, 1.6)]))
    joined.settle(1.0)
    joined.resume_at(tape)  # the replay starts in the pause at 1.0 s: "only" is said again in it
    assert joined.prompt("") == "Printing, in the"
    assert joined.prompt("Names: Subiaco.") == "Names: Subiaco. Printing, in the"
