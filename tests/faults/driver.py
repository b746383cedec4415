"""Streams audio of known words through AsyncClient and prints, as JSON, what each stream heard and when.

Run by test_network_faults.py inside a network namespace (`ip netns exec NAME python -m tests.faults.driver
PLAN`), since the client must share the loopback that the test slows down or cuts. PLAN is a JSON object
(see `Plan`). Faults that must land at a point of the stream are set by the driver itself, through the
namespace: a black hole on the port of the endpoint carrying stream 0 (whichever endpoint took it), or
random loss once every stream is running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field

from transcriber_sdk import AsyncClient, TranscriberError, TranscriptUpdate

from ..fakes import RATE, word_audio, words_of
from .netns import Netns

CHUNK_S = 0.1
WORD_S, GAP_S, PAUSE_S, LEAD_S = 0.3, 0.15, 0.8, 0.2  # a pause (long enough to end an utterance) every 3 words
TOLERANCE_S = 0.002
ORIGIN = time.monotonic()


@dataclass(frozen=True)
class Plan:
    endpoints: list[str]
    streams: int = 1
    words: int = 12  # per stream: 3n words are 2 n + 0.2 s of audio (9: 6.2 s, 90: 60.2 s)
    speed: float = 1.0  # times real time
    keepalive_s: float | None = None  # None: the SDK's defaults
    keepalive_timeout_s: float | None = None
    timeout_s: float | None = None
    netns: str = ""  # the namespace the driver runs in, for the faults below
    fault: str = ""  # "black_hole": cut the port of stream 0's endpoint; "loss": drop `loss` of all packets
    fault_at_s: float = 0.0  # ... once stream 0 has sent this much audio
    loss: float = 0.0
    hold_s: float = 0.0  # after the fault stream 0 sends nothing for this long: only keepalive pings can notice
    syn_drop_s: float = 0.0  # new connections to every endpoint lose their SYNs for this long from the start


@dataclass
class StreamReport:
    sent: list[int]
    heard: list[int] = field(default_factory=list)  # the final words, in order
    misplaced: list[str] = field(default_factory=list)  # final words whose time is not where the audio put them
    endpoints: list[str] = field(default_factory=list)  # in the order the stream used them
    first_update_s: dict[str, float] = field(default_factory=dict)  # per endpoint, driver time
    final_latency_s: list[float] = field(default_factory=list)  # final received - its last audio sent
    error: str | None = None
    error_s: float | None = None
    started_s: float = 0.0
    ended_s: float = 0.0


@dataclass
class Report:
    streams: list[StreamReport]
    fault_s: float | None = None  # when the fault was in place
    cut_endpoint: str = ""  # the endpoint behind the black hole
    left: list[tuple[float, str]] = field(default_factory=list)  # the SDK's "stream left ..." warnings
    wall_s: float = 0.0


def now_s() -> float:
    return time.monotonic() - ORIGIN


def words_for(stream: int, count: int) -> list[int]:
    """A different, repeatable word list per stream (word numbers 0-39)."""
    return [(stream * 7 + index * 3) % 40 for index in range(count)]


def pauses_for(count: int) -> dict[int, float]:
    return {index: PAUSE_S for index in range(2, count, 3)}


def word_times(words: list[int]) -> list[tuple[float, float]]:
    """Where `word_audio` puts each word, computed in samples as it does."""
    pauses = pauses_for(len(words))
    position = int(LEAD_S * RATE)
    times = []
    for index in range(len(words)):
        length = int(WORD_S * RATE)
        times.append((position / RATE, (position + length) / RATE))
        position += length + int(pauses.get(index, GAP_S) * RATE)
    return times


async def paced(pcm: bytes, speed: float, sent_s: list[float],
                before_chunk: Callable[[int], Awaitable[float]]) -> AsyncIterator[bytes]:
    """`pcm` in CHUNK_S frames at `speed` times real time; notes when each frame was handed over.
    `before_chunk(index)` returns how long to hold the frame back (the frames after it follow at pace)."""
    size = int(RATE * CHUNK_S) * 2
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(pcm), size)):
        delay = started + index * CHUNK_S / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if hold_s := await before_chunk(index):
            await asyncio.sleep(hold_s)
            started += hold_s
        sent_s.append(now_s())
        yield pcm[offset: offset + size]


class Stream:
    """One stream of the plan: its audio, its pacing and what came back."""

    def __init__(self, number: int, plan: Plan, report: Report) -> None:
        self.number = number
        self.plan = plan
        self.report = report
        self.words = words_for(number, plan.words)
        self.times = word_times(self.words)
        self.result = StreamReport(sent=self.words)
        self.sent_s: list[float] = []
        self.carrier = ""
        self._timed = 0  # final words checked against their place in the audio

    async def run(self, client: AsyncClient) -> StreamReport:
        pcm = word_audio(self.words, WORD_S, GAP_S, pauses_for(len(self.words)), LEAD_S)
        self.result.started_s = now_s()
        try:
            async for update in client.stream(paced(pcm, self.plan.speed, self.sent_s, self._before_chunk),
                                              sample_rate=RATE, language="en", word_timestamps=True):
                self._take(update)
        except TranscriberError as error:
            self.result.error = f"{type(error).__name__}: {error}"
            self.result.error_s = now_s()
        self.result.ended_s = now_s()
        return self.result

    def _take(self, update: TranscriptUpdate) -> None:
        self.carrier = update.endpoint
        if update.endpoint not in self.result.endpoints:
            self.result.endpoints.append(update.endpoint)
            self.result.first_update_s[update.endpoint] = now_s()
        if not update.is_final:
            return
        self.result.heard.extend(words_of(update.text))
        for word in update.words:
            index = self._timed
            self._timed += 1
            expected = self.times[index] if index < len(self.times) else (-1.0, -1.0)
            if abs(word.start_s - expected[0]) > TOLERANCE_S or abs(word.end_s - expected[1]) > TOLERANCE_S:
                self.result.misplaced.append(f"{word.text.strip()} at {word.start_s:.3f}-{word.end_s:.3f} s, "
                                             f"expected {expected[0]:.3f}-{expected[1]:.3f} s")
        last_chunk = min(int(update.end_s / CHUNK_S), len(self.sent_s) - 1)
        self.result.final_latency_s.append(now_s() - self.sent_s[last_chunk])

    async def _before_chunk(self, index: int) -> float:
        if self.number != 0 or not self.plan.fault or index != round(self.plan.fault_at_s / CHUNK_S):
            return 0.0
        namespace = Netns(self.plan.netns)
        if self.plan.fault == "loss":
            await asyncio.to_thread(namespace.random_loss, self.plan.loss)
        elif not self.carrier:
            raise RuntimeError(f"no update by {self.plan.fault_at_s} s of audio: cannot tell which endpoint to cut")
        else:
            await asyncio.to_thread(namespace.black_hole, int(self.carrier.rsplit(":", 1)[1]))
            self.report.cut_endpoint = self.carrier
        self.report.fault_s = now_s()
        return self.plan.hold_s


class LeftEndpoint(logging.Handler):
    """Notes when the SDK moves a stream (its "stream left <endpoint> (...)" warning)."""

    def __init__(self, report: Report) -> None:
        super().__init__(logging.WARNING)
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("stream left"):
            self.report.left.append((now_s(), record.getMessage()))


async def drive(plan: Plan) -> Report:
    report = Report(streams=[])
    logging.getLogger("transcriber_sdk").addHandler(LeftEndpoint(report))
    streams = [Stream(number, plan, report) for number in range(plan.streams)]
    if plan.syn_drop_s:
        namespace = Netns(plan.netns)
        for endpoint in plan.endpoints:
            namespace.drop_connects(int(endpoint.rsplit(":", 1)[1]))
        asyncio.get_running_loop().call_later(plan.syn_drop_s, namespace.allow_connects)
    async with AsyncClient(plan.endpoints, keepalive_s=plan.keepalive_s, keepalive_timeout_s=plan.keepalive_timeout_s,
                           timeout_s=plan.timeout_s) as client:
        report.streams = list(await asyncio.gather(*(stream.run(client) for stream in streams)))
    report.wall_s = now_s()
    return report


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    report = asyncio.run(drive(Plan(**json.loads(argv[0]))))
    print(json.dumps(asdict(report)))


if __name__ == "__main__":
    main(sys.argv[1:])
