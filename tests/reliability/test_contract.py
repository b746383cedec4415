"""The status contract, one test per situation: the server's code, reason and message (in band and in the
trailers, the same), and what the SDK does about it. Fake engine on loopback; the real model is not the
thing under test here."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import numpy as np
import psutil
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from transcriber_sdk import (AsyncClient, Client, StreamLimitError, TranscriptUpdate,
                             chunked)
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc
from transcriber_server.errors import IdleTimeout
from transcriber_server.session import StreamSession
from transcriber_server.settings import ServerSettings

from ..conftest import ServerThread
from ..fakes import FakeEngine, word_audio, words_of
from ..server.test_servicer import audio_requests, config, open_stream, wait_for

WORDS = [4, 8, 15, 16, 23, 2, 7, 3, 9, 12]


def reason_of(status: object) -> tuple[str, float | None]:
    """The ErrorInfo reason and RetryInfo delay (s) of a google.rpc.Status. Deliberately not the SDK's
    parser (exceptions.from_status): this checks the server's wire format on its own."""
    reason, retry_s = "", None
    for detail in status.details:  # type: ignore[attr-defined]
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_s = retry.retry_delay.ToMilliseconds() / 1000
    return reason, retry_s


def raw_call(address: str, requests: Iterator[pb.StreamingTranscribeRequest]) -> tuple[list[pb.StreamingTranscribeResponse], grpc.RpcError | None]:
    with grpc.insecure_channel(address) as channel:
        call = pb_grpc.TranscriberStub(channel).StreamingTranscribe(requests, timeout=60)
        received: list[pb.StreamingTranscribeResponse] = []
        try:
            for response in call:
                received.append(response)
        except grpc.RpcError as error:
            return received, error
        return received, None


def assert_status(responses: list[pb.StreamingTranscribeResponse], error: grpc.RpcError | None,
                  code: grpc.StatusCode, reason: str, message_part: str) -> pb.StreamingTranscribeResponse:
    """The in-band error and the call's rich status agree: code, ErrorInfo reason, message."""
    assert responses and responses[-1].HasField("error"), "no in-band error before the abort"
    in_band = responses[-1].error
    assert (in_band.code, reason_of(in_band)[0]) == (code.value[0], reason)
    assert message_part in in_band.message
    assert error is not None and error.code() == code
    trailer = rpc_status.from_call(error)
    assert trailer == in_band
    return responses[-1]


def final_words(updates: list[TranscriptUpdate]) -> list[int]:
    return words_of(" ".join(update.text for update in updates if update.is_final))


def server(**changes: object) -> ServerThread:
    return ServerThread(ServerSettings(max_streams=4, **changes), FakeEngine())  # type: ignore[arg-type]


@pytest.fixture
def idle_server() -> Iterator[ServerThread]:
    thread = server(idle_timeout_s=0.6)
    yield thread
    thread.stop()


# -- INVALID_ARGUMENT ---------------------------------------------------------------------------------------

def test_invalid_request_carries_its_reason_in_band_and_in_the_trailers(fake_server):
    responses, error = raw_call(fake_server.address, iter([config(sample_rate_hertz=44)]))
    assert_status(responses, error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST",
                  "sample_rate_hertz must be between 8000 and 48000; got 44")


def test_sdk_frames_large_caller_chunks_into_messages_the_server_accepts(fake_server):
    pcm = word_audio(WORDS)
    five_second_chunks = [pcm[offset: offset + 160_000] for offset in range(0, len(pcm), 160_000)]
    with Client([fake_server.address]) as client:
        assert final_words(list(client.stream(five_second_chunks))) == WORDS


# -- OUT_OF_RANGE: idle timeout and maximum duration --------------------------------------------------------

def test_idle_stream_gets_its_finals_then_out_of_range(idle_server):
    gate = threading.Event()

    def requests() -> Iterator[pb.StreamingTranscribeRequest]:
        yield config()
        yield from audio_requests(word_audio([1, 2, 3], pauses={2: 0.1}))  # ends just after a word
        gate.wait(10)  # then nothing: the client went quiet without closing

    started = time.monotonic()
    responses, error = raw_call(idle_server.address, requests())
    gate.set()
    last = assert_status(responses, error, grpc.StatusCode.OUT_OF_RANGE, "IDLE_TIMEOUT", "no message for 0.6 s")
    assert time.monotonic() - started < 5
    finals = [result.transcript for response in responses for result in response.results if result.is_final]
    assert words_of(" ".join(finals)) == [1, 2, 3], "the words received before the silence were not all settled"
    assert last.stream_id == ""
    assert wait_for(lambda: idle_server.app.servicer.admission.active == 0)


def test_calls_that_never_send_a_config_are_cut_at_the_idle_timeout(idle_server):
    async def silent_calls() -> list[grpc.aio.AioRpcError]:
        async with grpc.aio.insecure_channel(idle_server.address) as channel:
            stub = pb_grpc.TranscriberStub(channel)
            calls = [stub.StreamingTranscribe(timeout=10) for _ in range(4)]  # every slot, and nothing sent
            errors = []
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in call:
                        pass
                errors.append(caught.value)
            return errors

    started = time.monotonic()
    errors = asyncio.run(silent_calls())
    assert time.monotonic() - started < 5
    assert {(error.code(), reason_of(rpc_status.from_call(error))[0]) for error in errors} == \
        {(grpc.StatusCode.OUT_OF_RANGE, "IDLE_TIMEOUT")}
    assert "no config within 0.6 s" in errors[0].details()
    assert wait_for(lambda: idle_server.app.servicer.admission.active == 0)


def test_idle_stop_racing_the_clients_half_close_ends_without_a_server_error():
    """The idle timeout fires during a decode, and the client half-closes before the decode returns: the
    reader has already flushed the resampler, which must not be flushed twice (it raised RuntimeError)."""
    samples = np.frombuffer(word_audio([1, 2, 3]), dtype="<i2")[::2].tobytes()  # 8 kHz: a resampling stream
    session = StreamSession(pb.StreamingConfig(sample_rate_hertz=8000), FakeEngine(delay_s=1.0),
                            ServerSettings(idle_timeout_s=0.3))

    async def requests() -> AsyncIterator[pb.StreamingTranscribeRequest]:
        for offset in range(0, len(samples), 1600):
            yield pb.StreamingTranscribeRequest(audio=samples[offset: offset + 1600])
        await asyncio.sleep(0.6)  # idle at 0.3 s, during the first 1 s decode; then the half-close

    async def run() -> list[str]:
        finals = []
        with pytest.raises(IdleTimeout):
            async for response in session.run(requests()):
                finals += [result.transcript for result in response.results if result.is_final]
        return finals

    assert words_of(" ".join(asyncio.run(run()))) == [1, 2, 3]


def test_a_paused_producer_does_not_lose_the_stream(idle_server, kind_of_client):
    """The SDK continues a stream the server ended for idleness as soon as the caller has audio again."""
    first, second = word_audio([1, 2, 3]), word_audio([4, 5, 6])

    def audio() -> Iterator[bytes]:
        yield from chunked(first, 16_000)
        time.sleep(1.5)  # the caller has nothing for longer than the idle timeout
        yield from chunked(second, 16_000)

    updates = kind_of_client([idle_server.address], audio())
    assert final_words(updates) == [1, 2, 3, 4, 5, 6]
    offsets = [update.start_s for update in updates if update.is_final]
    assert offsets == sorted(offsets) and offsets[-1] > len(first) / 32_000


@pytest.mark.soak
def test_audio_sent_as_the_idle_timeout_fires_is_not_lost():
    """Sweeps the pause across the idle timeout: audio the caller adds after the server stopped reading but
    before its error arrived must reach the next call (it was skipped in 1 of 25 runs before the fix)."""
    slow = ServerThread(ServerSettings(max_streams=4, idle_timeout_s=0.5), FakeEngine(delay_s=0.05))

    async def stream(gap_s: float) -> list[int]:
        async def audio() -> AsyncIterator[bytes]:
            for chunk in chunked(word_audio([1, 2]), 16_000):
                yield chunk
            await asyncio.sleep(gap_s)
            for chunk in chunked(word_audio([3], lead_s=0.3), 16_000):
                yield chunk
        async with AsyncClient([slow.address]) as client:
            return final_words([update async for update in client.stream(audio())])

    try:
        for step in range(50):
            assert asyncio.run(stream(0.47 + 0.002 * step)) == [1, 2, 3], f"pause {0.47 + 0.002 * step:.3f} s"
    finally:
        slow.stop()


def test_producer_that_goes_quiet_then_ends_gets_every_word(idle_server, kind_of_client):
    def audio() -> Iterator[bytes]:
        yield from chunked(word_audio([7, 8]), 16_000)
        time.sleep(1.5)

    assert final_words(kind_of_client([idle_server.address], audio())) == [7, 8]


def test_stream_longer_than_the_limit_rolls_over_without_a_lost_word(kind_of_client):
    long_server = server(max_stream_s=1.0)
    try:
        pcm = word_audio(WORDS * 2)  # about 10 s, sent at 4x: several calls
        updates = kind_of_client([long_server.address], chunked(pcm, 16_000, realtime=True, speed=4.0))
        assert final_words(updates) == WORDS * 2
        starts = [update.start_s for update in updates if update.is_final]
        assert starts == sorted(starts)
    finally:
        long_server.stop()


def test_maximum_duration_is_out_of_range_with_the_settled_point(fake_server):
    long_server = server(max_stream_s=0.8)
    try:
        pcm = word_audio(WORDS)
        responses, error = raw_call(long_server.address, itertools.chain([config()], paced_requests(pcm, speed=2.0)))
        assert_status(responses, error, grpc.StatusCode.OUT_OF_RANGE, "MAX_STREAM_DURATION",
                      "maximum stream duration of 0.0133333 min reached; every word up to")
    finally:
        long_server.stop()


# -- RESOURCE_EXHAUSTED: capacity (busy) against the client's own limits -------------------------------------

def test_server_at_capacity_sends_retry_info_and_the_sdk_sits_it_out(fake_server):
    stop = threading.Event()
    held = [open_stream(fake_server.address, stop) for _ in range(4)]
    other = server()
    try:
        assert wait_for(lambda: fake_server.app.servicer.admission.active == 4)
        responses, error = raw_call(fake_server.address, iter([config()]))
        last = assert_status(responses, error, grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_AT_CAPACITY",
                             "server at capacity (4/4 streams)")
        assert reason_of(last.error)[1] == 2.0

        async def run() -> tuple[list[TranscriptUpdate], list[float]]:
            async with AsyncClient([fake_server.address, other.address]) as client:
                client._balancer.report(other.address, 1, 4)  # make the full server look the better pick
                sits_out_s: list[float] = []  # taken at the refusal, not after the stream
                failed = client._balancer.failed

                def record(endpoint: str, *args: object) -> None:
                    failed(endpoint, *args)  # type: ignore[arg-type]
                    sits_out_s.append(client._balancer.state(endpoint).ejected_until - time.monotonic())
                client._balancer.failed = record  # type: ignore[method-assign]
                updates = [update async for update in client.stream(chunked(word_audio([1, 2]), 16_000))]
                return updates, sits_out_s
        updates, sits_out_s = asyncio.run(run())
        assert final_words(updates) == [1, 2]
        assert {update.endpoint for update in updates} == {other.address}
        assert len(sits_out_s) == 1 and 1.9 < sits_out_s[0] <= 2.0, "the SDK ignored the server's RetryInfo (2 s)"
    finally:
        stop.set()
        for channel, stream in held:
            list(stream)
            channel.close()
        other.stop()


def test_too_many_messages_is_the_clients_bug_and_does_not_fail_over(kind_of_client):
    strict, spare = server(max_messages_per_s=20), server()
    try:
        responses, error = raw_call(strict.address, iter([config(), *audio_requests(word_audio(WORDS), 320)]))
        assert_status(responses, error, grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_MESSAGES",
                      "more than 20 messages per second: send fewer, larger audio chunks")

        def tiny_chunks() -> Iterator[bytes]:  # 10 ms chunks, paced: each goes out as its own message
            yield from chunked(word_audio(WORDS), 16_000, chunk_s=0.01, realtime=True, speed=1.0)

        with pytest.raises(StreamLimitError, match="TOO_MANY_MESSAGES|messages per second") as caught:
            kind_of_client([strict.address, spare.address], tiny_chunks(), first=strict.address)
        assert caught.value.reason == "TOO_MANY_MESSAGES"
        assert spare.app.servicer.admission.active == 0 and spare_calls(spare) == 0
    finally:
        strict.stop()
        spare.stop()


def test_sdk_merges_a_callers_tiny_chunks_to_stay_under_the_message_limit(kind_of_client):
    strict = server(max_messages_per_s=120)

    def two_ms_chunks() -> Iterator[bytes]:  # 500 chunks a second, paced at 2x real time
        yield from chunked(word_audio(WORDS), 16_000, chunk_s=0.002, realtime=True, speed=2.0)

    try:
        assert final_words(kind_of_client([strict.address], two_ms_chunks())) == WORDS
    finally:
        strict.stop()


def spare_calls(thread: ServerThread) -> int:
    """Streams the server has seen (its engine decoded something, or a session was opened)."""
    return thread.app.servicer._engine.decodes  # type: ignore[attr-defined]


def test_client_that_never_reads_is_cut_after_the_stall_timeout_and_frees_its_slot():
    stalled = server(stall_timeout_s=1.0, max_messages_per_s=100_000)
    process = psutil.Process()

    async def never_read() -> tuple[float, grpc.aio.AioRpcError | None]:
        # A word and FINALIZE, over and over: the server answers each (4 KB with the stream id echoed),
        # and the client reads none, so flow control soon blocks the server's writes.
        async def requests() -> AsyncIterator[pb.StreamingTranscribeRequest]:
            yield config(stream_id="x" * 4000)
            for _ in range(3000):
                yield pb.StreamingTranscribeRequest(audio=word_audio([1], lead_s=0.0))
                yield pb.StreamingTranscribeRequest(control=pb.Control(action=pb.Control.FINALIZE))

        async with grpc.aio.insecure_channel(stalled.address) as channel:
            call = pb_grpc.TranscriberStub(channel).StreamingTranscribe(requests(), timeout=60)
            while stalled.app.servicer.admission.active == 0:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            while stalled.app.servicer.admission.active:
                await asyncio.sleep(0.05)
            held_s = time.monotonic() - started
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError as error:
                return held_s, error
            return held_s, None

    try:
        rss_before, tasks_before = process.memory_info().rss, stalled.tasks()
        held_s, error = asyncio.run(asyncio.wait_for(never_read(), 45))
        assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, "the stream was not cut"
        assert "has not read a response for 1 s (stall timeout)" in error.details()
        assert reason_of(rpc_status.from_call(error))[0] == "CLIENT_NOT_READING"
        assert held_s < 10
        growth_mb = (process.memory_info().rss - rss_before) / 2**20
        print(f"stalled stream cut after {held_s:.1f} s; client and server grew {growth_mb:.1f} MB")
        assert growth_mb < 64, f"a stalled stream cost {growth_mb:.0f} MB"
        assert wait_for(lambda: stalled.tasks() <= tasks_before), "the stalled stream left tasks behind"
    finally:
        stalled.stop()


# -- UNAVAILABLE and INTERNAL are covered with the SDK in tests/sdk/test_clients.py; UNAUTHENTICATED here ----

def test_missing_token_is_unauthenticated_with_its_reason(fake_engine):
    guarded = ServerThread(ServerSettings(max_streams=2, auth_token="s3cret"), fake_engine)
    try:
        responses, error = raw_call(guarded.address, iter([config()]))
        assert_status(responses, error, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "missing bearer token")
    finally:
        guarded.stop()


# -- helpers -------------------------------------------------------------------------------------------------

def paced_requests(pcm: bytes, speed: float) -> Iterator[pb.StreamingTranscribeRequest]:
    for chunk in chunked(pcm, 16_000, realtime=True, speed=speed):
        yield pb.StreamingTranscribeRequest(audio=chunk)


@pytest.fixture(params=["sync", "async"])
def kind_of_client(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Runs one SDK stream to its end with Client or AsyncClient; `first` pins the first endpoint tried."""

    def run(endpoints: list[str], chunks: Iterator[bytes], first: str | None = None) -> list[TranscriptUpdate]:
        async def go() -> list[TranscriptUpdate]:
            async with AsyncClient(endpoints) as client:
                if first:
                    for endpoint in endpoints:
                        if endpoint != first:
                            client._balancer.report(endpoint, 3, 4)
                return [update async for update in client.stream(chunks)]

        if request.param == "async":
            return asyncio.run(go())
        with Client(endpoints) as client:
            if first:
                for endpoint in endpoints:
                    if endpoint != first:
                        client._client._balancer.report(endpoint, 3, 4)  # type: ignore[attr-defined]
            return list(client.stream(chunks))
    return run
