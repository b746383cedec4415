"""Coverage-guided fuzzing (atheris) of the SDK's framing and resume code: pure functions only.

Issue #6, reliability.md T15. Targets and the invariants checked on every input:

  * `_resume.AudioTape` under a random sequence of append / forget_before / read / close, compared
    with a plain bytearray of everything appended: `end` is the bytes appended; `start` never moves
    back, never passes `end`, and lies on a chunk boundary; forget_before(offset) keeps the chunk that
    holds `offset`; `read` raises ValueError (its documented error) exactly for forgotten audio and
    otherwise returns the stream's own bytes, non-empty while there is audio at that offset; reading
    on from any kept offset replays exactly the rest of the stream (as a failover does);
    `offset_of` is even and never negative; `has_room` matches `keep_s`;
  * `_resume.Continuity` as the driver uses it (settle, forget, resume_at, take): the resume offset is
    on a sample boundary and still on the tape; settled and final offsets never move back; `take`
    returns the update's words shifted by the call's start, in order, and drops only words;
  * `_core.check_chunk`: raises InvalidRequestError (INVALID_ARGUMENT) exactly above MAX_CHUNK_BYTES;
  * `_core.chunked` (realtime off): the pieces rejoin to the input, are non-empty, and all but the
    last are the same even size;
  * `_core.to_updates` on responses with arbitrary results, offsets and in-band errors: one update
    per result, or the TranscriberError of the in-band status.

Only the documented exceptions (InvalidRequestError, TranscriberError for an in-band error, ValueError
from AudioTape.read) are allowed; anything else, or a broken invariant, is a crash.

Run (from the repository root, in the venv with the `test` extra; writes crash files to /tmp):
  python fuzz/fuzz_sdk_framing.py -runs=1000000 -max_len=8192 -artifact_prefix=/tmp/fuzz-sdk-
A corpus folder as the first argument keeps what it learned between runs:
  mkdir -p /tmp/corpus-sdk && python fuzz/fuzz_sdk_framing.py /tmp/corpus-sdk -max_total_time=300
"""

from __future__ import annotations

import sys

import atheris
import grpc
import numpy  # noqa: F401  (imported before instrumentation: only our code is instrumented)
import soundfile  # noqa: F401
from google.protobuf import duration_pb2
from google.rpc import status_pb2

with atheris.instrument_imports(include=["transcriber_sdk"]):
    from transcriber_sdk._core import MAX_CHUNK_BYTES, MAX_MESSAGE_S, check_chunk, chunked, seconds, to_updates
    from transcriber_sdk._resume import AudioTape, Continuity
    from transcriber_sdk.exceptions import STATUS_TO_ERROR, InvalidRequestError, ServerError, TranscriberError
    from transcriber_sdk.models import TranscriptUpdate, Word
    from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb

MAX_OPS = 64
RATES = [8000, 16000, 44100, 48000]
INT64 = (-(2 ** 63), 2 ** 63 - 1)
INT32 = (-(2 ** 31), 2 ** 31 - 1)


class TapeModel:
    """An AudioTape next to the plain bytes it should hold."""

    def __init__(self, data: atheris.FuzzedDataProvider) -> None:
        rate = data.PickValueInList(RATES) if data.ConsumeBool() else data.ConsumeIntInRange(1, 96_000)
        self.tape = AudioTape(2 * rate, data.ConsumeIntInRange(0, 300) / 10)
        self.stream = bytearray()
        self.boundaries = {0}

    def check(self, start_before: int) -> None:
        tape = self.tape
        assert tape.end == len(self.stream), f"end {tape.end} != {len(self.stream)} bytes appended"
        assert start_before <= tape.start <= tape.end, f"start moved from {start_before} to {tape.start} (end {tape.end})"
        assert tape.start in self.boundaries, f"start {tape.start} is not a chunk boundary"
        assert tape.has_room == (tape.end - tape.start < tape.keep_bytes)
        assert repr(tape)

    def append(self, chunk: bytes) -> None:
        self.tape.append(chunk)
        self.stream += chunk
        self.boundaries.add(len(self.stream))

    def forget_before(self, offset: int) -> None:
        before = self.tape.start
        self.tape.forget_before(offset)
        if offset >= self.tape.end:
            assert self.tape.start == self.tape.end, f"forget_before({offset}) kept {self.tape.start}..{self.tape.end}"
        elif offset >= before:
            assert self.tape.start <= offset, f"forget_before({offset}) dropped the chunk holding it (start {self.tape.start})"
        else:
            assert self.tape.start == before, f"forget_before({offset}) moved start {before} -> {self.tape.start}"

    def read(self, offset: int, max_bytes: int) -> bytes | None:
        """What read gives, or None when it raised its documented ValueError (checked to be right)."""
        try:
            data = self.tape.read(offset, max_bytes)
        except ValueError:
            assert offset < self.tape.start, f"read({offset}) refused audio that is kept (start {self.tape.start})"
            return None
        assert offset >= self.tape.start, f"read({offset}) gave forgotten audio (start {self.tape.start})"
        assert len(data) <= max_bytes
        assert data == self.stream[offset: offset + len(data)], f"read({offset}, {max_bytes}) gave other bytes"
        if max_bytes > 0 and offset < self.tape.end:
            assert data, f"read({offset}, {max_bytes}) gave nothing with {self.tape.end - offset} bytes there"
        return data

    def replay_from(self, offset: int, max_bytes: int) -> None:
        """Reads on from `offset` as _Feed.chunks_from does; it must give back exactly the rest."""
        replayed = bytearray()
        while (data := self.read(offset + len(replayed), max_bytes)):
            replayed += data
        assert replayed == self.stream[offset:], f"replay from {offset} lost or changed audio"


def any_duration(data: atheris.FuzzedDataProvider) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=data.ConsumeIntInRange(*INT64), nanos=data.ConsumeIntInRange(*INT32))


def any_seconds(data: atheris.FuzzedDataProvider) -> float:
    """A time as the SDK gets one: from a Duration on the wire (so finite, |t| < 1e19)."""
    return seconds(any_duration(data))


def fuzz_tape(data: atheris.FuzzedDataProvider) -> None:
    """Any sequence of tape operations, forgetting at any offset."""
    model = TapeModel(data)
    for _ in range(data.ConsumeIntInRange(0, MAX_OPS)):
        start_before, end = model.tape.start, model.tape.end
        operation = data.ConsumeIntInRange(0, 5)
        if operation in (0, 1):
            model.append(data.ConsumeBytes(data.ConsumeIntInRange(0, 4096)))
        elif operation == 2:
            model.forget_before(data.ConsumeIntInRange(-8, end + 8))
        elif operation == 3:
            offset = data.ConsumeIntInRange(-8, end + 8)
            max_bytes = data.ConsumeIntInRange(0, 5000)
            if model.read(offset, max_bytes) is not None and max_bytes:
                model.replay_from(offset, max(max_bytes, (end - offset) // 64))  # 64 reads at most: keep runs fast
        elif operation == 4:
            value = any_seconds(data)
            offset = model.tape.offset_of(value)
            assert offset >= 0 and offset % 2 == 0, f"offset_of({value}) = {offset}"
        else:
            model.tape.close()
        model.check(start_before)


def fuzz_driver(data: atheris.FuzzedDataProvider) -> None:
    """The tape and Continuity as AsyncClient.stream uses them: the first call starts at 0; the caller's
    chunks (any size, odd too) go on the tape; each settled offset from the server makes it forget up to
    there; a failover or rollover starts a new call at `resume_at`; results go through `take`."""
    model = TapeModel(data)
    continuity = Continuity()
    offset = continuity.resume_at(model.tape)
    assert offset == 0, f"the first call starts at byte {offset}"
    for _ in range(data.ConsumeIntInRange(0, MAX_OPS)):
        start_before = model.tape.start
        operation = data.ConsumeIntInRange(0, 4)
        if operation in (0, 1):
            model.append(data.ConsumeBytes(data.ConsumeIntInRange(0, 4096)))
        elif operation == 2:  # a response with settled_offset (relative to the current call)
            settled_before = continuity.settled_s
            continuity.settle(data.ConsumeIntInRange(0, 600_000) / 1000 if data.ConsumeBool() else any_seconds(data))
            assert continuity.settled_s >= settled_before, "settled_s went back"
            model.forget_before(model.tape.offset_of(continuity.settled_s))
        elif operation == 3:  # a new call continues the stream
            offset = continuity.resume_at(model.tape)
            assert offset % 2 == 0, f"resume at byte {offset}: not on a sample boundary"
            assert offset >= model.tape.start, f"resume at {offset}, before the tape's start {model.tape.start}"
            model.replay_from(offset, round(model.tape.bytes_per_s * MAX_MESSAGE_S))  # as _Feed.chunks_from reads
        else:
            fuzz_take(continuity, data)
        model.check(start_before)


def fuzz_words(data: atheris.FuzzedDataProvider) -> tuple[Word, ...]:
    words = []
    at_s = data.ConsumeIntInRange(0, 60_000) / 1000
    for _ in range(data.ConsumeIntInRange(0, 6)):
        text = data.PickValueInList([" w1", " w2", " hello", " world", "", " W1,"]) if data.ConsumeBool() \
            else data.ConsumeUnicodeNoSurrogates(6)
        length_s = data.ConsumeIntInRange(0, 2000) / 1000
        words.append(Word(text=text, start_s=at_s, end_s=at_s + length_s, probability=0.9))
        at_s += length_s + data.ConsumeIntInRange(-500, 1000) / 1000  # overlaps and gaps too
    return tuple(words)


def fuzz_take(continuity: Continuity, data: atheris.FuzzedDataProvider) -> None:
    words = fuzz_words(data)
    update = TranscriptUpdate(text=" ".join(word.text for word in words), is_final=data.ConsumeBool(),
                              start_s=words[0].start_s if words else 0.0, end_s=words[-1].end_s if words else 0.0,
                              words=words)
    final_end_before = continuity.final_end_s
    shift_s = continuity._shift_s  # private, but the invariant is about it: where this call's audio began
    kept = continuity.take(update)
    assert continuity.final_end_s >= final_end_before, "final_end_s went back"
    if kept is None:
        assert update.is_final, "take dropped an interim update"
        return
    assert kept.is_final == update.is_final
    shifted = [(word.text, word.start_s + shift_s, word.end_s + shift_s) for word in words]
    remaining = iter(shifted)
    for word in kept.words:  # a subsequence of the input, shifted, in order
        assert (word.text, word.start_s, word.end_s) in remaining, f"take invented or reordered {word}"


def fuzz_check_chunk(data: atheris.FuzzedDataProvider) -> None:
    size = data.PickValueInList([0, 1, MAX_CHUNK_BYTES - 1, MAX_CHUNK_BYTES, MAX_CHUNK_BYTES + 1]) \
        if data.ConsumeBool() else data.ConsumeIntInRange(0, 2 * MAX_CHUNK_BYTES)
    try:
        check_chunk(bytes(size))
    except InvalidRequestError as error:
        assert size > MAX_CHUNK_BYTES, f"refused a {size}-byte chunk"
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        return
    assert size <= MAX_CHUNK_BYTES, f"accepted a {size}-byte chunk"


def fuzz_chunked(data: atheris.FuzzedDataProvider) -> None:
    rate = data.PickValueInList(RATES) if data.ConsumeBool() else data.ConsumeIntInRange(-10, 192_000)
    chunk_s = data.ConsumeIntInRange(0, 5000) / 1000
    pcm = data.ConsumeBytes(data.ConsumeIntInRange(0, 8192))
    pieces = list(chunked(pcm, rate, chunk_s))
    size = max(2, int(rate * chunk_s) * 2)
    assert b"".join(pieces) == pcm, "chunked lost or changed bytes"
    assert all(pieces), "chunked gave an empty piece"
    assert all(len(piece) == size for piece in pieces[:-1]), f"pieces of {[len(p) for p in pieces]}, not {size}"
    assert size % 2 == 0


def fuzz_to_updates(data: atheris.FuzzedDataProvider) -> None:
    response = pb.StreamingTranscribeResponse(stream_id=data.ConsumeUnicodeNoSurrogates(8))
    for _ in range(data.ConsumeIntInRange(0, 3)):
        result = response.results.add(transcript=data.ConsumeUnicodeNoSurrogates(16), is_final=data.ConsumeBool(),
                                      stability=data.ConsumeFloat(), confidence=data.ConsumeFloat(),
                                      language_code=data.ConsumeUnicodeNoSurrogates(4))
        result.start_offset.CopyFrom(any_duration(data))
        result.end_offset.CopyFrom(any_duration(data))
        for _ in range(data.ConsumeIntInRange(0, 3)):
            word = result.words.add(word=data.ConsumeUnicodeNoSurrogates(6), probability=data.ConsumeFloat())
            word.start_offset.CopyFrom(any_duration(data))
            word.end_offset.CopyFrom(any_duration(data))
    in_band = data.ConsumeBool()
    if in_band:
        response.error.CopyFrom(status_pb2.Status(code=data.ConsumeIntInRange(*INT32),
                                                  message=data.ConsumeUnicodeNoSurrogates(16)))
    endpoint = data.PickValueInList([None, "", "a:1"])
    try:
        updates = to_updates(response, endpoint)
    except TranscriberError as error:
        assert in_band, f"raised {error!r} for a response without an in-band error"
        expected = next((code for code in grpc.StatusCode if code.value[0] == response.error.code), grpc.StatusCode.UNKNOWN)
        assert error.code == expected and isinstance(error, STATUS_TO_ERROR.get(expected, ServerError))
        return
    assert not in_band, "an in-band error was not raised"
    assert len(updates) == len(response.results)
    for update, result in zip(updates, response.results):
        assert update.text == result.transcript and update.is_final == result.is_final
        assert update.start_s == seconds(result.start_offset) and len(update.words) == len(result.words)
        assert update.endpoint == (endpoint or "")


TARGETS = [fuzz_tape, fuzz_driver, fuzz_driver, fuzz_check_chunk, fuzz_chunked, fuzz_to_updates]


def test_one_input(raw: bytes) -> None:
    data = atheris.FuzzedDataProvider(raw)
    data.PickValueInList(TARGETS)(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
