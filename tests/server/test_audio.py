"""Audio framing: format checks, odd-byte carry, chunk limit, resampling."""

from __future__ import annotations

import numpy as np
import pytest

from transcriber_server.audio import PcmDecoder, check_format, decode_pcm, pcm16_to_float32
from transcriber_server.errors import InvalidRequest


def tone(rate: int, seconds: float = 1.0) -> bytes:
    times = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * 440 * times) * 0.5 * 32767).astype("<i2").tobytes()


def test_check_format_defaults_and_limits():
    assert check_format("AUDIO_ENCODING_UNSPECIFIED", 0, 0) == 16000
    assert check_format("LINEAR16", 44100, 1) == 44100
    with pytest.raises(InvalidRequest, match="between 8000 and 48000; got 7999"):
        check_format("LINEAR16", 7999, 1)
    with pytest.raises(InvalidRequest, match="mono"):
        check_format("LINEAR16", 16000, 2)
    with pytest.raises(InvalidRequest, match="LINEAR16"):
        check_format("FLAC", 16000, 1)


def test_odd_byte_is_carried_into_the_next_chunk():
    pcm = tone(16000)
    decoder = PcmDecoder(16000, max_chunk_s=1.0)
    pieces = [decoder.decode(pcm[offset: offset + 333]) for offset in range(0, len(pcm), 333)]
    assert np.array_equal(np.concatenate(pieces), pcm16_to_float32(pcm))


def test_chunk_over_one_second_is_refused_with_its_length_and_the_limit():
    decoder = PcmDecoder(16000, max_chunk_s=1.0)
    decoder.decode(b"\0" * 32000)  # exactly 1 s is allowed
    with pytest.raises(InvalidRequest, match=r"audio chunk is 4.00 s \(128000 bytes\); the limit is 1 s \(32000 bytes at 16000 Hz\)"):
        decoder.decode(b"\0" * 128000)
    with pytest.raises(InvalidRequest, match=r"\(96000 bytes at 48000 Hz\)"):
        PcmDecoder(48000, max_chunk_s=1.0).decode(b"\0" * 96002)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_streaming_resampling_matches_whole_file_resampling(rate):
    pcm = tone(rate)
    decoder = PcmDecoder(rate, max_chunk_s=1.0)
    chunk = rate // 10 * 2 + 1  # odd-sized 100 ms chunks
    streamed = np.concatenate([*(decoder.decode(pcm[o: o + chunk]) for o in range(0, len(pcm), chunk)), decoder.flush()])
    whole = decode_pcm(pcm, rate)
    assert abs(streamed.size - 16000) <= 2 and abs(whole.size - 16000) <= 2
    assert np.allclose(streamed[: whole.size][100:-100], whole[: streamed.size][100:-100], atol=1e-3)
