"""InferenceScheduler: one per loaded model; every stream's windows go through it, in batches.

Streams hand it a window and wait for its words. A free worker takes the windows that are
waiting, most overdue first, up to `max_batch` of them; when fewer are waiting it gives others
`batch_wait_s` to join, then decodes them together in a thread. A stream has at most one window
in flight, so the queue never holds more than one window per stream: under load each stream's
next window simply covers more new audio (a longer step), and latency grows instead of a queue.

Work that cannot be batched (a whole file) takes its turn alone, in the same order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .batch_decode import Decoded, WindowJob

log = logging.getLogger(__name__)
LOAD_WINDOW_S = 10.0  # load figures cover this much recent time


@dataclass(order=True)
class _Request:
    due_at: float  # when the result was due (the newest audio of the window arrived): most overdue goes first
    order: int  # ties: first come, first served
    job: WindowJob | None = field(compare=False)  # None: `solo` work
    solo: Callable[[], Any] | None = field(compare=False)
    future: asyncio.Future = field(compare=False)
    submitted_at: float = field(compare=False, default=0.0)


@dataclass(frozen=True)
class Load:
    """What the scheduler did lately, for admission, metrics and clients that pick an endpoint."""

    queued: int  # windows waiting for the worker now
    busy_ratio: float  # share of the last LOAD_WINDOW_S the worker spent decoding
    mean_batch: float  # windows per batch, lately
    cycle_s: float  # wait plus decode of a window, lately, or how long the oldest one has waited if longer


class InferenceScheduler:
    def __init__(self, decode_batch: Callable[[list[WindowJob]], list[Decoded]], *, max_batch: int,
                 batch_wait_s: float, workers: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        """`workers` batches run at once (in threads), each on its own CTranslate2 worker of the model."""
        if max_batch < 1 or workers < 1:
            raise ValueError(f"max_batch and workers must be at least 1 (got {max_batch}, {workers})")
        self._workers = workers
        self._decode_batch = decode_batch
        self._max_batch = max_batch
        self._batch_wait_s = batch_wait_s
        self._clock = clock
        self._waiting: list[_Request] = []
        self._arrived = asyncio.Event()
        self._order = itertools.count()
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batches: deque[tuple[float, float, int]] = deque()  # (ended at, decode seconds, windows; 0: solo work)
        self._running: list[_Request] = []  # the batches on the model now
        self._cycles: deque[tuple[float, float]] = deque()  # (ended at, submit-to-result seconds)
        self._records = threading.Lock()  # load() is also read by the metrics thread
        self.on_batch: Callable[[int, float], None] = lambda size, seconds: None  # metrics hook

    async def decode(self, job: WindowJob, due_at: float | None = None) -> Decoded:
        """The words of one window, decoded with whatever else is waiting."""
        return await self._submit(job, None, due_at)

    async def run_solo(self, work: Callable[[], Any]) -> Any:
        """Runs `work` in the worker thread, alone, in its turn."""
        return await self._submit(None, work, None)

    async def _submit(self, job: WindowJob | None, solo: Callable[[], Any] | None, due_at: float | None) -> Any:
        loop = asyncio.get_running_loop()
        # A new event loop: tests run servers one after another on one engine (one loop at a time).
        if self._loop is not loop:
            self._loop, self._arrived, self._waiting, self._worker = loop, asyncio.Event(), [], None
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="inference-scheduler")
        submitted_at = self._clock()
        request = _Request(due_at if due_at is not None else submitted_at, next(self._order), job, solo,
                           loop.create_future(), submitted_at)
        self._waiting.append(request)
        self._arrived.set()
        result = await request.future  # cancelled: the worker skips it, or drops its result
        if job is not None:  # a file's time says nothing about how long a window waits
            now = self._clock()
            with self._records:
                self._cycles.append((now, now - submitted_at))
                self._forget(now)
        return result

    def load(self) -> Load:
        now = self._clock()
        with self._records:
            self._forget(now)
            busy_s = sum(seconds for _, seconds, _ in self._batches)
            windows = [size for _, _, size in self._batches if size]
            cycles = [seconds for _, seconds in self._cycles]
        # A model so far behind that no window finished lately still shows: by the oldest window not done.
        oldest_s = max((now - request.submitted_at for request in [*self._waiting, *self._running]
                        if request.job is not None and not request.future.done()), default=0.0)
        return Load(queued=self._windows_waiting(),
                    busy_ratio=min(busy_s / (LOAD_WINDOW_S * self._workers), 1.0),
                    mean_batch=sum(windows) / len(windows) if windows else 0.0,
                    cycle_s=max(sum(cycles) / len(cycles) if cycles else 0.0, oldest_s))

    def _forget(self, now: float) -> None:
        """Drops records older than LOAD_WINDOW_S (on every append too: nothing may read them for hours)."""
        for records in (self._batches, self._cycles):
            while records and records[0][0] < now - LOAD_WINDOW_S:
                records.popleft()

    async def close(self) -> None:
        """Stops the worker (after the thread it waits for) and cancels every caller still waiting."""
        pending = self._waiting + self._running
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for request in pending:
            request.future.cancel()

    async def _work(self) -> None:
        batches: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._waiting = [request for request in self._waiting if not request.future.done()]
                if not self._waiting:
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                if len(batches) >= self._workers:  # every worker busy: the next batch forms meanwhile
                    await asyncio.wait(batches, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch = await self._next_batch()
                if batch:
                    self._running += batch  # before the task starts: close() must find it
                    task = asyncio.create_task(self._run(batch))
                    batches.add(task)
                    task.add_done_callback(batches.discard)
        except asyncio.CancelledError:  # close(): the batches in flight wait for their threads, then go
            for task in batches:
                task.cancel()
            if batches:
                await asyncio.gather(*batches, return_exceptions=True)
            raise

    async def _next_batch(self) -> list[_Request]:
        """The most overdue request and, unless it runs alone, up to max_batch - 1 more windows."""
        first = min(self._waiting)
        if first.job is not None:
            collect_until = self._clock() + self._batch_wait_s
            while self._windows_waiting() < self._max_batch and (left_s := collect_until - self._clock()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left_s)
                except TimeoutError:
                    break
        ready = sorted(request for request in self._waiting if not request.future.done())
        if not ready:
            return []
        if ready[0].job is None:
            batch = ready[:1]
        else:
            batch = [request for request in ready if request.job is not None][: self._max_batch]
        taken = {id(request) for request in batch}
        self._waiting = [request for request in self._waiting if id(request) not in taken]
        return batch

    def _windows_waiting(self) -> int:
        return sum(1 for request in self._waiting if request.job is not None and not request.future.done())

    async def _run(self, batch: list[_Request]) -> None:
        try:
            await self._decode_and_answer(batch)
        finally:
            self._running = [request for request in self._running if request not in batch]
            for request in batch:  # whatever went wrong, no caller waits for ever
                if not request.future.done():
                    request.future.cancel()

    async def _decode_and_answer(self, batch: list[_Request]) -> None:
        started = self._clock()
        if batch[0].solo is not None:
            outcomes = [await self._outcome(batch[0].solo)]
        else:
            jobs = [request.job for request in batch]
            outcome = await self._outcome(lambda: self._decode_batch(jobs))  # type: ignore[arg-type]
            if isinstance(outcome, BaseException) and len(batch) > 1:
                # One bad window must not fail the others: decode each alone to find it.
                log.warning("a batch of %d windows failed (%r); decoding them one by one", len(batch), outcome)
                outcomes = [await self._outcome(lambda job=job: self._decode_batch([job])) for job in jobs]
                outcomes = [result[0] if isinstance(result, list) else result for result in outcomes]
            else:
                outcomes = outcome if isinstance(outcome, list) else [outcome]
        if len(outcomes) != len(batch):
            outcomes = [RuntimeError(f"the decoder returned {len(outcomes)} results for {len(batch)} windows")] * len(batch)
        for request, result in zip(batch, outcomes):
            if request.future.done():
                continue  # its stream went away while it was decoded
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)
        now = self._clock()
        windows = len(batch) if batch[0].job is not None else 0
        with self._records:
            self._batches.append((now, now - started, windows))
            self._forget(now)
        try:
            self.on_batch(windows, now - started)
        except Exception:  # metrics must never cost a stream its words
            log.exception("the batch hook failed")

    @staticmethod
    async def _outcome(work: Callable[[], Any]) -> Any:
        """The result of `work` in a thread, or the exception it raised. A cancelled worker still waits
        for the thread (it cannot be stopped) so that the model is never used twice at once."""
        task = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])
            raise
        except Exception as error:  # handed to the stream that asked, as its own failure
            return error

    def __repr__(self) -> str:
        load = self.load()
        return (f"<InferenceScheduler {load.queued} queued, busy {load.busy_ratio:.0%}, "
                f"batch {load.mean_batch:.1f}, cycle {load.cycle_s:.2f}s>")
