"""The gRPC server: transcriber service, health, reflection, and a graceful stop.

`TranscriberApp(settings, engine)` is what tests start on port 0; `serve` is what
the console script runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from transcriber_sdk._core import MAX_MESSAGE_S as SDK_MESSAGE_S
from transcriber_sdk._core import MAX_MESSAGES_PER_S as SDK_MESSAGES_PER_S
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc

from .auth import BearerTokenInterceptor
from .engine import Engine, WhisperEngine
from .metrics import Metrics
from .servicer import TranscriberServicer
from .settings import ServerSettings

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Transcriber"].full_name
WRAP_UP_S = 2.0  # the end of the grace period in-flight streams get to settle their last words


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_file_bytes + (1 << 16)),
        ("grpc.max_send_message_length", 64 << 20),
        # Accept client keepalive pings every min_ping_interval_s or slower: gRPC's default (5 min) sends
        # GOAWAY too_many_pings to any client whose keepalive is useful. The C name of this argument is
        # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS; its string is not that name.
        ("grpc.http2.min_ping_interval_without_data_ms", round(settings.min_ping_interval_s * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
        # Ping clients ourselves to find dead ones, and keep doing it on connections without data.
        ("grpc.keepalive_time_ms", round(settings.keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", round(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the PEM files of the settings, or None for plaintext (behind Cloud Run's TLS)."""
    if not settings.tls_cert_file:
        return None
    with open(settings.tls_key_file, "rb") as key, open(settings.tls_cert_file, "rb") as chain:
        return grpc.ssl_server_credentials([(key.read(), chain.read())])


class TranscriberApp:
    """One gRPC server around one engine."""

    def __init__(self, settings: ServerSettings, engine: Engine) -> None:
        self.settings = settings
        interceptors = [BearerTokenInterceptor(settings.auth_token)] if settings.auth_token else []
        self.server = grpc.aio.server(options=grpc_options(settings), interceptors=interceptors)
        self.servicer = TranscriberServicer(settings, engine)
        self.health = health.aio.HealthServicer()
        self.metrics = Metrics(self.servicer)
        self.servicer.lags.observe = self.metrics.final_lag.observe
        self.servicer.on_error = lambda reason: self.metrics.stream_errors.labels(reason).inc()
        if scheduler := getattr(engine, "scheduler", None):
            scheduler.on_batch = self.metrics.observe_batch
        pb_grpc.add_TranscriberServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if settings.reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
                self.server)
        address = f"{settings.host}:{settings.port}"
        credentials = server_credentials(settings)
        self.port = (self.server.add_secure_port(address, credentials) if credentials
                     else self.server.add_insecure_port(address))

    async def start(self) -> None:
        await self.server.start()
        if self.settings.metrics_port >= 0:
            self.metrics.serve(self.settings.host, self.settings.metrics_port)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float) -> None:
        """Drains: NOT_SERVING and UNAVAILABLE for new calls at once; in-flight streams run on, then
        settle their words and end with UNAVAILABLE before the grace period is over."""
        started = time.monotonic()
        await self.health.enter_graceful_shutdown()
        self.servicer.begin_drain()
        wrap_up_at = started + max(grace_s - WRAP_UP_S, 0.0)
        while self.servicer.admission.active and time.monotonic() < wrap_up_at:
            await asyncio.sleep(0.05)
        self.servicer.stop_sessions()
        remaining = max(grace_s - (time.monotonic() - started), 0.1)
        await self.server.stop(remaining)
        await asyncio.to_thread(self.metrics.close)  # it waits for the HTTP thread's poll (up to 0.5 s)
        log.info("stopped after %.1f s", time.monotonic() - started)


async def serve(settings: ServerSettings) -> None:
    """Loads the model, serves until SIGTERM or SIGINT, then drains."""
    if settings.max_chunk_s < SDK_MESSAGE_S or settings.max_messages_per_s < SDK_MESSAGES_PER_S:
        log.warning("max_chunk_s %g / max_messages_per_s %g are below what the SDK sends (%g s per message, "
                    "%d messages a second): its streams will be refused", settings.max_chunk_s,
                    settings.max_messages_per_s, SDK_MESSAGE_S, SDK_MESSAGES_PER_S)
    engine = await asyncio.to_thread(WhisperEngine, settings)
    app = TranscriberApp(settings, engine)
    await app.start()
    log.info("serving %s on %s:%d (model %s, at most %d streams)", SERVICE_NAME, settings.host, app.port,
             settings.model, settings.max_streams)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down: %.1f s for streams in flight", settings.grace_s)
    await app.stop(settings.grace_s)
