"""Coverage-guided fuzzing (atheris) of the server's audio framing: `transcriber_server.audio`.

Issue #6, reliability.md T15. atheris sees no coverage inside protobuf's C parser, so this harness
drives our own pure-Python checks and framing directly:

  * `check_format` with any encoding name, rate and channel count: it returns the effective rate
    exactly when the format is supported (LINEAR16 or UNSPECIFIED, 8000..48000 Hz or 0, 1 channel
    or 0), and raises `InvalidRequest` exactly when it is not;
  * `PcmDecoder.decode/flush` at a random rate (8000..48000) with a random chunk limit and random
    chunk splits, odd sizes and empty chunks included: a chunk over the limit raises `InvalidRequest`;
    otherwise splitting never changes the samples (bit for bit, at every rate), the samples are finite
    float32, at 16 kHz they are exactly the PCM16 values in [-1, 1), and the stream's length is the
    input's length resampled to 16 kHz;
  * `decode_pcm` (a whole recording) gives the same samples as the streaming decoder.

`InvalidRequest` is the only exception allowed; anything else (or a broken invariant) is a crash.

Run (from the repository root, in the venv with the `test` extra; writes crash files to /tmp):
  python fuzz/fuzz_audio.py -runs=1000000 -max_len=16384 -artifact_prefix=/tmp/fuzz-audio-
A corpus folder as the first argument keeps what it learned between runs:
  mkdir -p /tmp/corpus-audio && python fuzz/fuzz_audio.py /tmp/corpus-audio -max_total_time=300
"""

from __future__ import annotations

import sys

import atheris
import numpy as np
import soxr  # noqa: F401  (imported before instrumentation: only our code is instrumented)

with atheris.instrument_imports(include=["transcriber_server"]):
    from transcriber_server.audio import MAX_RATE, MIN_RATE, MODEL_RATE, PcmDecoder, check_format, decode_pcm
    from transcriber_server.errors import InvalidRequest

ENCODINGS = ["AUDIO_ENCODING_UNSPECIFIED", "LINEAR16", "FLAC", "MULAW", "linear16", "", "unknown value 7"]
RATES = [0, 1, -1, 7999, 8000, 11025, 16000, 22050, 44100, 48000, 48001, 96000, 2 ** 31 - 1, -(2 ** 31)]
MAX_CHUNKS = 16
NO_LIMIT_S = 1000.0  # a chunk limit no input here reaches


def fuzz_check_format(data: atheris.FuzzedDataProvider) -> None:
    encoding = data.PickValueInList(ENCODINGS) if data.ConsumeBool() else data.ConsumeUnicodeNoSurrogates(12)
    rate = data.PickValueInList(RATES) if data.ConsumeBool() else data.ConsumeIntInRange(-(2 ** 31), 2 ** 31 - 1)
    channels = data.PickValueInList([0, 1, 2, -1]) if data.ConsumeBool() else data.ConsumeIntInRange(-(2 ** 31), 2 ** 31 - 1)
    effective = rate or MODEL_RATE
    supported = (encoding in ("AUDIO_ENCODING_UNSPECIFIED", "LINEAR16") and MIN_RATE <= effective <= MAX_RATE
                 and channels in (0, 1))
    try:
        result = check_format(encoding, rate, channels)
    except InvalidRequest as error:
        assert not supported, f"refused a supported format {encoding!r} {rate} Hz {channels} ch: {error}"
        assert str(error), "InvalidRequest without a message"
        return
    assert supported, f"accepted an unsupported format {encoding!r} {rate} Hz {channels} ch"
    assert result == effective, f"check_format returned {result} for {rate}"


def split(pcm: bytes, data: atheris.FuzzedDataProvider) -> list[bytes]:
    """Cuts `pcm` into up to MAX_CHUNKS pieces at fuzzed places (empty pieces included)."""
    cuts = sorted(data.ConsumeIntInRange(0, len(pcm)) for _ in range(data.ConsumeIntInRange(0, MAX_CHUNKS - 1)))
    edges = [0, *cuts, len(pcm)]
    return [pcm[start:end] for start, end in zip(edges, edges[1:])]


def checked(part: np.ndarray) -> np.ndarray:
    assert part.dtype == np.float32 and part.ndim == 1, f"decoder gave {part.dtype} {part.shape}"
    return part


def fuzz_decoder(data: atheris.FuzzedDataProvider) -> None:
    rate = MODEL_RATE if data.ConsumeBool() else data.ConsumeIntInRange(MIN_RATE, MAX_RATE)
    max_chunk_s = data.ConsumeIntInRange(1, 2000) / 1000  # 1 ms to 2 s
    limit_bytes = 2 * round(rate * max_chunk_s)
    pcm = data.ConsumeBytes(data.ConsumeIntInRange(0, 8192))

    decoder = PcmDecoder(rate, max_chunk_s)
    fed: list[bytes] = []
    parts: list[np.ndarray] = []
    for chunk in split(pcm, data):
        if len(chunk) > limit_bytes:
            try:
                decoder.decode(chunk)
            except InvalidRequest:
                break  # the stream ends here; what came before must still be right
            raise AssertionError(f"a {len(chunk)}-byte chunk passed the limit of {max_chunk_s} s at {rate} Hz")
        parts.append(checked(decoder.decode(chunk)))
        fed.append(chunk)
    parts.append(checked(decoder.flush()))
    streamed = np.concatenate(parts)
    pcm = b"".join(fed)
    one_chunk = PcmDecoder(rate, NO_LIMIT_S)
    whole = np.concatenate([checked(one_chunk.decode(pcm)), checked(one_chunk.flush())])

    assert np.array_equal(streamed, whole), f"chunk boundaries changed the audio at {rate} Hz: {[len(c) for c in fed]}"
    assert np.isfinite(streamed).all(), "non-finite samples"
    samples_in = len(pcm) // 2
    assert abs(streamed.size - samples_in * MODEL_RATE / rate) < 1, \
        f"{samples_in} samples at {rate} Hz became {streamed.size} at 16 kHz"
    if rate == MODEL_RATE:
        expected = np.frombuffer(pcm[: samples_in * 2], dtype="<i2").astype(np.float32) / 32768
        assert np.array_equal(streamed, expected), "16 kHz audio was changed"
        assert streamed.size == 0 or (streamed.min() >= -1.0 and streamed.max() < 1.0)
    assert np.array_equal(decode_pcm(pcm, rate), whole), f"decode_pcm differs from the stream at {rate} Hz"


def test_one_input(raw: bytes) -> None:
    data = atheris.FuzzedDataProvider(raw)
    if data.ConsumeBool():
        fuzz_check_format(data)
    else:
        fuzz_decoder(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
