"""Frozen dataclasses the SDK hands to users."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float  # offsets from the start of the stream or file
    end_s: float
    probability: float


@dataclass(frozen=True)
class TranscriptUpdate:
    """One streaming result: final text never changes; an interim replaces the previous interim."""

    text: str
    is_final: bool
    start_s: float
    end_s: float
    words: tuple[Word, ...] = ()
    stability: float = 1.0
    confidence: float = 0.0
    language: str = ""
    endpoint: str = ""  # the server that produced it (it changes after a failover)


@dataclass(frozen=True)
class Segment:
    text: str
    start_s: float
    end_s: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    """A whole recording, transcribed."""

    text: str
    segments: tuple[Segment, ...]
    language: str
    duration_s: float
    model: str = ""


@dataclass(frozen=True)
class EndpointStatus:
    """One endpoint as `AsyncClient.endpoint_status` found it."""

    endpoint: str
    health: str  # SERVING, NOT_SERVING, or UNREACHABLE
    model: str = ""
    active_streams: int = 0
    max_streams: int = 0
    draining: bool = False
    load: float = 0.0  # the server's own figure, 0 (idle) to 1 (full: new streams are refused)
    final_lag_p90_s: float = 0.0  # how late its final results were lately (0: too few to tell)
    latency_ms: float = 0.0  # of the status call
    error: str = ""
