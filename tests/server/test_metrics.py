"""Prometheus metrics: served on their own port, with the load the servicer reports and the hooks' histograms."""

from __future__ import annotations

import threading
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from transcriber_sdk import Client, EndpointUnavailableError, chunked
from transcriber_server.scheduler import Load
from transcriber_server.settings import ServerSettings

from ..conftest import ServerThread
from ..fakes import FakeEngine, word_audio
from .test_servicer import open_stream, wait_for


def scrape(thread: ServerThread) -> dict[str, float]:
    """Every sample of /metrics, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{thread.app.metrics.port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {sample.name + "".join(f"{{{key}={value}}}" for key, value in sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_show_the_load_final_lag_and_refusals(fake_server, fake_engine, settings):
    with Client([fake_server.address]) as client:
        list(client.stream(chunked(word_audio(list(range(30))), 16_000)))
    samples = scrape(fake_server)
    assert samples["transcriber_max_streams"] == settings.max_streams
    assert samples["transcriber_active_streams"] == 0
    assert samples["transcriber_final_lag_seconds_count"] >= 30, "every final word is timed"
    assert samples["transcriber_final_lag_p90_seconds"] >= 0  # sent faster than real time: no lag
    for name in ("transcriber_load", "transcriber_queued_windows", "transcriber_busy_ratio",
                 "transcriber_mean_batch_windows", "transcriber_decode_cycle_seconds", "transcriber_draining"):
        assert name in samples, name

    stop = threading.Event()
    held = open_stream(fake_server.address, stop)
    try:
        assert wait_for(lambda: fake_server.app.servicer.admission.active == 1)
        fake_engine.current_load = Load(queued=2, busy_ratio=1.0, mean_batch=3.0, cycle_s=settings.admit_max_cycle_s * 2)
        try:
            with Client([fake_server.address]) as client:
                list(client.stream(chunked(word_audio([1]), 16_000)))
        except EndpointUnavailableError:
            pass  # refused: the only endpoint is behind
        samples = scrape(fake_server)
        assert samples["transcriber_stream_errors_total{reason=SERVER_AT_CAPACITY}"] >= 1
        assert samples["transcriber_load"] == 1.0
        assert samples["transcriber_queued_windows"] == 2
        assert samples["transcriber_decode_cycle_seconds"] == settings.admit_max_cycle_s * 2
    finally:
        stop.set()
        list(held[1])  # type: ignore[call-overload]
        held[0].close()


def test_a_metrics_port_in_use_is_logged_and_the_server_runs_on(caplog):
    first = ServerThread(ServerSettings(), FakeEngine())
    try:
        taken = first.app.metrics.port
        second = ServerThread(ServerSettings(metrics_port=-1), FakeEngine())  # -1: off
        try:
            assert second.app.metrics.port == 0
        finally:
            second.stop()
        third = ServerThread(ServerSettings(), FakeEngine())
        try:
            third.app.metrics.close()
            third.app.metrics.serve("127.0.0.1", taken)  # the first server's port
            assert third.app.metrics.port == 0
            assert "metrics not served" in caplog.text
            with Client([third.address]) as client:
                assert list(client.stream(chunked(word_audio([1, 2]), 16_000)))
        finally:
            third.stop()
    finally:
        first.stop()
