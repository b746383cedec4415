"""Capacity: how late final results are, and whether the server can take one more stream.

Pure: the clock is passed in. The servicer records every final word's lag (from the moment
its audio arrived to the moment its final result is sent) and asks `refusal()` before it
admits a stream, so that the streams already admitted keep their latency.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .scheduler import Load

LAG_WINDOW_S = 30.0  # the lag figures cover this much recent time
MIN_WORDS = 20  # fewer recent final words than this say nothing about lag


class LagTracker:
    """Final-result lags of all streams over the last LAG_WINDOW_S."""

    def __init__(self) -> None:
        self._lags: deque[tuple[float, float]] = deque()  # (recorded at, lag seconds)
        self._lock = threading.Lock()  # the metrics thread reads too
        self.observe: Callable[[float], None] = lambda lag_s: None  # metrics hook

    def record(self, lag_s: float, now: float) -> None:
        with self._lock:
            self._lags.append((now, lag_s))
            self._forget(now)
        self.observe(lag_s)

    def p90(self, now: float) -> float:
        """The 90th percentile lately, or NaN when too few words were final lately."""
        with self._lock:
            self._forget(now)
            lags = [lag for _, lag in self._lags]
        return float(np.percentile(lags, 90)) if len(lags) >= MIN_WORDS else math.nan

    def _forget(self, now: float) -> None:
        while self._lags and self._lags[0][0] < now - LAG_WINDOW_S:
            self._lags.popleft()


class ArrivalClock:
    """When each stretch of one stream's audio was due, to time its results against: when it arrived, but
    never before real time would have brought it (a client replaying a backlog after a failover sends
    a minute of audio at once; its words are not a minute late)."""

    def __init__(self) -> None:
        self._ends_s: list[float] = []  # stream offsets where each message's audio ended
        self._times: list[float] = []
        self._origin = math.nan  # when offset 0 would have been spoken, had the audio come in real time

    def add(self, end_s: float, at: float) -> None:
        if not self._times:
            self._origin = at - end_s
        self._ends_s.append(end_s)
        self._times.append(at)

    def at(self, offset_s: float) -> float | None:
        """When the audio at `offset_s` was due, or None before any audio."""
        if not self._times:
            return None
        index = min(bisect_left(self._ends_s, offset_s - 1e-6), len(self._times) - 1)
        return max(self._times[index], self._origin + offset_s)

    def forget_before(self, offset_s: float) -> None:
        drop = bisect_left(self._ends_s, offset_s) - 1
        if drop > 256:  # in bulk: deleting from the front of a list copies it
            del self._ends_s[:drop], self._times[:drop]


@dataclass(frozen=True)
class CapacityLimits:
    max_lag_s: float  # refuse new streams while the recent p90 final lag is above this
    max_cycle_s: float  # or while a window waits and decodes longer than this on average


def refusal(load: Load, lag_p90_s: float, limits: CapacityLimits) -> str | None:
    """Why the server should not take one more stream now, or None."""
    if lag_p90_s > limits.max_lag_s:
        return f"final results are {lag_p90_s:.1f} s late (p90 over the last {LAG_WINDOW_S:.0f} s)"
    if load.cycle_s > limits.max_cycle_s:
        return f"each decode takes {load.cycle_s:.1f} s"
    return None
