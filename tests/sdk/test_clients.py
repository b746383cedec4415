"""One scenario table, run on Client and AsyncClient against loopback servers with the fake engine:
balancing, refusals, failover mid-stream with replay, drain, rollover, auth and local checks."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from transcriber_sdk import (AsyncClient, AuthenticationError, Client, DeadlineExceededError,
                             EndpointUnavailableError, InvalidRequestError,
                             ServerError, StreamCancelledError, Transcript, TranscriptUpdate, chunked)
from transcriber_sdk._core import StreamOptions, channel_target
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc
from transcriber_server.errors import Draining
from transcriber_server.settings import ServerSettings

from ..conftest import ServerThread
from ..fakes import FakeEngine, word_audio, words_of
from ..server.test_servicer import open_stream, wait_for

WORDS = [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9, 0, 4, 5]


def collect(kind: str, endpoints: list[str], chunks: object, **settings: object) -> list[TranscriptUpdate]:
    """Runs one stream to its end with the blocking or the asyncio client."""
    if kind == "sync":
        with Client(endpoints, **settings) as client:
            return list(client.stream(chunks))  # type: ignore[arg-type]

    async def run() -> list[TranscriptUpdate]:
        async with AsyncClient(endpoints, **settings) as client:
            return [update async for update in client.stream(chunks)]  # type: ignore[arg-type]
    return asyncio.run(run())


def transcribe(kind: str, endpoints: list[str], path: object) -> Transcript:
    """Transcribes one file with the blocking or the asyncio client."""
    if kind == "sync":
        with Client(endpoints) as client:
            return client.transcribe_file(path)  # type: ignore[arg-type]

    async def run() -> Transcript:
        async with AsyncClient(endpoints) as client:
            return await client.transcribe_file(path)  # type: ignore[arg-type]
    return asyncio.run(run())


def final_words(updates: list[TranscriptUpdate]) -> list[int]:
    return words_of(" ".join(update.text for update in updates if update.is_final))


def paced(pcm: bytes, speed: float = 8.0, at_chunk: int | None = None,
          action: Callable[[], None] | None = None) -> Iterator[bytes]:
    """Audio at `speed` times real time; runs `action` once after `at_chunk` chunks."""
    for index, chunk in enumerate(chunked(pcm, 16_000, realtime=True, speed=speed)):
        if index == at_chunk and action is not None:
            action()
        yield chunk


def moved(caplog: pytest.LogCaptureFixture) -> bool:
    return any("continuing on another endpoint" in record.getMessage() for record in caplog.records)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def servers() -> Iterator[list[ServerThread]]:
    started = [ServerThread(ServerSettings(max_streams=4), FakeEngine()) for _ in range(4)]
    yield started
    for server in started:
        server.stop(0.1)


def test_concurrent_streams_are_spread_evenly(kind, servers):
    addresses = [server.address for server in servers]
    pcm = word_audio([1, 2, 3, 4])
    if kind == "sync":
        with Client(addresses) as client:
            results: list[list[TranscriptUpdate]] = [[] for _ in range(8)]
            threads = [threading.Thread(target=lambda slot=slot: slot.extend(client.stream(paced(pcm, speed=2))))
                       for slot in results]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    else:
        async def run() -> list[list[TranscriptUpdate]]:
            async with AsyncClient(addresses) as client:
                async def one() -> list[TranscriptUpdate]:
                    return [update async for update in client.stream(paced(pcm, speed=2))]
                return list(await asyncio.gather(*(one() for _ in range(8))))
        results = asyncio.run(run())
    assert all(final_words(updates) == [1, 2, 3, 4] for updates in results)
    spread = Counter(updates[0].endpoint for updates in results)
    assert sorted(spread.values()) == [2, 2, 2, 2], spread


def test_a_stream_refused_as_busy_goes_elsewhere_with_all_its_audio(kind, caplog):
    busy = ServerThread(ServerSettings(max_streams=1), FakeEngine())
    free = ServerThread(ServerSettings(), FakeEngine())
    stop = threading.Event()
    channel, held = open_stream(busy.address, stop)  # takes the busy server's only slot
    try:
        assert wait_for(lambda: busy.app.servicer.admission.active == 1)
        for _ in range(12):  # ties go at random: until the busy one was picked first
            updates = collect(kind, [busy.address, free.address], chunked(word_audio(WORDS), 16_000))
            assert final_words(updates) == WORDS
            assert {update.endpoint for update in updates} == {free.address}
            if moved(caplog):
                break
        assert moved(caplog), "the busy endpoint was never tried"
    finally:
        stop.set()
        list(held)
        channel.close()
        busy.stop()
        free.stop()


def test_all_endpoints_down_names_each_one_promptly(kind):
    started = time.monotonic()
    with pytest.raises(EndpointUnavailableError) as raised:
        collect(kind, ["127.0.0.1:1", "127.0.0.1:2"], [b"\0" * 3200], timeout_s=30)
    assert time.monotonic() - started < 5
    assert "127.0.0.1:1:" in str(raised.value) and "127.0.0.1:2:" in str(raised.value)
    assert "onnect" in str(raised.value)  # why: the connection was refused


@pytest.mark.parametrize("fault", ["killed", "drained"])
def test_a_stream_whose_endpoint_dies_continues_elsewhere_without_loss_or_repeat(kind, fault, caplog):
    first = ServerThread(ServerSettings(), FakeEngine())
    second = ServerThread(ServerSettings(), FakeEngine())
    by_address = {first.address: first, second.address: second}
    pcm = word_audio(WORDS, pauses={5: 0.8})  # a pause settles the first words as final

    def end_the_carrier() -> None:
        carrier = next(server for server in by_address.values() if server.app.servicer.admission.active)
        if fault == "killed":  # every call cut at once, as when the process dies
            carrier.call(carrier.app.server.stop(None))
        else:
            carrier.begin_stop(0.5)  # SIGTERM: settles what it has, then UNAVAILABLE

    caplog.set_level(logging.WARNING, logger="transcriber_sdk")
    try:
        updates = collect(kind, list(by_address), paced(pcm, at_chunk=40, action=end_the_carrier))
    finally:
        first.stop(0.1)
        second.stop(0.1)
    assert final_words(updates) == WORDS
    assert len({update.endpoint for update in updates if update.is_final}) == 2, "no failover happened"
    starts = [update.start_s for update in updates if update.is_final]
    assert starts == sorted(starts), "offsets go back after the failover"
    assert moved(caplog)


def test_a_long_call_rolls_over_at_a_final_without_loss(kind, fake_server, caplog):
    caplog.set_level(logging.INFO, logger="transcriber_sdk")
    pcm = word_audio(WORDS, pauses={3: 0.8, 7: 0.8, 11: 0.8})
    updates = collect(kind, [fake_server.address], paced(pcm, speed=4), rollover_s=0.5)
    assert final_words(updates) == WORDS
    assert sum("moves to a new call" in record.message for record in caplog.records) >= 2


def test_an_internal_error_in_band_moves_the_stream_once(kind, caplog):
    broken = ServerThread(ServerSettings(), FailingEngine())
    good = ServerThread(ServerSettings(), FakeEngine())
    try:
        for _ in range(12):  # until the broken one was picked first
            updates = collect(kind, [broken.address, good.address], chunked(word_audio(WORDS), 16_000))
            assert final_words(updates) == WORDS
            if moved(caplog):
                break
        assert moved(caplog), "the broken endpoint was never tried"
    finally:
        broken.stop()
        good.stop()


def test_a_token_is_sent_and_a_missing_one_is_refused_without_failover(kind):
    guarded = ServerThread(replace(ServerSettings(), auth_token="s3cret"), FakeEngine())
    try:
        updates = collect(kind, [guarded.address], chunked(word_audio([1, 2]), 16_000), token="s3cret")
        assert final_words(updates) == [1, 2]
        with pytest.raises(AuthenticationError, match="missing bearer token"):
            collect(kind, [guarded.address], chunked(word_audio([1, 2]), 16_000), token="")
        with pytest.raises(AuthenticationError, match="invalid bearer token"):
            collect(kind, [guarded.address], chunked(word_audio([1, 2]), 16_000), token="wrong")
    finally:
        guarded.stop()


def test_an_oversized_chunk_is_refused_before_sending(kind, fake_server):
    with pytest.raises(InvalidRequestError, match="limit is 1048576"):
        collect(kind, [fake_server.address], iter([word_audio([1]), b"\0" * (2 << 20)]))


def test_the_callers_own_error_comes_through(kind, fake_server):
    def broken() -> Iterator[bytes]:
        yield word_audio([1])
        raise OSError("microphone unplugged")

    with pytest.raises(OSError, match="microphone unplugged"):
        collect(kind, [fake_server.address], broken())


def test_a_caller_that_stops_early_frees_the_server_slot(kind, fake_server):
    pcm = word_audio(WORDS)
    if kind == "sync":
        with Client([fake_server.address]) as client:
            for _ in client.stream(paced(pcm, speed=2)):
                break
    else:
        async def run() -> None:
            async with AsyncClient([fake_server.address]) as client:
                stream = client.stream(paced(pcm, speed=2))
                async for _ in stream:
                    break
                await stream.aclose()
        asyncio.run(run())
    assert wait_for(lambda: fake_server.app.servicer.admission.active == 0)


def test_files_fail_over_too(kind, tmp_path):
    import numpy as np
    import soundfile

    path = tmp_path / "words.wav"
    soundfile.write(path, np.frombuffer(word_audio(WORDS), "<i2"), 16_000)
    server = ServerThread(ServerSettings(), FakeEngine())
    try:
        transcript = transcribe(kind, ["127.0.0.1:1", server.address], path)
    finally:
        server.stop()
    assert words_of(transcript.text) == WORDS


@pytest.mark.parametrize("endpoint, target", [
    ("127.0.0.1:8080", ("127.0.0.1:8080", False)),
    ("https://transcriber-slim-1-abc.a.run.app", ("transcriber-slim-1-abc.a.run.app:443", True)),
    ("https://host.example:8443/", ("host.example:8443", True)),
])
def test_endpoint_forms(endpoint, target):
    assert channel_target(endpoint) == target


def test_other_schemes_are_refused():
    with pytest.raises(ValueError, match="host:port"):
        channel_target("http://host:80")


class FailingEngine(FakeEngine):
    """Fails every decode with `error`: a RuntimeError makes the server answer INTERNAL (in band); a
    Draining, UNAVAILABLE after admission, as if the server were going away."""

    def __init__(self, error: Exception = RuntimeError("decoder broke")) -> None:
        super().__init__()
        self.error = error

    async def transcribe(self, audio, options, due_at=None):  # type: ignore[no-untyped-def]
        raise self.error


def test_internal_errors_everywhere_end_the_stream_after_one_move(kind):
    broken = [ServerThread(ServerSettings(), FailingEngine()) for _ in range(3)]
    try:
        with pytest.raises(ServerError, match="internal error"):
            collect(kind, [server.address for server in broken], chunked(word_audio(WORDS), 16_000))
        assert sum(server.app.servicer.admission.active for server in broken) == 0
    finally:
        for server in broken:
            server.stop()


def test_a_file_over_the_unary_limit_is_streamed_instead(kind, fake_server, tmp_path, monkeypatch):
    import numpy as np
    import soundfile

    from transcriber_sdk import _async_client

    path = tmp_path / "long.wav"
    soundfile.write(path, np.frombuffer(word_audio(WORDS, pauses={7: 0.8}), "<i2"), 16_000)
    monkeypatch.setattr(_async_client, "MAX_FILE_BYTES", 1000)
    transcript = transcribe(kind, [fake_server.address], path)
    assert words_of(transcript.text) == WORDS
    assert len(transcript.segments) >= 2 and transcript.duration_s > 7


class SlowFileEngine(FakeEngine):
    """Takes 0.2 s per file, so a batch keeps several calls in flight; counts its files."""

    def __init__(self) -> None:
        super().__init__()
        self.files = 0

    async def transcribe_file(self, audio, options):  # type: ignore[no-untyped-def]
        self.files += 1
        await asyncio.sleep(0.2)
        return await super().transcribe_file(audio, options)


def test_a_batch_of_files_is_spread_evenly(tmp_path):
    import numpy as np
    import soundfile

    engines = [SlowFileEngine() for _ in range(4)]
    servers = [ServerThread(ServerSettings(), engine) for engine in engines]
    paths = []
    for index in range(16):
        paths.append(tmp_path / f"file{index}.wav")
        soundfile.write(paths[-1], np.frombuffer(word_audio([index % 10]), "<i2"), 16_000)

    async def run() -> list[str]:
        async with AsyncClient([server.address for server in servers]) as client:
            jobs = asyncio.Semaphore(8)

            async def one(path) -> str:  # type: ignore[no-untyped-def]
                async with jobs:
                    return (await client.transcribe_file(path)).text
            return list(await asyncio.gather(*(one(path) for path in paths)))
    try:
        texts = asyncio.run(run())
    finally:
        for server in servers:
            server.stop()
    assert [words_of(text) for text in texts] == [[index % 10] for index in range(16)]
    assert sorted(engine.files for engine in engines) in ([4, 4, 4, 4], [3, 4, 4, 5]), [e.files for e in engines]


def test_audio_that_fails_every_endpoint_does_not_go_round_for_ever(kind):
    servers = [ServerThread(ServerSettings(), FailingEngine(Draining("decoder lost its GPU"))) for _ in range(2)]
    try:
        started = time.monotonic()
        with pytest.raises(EndpointUnavailableError, match="no endpoint could take the stream") as raised:
            collect(kind, [server.address for server in servers], chunked(word_audio(WORDS), 16_000))
        assert time.monotonic() - started < 5
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        for server in servers:
            server.stop()


def test_closing_the_client_under_an_open_stream_raises_a_typed_error(kind, fake_server):
    pcm = word_audio(WORDS * 4)
    if kind == "sync":
        client = Client([fake_server.address])
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                list(client.stream(paced(pcm, speed=1)))
            except BaseException as error:  # noqa: B036 - the test inspects whatever came out
                errors.append(error)

        worker = threading.Thread(target=consume)
        worker.start()
        assert wait_for(lambda: fake_server.app.servicer.admission.active == 1)
        client.close()
        worker.join(10)
        assert not worker.is_alive() and len(errors) == 1 and isinstance(errors[0], StreamCancelledError), errors
    else:
        async def run() -> BaseException:
            client = AsyncClient([fake_server.address])

            async def consume() -> None:
                async for _ in client.stream(paced(pcm, speed=1)):
                    pass
            task = asyncio.ensure_future(consume())
            while fake_server.app.servicer.admission.active == 0:
                await asyncio.sleep(0.02)
            await client.aclose()
            try:
                await task
            except BaseException as error:  # noqa: B036
                return error
            raise AssertionError("the stream went on after aclose()")
        error = asyncio.run(run())
        assert isinstance(error, StreamCancelledError) and error.code == grpc.StatusCode.CANCELLED, repr(error)
    assert wait_for(lambda: fake_server.app.servicer.admission.active == 0)


class AbortingServer:
    """A server that admits a stream, then (after `abort_after_s`) ends it with `code` and no in-band status,
    and fails every file the same way; its health service answers `health`, or never (None: a black hole).
    INTERNAL "Internal error from Core" is what grpc.aio reports when a connection dies mid-write;
    CANCELLED is what a shutting-down server gives the calls it has not started (grpc/grpc#41785)."""

    class Servicer(pb_grpc.TranscriberServicer):
        def __init__(self, abort_after_s: float, code: grpc.StatusCode, details: str) -> None:
            self._abort_after_s, self._code, self._details = abort_after_s, code, details

        async def StreamingTranscribe(self, request_iterator, context):  # type: ignore[no-untyped-def]
            await context.read()
            yield pb.StreamingTranscribeResponse(model="bare", server_status=pb.ServerStatus(max_streams=1))
            await asyncio.sleep(self._abort_after_s)
            await context.abort(self._code, self._details)

        async def Transcribe(self, request, context):  # type: ignore[no-untyped-def]
            await context.abort(self._code, self._details)

    class SilentHealth(health_pb2_grpc.HealthServicer):
        async def Check(self, request, context):  # type: ignore[no-untyped-def]
            await asyncio.sleep(3600)

    def __init__(self, health: int | None, abort_after_s: float = 0.0,
                 code: grpc.StatusCode = grpc.StatusCode.INTERNAL, details: str = "Internal error from Core") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        servicer = self.Servicer(abort_after_s, code, details)
        self.server, port = asyncio.run_coroutine_threadsafe(self._start(health, servicer), self.loop).result(10)
        self.address = f"127.0.0.1:{port}"

    async def _start(self, status: int | None, servicer: pb_grpc.TranscriberServicer) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        pb_grpc.add_TranscriberServicer_to_server(servicer, server)
        checker = health.aio.HealthServicer() if status is not None else self.SilentHealth()
        if status is not None:
            await checker.set("", status)
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.mark.parametrize("health_status, moves", [(health_pb2.HealthCheckResponse.NOT_SERVING, True),
                                                  (health_pb2.HealthCheckResponse.SERVING, False)])
def test_a_bare_internal_moves_the_stream_only_when_the_endpoint_fails_its_health_check(kind, health_status, moves,
                                                                                       caplog):
    bare = AbortingServer(health_status)
    good = ServerThread(ServerSettings(), FakeEngine())
    try:
        for _ in range(12):  # until the bare one was picked first
            try:
                updates = collect(kind, [bare.address, good.address], chunked(word_audio(WORDS), 16_000))
            except ServerError as error:
                assert not moves and "Internal error from Core" in str(error)
                break
            assert final_words(updates) == WORDS
            if moved(caplog):
                assert moves and "no longer passes its health check" in caplog.text
                break
        else:
            raise AssertionError("the bare endpoint was never tried")
    finally:
        bare.stop()
        good.stop()


def test_the_health_check_after_a_failure_keeps_to_the_calls_deadline(kind):
    """A bare INTERNAL just before the deadline, from an endpoint whose health check never answers: the
    caller gets DEADLINE_EXCEEDED at its deadline, not a probe timeout later (EndpointUnavailableError)."""
    bare = AbortingServer(None, abort_after_s=1.5)
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            collect(kind, [bare.address], paced(word_audio(WORDS), speed=1.0), timeout_s=2.0, probe_timeout_s=2.0)
        assert time.monotonic() - started < 2.5
    finally:
        bare.stop()


def test_a_call_the_server_cancelled_goes_to_another_endpoint(kind, caplog, tmp_path):
    """CANCELLED that the caller did not ask for comes from a server shutting down (grpc/grpc#41785): the
    stream and the file both go on elsewhere, every word kept."""
    import numpy as np
    import soundfile

    path = tmp_path / "words.wav"
    soundfile.write(path, np.frombuffer(word_audio(WORDS), "<i2"), 16_000)
    cancelling = AbortingServer(health_pb2.HealthCheckResponse.SERVING, code=grpc.StatusCode.CANCELLED,
                                details="CANCELLED")
    good = ServerThread(ServerSettings(), FakeEngine())
    try:
        for _ in range(12):  # until the cancelling one was picked first
            assert final_words(collect(kind, [cancelling.address, good.address],
                                       chunked(word_audio(WORDS), 16_000))) == WORDS
            if moved(caplog):
                break
        else:
            raise AssertionError("the cancelling endpoint was never tried")
        caplog.clear()
        for _ in range(12):
            assert words_of(transcribe(kind, [cancelling.address, good.address], path).text) == WORDS
            if "trying another endpoint" in caplog.text:
                assert "cancelled the call" in caplog.text
                break
        else:
            raise AssertionError("the cancelling endpoint was never tried with a file")
    finally:
        cancelling.stop()
        good.stop()


@pytest.mark.parametrize("language, code, alternatives", [
    (None, "", []), ("ru", "ru", []), ("ru, en", "ru", ["en"]), (["de", "fr", "en"], "de", ["fr", "en"]), ("", "", []),
])
def test_a_language_list_becomes_the_code_and_its_alternatives(language, code, alternatives):
    config = StreamOptions(language=language).to_config()
    assert config.language_code == code and list(config.alternative_language_codes) == alternatives
