"""The servicer on a real loopback server with the FakeEngine: contract, bad input, admission, cleanup."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from transcriber_sdk import Client, InvalidRequestError, chunked
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc

from ..fakes import word_audio, words_of

WORDS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]


def config(**fields: object) -> pb.StreamingTranscribeRequest:
    values = {"sample_rate_hertz": 16000, "interim_results": True, "enable_word_time_offsets": True, **fields}
    return pb.StreamingTranscribeRequest(config=pb.StreamingConfig(**values))


def audio_requests(pcm: bytes, chunk_bytes: int = 3200) -> Iterator[pb.StreamingTranscribeRequest]:
    for offset in range(0, len(pcm), chunk_bytes):
        yield pb.StreamingTranscribeRequest(audio=pcm[offset: offset + chunk_bytes])


def call(address: str, requests: Iterator[pb.StreamingTranscribeRequest] | list[pb.StreamingTranscribeRequest],
         timeout_s: float = 30) -> tuple[list[pb.StreamingTranscribeResponse], grpc.StatusCode, str]:
    """Runs one raw streaming call; returns the responses, the final status and its details."""
    with grpc.insecure_channel(address) as channel:
        responses = pb_grpc.TranscriberStub(channel).StreamingTranscribe(iter(requests), timeout=timeout_s)
        received = []
        try:
            for response in responses:
                received.append(response)
        except grpc.RpcError as error:
            return received, error.code(), error.details()
        return received, grpc.StatusCode.OK, ""


def finals(responses: list[pb.StreamingTranscribeResponse]) -> list[pb.StreamingResult]:
    return [result for response in responses for result in response.results if result.is_final]


def test_stream_settles_every_word_once_in_order(fake_server):
    responses, code, _ = call(fake_server.address, [config(stream_id="s-1"), *audio_requests(word_audio(WORDS))])
    assert code == grpc.StatusCode.OK
    assert words_of(" ".join(result.transcript for result in finals(responses))) == WORDS
    assert all(response.stream_id == "s-1" for response in responses)
    assert responses[0].model == "fake"
    assert any(not result.is_final for response in responses for result in response.results), "no interim results"
    for response in responses:  # Google's shape: at most one final, then at most one interim
        assert len(response.results) <= 2
        assert [result.is_final for result in response.results] in ([], [True], [False], [True, False])


def test_finals_carry_increasing_offsets_and_words(fake_server):
    responses, _, _ = call(fake_server.address, [config(), *audio_requests(word_audio(WORDS))])
    words = [word for result in finals(responses) for word in result.words]
    starts = [word.start_offset.ToNanoseconds() / 1e9 for word in words]
    assert [word.word for word in words] == [f"W{WORDS[0]}"] + [f"w{number}" for number in WORDS[1:]]
    assert starts == sorted(starts)
    assert starts[0] == pytest.approx(0.2, abs=0.05)  # the 0.2 s lead-in of word_audio
    assert all(0 < word.probability <= 1 for word in words)
    assert responses[-1].audio_processed.ToNanoseconds() / 1e9 == pytest.approx(len(word_audio(WORDS)) / 32000, abs=0.1)


def test_interim_results_off_sends_finals_only(fake_server):
    responses, code, _ = call(fake_server.address, [config(interim_results=False), *audio_requests(word_audio(WORDS))])
    assert code == grpc.StatusCode.OK
    assert all(result.is_final for response in responses for result in response.results)
    assert words_of(" ".join(result.transcript for result in finals(responses))) == WORDS


def test_word_offsets_off_and_speech_events_on(fake_server):
    pcm = word_audio([1, 2, 3], pauses={2: 1.5})
    responses, _, _ = call(fake_server.address,
                           [config(enable_word_time_offsets=False, enable_voice_activity_events=True),
                            *audio_requests(pcm)])
    assert all(not result.words for result in finals(responses))
    events = [response.speech_event.type for response in responses if response.HasField("speech_event")]
    assert events[:2] == [pb.SpeechEvent.SPEECH_ACTIVITY_BEGIN, pb.SpeechEvent.SPEECH_ACTIVITY_END]


def test_odd_sized_chunks_carry_the_odd_byte(fake_server):
    pcm = word_audio(WORDS)
    even, _, _ = call(fake_server.address, [config(), *audio_requests(pcm, 3200)])
    odd, code, _ = call(fake_server.address, [config(), *audio_requests(pcm, 3201)])
    assert code == grpc.StatusCode.OK
    assert [r.transcript for r in finals(odd)] and \
        " ".join(r.transcript for r in finals(odd)) == " ".join(r.transcript for r in finals(even))


def test_resamples_other_rates(fake_server):
    import numpy as np
    import soxr

    samples = np.frombuffer(word_audio(WORDS), dtype="<i2").astype(np.float32) / 32768
    pcm_8k = (soxr.resample(samples, 16000, 8000) * 32768).astype("<i2").tobytes()
    responses, code, _ = call(fake_server.address, [config(sample_rate_hertz=8000), *audio_requests(pcm_8k, 1600)])
    assert code == grpc.StatusCode.OK
    assert words_of(" ".join(result.transcript for result in finals(responses))) == WORDS


def test_finalize_settles_before_the_stream_ends(fake_server):
    pcm = word_audio([1, 2, 3], gap_s=0.1, lead_s=0.2)
    finalized = threading.Event()
    seen: list[pb.StreamingResult] = []

    def requests() -> Iterator[pb.StreamingTranscribeRequest]:
        yield config()
        yield from audio_requests(pcm)
        yield pb.StreamingTranscribeRequest(control=pb.Control(action=pb.Control.FINALIZE))
        finalized.wait(10)  # hold the stream open until the finals came

    with grpc.insecure_channel(fake_server.address) as channel:
        for response in pb_grpc.TranscriberStub(channel).StreamingTranscribe(requests(), timeout=30):
            seen.extend(result for result in response.results if result.is_final)
            if words_of(" ".join(result.transcript for result in seen)) == [1, 2, 3]:
                finalized.set()
    assert finalized.is_set()


@pytest.mark.parametrize("requests, message_part", [
    ([pb.StreamingTranscribeRequest(audio=b"\0\0")], "first message must carry `config`"),
    ([pb.StreamingTranscribeRequest(control=pb.Control(action=pb.Control.FINALIZE))], "first message"),
    ([], "ended before its config"),
    ([config(), config()], "config may only be sent once"),
    ([config(), pb.StreamingTranscribeRequest()], "empty message"),
    ([config(), pb.StreamingTranscribeRequest(control=pb.Control())], "FINALIZE"),
    ([config(encoding=pb.AUDIO_ENCODING_UNSPECIFIED, sample_rate_hertz=4000)], "between 8000 and 48000"),
    ([config(sample_rate_hertz=96000)], "between 8000 and 48000; got 96000"),
    ([config(audio_channel_count=2)], "must be 1 (mono)"),
    ([config(encoding=7)], "encoding must be LINEAR16"),
    ([config(model="large-v3")], "this server runs 'fake'"),
    ([config(language_code="xx")], "unknown language_code"),
    ([config(language_code="en", alternative_language_codes=["fr", "xx"])], "unknown language_code 'xx'"),
    ([config(), pb.StreamingTranscribeRequest(audio=b"\0" * 32002)], "the limit is 1 s (32000 bytes at 16000 Hz)"),
])
def test_bad_input_gets_invalid_argument_in_band_and_as_status(fake_server, requests, message_part):
    responses, code, details = call(fake_server.address, requests)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message_part in details
    assert responses[-1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert message_part in responses[-1].error.message
    # The server is still healthy and serves the next stream.
    good, good_code, _ = call(fake_server.address, [config(), *audio_requests(word_audio([1, 2]))])
    assert good_code == grpc.StatusCode.OK and words_of(" ".join(r.transcript for r in finals(good))) == [1, 2]


def test_a_bad_message_read_while_a_speech_event_is_sent_still_ends_the_stream(fake_server):
    """Found by the protocol fuzzer: the reader's failure woke the loop during that write, and the wake-up
    was then cleared, so the stream hung until the client's deadline holding its slot."""
    speech = word_audio([1, 2, 3])[:9600]  # speech begins: the loop sends SPEECH_ACTIVITY_BEGIN
    for _ in range(20):
        _, code, _ = call(fake_server.address, [config(enable_voice_activity_events=True),
                                                pb.StreamingTranscribeRequest(audio=speech),
                                                pb.StreamingTranscribeRequest()], timeout_s=3)
        assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_empty_stream_ends_ok_without_results(fake_server):
    responses, code, _ = call(fake_server.address, [config()])
    assert code == grpc.StatusCode.OK
    assert not [result for response in responses for result in response.results]


def test_sdk_raises_typed_error_for_bad_input(fake_server):
    with Client([fake_server.address]) as client, pytest.raises(InvalidRequestError, match="between 8000 and 48000"):
        list(client.stream(chunked(word_audio([1]), 4000), sample_rate=4000))


def test_sdk_stream_gives_final_text(fake_server):
    with Client([fake_server.address]) as client:
        updates = list(client.stream(chunked(word_audio(WORDS), 16000)))
    assert words_of(" ".join(update.text for update in updates if update.is_final)) == WORDS
    assert all(update.end_s >= update.start_s for update in updates)


def test_bad_stream_does_not_disturb_a_good_one(fake_server, fake_engine):
    fake_engine.delay_s = 0.05  # keep the good stream busy while the bad ones fail
    outcome: dict[str, object] = {}

    def good() -> None:
        requests = [config(), *audio_requests(word_audio(WORDS * 2))]
        outcome["good"] = call(fake_server.address, requests)

    worker = threading.Thread(target=good)
    worker.start()
    for _ in range(5):
        _, code, _ = call(fake_server.address, [config(sample_rate_hertz=1)])
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    worker.join(60)
    responses, code, _ = outcome["good"]  # type: ignore[misc]
    assert code == grpc.StatusCode.OK
    assert words_of(" ".join(result.transcript for result in finals(responses))) == WORDS * 2


def open_stream(address: str, stop: threading.Event) -> tuple[grpc.Channel, object]:
    """A stream that sends its config and one chunk, then waits for `stop`."""
    def requests() -> Iterator[pb.StreamingTranscribeRequest]:
        yield config()
        yield pb.StreamingTranscribeRequest(audio=word_audio([1])[:3200])
        stop.wait(30)

    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.TranscriberStub(channel).StreamingTranscribe(requests(), timeout=30)


def wait_for(condition, timeout_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_streams_over_the_limit_are_refused_at_once(fake_server):
    stop = threading.Event()
    held = [open_stream(fake_server.address, stop) for _ in range(fake_server.app.settings.max_streams)]
    try:
        assert wait_for(lambda: fake_server.app.servicer.admission.active == len(held))
        started = time.monotonic()
        responses, code, details = call(fake_server.address, [config(), *audio_requests(word_audio([1]))])
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 1.0
        assert "at capacity (4/4 streams)" in details
        assert responses[-1].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    finally:
        stop.set()
        for channel, stream in held:
            list(stream)
            channel.close()


def test_client_disconnect_frees_its_slot_and_tasks(fake_server):
    baseline_tasks = fake_server.tasks()
    for _ in range(3):
        stop = threading.Event()
        channel, stream = open_stream(fake_server.address, stop)
        assert wait_for(lambda: fake_server.app.servicer.admission.active == 1)
        stream.cancel()  # the client goes away mid-stream
        stop.set()
        channel.close()
        assert wait_for(lambda: fake_server.app.servicer.admission.active == 0)
    assert wait_for(lambda: fake_server.tasks() <= baseline_tasks)


def test_health_serving_and_reflection(fake_server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(fake_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "transcriber.v1.Transcriber"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
                health_pb2.HealthCheckResponse.SERVING
        reply = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {service.name for service in reply.list_services_response.service}
    assert {"transcriber.v1.Transcriber", "grpc.health.v1.Health"} <= names


def test_drain_refuses_new_streams_and_flushes_the_ones_in_flight(fake_server):
    stop = threading.Event()
    pcm = word_audio(WORDS, pauses={len(WORDS) - 1: 0.3})  # the speaker paused: every word can settle
    outcome: dict[str, object] = {}

    def in_flight() -> None:
        def requests() -> Iterator[pb.StreamingTranscribeRequest]:
            yield config()
            yield from audio_requests(pcm)
            stop.wait(30)  # never half-closes: the server must end it
        outcome["in_flight"] = call(fake_server.address, requests())

    worker = threading.Thread(target=in_flight)
    worker.start()
    assert wait_for(lambda: fake_server.app.servicer.admission.active == 1)
    time.sleep(0.5)
    future = fake_server.begin_stop(grace_s=3.0)
    with grpc.insecure_channel(fake_server.address) as channel:
        assert wait_for(lambda: health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING, 1.0)
    _, code, details = call(fake_server.address, [config()])
    assert code == grpc.StatusCode.UNAVAILABLE
    future.result(10)
    worker.join(10)
    stop.set()
    responses, code, details = outcome["in_flight"]  # type: ignore[misc]
    assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details
    assert words_of(" ".join(result.transcript for result in finals(responses))) == WORDS
    assert responses[-2].settled_offset.ToNanoseconds() >= finals(responses)[-1].end_offset.ToNanoseconds()


def test_drain_mid_word_settles_at_the_last_pause(fake_server):
    stop = threading.Event()
    pcm = word_audio(WORDS, pauses={5: 0.4})
    cut = len(word_audio(WORDS[:8], pauses={5: 0.4})) + 3200  # 0.1 s into the ninth word
    outcome: dict[str, object] = {}

    def in_flight() -> None:
        def requests() -> Iterator[pb.StreamingTranscribeRequest]:
            yield config()
            yield from audio_requests(pcm[:cut])
            stop.wait(30)
        outcome["in_flight"] = call(fake_server.address, requests())

    worker = threading.Thread(target=in_flight)
    worker.start()
    assert wait_for(lambda: fake_server.app.servicer.admission.active == 1)
    time.sleep(0.5)
    fake_server.begin_stop(grace_s=3.0).result(10)
    worker.join(10)
    stop.set()
    responses, code, _ = outcome["in_flight"]  # type: ignore[misc]
    settled_s = responses[-2].settled_offset.ToNanoseconds() / 1e9
    heard = words_of(" ".join(result.transcript for result in finals(responses)))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert heard == WORDS[:len(heard)] and len(heard) >= 6, "the words before the pause settle"
    word_start_s = len(word_audio(WORDS[:8], pauses={5: 0.4})) / 32_000
    assert settled_s <= word_start_s, "the settled point must not fall inside the word being spoken"
    assert settled_s >= len(word_audio(WORDS[:6], pauses={5: 0.1})) / 32_000, "the pause after word 6 is settled"


def test_back_pressure_on_a_fast_client_followed_by_silence_does_not_stall(fake_engine):
    from dataclasses import replace

    from transcriber_server.settings import ServerSettings

    from ..conftest import ServerThread

    fake_engine.delay_s = 0.3  # a busy decoder, so the client gets far ahead of it
    server = ServerThread(replace(ServerSettings(), max_pending_audio_s=2.0), fake_engine)
    try:
        pcm = word_audio([1, 2, 3]) + b"\0" * (16000 * 2 * 10)  # speech, then 10 s of silence
        responses, code, _ = call(server.address, [config(), *audio_requests(pcm)], timeout_s=20)
        assert code == grpc.StatusCode.OK
        assert words_of(" ".join(result.transcript for result in finals(responses))) == [1, 2, 3]
    finally:
        server.stop()


def test_status_reports_model_and_load_and_the_first_response_carries_it(fake_server):
    with grpc.insecure_channel(fake_server.address) as channel:
        status = pb_grpc.TranscriberStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
    assert (status.model, status.active_streams, status.max_streams, status.draining) == \
        ("fake", 0, fake_server.app.settings.max_streams, False)
    responses, code, _ = call(fake_server.address, [config(), *audio_requests(word_audio([1, 2]))])
    assert code == grpc.StatusCode.OK
    assert responses[0].server_status.active_streams == 1
    assert not any(response.HasField("server_status") for response in responses[1:])


def test_settled_offset_never_decreases_and_moves_on_in_silence(fake_server):
    pcm = word_audio([1, 2, 3]) + b"\0" * 32_000 * 5  # words, then 5 s of silence
    responses, code, _ = call(fake_server.address, [config(), *audio_requests(pcm)])
    settled = [response.settled_offset.ToNanoseconds() / 1e9 for response in responses[1:]]
    assert code == grpc.StatusCode.OK and settled == sorted(settled)
    last_word_end = finals(responses)[-1].end_offset.ToNanoseconds() / 1e9
    assert settled[-1] > last_word_end + 3, "silence after the last word was not reported as settled"
    assert any(not response.results for response in responses[1:]), "no progress response in silence"


def test_a_token_guards_every_call_but_health(settings, fake_engine):
    from dataclasses import replace

    from ..conftest import ServerThread
    guarded = ServerThread(replace(settings, auth_token="s3cret"), fake_engine)
    try:
        with grpc.insecure_channel(guarded.address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.TranscriberStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            status = pb_grpc.TranscriberStub(channel).GetStatus(
                pb.GetStatusRequest(), timeout=5, metadata=(("authorization", "Bearer s3cret"),))
            assert status.model == "fake"
        responses, code, details = call(guarded.address, [config(), *audio_requests(word_audio([1]))])
        assert code == grpc.StatusCode.UNAUTHENTICATED and "missing bearer token" in details
        assert responses and responses[0].error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    finally:
        guarded.stop()


def test_silence_sent_faster_than_real_time_still_ends_the_stream(fake_server):
    # Regression: the input ended while a progress response was being sent, and the stream waited for ever.
    for _ in range(3):
        responses, code, _ = call(fake_server.address, [config(), *audio_requests(b"\0" * 32_000 * 30, 32_000)],
                                  timeout_s=10)
        assert code == grpc.StatusCode.OK and not finals(responses)
