"""Faults with real server processes (fake engine): a flood of streams, SIGTERM drain, kill -9 of one of four
endpoints. The same faults with the real model are in tests/e2e/test_failover.py."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from transcriber_sdk import AsyncClient, TranscriptUpdate, chunked
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc

from ..conftest import ServerProcess
from ..fakes import word_audio, words_of
from .test_contract import reason_of

WORDS = [3, 14, 15, 9, 2, 6, 5, 3, 5, 8, 9, 7]
CHUNK_S = 0.1


def fake_server(*flags: str) -> ServerProcess:
    return ServerProcess("--grace-s", "8", *flags, module="tests.fake_server")


async def paced_stream(address: str, pcm: bytes, speed: float = 1.0) -> tuple[list[float], list[int], grpc.StatusCode]:
    """One raw stream paced at `speed`; returns the final lag of each word (from sending the chunk that
    completes it to receiving its final), the final words and the status."""
    sent_at: list[float] = []  # when the audio up to (index + 1) chunks had been sent

    async def requests() -> AsyncIterator[pb.StreamingTranscribeRequest]:
        yield pb.StreamingTranscribeRequest(config=pb.StreamingConfig(enable_word_time_offsets=True))
        step = int(32_000 * CHUNK_S)
        started = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(started + index * CHUNK_S / speed - time.monotonic(), 0))
            yield pb.StreamingTranscribeRequest(audio=pcm[offset: offset + step])
            sent_at.append(time.monotonic())

    lags: list[float] = []
    words: list[int] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.TranscriberStub(channel).StreamingTranscribe(requests(), timeout=60)
        try:
            async for response in call:
                for result in response.results:
                    if result.is_final:
                        for word in result.words:
                            end_chunk = int(word.end_offset.ToNanoseconds() / 1e9 / CHUNK_S)
                            lags.append(time.monotonic() - sent_at[min(end_chunk, len(sent_at) - 1)])
                        words += words_of(result.transcript)
        except grpc.aio.AioRpcError as error:
            return lags, words, error.code()
    return lags, words, grpc.StatusCode.OK


async def refused_after(address: str) -> tuple[float, str, float | None]:
    """Opens a stream and returns how long the refusal took, its reason and RetryInfo delay."""
    started = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.TranscriberStub(channel).StreamingTranscribe(
            iter([pb.StreamingTranscribeRequest(config=pb.StreamingConfig())]), timeout=10)
        async for response in call:
            if response.HasField("error"):
                return time.monotonic() - started, *reason_of(response.error)
    return time.monotonic() - started, "admitted", None


def test_flood_of_ten_times_the_limit_is_refused_at_once_and_spares_the_admitted_streams():
    server = fake_server("--max-streams", "4")
    pcm = word_audio(WORDS)
    try:
        async def run(flood: bool) -> tuple[list[float], list[list[int]], list[tuple[float, str, float | None]]]:
            admitted = [asyncio.create_task(paced_stream(server.address, pcm)) for _ in range(4)]
            refusals: list[tuple[float, str, float | None]] = []
            if flood:
                await asyncio.sleep(2.0)  # mid-stream: the four streams hold every slot
                refusals = list(await asyncio.gather(*(refused_after(server.address) for _ in range(40))))
            results = await asyncio.gather(*admitted)
            assert all(code == grpc.StatusCode.OK for _, _, code in results)
            return [lag for lags, _, _ in results for lag in lags], [words for _, words, _ in results], refusals

        quiet_lags, quiet_words, _ = asyncio.run(run(flood=False))
        flood_lags, flood_words, refusals = asyncio.run(run(flood=True))
    finally:
        server.kill()
    assert quiet_words == flood_words == [WORDS] * 4
    assert {reason for _, reason, _ in refusals} == {"SERVER_AT_CAPACITY"}
    assert {retry for _, _, retry in refusals} == {2.0}
    refusal_s = sorted(seconds for seconds, _, _ in refusals)
    assert refusal_s[int(0.99 * len(refusal_s))] < 0.1, f"refusals took up to {refusal_s[-1]:.3f} s"
    quiet, flooded = statistics.median(quiet_lags), statistics.median(flood_lags)
    print(f"final lag median {quiet:.3f} s quiet, {flooded:.3f} s under the flood; refusal p99 "
          f"{refusal_s[int(0.99 * len(refusal_s))] * 1000:.0f} ms")
    assert flooded <= quiet * 1.10 + 0.02, f"admitted streams slowed from {quiet:.3f} s to {flooded:.3f} s"


def test_sigterm_drains_within_ten_seconds_and_flushes_the_stream_in_flight():
    server = fake_server()
    pcm = word_audio(WORDS * 2)  # about 11 s at real time: longer than the grace period
    try:
        async def run() -> tuple[float, float, tuple[float, str, float | None], tuple[list[float], list[int], grpc.StatusCode]]:
            in_flight = asyncio.create_task(paced_stream(server.address, pcm))
            await asyncio.sleep(1.5)
            async with grpc.aio.insecure_channel(server.address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                os.kill(server.process.pid, signal.SIGTERM)
                signalled = time.monotonic()
                while (await health.Check(health_pb2.HealthCheckRequest(), timeout=2)).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    await asyncio.sleep(0.005)
                not_serving_s = time.monotonic() - signalled
                refusal = await refused_after(server.address)
            result = await in_flight
            exit_code = await asyncio.to_thread(server.process.wait, 15)
            assert exit_code == 0
            return not_serving_s, time.monotonic() - signalled, refusal, result

        not_serving_s, exited_s, refusal, (_, words, code) = asyncio.run(run())
    finally:
        server.kill()
    assert not_serving_s < 0.1
    assert refusal[1] == "DRAINING"
    assert exited_s < 10
    assert code == grpc.StatusCode.UNAVAILABLE  # the stream was longer than the grace period
    assert words and words == (WORDS * 2)[: len(words)], "the finals sent before the drain are not a prefix"
    print(f"NOT_SERVING after {not_serving_s * 1000:.0f} ms, exit after {exited_s:.1f} s, "
          f"{len(words)} words settled before the stream ended")


def test_kill_9_of_one_of_four_endpoints_moves_its_streams_within_two_seconds():
    servers = [fake_server() for _ in range(4)]
    by_address = {server.address: server for server in servers}
    pcm = word_audio(WORDS * 2)
    try:
        async def run() -> tuple[list[list[tuple[float, TranscriptUpdate]]], str, float, list[tuple[float, str]], float]:
            async with AsyncClient(list(by_address)) as client:
                calls: list[tuple[float, str]] = []
                first_failure: dict[str, float] = {}
                started, failed = client._balancer.started, client._balancer.failed

                def record_start(endpoint: str) -> None:
                    calls.append((time.monotonic(), endpoint))
                    started(endpoint)

                def record_failure(endpoint: str, *args: object) -> None:
                    first_failure.setdefault(endpoint, time.monotonic())
                    failed(endpoint, *args)  # type: ignore[arg-type]

                client._balancer.started, client._balancer.failed = record_start, record_failure  # type: ignore[method-assign]

                async def one() -> list[tuple[float, TranscriptUpdate]]:
                    return [(time.monotonic(), update) async for update in client.stream(paced(pcm, 2.0))]
                streams = [asyncio.create_task(one()) for _ in range(8)]
                await asyncio.sleep(1.5)
                victim = max(by_address, key=lambda address: sum(1 for _, endpoint in calls if endpoint == address))
                os.kill(by_address[victim].process.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                await asyncio.sleep(0.5)
                later = [asyncio.create_task(one()) for _ in range(4)]  # new streams after the failure
                results = await asyncio.gather(*streams, *later)
                return results, victim, killed_at, calls, first_failure.get(victim, float("inf"))

        results, victim, killed_at, calls, failed_at = asyncio.run(run())
    finally:
        for server in servers:
            server.kill()
    for updates in results:
        assert words_of(" ".join(update.text for _, update in updates if update.is_final)) == WORDS * 2
    moved = [updates for updates in results if any(update.endpoint == victim for _, update in updates)]
    assert moved, "no stream was on the killed endpoint"
    resumed_s = [min(at for at, update in updates if update.endpoint != victim and at > killed_at) - killed_at
                 for updates in moved]
    assert max(resumed_s) < 2.0, f"streams resumed after {resumed_s}"
    assert failed_at - killed_at < 1.0
    assert not [endpoint for at, endpoint in calls if endpoint == victim and at > failed_at], \
        "a call went to the dead endpoint after it failed"
    print(f"{len(moved)} streams moved; first update elsewhere after {max(resumed_s):.3f} s at most")


async def paced(pcm: bytes, speed: float) -> AsyncIterator[bytes]:
    """Real-time pacing without a thread per stream (the SDK pulls a blocking iterator in a worker thread)."""
    started = time.monotonic()
    for index, chunk in enumerate(chunked(pcm, 16_000, chunk_s=CHUNK_S)):
        await asyncio.sleep(max(started + index * CHUNK_S / speed - time.monotonic(), 0))
        yield chunk
