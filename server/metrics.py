"""Prometheus metrics: the scheduler's load, stream admission and final-result lag, on their own HTTP port.

Gauges are read when Prometheus scrapes (from the servicer and the engine), so they cost nothing
between scrapes; histograms and counters are fed by hooks. Each server has its own registry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .servicer import TranscriberServicer

log = logging.getLogger(__name__)
LAG_BUCKETS_S = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 30.0)


class Metrics:
    def __init__(self, servicer: TranscriberServicer) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.batch_windows = Histogram("transcriber_batch_windows", "Windows decoded together in one batch",
                                       buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=self.registry)
        self.batch_seconds = Histogram("transcriber_batch_seconds", "Time a batch (or a file) held the model",
                                       buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
                                       registry=self.registry)
        self.final_lag = Histogram("transcriber_final_lag_seconds",
                                   "From a word's audio arriving to its final result being sent",
                                   buckets=LAG_BUCKETS_S, registry=self.registry)
        self.stream_errors = Counter("transcriber_stream_errors", "Calls ended with an error, by ErrorInfo reason "
                                     "(SERVER_AT_CAPACITY: refused at admission)", ["reason"], registry=self.registry)
        self.registry.register(_LoadCollector(servicer))
        self._http = None
        self.port = 0

    def observe_batch(self, windows: int, seconds: float) -> None:
        if windows:
            self.batch_windows.observe(windows)
        self.batch_seconds.observe(seconds)

    def serve(self, host: str, port: int) -> None:
        """Serves /metrics on `port` (0: any free port). A port in use is logged, not fatal: transcription matters more."""
        try:
            self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as error:
            log.warning("metrics not served: cannot listen on %s:%d (%s)", host, port, error)
            return
        self.port = self._http.server_port
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
            self.port = 0


class _LoadCollector(Collector):
    """The load as the servicer reports it to clients (ServerStatus), read at scrape time."""

    def __init__(self, servicer: TranscriberServicer) -> None:
        self._servicer = servicer

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self._servicer.status()
        for name, help_text, value in (
                ("transcriber_active_streams", "Streams and file calls in flight", status.active_streams),
                ("transcriber_max_streams", "Stream slots", status.max_streams),
                ("transcriber_load", "0 idle to 1 full (new streams refused): slots, lag and decode cycle", status.load),
                ("transcriber_queued_windows", "Windows waiting for the model", status.queued_windows),
                ("transcriber_mean_batch_windows", "Windows per batch over the last 10 s", status.mean_batch_size),
                ("transcriber_busy_ratio", "Share of the last 10 s the model spent decoding", status.busy_ratio),
                ("transcriber_final_lag_p90_seconds", "p90 final-result lag over the last 30 s (0: too few words)",
                 status.final_lag_p90_s),
                ("transcriber_decode_cycle_seconds", "Wait plus decode of a window over the last 10 s",
                 self._servicer.engine_load().cycle_s),
                ("transcriber_draining", "1 while shutting down", float(status.draining))):
            yield GaugeMetricFamily(name, help_text, value=float(value))
