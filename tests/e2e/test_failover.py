"""Failover with the real model and real server processes: kill -9 mid-stream, SIGTERM during a batch."""

from __future__ import annotations

from collections.abc import Iterator

import asyncio
import os
import signal

import jiwer
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from transcriber_sdk import AsyncClient, Client, TranscriptUpdate, chunked, read_pcm16

from ..conftest import ServerProcess

pytestmark = pytest.mark.slow
normalize = EnglishTextNormalizer()
LONG = "ljspeech_LJ023-0051_0058_paragraph"  # 49.5 s
SPEED = 2.0
FLAGS = ("--cpu-threads", "1", "--grace-s", "6")


@pytest.fixture
def two_servers():
    servers = [ServerProcess(*FLAGS) for _ in range(2)]
    yield servers
    for server in servers:
        server.kill()


def stream_finals(endpoints: list[str], pcm: bytes, rate: int, kill_at_s: float | None = None,
                  by_address: dict[str, ServerProcess] | None = None) -> list[TranscriptUpdate]:
    """Streams the recording; when `kill_at_s` of audio has been sent, kills -9 the server carrying the stream
    (wherever its words are: mid-word as likely as in a pause)."""
    finals: list[TranscriptUpdate] = []
    carrier: list[str] = []

    def audio() -> Iterator[bytes]:
        for index, chunk in enumerate(chunked(pcm, rate, realtime=True, speed=SPEED)):
            if kill_at_s is not None and by_address is not None and round(kill_at_s / 0.1) == index:
                os.kill(by_address[carrier[-1]].process.pid, signal.SIGKILL)
            yield chunk

    with Client(endpoints) as client:
        for update in client.stream(audio(), sample_rate=rate, language="en"):
            carrier.append(update.endpoint)
            if update.is_final:
                finals.append(update)
    return finals


def measures(reference: str, finals: list[TranscriptUpdate]) -> jiwer.WordOutput:
    return jiwer.process_words(normalize(reference), normalize(" ".join(update.text for update in finals)))


def test_kill_9_mid_stream_loses_and_repeats_no_word(two_servers, speech):
    item = speech[LONG]
    pcm, rate = read_pcm16(item["path"])
    by_address = {server.address: server for server in two_servers}
    clean = measures(item["text"], stream_finals(list(by_address), pcm, rate))
    faulted_finals = stream_finals(list(by_address), pcm, rate, kill_at_s=22.0, by_address=by_address)
    faulted = measures(item["text"], faulted_finals)
    print(f"WER without fault {clean.wer:.2%}, with kill -9 at 22 s {faulted.wer:.2%}; "
          f"insertions {clean.insertions} vs {faulted.insertions}, deletions {clean.deletions} vs {faulted.deletions}")
    assert len({update.endpoint for update in faulted_finals}) == 2, "the stream did not move"
    assert faulted.wer <= clean.wer + 0.01
    assert faulted.insertions <= clean.insertions, "a word was repeated at the seam"
    starts = [update.start_s for update in faulted_finals]
    assert starts == sorted(starts) and faulted_finals[-1].end_s > 45


def test_sigterm_on_one_server_during_a_batch_loses_no_file(two_servers, speech):
    items = [speech[item_id] for item_id in sorted(speech) if item_id.startswith("dctts_")][:10]  # read speech, 3-12 s
    draining = two_servers[0]

    async def run() -> dict[str, str]:
        done: dict[str, str] = {}
        async with AsyncClient([server.address for server in two_servers]) as client:
            jobs = asyncio.Semaphore(4)

            async def one(item: dict) -> None:
                async with jobs:
                    transcript = await client.transcribe_file(item["path"], language="en")
                assert item["id"] not in done
                done[item["id"]] = transcript.text
                if len(done) == 2:  # mid-batch: Cloud Run scales the instance in
                    draining.process.send_signal(signal.SIGTERM)

            await asyncio.gather(*(one(item) for item in items))
        return done

    done = asyncio.run(run())
    assert draining.process.wait(timeout=15) == 0
    assert sorted(done) == sorted(item["id"] for item in items)
    wer = jiwer.wer([normalize(item["text"]) for item in items], [normalize(done[item["id"]]) for item in items])
    print(f"{len(items)} files, WER {wer:.2%}")
    assert wer < 0.1


