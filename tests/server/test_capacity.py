"""Honest admission: lag and arrival bookkeeping (pure, explicit clock), the refusal rule, Admission with a
refusal, the servicer refusing a new stream while its engine is behind, and the SDK's balancer reading load."""

from __future__ import annotations

import math
import random
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status

from transcriber_sdk import Client, EndpointUnavailableError, chunked
from transcriber_sdk._balancer import REPORT_TTL_S, Balancer
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc
from transcriber_server.admission import Admission
from transcriber_server.capacity import LAG_WINDOW_S, MIN_WORDS, ArrivalClock, CapacityLimits, LagTracker, refusal
from transcriber_server.errors import Overloaded
from transcriber_server.scheduler import Load

from ..fakes import word_audio, words_of
from ..reliability.test_contract import assert_status, raw_call, reason_of
from .test_servicer import config, open_stream, wait_for

IDLE = Load(queued=0, busy_ratio=0.0, mean_batch=0.0, cycle_s=0.0)
LIMITS = CapacityLimits(max_lag_s=2.5, max_cycle_s=1.5)


# -- LagTracker -----------------------------------------------------------------------------------------------

def test_lag_p90_is_nan_until_enough_words_were_final():
    lags = LagTracker()
    assert math.isnan(lags.p90(now=0.0))
    for index in range(MIN_WORDS - 1):
        lags.record(1.0, now=float(index) * 0.1)
    assert math.isnan(lags.p90(now=2.0)), "too few words must say nothing about lag"
    lags.record(1.0, now=2.0)
    assert lags.p90(now=2.0) == pytest.approx(1.0)


def test_lag_p90_is_the_90th_percentile_of_recent_words():
    lags = LagTracker()
    values = [0.1 * (index + 1) for index in range(40)]  # 0.1 .. 4.0 s
    for index, lag_s in enumerate(random.Random(3).sample(values, len(values))):
        lags.record(lag_s, now=10.0 + index * 0.01)
    assert lags.p90(now=11.0) == pytest.approx(float(np.percentile(values, 90)))
    assert 3.5 < lags.p90(now=11.0) < 3.7


def test_lags_older_than_the_window_are_forgotten():
    lags = LagTracker()
    for index in range(MIN_WORDS):
        lags.record(9.0, now=100.0 + index * 0.01)  # a bad spell
    for index in range(MIN_WORDS):
        lags.record(0.5, now=120.0 + index * 0.01)  # then good again
    assert lags.p90(now=121.0) == pytest.approx(9.0), "the bad spell is still within the window"
    assert lags.p90(now=100.0 + LAG_WINDOW_S + 1.0) == pytest.approx(0.5), "old lags still count"
    assert math.isnan(lags.p90(now=120.0 + LAG_WINDOW_S + 1.0)), "nothing recent: no figure"


# -- ArrivalClock ---------------------------------------------------------------------------------------------

def test_arrival_clock_maps_an_offset_to_the_message_whose_audio_covers_it():
    arrivals = ArrivalClock()
    assert arrivals.at(0.0) is None, "no audio yet"
    for index in range(5):  # 0.1 s messages, one every 0.1 s from t=50
        arrivals.add(end_s=(index + 1) * 0.1, at=50.0 + index * 0.1)
    assert arrivals.at(0.0) == 50.0
    assert arrivals.at(0.05) == 50.0
    assert arrivals.at(0.1) == 50.0, "the end of a message's audio arrived with that message"
    assert arrivals.at(0.1001) == pytest.approx(50.1)
    assert arrivals.at(0.25) == pytest.approx(50.2)
    assert arrivals.at(0.5) == pytest.approx(50.4)
    assert arrivals.at(7.0) == pytest.approx(56.9), "beyond the end: when real time would bring it"


def test_forget_before_keeps_the_answers_from_that_offset_on():
    arrivals, reference = ArrivalClock(), {}
    for index in range(2000):  # enough that forgetting really deletes (it does so in bulk)
        end_s = (index + 1) * 0.02
        arrivals.add(end_s=end_s, at=1000.0 + index)
        reference[round(end_s - 0.01, 4)] = 1000.0 + index  # an offset inside this message
    arrivals.forget_before(30.0)
    assert len(arrivals._ends_s) < 2000, "nothing was forgotten"
    for offset_s, arrived in reference.items():
        if offset_s >= 30.0:
            assert arrivals.at(offset_s) == arrived, offset_s
    arrivals.forget_before(10.0)  # an earlier point than before: no harm
    assert arrivals.at(30.01) == reference[30.01]
    arrivals.forget_before(1e9)  # past the end: the last message stays
    assert arrivals.at(50.0) == 2999.0


# -- refusal() ------------------------------------------------------------------------------------------------

def test_a_backlog_sent_at_once_is_timed_as_if_it_came_in_real_time():
    """A client replaying a minute after a failover: its words are not a minute late."""
    clock = ArrivalClock()
    for index in range(600):  # 60 s of 100 ms messages within 0.6 s
        clock.add((index + 1) * 0.1, at=1000.0 + index * 0.001)
    assert clock.at(0.1) == pytest.approx(1000.0)
    assert clock.at(30.0) == pytest.approx(1000.0 + 29.9)
    assert clock.at(60.0) == pytest.approx(1000.0 + 59.9)


def test_refusal_names_the_lag_or_the_decode_cycle_or_nothing():
    assert refusal(IDLE, math.nan, LIMITS) is None, "no lag figure: no reason to refuse"
    assert refusal(Load(queued=3, busy_ratio=1.0, mean_batch=8.0, cycle_s=1.5), 2.5, LIMITS) is None, \
        "at the limits is still fine"
    late = refusal(IDLE, 3.25, LIMITS)
    assert late is not None and "final results are 3.2 s late" in late and "p90 over the last 30 s" in late
    slow = refusal(Load(queued=0, busy_ratio=1.0, mean_batch=4.0, cycle_s=2.0), 0.4, LIMITS)
    assert slow is not None and "each decode takes 2.0 s" in slow
    both = refusal(Load(queued=0, busy_ratio=1.0, mean_batch=4.0, cycle_s=2.0), 4.0, LIMITS)
    assert both is not None and "late" in both, "lag is what callers feel: it is named first"


# -- Admission with a refusal ---------------------------------------------------------------------------------

async def test_an_idle_server_admits_even_when_the_refusal_says_no():
    admission = Admission(4, lambda: "each decode takes 9.0 s")
    async with admission.slot():
        assert admission.active == 1
    assert admission.active == 0


async def test_with_a_stream_active_the_refusal_raises_overloaded_with_its_reason():
    reason: list[str | None] = [None]
    admission = Admission(4, lambda: reason[0])
    async with admission.slot():
        async with admission.slot():  # no reason yet: admitted
            assert admission.active == 2
        reason[0] = "final results are 4.0 s late (p90 over the last 30 s)"
        with pytest.raises(Overloaded) as caught:
            async with admission.slot():
                pytest.fail("admitted although the model is behind")
        assert "final results are 4.0 s late" in str(caught.value) and "with 1 streams" in str(caught.value)
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and caught.value.reason == "SERVER_AT_CAPACITY"
        assert admission.active == 1, "a refused stream kept its slot"
    assert admission.active == 0


async def test_full_slots_are_refused_without_asking_the_refusal():
    def never() -> str:
        raise AssertionError("asked although the slots decide")

    admission = Admission(1, never)
    async with admission.slot():
        with pytest.raises(Overloaded, match=r"\(1/1 streams\)"):
            async with admission.slot():
                pass


# -- the servicer ---------------------------------------------------------------------------------------------

def get_status(address: str) -> pb.ServerStatus:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.TranscriberStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)


def test_a_new_stream_is_refused_while_the_decode_cycle_is_too_long(fake_server, fake_engine, settings):
    cycle_s = settings.admit_max_cycle_s + 1.0
    stop = threading.Event()
    held = open_stream(fake_server.address, stop)
    try:
        assert wait_for(lambda: fake_server.app.servicer.admission.active == 1)
        fake_engine.current_load = Load(queued=3, busy_ratio=1.0, mean_batch=4.0, cycle_s=cycle_s)
        started = time.monotonic()
        requests = [config(), pb.StreamingTranscribeRequest(audio=b"\0" * 3200)]
        responses, error = raw_call(fake_server.address, iter(requests))
        assert time.monotonic() - started < 2.0, "a refusal must come at once"
        last = assert_status(responses, error, grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_AT_CAPACITY",
                             f"each decode takes {cycle_s:.1f} s")
        assert "with 1 streams" in last.error.message
        assert reason_of(rpc_status.from_call(error))[1] == 2.0, "no RetryInfo"

        status = get_status(fake_server.address)
        assert status.active_streams == 1
        assert status.load == pytest.approx(1.0), "a decode cycle over the limit means full, whatever the slots"
        assert status.queued_windows == 3
        assert status.mean_batch_size == pytest.approx(4.0)
        assert status.busy_ratio == pytest.approx(1.0)
        assert status.final_lag_p90_s == 0.0, "too few final words: reported as 0, not NaN"

        # The SDK moves on from a busy endpoint; with no other, it says why none could take the stream.
        with Client([fake_server.address]) as client, pytest.raises(EndpointUnavailableError) as caught:
            list(client.stream(chunked(word_audio([1]), 16_000)))
        assert "no endpoint could take the stream" in str(caught.value) and "each decode takes" in str(caught.value)
    finally:
        stop.set()
        list(held[1])  # type: ignore[call-overload]
        held[0].close()


def test_the_first_stream_is_admitted_even_while_the_engine_reports_overload(fake_server, fake_engine, settings):
    fake_engine.current_load = Load(queued=0, busy_ratio=1.0, mean_batch=1.0, cycle_s=settings.admit_max_cycle_s * 10)
    with Client([fake_server.address]) as client:
        updates = list(client.stream(chunked(word_audio([1, 2, 3]), 16_000)))
    assert words_of(" ".join(update.text for update in updates if update.is_final)) == [1, 2, 3]


def test_a_new_stream_is_refused_while_final_results_are_late(fake_server, fake_engine, settings):
    lag_s = settings.admit_max_lag_s + 2.0
    stop = threading.Event()
    held = open_stream(fake_server.address, stop)
    try:
        assert wait_for(lambda: fake_server.app.servicer.admission.active == 1)
        now = time.monotonic()  # the servicer reads time.monotonic() too
        for _ in range(MIN_WORDS):
            fake_server.app.servicer.lags.record(lag_s, now)
        responses, error = raw_call(fake_server.address, iter([config()]))
        assert_status(responses, error, grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_AT_CAPACITY",
                      f"final results are {lag_s:.1f} s late")
        status = get_status(fake_server.address)
        assert status.final_lag_p90_s == pytest.approx(lag_s)
        assert status.load == pytest.approx(1.0)
        assert status.queued_windows == 0 and status.mean_batch_size == 0.0 and status.busy_ratio == 0.0
    finally:
        stop.set()
        list(held[1])  # type: ignore[call-overload]
        held[0].close()


def test_final_words_of_a_stream_are_timed_into_the_servicers_lags(fake_server):
    words = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] * 3  # more than MIN_WORDS final words
    before = time.monotonic()
    with Client([fake_server.address]) as client:
        updates = list(client.stream(chunked(word_audio(words), 16_000)))
    took_s = time.monotonic() - before
    assert words_of(" ".join(update.text for update in updates if update.is_final)) == words
    lag_p90_s = fake_server.app.servicer.lags.p90(time.monotonic())
    assert 0.0 <= lag_p90_s <= took_s, "a lag longer than the whole stream, or none recorded"
    assert get_status(fake_server.address).final_lag_p90_s == pytest.approx(lag_p90_s, abs=1e-3)


def test_status_load_is_the_largest_of_slots_lag_and_cycle(fake_server, fake_engine, settings):
    assert get_status(fake_server.address).load == 0.0
    fake_engine.current_load = Load(queued=1, busy_ratio=0.3, mean_batch=2.0, cycle_s=settings.admit_max_cycle_s / 2)
    status = get_status(fake_server.address)
    assert status.load == pytest.approx(0.5)
    assert (status.queued_windows, status.mean_batch_size, status.busy_ratio) == (1, pytest.approx(2.0),
                                                                                pytest.approx(0.3))


def test_the_first_response_of_a_stream_carries_the_load(fake_server, fake_engine, settings):
    fake_engine.current_load = Load(queued=0, busy_ratio=0.5, mean_batch=3.0, cycle_s=settings.admit_max_cycle_s * 0.8)
    responses, error = raw_call(fake_server.address, iter([config()]))
    assert error is None
    first = responses[0]
    assert first.model == "fake" and first.HasField("server_status")
    assert first.server_status.load == pytest.approx(0.8)
    assert first.server_status.mean_batch_size == pytest.approx(3.0)


# -- the SDK's balancer ---------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_balancer_avoids_an_endpoint_whose_server_reports_high_load_while_the_report_is_fresh():
    clock = Clock()
    pool = Balancer(["e1", "e2"], clock=clock, rng=random.Random(7))
    for endpoint in ("e1", "e2"):
        pool.started(endpoint)
        pool.report(endpoint, active=1, capacity=4)
    pool.report("e1", active=1, capacity=4, load=0.9)  # same calls, but its model is behind
    assert pool.load("e1") == pytest.approx(0.9) and pool.load("e2") == pytest.approx(0.25)
    assert {pool.pick() for _ in range(20)} == {"e2"}
    clock.now += REPORT_TTL_S + 0.5
    assert pool.load("e1") == pytest.approx(0.25), "a stale report still counts"
    assert {pool.pick() for _ in range(50)} == {"e1", "e2"}


def test_the_balancer_load_is_the_larger_of_calls_per_slot_and_server_load():
    pool = Balancer(["e1"], clock=Clock())
    pool.started("e1")
    pool.report("e1", active=3, capacity=4, load=0.1)
    assert pool.load("e1") == pytest.approx(0.75)
    pool.report("e1", active=3, capacity=4, load=0.95)
    assert pool.load("e1") == pytest.approx(0.95)
