"""T18/T19 with the fake engine: an hour-long stream and a thousand short ones leave the server's memory flat.

The audio goes as fast as the server's message limit allows (1 s frames at 150x real time: the fake
engine is instant), so an hour of audio takes about 25 s. RSS is sampled on a fake-engine server
process; tracemalloc needs the server in this process (ServerThread).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Iterator

import grpc
import psutil
import pytest

from bench import load_driver
from bench.load_driver import fake_audio, run_load, run_stream
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc
from transcriber_server.settings import ServerSettings

from ..conftest import ServerProcess, ServerThread
from ..fakes import FakeEngine

SPEED = 150.0  # below the server's 200 messages/s, with 1 s frames
FRAME_S = 1.0
WARM_UP = 0.25  # of the run: by then the decode window has reached its steady size
MINUTES = [20, pytest.param(60, marks=[pytest.mark.soak, pytest.mark.timeout(600)])]


@pytest.fixture
def server_process() -> Iterator[ServerProcess]:
    server = ServerProcess("--log-level", "WARNING", module="tests.fake_server")
    yield server
    server.kill()


def assert_every_word_once(summary: dict) -> None:
    assert summary["non_ok"] == {}, summary["errors"]
    assert summary["lost_bytes"] == 0, summary
    assert summary["finals_exact"] is True, summary["mismatches"]  # in order, each exactly once
    assert summary["offsets_monotonic"]


async def sample_rss(pid: int, samples: list[int]) -> None:
    process = psutil.Process(pid)
    while True:
        samples.append(process.memory_info().rss)
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("minutes", MINUTES)
async def test_a_long_stream_keeps_server_rss_flat(server_process, minutes):
    samples: list[int] = []
    sampler = asyncio.create_task(sample_rss(server_process.process.pid, samples))
    try:
        summary = await run_load([server_process.address], 1, minutes * 60, speed=SPEED, frame_s=FRAME_S)
    finally:
        sampler.cancel()
    # Peaks, not single samples: the decode window alone moves RSS by a megabyte or two.
    warm = max(samples[int(len(samples) * WARM_UP): len(samples) // 2])
    peak = max(samples[len(samples) // 2:])
    print(f"{minutes} min in {summary['wall_s']} s: server RSS {samples[0] / 2**20:.1f} MiB at start, peak "
          f"{warm / 2**20:.1f} after warm-up, peak {peak / 2**20:.1f} in the second half "
          f"(+{(peak - warm) / warm:.1%}); {summary['final_words']} final words")
    assert_every_word_once(summary)
    assert summary["final_words"] == len(fake_audio(minutes * 60, 0)[1])
    assert peak < warm * 1.05


def sizes_by_line(snapshot: tracemalloc.Snapshot) -> dict[tracemalloc.Traceback, int]:
    # The driver's own bookkeeping (latency samples) is not the server's.
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, load_driver.__file__),
              tracemalloc.Filter(False, __file__)]
    return {stat.traceback: stat.size for stat in snapshot.filter_traces(ignore).statistics("lineno")}


@pytest.mark.parametrize("minutes", MINUTES)
async def test_a_long_stream_allocates_nothing_that_stays(minutes):
    """tracemalloc, top-10 lines: what every late snapshot holds beyond the most any warm one held. The decode
    window alone swings by about 1 MB from one snapshot to the next, so single snapshots cannot tell a leak."""
    server = ServerThread(ServerSettings(reflection=False), FakeEngine())
    tracemalloc.start()
    try:
        run = asyncio.create_task(run_load([server.address], 1, minutes * 60, speed=SPEED, frame_s=FRAME_S))
        wall_s, started = minutes * 60 / SPEED, asyncio.get_running_loop().time()
        warm, late = [], []
        for share, snapshots in [(WARM_UP + step * 0.05, warm) for step in range(5)] + \
                                [(0.7 + step * 0.05, late) for step in range(5)]:
            await asyncio.sleep(max(started + wall_s * share - asyncio.get_running_loop().time(), 0))
            snapshots.append(sizes_by_line(tracemalloc.take_snapshot()))
        summary = await run
    finally:
        tracemalloc.stop()
        server.stop()
    stayed = sorted(((min(sizes.get(line, 0) for sizes in late) - max(sizes.get(line, 0) for sizes in warm), line)
                     for line in set().union(*late)), key=lambda item: item[0], reverse=True)[:10]
    grown = sum(size for size, _ in stayed if size > 0)
    print(f"{minutes} min: tracemalloc top-10 lasting growth {grown / 1024:.0f} KiB after warm-up; largest: "
          + "; ".join(f"{line[0].filename.rsplit('/', 1)[-1]}:{line[0].lineno} {size / 1024:+.0f} KiB"
                      for size, line in stayed[:3]))
    assert_every_word_once(summary)
    assert grown < 1 << 20


async def test_a_thousand_short_streams_leave_server_rss_where_it_was(server_process):
    rss: dict[int, int] = {}
    server = psutil.Process(server_process.process.pid)
    async with grpc.aio.insecure_channel(server_process.address) as channel:
        stub = pb_grpc.TranscriberStub(channel)
        for index in range(1000):
            blocks, expected = fake_audio(1, index)  # one sentence: 10 words, 5.3 s, sent unpaced
            result = await run_stream(stub, server_process.address, blocks, expected, speed=0)
            assert result.status == "OK" and result.finals_exact, result
            assert result.sent_bytes == result.acked_bytes, result
            if index + 1 in (100, 1000):
                gc.collect()
                rss[index + 1] = server.memory_info().rss
        status = await stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    print(f"server RSS after 100 streams {rss[100] / 2**20:.1f} MiB, after 1000 {rss[1000] / 2**20:.1f} MiB")
    assert status.active_streams == 0
    assert abs(rss[1000] - rss[100]) < 10 << 20
