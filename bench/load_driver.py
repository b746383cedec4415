"""Load driver (T1 of the reliability plan; ghz is not available here): N concurrent StreamingTranscribe calls.

Run it from the repository root (`tests.fakes` makes the default audio):

    python -m bench.load_driver --endpoints 127.0.0.1:50051 --streams 16 --duration-s 600 [--json]

Each stream is one call on the raw grpc.aio stub, sending 100 ms LINEAR16 frames at real-time pace
(--speed 0: as fast as the server takes them) for --duration-s, rounded up to a whole sentence. Streams
go round-robin over the endpoints. Counted per stream: bytes sent, bytes acknowledged (the server's
`audio_processed` x 32,000 B/s), final words, the status (the in-band `error` first, grpc/grpc#36066)
and frame -> response latency (from sending the last frame a response acknowledges to receiving it).
The default audio is the fake engine's words (`tests/fakes.py`), so the finals must be exactly the
words sent; --speech DIR streams the recordings in DIR instead (finals are only counted).
Pass: every stream OK, acknowledged == sent for every stream, finals exact (fake audio). Exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import math
import pathlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc

from transcriber_sdk import read_pcm16
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc

RATE = 16_000
SENTENCE_WORDS = 10  # fake audio: sentences of 10 words (0.3 s each, 0.15 s apart), each after a 0.8 s pause
PAUSE_S = 0.8
SENTENCE_S = PAUSE_S + SENTENCE_WORDS * 0.45
STATUS_BY_NUMBER = {code.value[0]: code.name for code in grpc.StatusCode}


@dataclass
class StreamResult:
    endpoint: str
    expected: list[str] | None  # the words sent (fake audio), in order
    sent_bytes: int = 0
    acked_bytes: int = 0
    final_words: int = 0
    first_mismatch: str = ""  # where the finals first differ from the words sent
    offsets_monotonic: bool = True  # each final starts where the previous one ended or later
    status: str = "OK"
    details: str = ""
    latencies_s: list[float] = field(default_factory=list)

    @property
    def finals_exact(self) -> bool | None:
        if self.expected is None:
            return None
        return not self.first_mismatch and self.final_words == len(self.expected)

    def take_final(self, result: pb.StreamingResult, previous_end_ns: int) -> None:
        if result.start_offset.ToNanoseconds() < previous_end_ns or result.end_offset.ToNanoseconds() < \
                result.start_offset.ToNanoseconds():
            self.offsets_monotonic = False
        for word in result.transcript.split():  # without case: a text's first word has a capital
            if self.expected is not None and not self.first_mismatch and \
                    (self.final_words >= len(self.expected) or self.expected[self.final_words] != word.lower()):
                wanted = self.expected[self.final_words] if self.final_words < len(self.expected) else "nothing"
                self.first_mismatch = f"final word {self.final_words}: got {word!r}, sent {wanted!r}"
            self.final_words += 1


def fake_audio(duration_s: float, seed: int) -> tuple[Iterator[bytes], list[str]]:
    """The fake engine's words, a sentence at a time (generated lazily: an hour is 115 MB), and their text."""
    from tests.fakes import word_audio  # the server package's test fake: only the default audio needs it

    sentences = max(1, math.ceil(duration_s / SENTENCE_S))
    # 45 levels (w0..w44); a step of 7 cycles through all of them and never repeats a word back to back.
    numbers = [(seed + index * 7) % 45 for index in range(sentences * SENTENCE_WORDS)]
    blocks = (word_audio(numbers[start: start + SENTENCE_WORDS], lead_s=PAUSE_S)
              for start in range(0, len(numbers), SENTENCE_WORDS))
    return blocks, [f"w{number}" for number in numbers]


def speech_audio(directory: pathlib.Path, duration_s: float, seed: int) -> Iterator[bytes]:
    """The 16 kHz recordings in `directory` (sorted, from the seed-th on), looped until duration_s."""
    paths = sorted(path for path in directory.rglob("*") if path.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
    if not paths:
        raise SystemExit(f"load_driver: no recordings in {directory}")
    left = int(duration_s * RATE) * 2
    for index in itertools.count(seed):
        pcm, rate = read_pcm16(str(paths[index % len(paths)]))
        if rate != RATE:
            raise SystemExit(f"load_driver: {paths[index % len(paths)]} is {rate} Hz; the driver sends 16 kHz")
        yield pcm[:left]
        left -= min(len(pcm), left)
        if not left:
            return


def frames(blocks: Iterator[bytes], frame_bytes: int) -> Iterator[bytes]:
    pending = b""
    for block in blocks:
        pending += block
        while len(pending) >= frame_bytes:
            yield pending[:frame_bytes]
            pending = pending[frame_bytes:]
    if pending:
        yield pending


async def run_stream(stub: pb_grpc.TranscriberStub, endpoint: str, blocks: Iterator[bytes], expected: list[str] | None,
                     *, stream_id: str = "", frame_s: float = 0.1, speed: float = 1.0,
                     timeout_s: float | None = None) -> StreamResult:
    """Streams the audio as one call, `speed` times real time (0: unpaced); never raises for a status."""
    result = StreamResult(endpoint, expected)
    frame_ends: list[int] = []  # byte offset where each frame ends, and when it was sent: for latency
    sent_at: list[float] = []

    async def requests() -> AsyncIterator[pb.StreamingTranscribeRequest]:
        yield pb.StreamingTranscribeRequest(config=pb.StreamingConfig(sample_rate_hertz=RATE, stream_id=stream_id))
        started = time.monotonic()
        for index, frame in enumerate(frames(blocks, round(frame_s * RATE) * 2)):
            if speed and (delay := started + index * frame_s / speed - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            result.sent_bytes += len(frame)
            frame_ends.append(result.sent_bytes)
            sent_at.append(time.monotonic())
            yield pb.StreamingTranscribeRequest(audio=frame)

    call = stub.StreamingTranscribe(requests(), timeout=timeout_s)
    previous_end_ns = 0
    try:
        async for response in call:
            if response.error.code:  # trusted over the call's status, which aio may turn into INTERNAL
                result.status = STATUS_BY_NUMBER.get(response.error.code, str(response.error.code))
                result.details = response.error.message
            acked = 2 * round(response.audio_processed.ToNanoseconds() * RATE / 1e9)
            if acked > result.acked_bytes:
                index = bisect.bisect_left(frame_ends, acked)
                if index < len(sent_at):
                    result.latencies_s.append(time.monotonic() - sent_at[index])
                result.acked_bytes = acked
                del frame_ends[:index], sent_at[:index]  # keeps memory flat on hour-long streams
            for final in (item for item in response.results if item.is_final):
                result.take_final(final, previous_end_ns)
                previous_end_ns = final.end_offset.ToNanoseconds()
    except grpc.aio.AioRpcError as error:
        if result.status == "OK":
            result.status, result.details = error.code().name, error.details() or ""
    return result


def percentile_ms(values: list[float], fraction: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 1) if ordered else None


def summarize(results: list[StreamResult], wall_s: float) -> dict:
    latencies = [latency for result in results for latency in result.latencies_s]
    non_ok: dict[str, int] = {}
    for result in results:
        if result.status != "OK":
            non_ok[result.status] = non_ok.get(result.status, 0) + 1
    exact = [result.finals_exact for result in results if result.finals_exact is not None]
    summary = {
        "streams": len(results), "wall_s": round(wall_s, 1),
        "sent_bytes": sum(result.sent_bytes for result in results),
        "acked_bytes": sum(result.acked_bytes for result in results),
        "lost_bytes": sum(max(result.sent_bytes - result.acked_bytes, 0) for result in results),
        "streams_with_lost_audio": sum(result.acked_bytes != result.sent_bytes for result in results),
        "non_ok": non_ok,
        "errors": sorted({f"{result.status}: {result.details}" for result in results if result.details}),
        "final_words": sum(result.final_words for result in results),
        "finals_exact": all(exact) if exact else None,
        "mismatches": [result.first_mismatch for result in results if result.first_mismatch][:5],
        "offsets_monotonic": all(result.offsets_monotonic for result in results),
        "latency_ms": {"p50": percentile_ms(latencies, 0.5), "p99": percentile_ms(latencies, 0.99),
                       "max": percentile_ms(latencies, 1.0), "samples": len(latencies)},
    }
    summary["passed"] = (not non_ok and not summary["streams_with_lost_audio"] and summary["finals_exact"] is not False
                         and summary["offsets_monotonic"])
    return summary


async def run_load(endpoints: list[str], streams: int, duration_s: float, *, speed: float = 1.0, frame_s: float = 0.1,
                   speech_dir: pathlib.Path | None = None, timeout_s: float | None = None) -> dict:
    """Runs `streams` concurrent streams round-robin over the endpoints; returns the summary."""
    channels = {endpoint: grpc.aio.insecure_channel(endpoint) for endpoint in endpoints}
    if timeout_s is None and speed:
        timeout_s = duration_s / speed + 120  # a hung server fails the run instead of hanging it

    async def one(index: int) -> StreamResult:
        await asyncio.sleep(index * frame_s / streams)  # spread the streams' frames evenly over a frame period
        endpoint = endpoints[index % len(endpoints)]
        blocks, expected = (speech_audio(speech_dir, duration_s, index), None) if speech_dir \
            else fake_audio(duration_s, index)
        return await run_stream(pb_grpc.TranscriberStub(channels[endpoint]), endpoint, blocks, expected,
                                stream_id=f"load-{index}", frame_s=frame_s, speed=speed, timeout_s=timeout_s)

    started = time.monotonic()
    try:
        results = await asyncio.gather(*(one(index) for index in range(streams)))
    finally:
        await asyncio.gather(*(channel.close() for channel in channels.values()))
    return {"endpoints": endpoints, "duration_s": duration_s, "speed": speed,
            **summarize(results, time.monotonic() - started)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", required=True, help="host:port[,host:port...]")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=60.0, help="audio per stream")
    parser.add_argument("--speed", type=float, default=1.0, help="times real time; 0: as fast as the server takes "
                        "it (mind the server's --max-messages-per-s: use longer frames)")
    parser.add_argument("--frame-ms", type=float, default=100.0)
    parser.add_argument("--speech", type=pathlib.Path, help="stream the recordings in this folder, not fake words")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    summary = asyncio.run(run_load(args.endpoints.split(","), args.streams, args.duration_s, speed=args.speed,
                                   frame_s=args.frame_ms / 1000, speech_dir=args.speech))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:>24}: {value}")
    raise SystemExit(0 if summary["passed"] else 1)


if __name__ == "__main__":
    main()
