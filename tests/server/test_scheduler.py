"""InferenceScheduler with a fake decode_batch: batching, most overdue first, batch wait, failures, cancellation,
solo work, load figures and a second event loop. Pure asyncio: no grpc, no model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from transcriber_server.batch_decode import Decoded, WindowJob
from transcriber_server.policy import Word
from transcriber_server.scheduler import LOAD_WINDOW_S, InferenceScheduler, Load

SILENCE = np.zeros(1600, dtype=np.float32)


def job(name: str) -> WindowJob:
    """A window known by its name (carried in the prompt, which the fake decoder echoes back as a word)."""
    return WindowJob(SILENCE, "en", prompt=name)


def text(decoded: Decoded) -> str:
    return "".join(word.text for word in decoded.words).strip()


class FakeDecoder:
    """decode_batch for the scheduler: records each batch (by window name), echoes each name as a word.

    `gate`: batches block on it (the worker is busy) until the test sets it. `step_s`: each batch
    advances `clock` by this much, so decode time is exact. A batch holding a "poison" window raises.
    """

    def __init__(self, *, gate: threading.Event | None = None, clock: FakeClock | None = None,
                 step_s: float = 0.0, sleep_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.started_at: list[float] = []  # time.monotonic() at the start of each batch
        self.entered = threading.Event()  # the first batch has begun
        self._gate = gate
        self._clock = clock
        self._step_s = step_s
        self._sleep_s = sleep_s
        self._lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def __call__(self, jobs: list[WindowJob]) -> list[Decoded]:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.started_at.append(time.monotonic())
            self.batches.append([item.prompt for item in jobs])
            self.entered.set()
            if self._gate is not None:
                assert self._gate.wait(10), "the test never opened the gate"
            if self._sleep_s:
                time.sleep(self._sleep_s)
            if self._clock is not None:
                self._clock.now += self._step_s
            if any(item.prompt == "poison" for item in jobs):
                raise ValueError("this window breaks the model")
            return [Decoded(words=[Word(f" {item.prompt}", 0.0, 0.5, 0.9)], language="en") for item in jobs]
        finally:
            with self._lock:
                self.running -= 1

    def solo(self, result: str) -> Callable[[], str]:
        """Work for run_solo that is recorded in `batches` as its own entry."""
        def work() -> str:
            with self._lock:
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
            try:
                self.batches.append([f"solo:{result}"])
                return result
            finally:
                with self._lock:
                    self.running -= 1
        return work


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def busy_worker(scheduler: InferenceScheduler, decoder: FakeDecoder) -> asyncio.Task[Decoded]:
    """Starts a window that holds the worker (blocked on the decoder's gate) and returns its task."""
    blocker = asyncio.create_task(scheduler.decode(job("blocker"), due_at=0.0))
    await asyncio.to_thread(decoder.entered.wait, 5)
    assert decoder.entered.is_set()
    return blocker


def flatten(batches: list[list[str]]) -> list[str]:
    return [name for batch in batches for name in batch]


def catch_loop_errors() -> list[dict]:
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    return errors


# -- batching -------------------------------------------------------------------------------------------------

async def test_windows_submitted_together_share_batches_of_at_most_max_batch():
    decoder = FakeDecoder()
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.01)
    names = [f"w{index}" for index in range(10)]
    results = await asyncio.gather(*(scheduler.decode(job(name)) for name in names))
    assert [text(result) for result in results] == names, "a caller got another caller's words"
    assert all(result.language == "en" for result in results)
    assert [len(batch) for batch in decoder.batches] == [4, 4, 2]
    assert sorted(flatten(decoder.batches)) == sorted(names), "a window was decoded twice or never"
    await scheduler.close()


async def test_max_batch_one_decodes_each_window_alone():
    decoder = FakeDecoder()
    scheduler = InferenceScheduler(decoder, max_batch=1, batch_wait_s=0.0)
    results = await asyncio.gather(*(scheduler.decode(job(f"w{index}")) for index in range(3)))
    assert [text(result) for result in results] == ["w0", "w1", "w2"]
    assert decoder.batches == [["w0"], ["w1"], ["w2"]]
    with pytest.raises(ValueError, match="at least 1"):
        InferenceScheduler(decoder, max_batch=0, batch_wait_s=0.0)
    await scheduler.close()


async def test_most_overdue_windows_go_first_when_more_wait_than_fit():
    gate = threading.Event()
    decoder = FakeDecoder(gate=gate)
    scheduler = InferenceScheduler(decoder, max_batch=3, batch_wait_s=0.01)
    blocker = await busy_worker(scheduler, decoder)
    due = {"d5": 5.0, "d1": 1.0, "d4": 4.0, "d2": 2.0, "d6": 6.0, "d3": 3.0}  # submitted in this order
    waiting = [asyncio.create_task(scheduler.decode(job(name), due_at=due_at)) for name, due_at in due.items()]
    await until(lambda: scheduler.load().queued == len(due))
    gate.set()
    results = await asyncio.gather(*waiting)
    await blocker
    assert [text(result) for result in results] == list(due)
    assert decoder.batches == [["blocker"], ["d1", "d2", "d3"], ["d4", "d5", "d6"]]
    await scheduler.close()


async def test_equal_due_times_are_first_come_first_served():
    gate = threading.Event()
    decoder = FakeDecoder(gate=gate)
    scheduler = InferenceScheduler(decoder, max_batch=2, batch_wait_s=0.01)
    blocker = await busy_worker(scheduler, decoder)
    waiting = [asyncio.create_task(scheduler.decode(job(name), due_at=1.0)) for name in ("a", "b", "c", "d")]
    await until(lambda: scheduler.load().queued == 4)
    gate.set()
    await asyncio.gather(blocker, *waiting)
    assert decoder.batches[1:] == [["a", "b"], ["c", "d"]]
    await scheduler.close()


async def test_a_lone_window_waits_about_batch_wait_s_for_company():
    decoder = FakeDecoder()
    batch_wait_s = 0.2
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=batch_wait_s)
    submitted = time.monotonic()
    result = await scheduler.decode(job("alone"))
    waited_s = decoder.started_at[0] - submitted
    assert text(result) == "alone" and decoder.batches == [["alone"]]
    assert batch_wait_s * 0.8 <= waited_s < batch_wait_s + 1.0, f"waited {waited_s:.3f} s"
    await scheduler.close()


async def test_a_full_batch_does_not_wait():
    decoder = FakeDecoder()
    scheduler = InferenceScheduler(decoder, max_batch=2, batch_wait_s=5.0)
    started = time.monotonic()
    await asyncio.gather(scheduler.decode(job("a")), scheduler.decode(job("b")))
    assert time.monotonic() - started < 2.0, "a full batch waited for company it did not need"
    assert decoder.batches == [["a", "b"]]
    await scheduler.close()


async def test_two_windows_five_ms_apart_share_a_batch():
    decoder = FakeDecoder()
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.05)
    first = asyncio.create_task(scheduler.decode(job("first")))
    await asyncio.sleep(0.005)
    second = asyncio.create_task(scheduler.decode(job("second")))
    assert [text(result) for result in await asyncio.gather(first, second)] == ["first", "second"]
    assert decoder.batches == [["first", "second"]]
    await scheduler.close()


# -- failures and cancellation --------------------------------------------------------------------------------

async def test_a_failing_batch_is_retried_window_by_window_so_only_the_bad_one_fails():
    errors = catch_loop_errors()
    decoder = FakeDecoder()
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.01)
    names = ["a", "poison", "b", "c"]
    results = await asyncio.gather(*(scheduler.decode(job(name)) for name in names), return_exceptions=True)
    assert isinstance(results[1], ValueError) and "breaks the model" in str(results[1])
    assert [text(results[index]) for index in (0, 2, 3)] == ["a", "b", "c"]  # type: ignore[arg-type]
    assert decoder.batches == [names, ["a"], ["poison"], ["b"], ["c"]]
    assert text(await scheduler.decode(job("after"))) == "after", "the worker did not survive the failure"
    assert errors == []
    await scheduler.close()


async def test_a_lone_failing_window_gets_its_exception_once():
    decoder = FakeDecoder()
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.0)
    with pytest.raises(ValueError, match="breaks the model"):
        await scheduler.decode(job("poison"))
    assert decoder.batches == [["poison"]], "a batch of one is not worth retrying"
    await scheduler.close()


async def test_a_cancelled_waiting_window_is_skipped_and_others_are_served():
    errors = catch_loop_errors()
    gate = threading.Event()
    decoder = FakeDecoder(gate=gate)
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.01)
    blocker = await busy_worker(scheduler, decoder)
    gone = asyncio.create_task(scheduler.decode(job("gone"), due_at=1.0))
    kept = asyncio.create_task(scheduler.decode(job("kept"), due_at=2.0))
    await until(lambda: scheduler.load().queued == 2)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert scheduler.load().queued == 1, "a cancelled window still counts as queued"
    gate.set()
    assert text(await kept) == "kept" and text(await blocker) == "blocker"
    assert "gone" not in flatten(decoder.batches), "the cancelled window was decoded anyway"
    assert text(await scheduler.decode(job("later"))) == "later"
    assert errors == []
    await scheduler.close()


async def test_a_caller_cancelled_during_its_decode_loses_only_its_result():
    errors = catch_loop_errors()
    gate = threading.Event()
    decoder = FakeDecoder(gate=gate)
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.0)
    gone = asyncio.create_task(scheduler.decode(job("gone")))
    kept = asyncio.create_task(scheduler.decode(job("kept")))
    await asyncio.to_thread(decoder.entered.wait, 5)
    assert decoder.batches == [["gone", "kept"]]
    gone.cancel()  # while the thread decodes it: the thread cannot stop, its result is dropped
    await asyncio.gather(gone, return_exceptions=True)
    gate.set()
    assert gone.cancelled()
    assert text(await kept) == "kept"
    assert text(await scheduler.decode(job("later"))) == "later"
    assert errors == []
    await scheduler.close()


async def test_close_waits_for_the_thread_and_cancels_the_windows_still_waiting():
    gate = threading.Event()
    decoder = FakeDecoder(gate=gate)
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.0)
    blocker = await busy_worker(scheduler, decoder)
    waiting = asyncio.create_task(scheduler.decode(job("waiting")))
    await until(lambda: scheduler.load().queued == 1)
    closing = asyncio.create_task(scheduler.close())
    await asyncio.sleep(0.05)
    assert not closing.done(), "close returned while the model was still in use by its thread"
    gate.set()
    await asyncio.wait_for(closing, 5)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
    blocker.cancel()
    await asyncio.gather(blocker, return_exceptions=True)


# close() once cancelled only the windows still waiting; the callers of the batch in flight waited for ever.
async def test_close_ends_the_callers_of_the_batch_in_flight():
    gate = threading.Event()
    decoder = FakeDecoder(gate=gate)
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.0)
    blocker = await busy_worker(scheduler, decoder)
    closing = asyncio.create_task(scheduler.close())
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.wait_for(closing, 5)
    try:
        done, _ = await asyncio.wait([blocker], timeout=1.0)
        assert done, "the caller whose window was being decoded at close() still waits"
    finally:
        blocker.cancel()
        await asyncio.gather(blocker, return_exceptions=True)


# -- solo work ------------------------------------------------------------------------------------------------

async def test_run_solo_runs_alone_in_its_turn_and_returns_its_result():
    gate = threading.Event()
    decoder = FakeDecoder(gate=gate)
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.01)
    blocker = await busy_worker(scheduler, decoder)
    solo = asyncio.create_task(scheduler.run_solo(decoder.solo("file")))
    await asyncio.sleep(0.01)  # submitted, so the windows below are due after it
    windows = [asyncio.create_task(scheduler.decode(job(name))) for name in ("a", "b")]
    await asyncio.sleep(0.01)
    gate.set()
    assert await solo == "file"
    assert [text(result) for result in await asyncio.gather(*windows)] == ["a", "b"]
    await blocker
    assert decoder.batches == [["blocker"], ["solo:file"], ["a", "b"]]
    assert decoder.most_at_once == 1, "solo work ran while a batch was decoded"
    await scheduler.close()


async def test_run_solo_failure_goes_to_its_caller_only():
    decoder = FakeDecoder()
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.0)

    def broken() -> None:
        raise RuntimeError("cannot read the file")

    with pytest.raises(RuntimeError, match="cannot read the file"):
        await scheduler.run_solo(broken)
    assert text(await scheduler.decode(job("next"))) == "next"
    assert await scheduler.run_solo(lambda: 42) == 42
    await scheduler.close()


# -- load -----------------------------------------------------------------------------------------------------

async def test_load_reports_queue_busy_ratio_batch_size_and_cycle():
    clock = FakeClock()
    decoder = FakeDecoder(clock=clock, step_s=1.0)  # every batch takes exactly 1 s of the fake clock
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.0, clock=clock)
    assert scheduler.load() == Load(queued=0, busy_ratio=0.0, mean_batch=0.0, cycle_s=0.0)
    await asyncio.gather(*(scheduler.decode(job(f"w{index}")) for index in range(10)))
    load = scheduler.load()
    assert [len(batch) for batch in decoder.batches] == [4, 4, 2]
    assert load.queued == 0
    assert load.busy_ratio == pytest.approx(3.0 / LOAD_WINDOW_S)
    assert load.mean_batch == pytest.approx(10 / 3)
    assert 1.0 <= load.cycle_s <= 3.0  # each window waited for the batches before its own, 1 s each
    assert "queued" in repr(scheduler) and "batch 3.3" in repr(scheduler)
    clock.now += LOAD_WINDOW_S + 3.5
    assert scheduler.load() == Load(queued=0, busy_ratio=0.0, mean_batch=0.0, cycle_s=0.0), "old batches still count"
    await scheduler.close()


async def test_load_counts_windows_waiting_and_busy_time_on_the_real_clock():
    gate = threading.Event()
    decoder = FakeDecoder(gate=gate, sleep_s=0.05)
    scheduler = InferenceScheduler(decoder, max_batch=8, batch_wait_s=0.0)
    blocker = await busy_worker(scheduler, decoder)
    waiting = [asyncio.create_task(scheduler.decode(job(f"w{index}"))) for index in range(3)]
    await until(lambda: scheduler.load().queued == 3)
    assert scheduler.load().busy_ratio == 0.0, "no batch has ended yet"
    gate.set()
    await asyncio.gather(blocker, *waiting)
    load = scheduler.load()
    assert load.queued == 0
    assert 0.0 < load.busy_ratio <= 1.0
    assert load.mean_batch == pytest.approx(2.0)  # the blocker alone, then the three together
    assert load.cycle_s > 0.0
    await scheduler.close()


async def test_solo_work_counts_as_busy_time():
    clock = FakeClock()
    decoder = FakeDecoder()
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.0, clock=clock)

    def slow_file() -> str:
        clock.now += 2.0
        return "done"

    assert await scheduler.run_solo(slow_file) == "done"
    assert scheduler.load().busy_ratio == pytest.approx(2.0 / LOAD_WINDOW_S)
    await scheduler.close()


# A file (run_solo) once counted as a batch of 0 windows and halved mean_batch.
async def test_solo_work_does_not_pull_mean_batch_down():
    decoder = FakeDecoder()
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.0)
    await asyncio.gather(*(scheduler.decode(job(f"w{index}")) for index in range(4)))
    assert scheduler.load().mean_batch == pytest.approx(4.0)
    assert await scheduler.run_solo(lambda: "file") == "file"
    assert scheduler.load().mean_batch == pytest.approx(4.0)  # got 2.0
    await scheduler.close()


async def test_a_file_does_not_count_as_a_decode_cycle():
    """Otherwise one long file would read as a model far behind and refuse every new stream."""
    clock = FakeClock()
    scheduler = InferenceScheduler(FakeDecoder(), max_batch=4, batch_wait_s=0.0, clock=clock)

    def slow_file() -> str:
        clock.now += 30.0
        return "done"

    assert await scheduler.run_solo(slow_file) == "done"
    assert scheduler.load().cycle_s == 0.0
    await scheduler.close()


async def test_a_window_waiting_long_shows_in_the_cycle_before_any_finishes():
    """A model so far behind that nothing finished lately must not look idle to admission."""
    clock = FakeClock()
    gate = threading.Event()
    decoder = FakeDecoder(gate=gate)
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.0, clock=clock)
    stuck = asyncio.create_task(scheduler.decode(job("w0")))
    await until(lambda: decoder.entered.is_set())
    clock.now += 7.0
    assert scheduler.load().cycle_s == pytest.approx(7.0)
    gate.set()
    await stuck
    await scheduler.close()


async def test_a_failing_batch_hook_or_a_short_result_never_leaves_a_caller_waiting():
    scheduler = InferenceScheduler(FakeDecoder(), max_batch=4, batch_wait_s=0.0)

    def broken_hook(windows: int, seconds: float) -> None:
        raise RuntimeError("metrics broke")

    scheduler.on_batch = broken_hook
    assert text(await scheduler.decode(job("w1"))) == "w1", "the hook's failure must not cost the words"
    short = InferenceScheduler(lambda jobs: [], max_batch=4, batch_wait_s=0.0)
    with pytest.raises(RuntimeError, match="0 results for 1 windows"):
        await asyncio.wait_for(short.decode(job("w2")), 5)
    await scheduler.close()
    await short.close()


# -- event loops ----------------------------------------------------------------------------------------------

def test_a_second_event_loop_gets_a_working_scheduler():
    decoder = FakeDecoder()
    scheduler = InferenceScheduler(decoder, max_batch=4, batch_wait_s=0.01)

    async def round_trip(prefix: str) -> list[str]:
        results = await asyncio.gather(*(scheduler.decode(job(f"{prefix}{index}")) for index in range(3)))
        solo = await scheduler.run_solo(decoder.solo(prefix))
        return [text(result) for result in results] + [solo]

    assert asyncio.run(round_trip("first")) == ["first0", "first1", "first2", "first"]
    assert asyncio.run(round_trip("second")) == ["second0", "second1", "second2", "second"]
    assert decoder.batches[-2:] == [["second0", "second1", "second2"], ["solo:second"]]
