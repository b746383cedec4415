"""Balancer: picks the endpoint for the next call and sits out failing ones. Pure: the clock is passed in.

Load is what this client has in flight on an endpoint plus what the server last reported of other
clients' calls (in the first response of each call, or a status call), per stream slot, or the
server's own load figure when that is higher (its model is behind with fewer streams than slots);
the least loaded healthy endpoint wins, ties at random. An endpoint that fails sits out `eject_s`, doubling per further
failure; when its time is up the driver probes its health before it gets traffic again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

REPORT_TTL_S = 10.0  # a server's report of its load counts this long


@dataclass
class EndpointState:
    in_flight: int = 0
    failures: int = 0  # in a row
    ejected_until: float = 0.0
    others: int = 0  # other clients' calls, as the server last reported them
    capacity: int = 0  # 0: not reported
    server_load: float = 0.0  # the server's own 0..1 figure: slots, lag and decode cycle together
    reported_at: float = float("-inf")
    last_error: str = ""


class Balancer:
    def __init__(self, endpoints: Sequence[str], *, eject_s: float = 1.0, max_eject_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self._states = {endpoint: EndpointState() for endpoint in endpoints}
        self._eject_s = eject_s
        self._max_eject_s = max_eject_s
        self._clock = clock
        self._rng = rng or random.Random()

    @property
    def endpoints(self) -> list[str]:
        return list(self._states)

    def state(self, endpoint: str) -> EndpointState:
        return self._states[endpoint]

    def pick(self, exclude: Collection[str] = ()) -> str | None:
        """The endpoint for the next call, or None when every endpoint is excluded.

        Endpoints sitting out are chosen only when no other is left, the soonest back first, so a call
        still tries each endpoint once before it gives up.
        """
        candidates = [endpoint for endpoint in self._states if endpoint not in exclude]
        if not candidates:
            return None
        now = self._clock()
        ready = [endpoint for endpoint in candidates if self._states[endpoint].ejected_until <= now]
        if not ready:
            return min(candidates, key=lambda endpoint: self._states[endpoint].ejected_until)
        loads = {endpoint: self.load(endpoint, now) for endpoint in ready}
        lowest = min(loads.values())
        return self._rng.choice([endpoint for endpoint, load in loads.items() if load == lowest])

    def load(self, endpoint: str, now: float | None = None) -> float:
        """Calls in flight (ours and, while the report is fresh, others'), per stream slot."""
        state = self._states[endpoint]
        now = self._clock() if now is None else now
        fresh = now - state.reported_at <= REPORT_TTL_S
        calls = state.in_flight + (state.others if fresh else 0)
        return max(calls / (state.capacity or self._typical_capacity()), state.server_load if fresh else 0.0)

    def needs_probe(self, endpoint: str) -> bool:
        """It failed before and its time out is over: check its health before sending it a call."""
        state = self._states[endpoint]
        return state.failures > 0 and state.ejected_until <= self._clock()

    def started(self, endpoint: str) -> None:
        self._states[endpoint].in_flight += 1

    def finished(self, endpoint: str) -> None:
        self._states[endpoint].in_flight -= 1

    def report(self, endpoint: str, active: int, capacity: int, load: float = 0.0) -> None:
        """The server's own count and load, taken while this client had `in_flight` calls there (one of them new)."""
        state = self._states[endpoint]
        state.others = max(active - state.in_flight, 0)
        state.capacity = capacity
        # Only what the slots do not explain (the model is behind): this client counts the calls itself,
        # more freshly than a report that may be 10 s old.
        state.server_load = load if capacity and load > active / capacity + 1e-6 else 0.0
        state.reported_at = self._clock()

    def succeeded(self, endpoint: str) -> None:
        state = self._states[endpoint]
        state.failures, state.ejected_until, state.last_error = 0, 0.0, ""

    def failed(self, endpoint: str, reason: str, retry_after_s: float | None = None) -> None:
        """Sits the endpoint out: the doubling time out, or longer if the server asked (RetryInfo)."""
        state = self._states[endpoint]
        state.failures += 1
        backoff_s = min(self._eject_s * 2 ** (state.failures - 1), self._max_eject_s)
        state.ejected_until = self._clock() + max(backoff_s, retry_after_s or 0.0)
        state.last_error = reason

    def _typical_capacity(self) -> int:
        return max((state.capacity for state in self._states.values()), default=0) or 1

    def __repr__(self) -> str:
        now = self._clock()
        out = [f"{endpoint} out {state.ejected_until - now:.1f}s" for endpoint, state in self._states.items()
               if state.ejected_until > now]
        up = len(self._states) - len(out)
        return f"<Balancer {len(self._states)} endpoints: {up} up" + (f", {', '.join(out)}>" if out else ">")
