"""Audio that makes Whisper misbehave, with the real model: silence, noise and clipping (reliability T20)."""

from __future__ import annotations

from collections.abc import Iterator

import jiwer
import numpy as np
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from transcriber_sdk import Client, chunked, read_pcm16
from transcriber_server.engine import WhisperEngine
from transcriber_server.settings import ServerSettings

from ..conftest import ServerThread

pytestmark = pytest.mark.slow
RATE = 16_000
MINUTE = 60 * RATE


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    thread = ServerThread(ServerSettings(max_streams=2), WhisperEngine(ServerSettings(cpu_threads=2)))
    yield thread
    thread.stop()


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def finals(address: str, pcm: bytes) -> list[str]:
    with Client([address]) as client:
        return [update.text for update in client.stream(chunked(pcm, RATE, chunk_s=0.5), language="en")
                if update.is_final]


def test_a_minute_of_digital_silence_gives_no_words(server):
    assert finals(server.address, pcm16(np.zeros(MINUTE))) == []


def test_a_minute_of_white_noise_at_minus_30_dbfs_gives_at_most_two_words(server):
    noise = np.random.default_rng(30).normal(0.0, 10 ** (-30 / 20), MINUTE)
    words = " ".join(finals(server.address, pcm16(noise))).split()
    print(f"noise at -30 dBFS gave {len(words)} words: {words}")
    assert len(words) <= 2


def test_clipped_speech_is_transcribed_without_error(server, speech):
    item = speech["ljspeech_LJ023-0051_0058_paragraph"]
    pcm, rate = read_pcm16(item["path"])
    loud = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768 * 8  # +18 dB: peaks flattened hard
    clipped = pcm16(loud)
    clipped_share = float(np.mean(np.abs(np.frombuffer(clipped, dtype="<i2")) >= 32767))
    normalize = EnglishTextNormalizer()
    error_rate = jiwer.wer(normalize(item["text"]), normalize(" ".join(finals(server.address, clipped))))
    print(f"clipped speech ({clipped_share:.1%} of samples at full scale): WER {error_rate:.1%}")
    assert clipped_share > 0.01
    assert error_rate < 0.25
