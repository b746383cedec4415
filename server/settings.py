"""ServerSettings: every knob of the server, read from flags and TRANSCRIBER_* variables.

Precedence: flag > environment variable > default. Only `load` reads the environment.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

ENV_PREFIX = "TRANSCRIBER_"
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ServerSettings:
    # A server in a container must listen on every interface (bandit B104 asks).
    host: str = "0.0.0.0"  # nosec B104
    port: int = 8080  # $PORT (Cloud Run) wins over this default
    # tiny.en is the embedded model; base, with the multilingual extra, is Whisper base joined from its two packages
    # into model_cache_dir (default ~/.cache/transcriber/models); any other faster-whisper name or path works.
    model: str = "tiny.en"
    model_cache_dir: str = ""
    device: str = "auto"  # auto | cpu | cuda
    compute_type: str = "auto"  # auto: float16 on CUDA, int8 on CPU
    cpu_threads: int = 0  # per decode worker; 0: the CPU's cores shared out among the workers
    # The scheduler decodes the windows of several streams in one batch: up to max_batch of them,
    # waiting up to batch_wait_s for others to join when fewer are ready. 0: 8 on a GPU, 1 on a CPU, where
    # a batch cost more per window than windows one by one (bench/step_cost.py; docs/benchmarks.md).
    max_batch: int = 0
    batch_wait_s: float = 0.02
    # Batches decoded at once, each on its own CTranslate2 worker with cpu_threads threads. 0: one on a GPU;
    # one per core (up to 4) on a CPU, where two 1-thread workers beat one 2-thread worker (docs/benchmarks.md).
    decode_workers: int = 0
    # The encoder sees the batch's longest window plus encoder_pad_s of silence, and at least encoder_min_s,
    # not always 30 s: a third of the encoder's compute for most windows, with the same WER (docs/benchmarks.md;
    # under 20 s Whisper repeated whole sentences). A negative encoder_pad_s: always 30 s, as faster-whisper.
    encoder_pad_s: float = 5.0
    encoder_min_s: float = 20.0
    # Honest admission: while the recent p90 final lag or the mean decode cycle (wait plus decode of a
    # window) is above these, new streams get RESOURCE_EXHAUSTED, so admitted streams keep their latency.
    admit_max_lag_s: float = 2.5
    admit_max_cycle_s: float = 1.5
    max_streams: int = 8  # concurrent streams; more get RESOURCE_EXHAUSTED at once
    beam_size: int = 5
    step_s: float = 0.5  # new audio that triggers a re-decode
    holdback_s: float = 0.5  # agreed words this close to the end of the audio wait one more decode
    # A word no decode heard before settles in one decode when it ends this far before the end of the audio
    # and the model is sure of it; nearer the end it waits for a second decode to agree. inf (the default)
    # keeps LocalAgreement-2: at 1 s the benchmark's lag fell by less than its noise (docs/benchmarks.md).
    one_decode_margin_s: float = math.inf
    max_window_s: float = 25.0  # the decode window never grows past this
    trim_window_s: float = 12.0  # past this, the window is cut in a pause inside committed speech
    endpoint_silence_s: float = 0.6  # silence after speech that settles everything as final
    vad_threshold: float = 0.5
    # Limits of one stream; breaking one ends it with a status that names the limit.
    # The SDK sends up to 1 s per message and up to 100 messages a second: lower limits refuse it.
    max_chunk_s: float = 1.0  # audio per message (INVALID_ARGUMENT above it)
    max_messages_per_s: float = 200.0  # sustained, with a burst of as many (RESOURCE_EXHAUSTED above it)
    idle_timeout_s: float = 15.0  # no message for this long: finals flushed, then OUT_OF_RANGE
    max_stream_s: float = 58 * 60.0  # wall clock; below Cloud Run's 60 min cap, above the SDK's 55 min rollover
    stall_timeout_s: float = 30.0  # a response the client does not read for this long: RESOURCE_EXHAUSTED
    max_pending_audio_s: float = 60.0  # audio queued ahead of the decoder before the reader waits (memory bound)
    max_file_bytes: int = 32 << 20  # limit of the unary Transcribe call
    grace_s: float = 8.0  # SIGTERM: in-flight streams get this long (Cloud Run kills at 10 s)
    # Keepalive: client pings closer together than min_ping_interval_s get the connection closed
    # (too_many_pings), so the SDK pings every 20 s; the server pings idle clients to find dead ones.
    min_ping_interval_s: float = 10.0
    keepalive_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    # Both set: serve TLS with this PEM certificate chain and key (Cloud Run terminates TLS itself).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    reflection: bool = True
    # Prometheus /metrics over HTTP, without auth, on this port of `host` (0: any free port, -1: off);
    # Cloud Run's sidecar scrapes it on localhost, and Cloud Run exposes only `port`.
    metrics_port: int = 9464
    # Set: every call but health needs `authorization: Bearer <token>`. Prefer the env var (flags show in `ps`).
    auth_token: str = field(default="", repr=False)
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (got {self.device!r})")
        if not -1 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be -1 (off), 0 (any free port) or a port (got {self.metrics_port})")
        if not 0 <= self.encoder_min_s <= 30:
            raise ValueError(f"encoder_min_s must be 0 to 30 (got {self.encoder_min_s})")
        if self.max_batch < 0 or self.decode_workers < 0 or self.cpu_threads < 0:
            raise ValueError(f"need max_batch, decode_workers and cpu_threads >= 0 (got {self.max_batch}, "
                             f"{self.decode_workers}, {self.cpu_threads})")
        if self.batch_wait_s < 0:
            raise ValueError(f"batch_wait_s must be 0 or more (got {self.batch_wait_s})")
        if self.max_streams < 1:
            raise ValueError(f"max_streams must be at least 1 (got {self.max_streams})")
        if not 0 < self.step_s < self.trim_window_s < self.max_window_s <= 30:
            raise ValueError("need 0 < step_s < trim_window_s < max_window_s <= 30 (Whisper sees 30 s at most)")
        if self.one_decode_margin_s < self.holdback_s:
            raise ValueError(f"one_decode_margin_s must be at least holdback_s ({self.holdback_s}; got "
                             f"{self.one_decode_margin_s})")
        limits = ("admit_max_lag_s", "admit_max_cycle_s", "max_chunk_s", "max_messages_per_s", "idle_timeout_s", "max_stream_s", "stall_timeout_s",
                  "min_ping_interval_s", "keepalive_s", "keepalive_timeout_s")
        for name in limits:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be above 0 (got {getattr(self, name)})")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> ServerSettings:
        """Builds settings from defaults, then TRANSCRIBER_* variables, then flags.

        Raises:
            SystemExit: a flag or variable has a bad value (argparse prints why).
        """
        defaults: dict[str, Any] = {}
        if environ.get("PORT"):
            defaults["port"] = environ["PORT"]
        for setting in fields(cls):
            name = ENV_PREFIX + setting.name.upper()
            if name in environ:
                defaults[setting.name] = environ[name]
        parser = argparse.ArgumentParser(prog="transcriber-server", description="Streaming speech transcription over gRPC.")
        for setting in fields(cls):
            default = defaults.get(setting.name, setting.default if setting.default is not MISSING else None)
            flag = "--" + setting.name.replace("_", "-")
            # argparse converts string defaults (from the environment) with `type`, so bad
            # variables get the same clear message as bad flags.
            kind = {"bool": _parse_bool, "int": int, "float": float}.get(str(setting.type), str)
            parser.add_argument(flag, type=kind, default=default, metavar=setting.name.upper(),
                                help=f"env {ENV_PREFIX}{setting.name.upper()}; default {setting.default}")
        args = parser.parse_args(argv)
        try:
            return cls(**vars(args))
        except ValueError as error:
            parser.error(str(error))
            raise  # unreachable: parser.error exits


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
