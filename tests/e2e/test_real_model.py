"""End to end with the real embedded tiny.en model on real recorded speech."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import jiwer
import numpy as np
import pytest
import soundfile
from grpc_health.v1 import health_pb2, health_pb2_grpc
from whisper_normalizer.english import EnglishTextNormalizer

from transcriber_sdk import Client, EndpointUnavailableError, InvalidRequestError, chunked, read_pcm16
from transcriber_server.engine import DecodeOptions, WhisperEngine
from transcriber_server.settings import ServerSettings

from ..conftest import ServerThread, free_port

pytestmark = pytest.mark.slow
normalize = EnglishTextNormalizer()
WER_FILES = ["jfk_inaugural_1961", "ljspeech_LJ023-0051_0058_paragraph", "edacc_C02_000000002", "osr_us_000_0034"]


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine(ServerSettings(cpu_threads=2))


@pytest.fixture(scope="module")
def server(engine: WhisperEngine) -> Iterator[ServerThread]:
    thread = ServerThread(ServerSettings(max_streams=4), engine)
    yield thread
    thread.stop()


def stream_text(address: str, pcm: bytes, rate: int, speed: float = 4.0, **options: object) -> str:
    with Client([address]) as client:
        return " ".join(update.text for update in client.stream(chunked(pcm, rate, realtime=True, speed=speed), sample_rate=rate, **options)
                        if update.is_final)


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis))


def test_streaming_wer_is_within_a_point_of_offline(server, engine, speech):
    import asyncio

    references, offline, streamed = [], [], []
    for item_id in WER_FILES:
        pcm, rate = read_pcm16(speech[item_id]["path"])
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
        segments, _ = asyncio.run(engine.transcribe_file(audio, DecodeOptions(language="en")))
        references.append(normalize(speech[item_id]["text"]))
        offline.append(normalize(" ".join(segment.text for segment in segments)))
        streamed.append(normalize(stream_text(server.address, pcm, rate, language="en")))
    offline_wer, streaming_wer = jiwer.wer(references, offline), jiwer.wer(references, streamed)
    print(f"WER offline {offline_wer:.2%}, streaming {streaming_wer:.2%}")
    assert streaming_wer <= offline_wer + 0.01, list(zip(streamed, offline))


@pytest.mark.parametrize("kind", ["silence", "noise"])
def test_thirty_seconds_of_silence_or_noise_give_no_text(server, kind):
    rng = np.random.default_rng(7)
    samples = np.zeros(30 * 16000) if kind == "silence" else rng.normal(0, 10 ** (-30 / 20), 30 * 16000)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    assert stream_text(server.address, pcm, 16000, speed=50) == ""


@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_sample_rates_are_resampled(server, speech, rate):
    import soxr

    item = speech["jfk_inaugural_1961"]
    pcm, source_rate = read_pcm16(item["path"])
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    converted = (soxr.resample(samples, source_rate, rate) * 32767).astype("<i2").tobytes()
    assert wer(item["text"], stream_text(server.address, converted, rate)) <= 0.15


@pytest.mark.parametrize("file_format", ["FLAC", "WAV", "OGG", "MP3"])
def test_transcribe_file_reads_common_formats(server, speech, tmp_path, file_format):
    item = speech["jfk_inaugural_1961"]
    samples, rate = soundfile.read(item["path"], dtype="float32")
    path = tmp_path / f"jfk.{file_format.lower()}"
    soundfile.write(path, samples, rate, format=file_format)
    with Client([server.address]) as client:
        transcript = client.transcribe_file(path)
    assert wer(item["text"], transcript.text) <= 0.1
    assert transcript.duration_s == pytest.approx(11.0, abs=0.1) and transcript.language == "en"
    words = [word for segment in transcript.segments for word in segment.words]
    assert words and all(word.end_s >= word.start_s for word in words)


def test_language_must_suit_the_model(server):
    pcm = io.BytesIO(b"\0" * 3200).getvalue()
    with Client([server.address]) as client:
        for language in ("fr", "xx"):
            with pytest.raises(InvalidRequestError, match="English-only"):
                list(client.stream(iter([pcm]), language=language))


def test_sigterm_drains_and_exits_in_time(speech):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "transcriber_server", "--port", str(port), "--host", "127.0.0.1",
                                "--grace-s", "4"], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            grpc.channel_ready_future(channel).result(timeout=60)
            pcm, rate = read_pcm16(speech["ljspeech_LJ023-0051_0058_paragraph"]["path"])
            finals: list[str] = []
            with Client([address]) as client:
                updates = client.stream(chunked(pcm, rate, realtime=True), language="en")
                for update in updates:
                    if update.is_final:
                        finals.append(update.text)
                    if len(finals) >= 2:
                        break
                process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                time.sleep(0.3)
                assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
                with pytest.raises(EndpointUnavailableError):
                    list(client.stream(iter([b"\0" * 3200])))
                with pytest.raises(EndpointUnavailableError, match="shutting down"):
                    for update in updates:  # the in-flight stream goes on, then ends with its finals sent
                        if update.is_final:
                            finals.append(update.text)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - signalled < 10
        assert len(finals) > 2
    finally:
        process.kill()
        process.wait()
