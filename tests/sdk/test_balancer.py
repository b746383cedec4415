"""Balancer with a fake clock: least loaded first, ties spread, failing endpoints sit out with backoff."""

from __future__ import annotations

import random
from collections import Counter

from transcriber_sdk._balancer import REPORT_TTL_S, Balancer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def balancer(count: int = 4, clock: Clock | None = None) -> Balancer:
    return Balancer([f"e{index}" for index in range(1, count + 1)], eject_s=1.0, max_eject_s=8.0,
                    clock=clock or Clock(), rng=random.Random(7))


def test_streams_in_flight_spread_evenly():
    pool = balancer()
    for _ in range(8):
        pool.started(pool.pick())
    assert Counter({endpoint: pool.state(endpoint).in_flight for endpoint in pool.endpoints}) == \
        Counter({"e1": 2, "e2": 2, "e3": 2, "e4": 2})


def test_ties_are_broken_at_random_not_always_the_first():
    pool = balancer()
    assert len({pool.pick() for _ in range(50)}) == 4


def test_other_clients_reported_load_counts_while_fresh():
    clock = Clock()
    pool = balancer(2, clock)
    pool.started("e1")
    pool.report("e1", active=4, capacity=4)  # our one stream plus three from other clients
    pool.finished("e1")
    assert pool.pick() == "e2"
    assert pool.load("e1") == 0.75
    clock.now += REPORT_TTL_S + 1
    assert pool.load("e1") == 0.0


def test_a_failed_endpoint_sits_out_with_doubling_backoff_then_needs_a_probe():
    clock = Clock()
    pool = balancer(2, clock)
    pool.failed("e1", "UNAVAILABLE")
    assert {pool.pick() for _ in range(20)} == {"e2"}
    clock.now += 1.01
    assert pool.needs_probe("e1")
    pool.failed("e1", "health check failed")
    clock.now += 1.5
    assert not pool.needs_probe("e1"), "the second time out is 2 s"
    clock.now += 0.6
    assert pool.needs_probe("e1")
    pool.succeeded("e1")
    assert not pool.needs_probe("e1") and pool.state("e1").failures == 0


def test_backoff_is_capped():
    clock = Clock()
    pool = balancer(1, clock)
    for _ in range(10):
        pool.failed("e1", "down")
    assert pool.state("e1").ejected_until - clock.now == 8.0


def test_when_all_sit_out_each_is_still_tried_once_soonest_back_first():
    clock = Clock()
    pool = balancer(3, clock)
    for endpoint, failures in (("e1", 3), ("e2", 1), ("e3", 2)):
        for _ in range(failures):
            pool.failed(endpoint, "down")
    tried = []
    while (endpoint := pool.pick(exclude=tried)) is not None:
        tried.append(endpoint)
    assert tried == ["e2", "e3", "e1"]


def test_repr_tells_the_state():
    clock = Clock()
    pool = balancer(3, clock)
    pool.failed("e2", "down")
    assert repr(pool) == "<Balancer 3 endpoints: 2 up, e2 out 1.0s>"
