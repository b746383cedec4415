"""Protocol fuzzing of StreamingTranscribe (issue #6; reliability.md T14): random request sequences
against a real loopback server with the FakeEngine.

Each example is one call: a config with random field values (bad encodings, rates, channel counts,
languages, model names), audio chunks of 0 to 4 KB (odd sizes too, rarely more), controls with random
actions, empty messages, configs repeated or not first, small pauses, then a half-close or a cancel.

The property, per example:
  * the server's status (the in-band `error` of the last response, else the call's status) is in the
    contract: OK, INVALID_ARGUMENT, OUT_OF_RANGE, or RESOURCE_EXHAUSTED for the message rate only;
    never INTERNAL or UNKNOWN; a non-OK status always comes in band first, and only in the last response;
  * config errors (none, not first, repeated, bad field) give INVALID_ARGUMENT; a well-formed call
    (good config, audio of 1 byte to 4 KB, FINALIZE controls) ends OK;
  * responses echo the stream id, and settled offsets never decrease;
  * the server logs no error (transcriber_server, grpc and asyncio loggers);
  * afterwards its slots are free and its event loop holds no more tasks than before.

Run:
  pytest tests/fuzz/test_protocol_properties.py          # CI profile: 150 examples, derandomized, ~5 s
  pytest -m soak tests/fuzz/test_protocol_properties.py  # soak profile: 2,000 random examples, ~1 min
  (add --hypothesis-show-statistics for the mix of outcomes; -s prints the calls' total time)
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc
from transcriber_server.settings import ServerSettings

from ..conftest import ServerThread
from ..fakes import FakeEngine, word_audio

CALL_TIMEOUT_S = 8.0  # examples take well under 1 s: DEADLINE_EXCEEDED means the server hung
SETTLE_TIMEOUT_S = 3.0  # for the slot and the tasks of a finished call to go away
AUDIO_BYTES = 4096  # the chunk sizes the brief fuzzes; larger ones are drawn rarely and not judged
WATCHED_LOGGERS = ("transcriber_server", "grpc", "asyncio")
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE,
           grpc.StatusCode.RESOURCE_EXHAUSTED}
WORDS_PCM = word_audio([3, 1, 4, 1, 5, 9, 2, 6], pauses={3: 0.8})  # speech the FakeEngine hears as words
GOOD_LANGUAGES = ("", "en", "fr")  # what FakeEngine.check_language accepts
GOOD_MODELS = ("", FakeEngine.model_name)

CI = settings(max_examples=150, deadline=None, derandomize=True, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow])
SOAK = settings(max_examples=2000, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Script:
    """One call: the messages (and pauses) to send, then how the client ends it."""

    steps: tuple[pb.StreamingTranscribeRequest | Pause, ...]
    cancel_after_s: float | None = None  # None: half-close; else cancel this long after the last message

    @property
    def requests(self) -> list[pb.StreamingTranscribeRequest]:
        return [step for step in self.steps if isinstance(step, pb.StreamingTranscribeRequest)]

    def __repr__(self) -> str:
        return f"Script({', '.join(describe(step) for step in self.steps)}; cancel_after_s={self.cancel_after_s})"

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # type: ignore[no-untyped-def]
        printer.text(repr(self))  # hypothesis prints dataclasses field by field: 4 KB chunks in full


def describe(step: pb.StreamingTranscribeRequest | Pause) -> str:
    if isinstance(step, Pause):
        return f"pause {step.seconds * 1000:.0f} ms"
    kind = step.WhichOneof("request")
    if kind == "audio":
        return f"audio {len(step.audio)} B"
    if kind == "control":
        return f"control action={step.control.action}"
    if kind == "config":
        return "config{" + str(step.config).replace("\n", " ").strip() + "}"
    return "empty message"


# --- strategies -----------------------------------------------------------------------------------

def any_int32() -> st.SearchStrategy[int]:
    return st.integers(-(2 ** 31), 2 ** 31 - 1)


@st.composite
def configs(draw: st.DrawFn, good: bool | None = None) -> pb.StreamingTranscribeRequest:
    """A config; `good` True: every field valid; False: fields may be anything; None: either."""
    if good is None:
        good = draw(st.booleans())
    fields = {
        "encoding": draw(st.sampled_from([0, 1]) if good else st.one_of(st.sampled_from([0, 1, 2, 7]),
                                                                         st.integers(-3, 1000))),
        "sample_rate_hertz": draw(st.one_of(st.sampled_from([0, 8000, 11025, 16000, 22050, 44100, 48000]),
                                            st.integers(8000, 48000)) if good else
                                  st.one_of(st.sampled_from([0, 16000, 7999, 48001, -16000, 96000]), any_int32())),
        "audio_channel_count": draw(st.sampled_from([0, 1]) if good else st.one_of(st.sampled_from([0, 1, 2]),
                                                                                      any_int32())),
        "language_code": draw(st.sampled_from(GOOD_LANGUAGES) if good else
                              st.one_of(st.sampled_from([*GOOD_LANGUAGES, "xx", "EN", "en-US", "de"]),
                                        st.text(max_size=12))),
        "model": draw(st.sampled_from(GOOD_MODELS) if good else
                      st.one_of(st.sampled_from([*GOOD_MODELS, "tiny.en", "large-v3"]), st.text(max_size=12))),
        "interim_results": draw(st.booleans()),
        "enable_word_time_offsets": draw(st.booleans()),
        "enable_voice_activity_events": draw(st.booleans()),
        "prompt": draw(st.text(max_size=40)),
        "hotwords": draw(st.text(max_size=20)),
        "stream_id": draw(st.text(max_size=24)),
    }
    return pb.StreamingTranscribeRequest(config=pb.StreamingConfig(**fields))


@st.composite
def audio_chunks(draw: st.DrawFn) -> pb.StreamingTranscribeRequest:
    """Audio built from a few drawn numbers (length, pattern, seed), so 4 KB chunks stay cheap to draw."""
    if draw(st.integers(0, 19)):
        size = draw(st.one_of(st.integers(0, AUDIO_BYTES), st.sampled_from([0, 1, 2, 3, 3199, 3200, 3201, AUDIO_BYTES])))
    else:  # one chunk in twenty is larger, up to 1.25 s at 16 kHz: the chunk limit's side of the contract
        size = draw(st.integers(AUDIO_BYTES + 1, 40_000))
    pattern = draw(st.sampled_from(["random", "zeros", "speech", "extremes", "drawn"]))
    if pattern == "drawn":
        return pb.StreamingTranscribeRequest(audio=draw(st.binary(max_size=min(size, 64))))
    if pattern == "random":
        data = random.Random(draw(st.integers(0, 2 ** 32 - 1))).randbytes(size)
    elif pattern == "zeros":
        data = bytes(size)
    elif pattern == "speech":
        start = draw(st.integers(0, len(WORDS_PCM)))
        data = (WORDS_PCM * 2)[start: start + size]
    else:  # full-scale square wave: the extremes of int16
        data = (b"\xff\x7f\x00\x80" * (size // 4 + 1))[:size]
    return pb.StreamingTranscribeRequest(audio=data)


def controls() -> st.SearchStrategy[pb.StreamingTranscribeRequest]:
    actions = st.one_of(st.sampled_from([pb.Control.FINALIZE, pb.Control.ACTION_UNSPECIFIED]), any_int32())
    return actions.map(lambda action: pb.StreamingTranscribeRequest(control=pb.Control(action=action)))


@st.composite
def speech(draw: st.DrawFn) -> list[pb.StreamingTranscribeRequest]:
    """A run of consecutive chunks of speech, so the FakeEngine hears whole words and results flow."""
    chunk_bytes = draw(st.one_of(st.sampled_from([1, 3200, 3201, AUDIO_BYTES]), st.integers(64, AUDIO_BYTES)))
    start = draw(st.integers(0, len(WORDS_PCM) // 2))
    length = (len(WORDS_PCM) - start) * draw(st.integers(1, 4)) // 4  # in quarters: short runs hear no word
    pcm = WORDS_PCM[start: start + min(length, 60 * chunk_bytes)]  # 60 messages at most
    return [pb.StreamingTranscribeRequest(audio=pcm[offset: offset + chunk_bytes])
            for offset in range(0, len(pcm), chunk_bytes)]


def pauses() -> st.SearchStrategy[Pause]:
    return st.floats(0.0, 0.03).map(Pause)


def finalize() -> st.SearchStrategy[pb.StreamingTranscribeRequest]:
    return st.just(pb.StreamingTranscribeRequest(control=pb.Control(action=pb.Control.FINALIZE)))


@st.composite
def clean_steps(draw: st.DrawFn) -> list[pb.StreamingTranscribeRequest | Pause]:
    """What a well-behaved client sends after its config: runs of speech, other audio, FINALIZE, pauses."""
    count = draw(st.integers(0, 6))  # drawn first: hypothesis keeps lists short on its own
    runs = draw(st.lists(st.one_of(speech(), speech(), st.lists(audio_chunks(), min_size=1, max_size=3),
                                   finalize().map(lambda step: [step]), pauses().map(lambda step: [step])),
                         min_size=count, max_size=count))
    return sum(runs, [])


def any_step() -> st.SearchStrategy[pb.StreamingTranscribeRequest | Pause]:
    return st.one_of(
        audio_chunks(), audio_chunks(), audio_chunks(),  # mostly audio
        controls(),
        st.just(pb.StreamingTranscribeRequest()),
        configs(),
        pauses(),
    )


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    """Three shapes: a clean call, a clean call with one bad message put in, and anything at all."""
    shape = draw(st.sampled_from(["clean", "clean", "one fault", "one fault", "chaos"]))
    if shape == "chaos":
        count = draw(st.integers(0, 30))
        steps = [draw(st.one_of(configs(), any_step())), *draw(st.lists(any_step(), min_size=count, max_size=count))]
    else:
        steps = [draw(configs(good=shape == "clean" or draw(st.integers(0, 3)) > 0)), *draw(clean_steps())]
        if shape == "one fault":
            fault = draw(st.one_of(any_step(), configs(good=True), controls(),
                                   st.just(pb.StreamingTranscribeRequest(audio=b""))))
            eighths = draw(st.integers(0, 8))  # not an index: hypothesis favours 0, and chaos covers a bad start
            steps.insert(1 + (len(steps) - 1) * eighths // 8, fault)
    cancel_after_s = draw(st.one_of(st.none(), st.none(), st.none(), st.floats(0.0, 0.05)))
    return Script(steps=tuple(steps), cancel_after_s=cancel_after_s)


# --- what the contract says about a script ----------------------------------------------------------

def good_config(config: pb.StreamingConfig) -> bool:
    rate = config.sample_rate_hertz or 16000
    return (config.encoding in (0, 1) and 8000 <= rate <= 48000 and config.audio_channel_count in (0, 1)
            and config.language_code in GOOD_LANGUAGES and config.model in GOOD_MODELS)


def expected(script: Script) -> str:
    """'invalid' (must end INVALID_ARGUMENT), 'ok' (must end OK), or 'any' (only the allowed set)."""
    requests = script.requests
    if not requests or requests[0].WhichOneof("request") != "config" or not good_config(requests[0].config):
        return "invalid"
    later = [request.WhichOneof("request") for request in requests[1:]]
    if "config" in later:
        return "invalid"
    well_formed = all(
        (request.WhichOneof("request") == "audio" and 0 < len(request.audio) <= AUDIO_BYTES)
        or (request.WhichOneof("request") == "control" and request.control.action == pb.Control.FINALIZE)
        for request in requests[1:])
    return "ok" if well_formed else "any"  # empty audio, empty messages, other actions: the contract may grow


def reason_of(status: object) -> str:
    """The google.rpc.ErrorInfo reason in a status's details, or ''."""
    for detail in getattr(status, "details", []):
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def is_rate_limit(message: str, reason: str) -> bool:
    return reason == "TOO_MANY_MESSAGES" or "messages per second" in message


# --- the server and one call --------------------------------------------------------------------------

class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class FuzzServer:
    server: ServerThread
    stub: pb_grpc.TranscriberStub
    errors: ErrorRecords
    baseline_tasks: int
    examples: list[float] = field(default_factory=list, repr=False)  # seconds per example


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[FuzzServer]:
    errors = ErrorRecords()
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).addHandler(errors)
    server = ServerThread(ServerSettings(max_streams=2, reflection=False), FakeEngine())
    channel = grpc.insecure_channel(server.address)
    try:
        stub = pb_grpc.TranscriberStub(channel)
        warm_up = [pb.StreamingTranscribeRequest(config=pb.StreamingConfig()),
                   pb.StreamingTranscribeRequest(audio=WORDS_PCM[:3200])]
        list(stub.StreamingTranscribe(iter(warm_up), timeout=CALL_TIMEOUT_S))
        assert wait_for(lambda: server.app.servicer.admission.active == 0)
        fuzz = FuzzServer(server, stub, errors, baseline_tasks=server.tasks())
        yield fuzz
        if fuzz.examples:
            print(f"\n{len(fuzz.examples)} calls, {sum(fuzz.examples):.1f} s, "
                  f"slowest {max(fuzz.examples) * 1000:.0f} ms")
    finally:
        channel.close()
        server.stop()
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).removeHandler(errors)


def wait_for(condition, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@dataclass
class Outcome:
    responses: list[pb.StreamingTranscribeResponse]
    code: grpc.StatusCode
    details: str
    cancelled_by_us: bool


def run(stub: pb_grpc.TranscriberStub, script: Script) -> Outcome:
    sent = threading.Event()  # every message of the script is out
    release = threading.Event()  # the call is over: a held request stream may end, the canceller may stop

    def requests() -> Iterator[pb.StreamingTranscribeRequest]:
        for step in script.steps:
            if isinstance(step, Pause):
                time.sleep(step.seconds)
            else:
                yield step
        sent.set()
        if script.cancel_after_s is not None:
            release.wait(CALL_TIMEOUT_S)  # hold the stream open: the client cancels instead of half-closing

    call = stub.StreamingTranscribe(requests(), timeout=CALL_TIMEOUT_S)
    canceller = None
    if script.cancel_after_s is not None:
        delay_s = script.cancel_after_s

        def cancel() -> None:
            while not sent.wait(0.01):
                if release.is_set():  # the server ended the call before the script was out
                    return
            time.sleep(delay_s)
            call.cancel()
        canceller = threading.Thread(target=cancel, daemon=True)
        canceller.start()
    responses: list[pb.StreamingTranscribeResponse] = []
    try:
        for response in call:
            responses.append(response)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
    finally:
        release.set()
        if canceller is not None:
            canceller.join(CALL_TIMEOUT_S)
    cancelled = script.cancel_after_s is not None and code == grpc.StatusCode.CANCELLED
    return Outcome(responses, code, details, cancelled)


def check(fuzz: FuzzServer, script: Script) -> None:
    note(repr(script))
    fuzz.errors.records.clear()
    started = time.monotonic()
    outcome = run(fuzz.stub, script)
    fuzz.examples.append(time.monotonic() - started)
    responses = outcome.responses
    note(f"call status {outcome.code.name}: {outcome.details!r}; {len(responses)} responses")

    # A non-OK status comes in band, once, in the last response.
    in_band = [index for index, response in enumerate(responses) if response.HasField("error")]
    assert in_band in ([], [len(responses) - 1]), f"in-band error not only in the last response: {in_band}"
    if in_band:
        error = responses[-1].error
        code = next((status for status in grpc.StatusCode if status.value[0] == error.code), None)
        message, reason = error.message, reason_of(error)
        note(f"in-band status {code}: {message!r} reason={reason!r}")
        assert code is not None and code != grpc.StatusCode.OK, f"in-band error with code {error.code}"
        if not outcome.cancelled_by_us:
            assert outcome.code == code, f"call status {outcome.code.name} differs from the in-band {code.name}"
    else:
        code, message, reason = outcome.code, outcome.details, ""
        if not outcome.cancelled_by_us:
            assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"the server hung: no status in {CALL_TIMEOUT_S:g} s"
            assert code == grpc.StatusCode.OK, f"{code.name} ({message!r}) without an in-band error"

    if not outcome.cancelled_by_us or in_band:
        assert code in ALLOWED, f"status {code.name} is outside the contract: {message!r}"
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert is_rate_limit(message, reason), f"RESOURCE_EXHAUSTED that is not the message rate: {message!r}"
        if not outcome.cancelled_by_us:
            wanted = expected(script)
            if wanted == "invalid":
                assert code == grpc.StatusCode.INVALID_ARGUMENT, f"expected INVALID_ARGUMENT, got {code.name}"
            elif wanted == "ok":
                assert code == grpc.StatusCode.OK or is_rate_limit(message, reason), \
                    f"a well-formed call ended {code.name}: {message!r}"

    event(f"{expected(script)} -> {'cancelled' if outcome.cancelled_by_us else code.name}")
    event(f"results in {sum(bool(response.results) for response in responses) > 0}")

    # Responses belong to this stream, and the settled point only moves forward.
    requests = script.requests
    if requests and requests[0].WhichOneof("request") == "config":
        assert {response.stream_id for response in responses} <= {"", requests[0].config.stream_id}
    settled = [response.settled_offset.ToNanoseconds() for response in responses if response.HasField("settled_offset")]
    assert settled == sorted(settled), "settled_offset went back"

    # The server cleaned up and logged nothing at ERROR.
    app = fuzz.server.app
    assert wait_for(lambda: app.servicer.admission.active == 0), f"slot leaked: {app.servicer.admission!r}"
    assert wait_for(lambda: fuzz.server.tasks() <= fuzz.baseline_tasks), \
        f"tasks leaked: {fuzz.server.tasks()} alive, {fuzz.baseline_tasks} before"
    logged = [f"{record.name}: {record.getMessage()}" for record in fuzz.errors.records]
    assert not logged, f"the server logged errors: {logged}"


@CI
@given(script=scripts())
def test_any_request_sequence_ends_in_the_contract(fuzz_server: FuzzServer, script: Script) -> None:
    check(fuzz_server, script)


@pytest.mark.soak
@pytest.mark.timeout(900)  # shrinking a timing-dependent failure can take hypothesis's full 5 minutes
@SOAK
@given(script=scripts())
def test_any_request_sequence_ends_in_the_contract_soak(fuzz_server: FuzzServer, script: Script) -> None:
    check(fuzz_server, script)
