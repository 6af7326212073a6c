"""Dynamic batching, as Triton does it: requests queue per model; a worker takes what is waiting (up to a
maximum batch size, optionally waiting a maximum queue delay for more), runs the session once, and splits the
outputs back to each request.

    KILN_MAX_BATCH_SIZE=16 KILN_MAX_QUEUE_DELAY_MS=2 kiln serve --models skinmodel

Batches form by themselves under load: while one batch runs, new requests queue, and the next run takes them
all. So with a queue delay of 0 a lone request never waits, and concurrent ones share a run. Models whose runs
take microseconds (tabular) run on the event loop thread itself, where a batch forms while the loop parses the
next requests; slow ones (images) run on a thread so that the loop keeps serving. Requests whose
tensors cannot be stacked (different trailing shapes or dtypes) go into different batches. If a batched run
fails, each request in it is run alone, so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], Feeds]
# (rows in the run, seconds the oldest request waited, seconds the run took)
ObserveFn = Callable[[int, float, float], None]


@dataclass
class _Pending:
    feeds: Feeds
    rows: int
    key: tuple[tuple[str, tuple[int, ...], str], ...]
    future: asyncio.Future[Feeds]
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 16  # rows in one run; 1 = no batching, requests still run one at a time
    max_queue_delay_s: float = 0.0  # how long the first request of a batch may wait for company
    instances: int = 1  # runs in flight at once
    inline_max_rows: int = 0  # runs of at most this many rows happen on the event loop thread (cheap models)


class Batcher:
    """Queue and worker(s) in front of one session. Create and use it on the event loop thread."""

    def __init__(self, run: RunFn, config: BatchConfig, *, batchable: bool, observe: ObserveFn | None = None) -> None:
        self._run = run
        self._config = config
        self._batchable = batchable and config.max_batch_size > 1
        self._observe = observe
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=config.instances, thread_name_prefix="kiln-ort")
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def batchable(self) -> bool:
        return self._batchable

    @property
    def config(self) -> BatchConfig:
        return self._config

    @property
    def inline(self) -> bool:
        return self._config.inline_max_rows > 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def infer(self, feeds: Feeds) -> Feeds:
        """Run `feeds` (axis 0 = rows) in the next batch that fits and return this request's outputs."""
        loop = asyncio.get_running_loop()
        if self._closed:  # a request that picked this model just before a swap: run it, unbatched
            return await loop.run_in_executor(None, self._run, feeds)
        first = next(iter(feeds.values()))
        key = tuple(sorted((n, a.shape[1:], a.dtype.str) for n, a in feeds.items()))
        pending = _Pending(feeds, int(first.shape[0]) if first.ndim else 1, key, loop.create_future())
        self._queue.append(pending)
        self._ensure_workers()
        self._wakeup.set()
        return await pending.future

    def close(self) -> None:
        """Stop taking new work into batches; the workers finish what is queued, then exit."""
        self._closed = True
        self._wakeup.set()
        if not self._workers:
            self._executor.shutdown(wait=False)

    def _ensure_workers(self) -> None:
        self._workers = [w for w in self._workers if not w.done()]
        while len(self._workers) < self._config.instances:
            self._workers.append(asyncio.get_running_loop().create_task(self._work()))

    async def _work(self) -> None:
        try:
            while True:
                while not self._queue:
                    if self._closed:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                batch = await self._collect()
                await self._execute(batch)
        finally:
            if self._closed and all(w.done() or w is asyncio.current_task() for w in self._workers):
                self._executor.shutdown(wait=False)

    async def _collect(self) -> list[_Pending]:
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        if not self._batchable:
            return batch
        limit = self._config.max_batch_size
        deadline = first.enqueued + self._config.max_queue_delay_s
        while True:
            rows = self._take_compatible(batch, rows, limit)
            remaining = deadline - time.perf_counter()
            if rows >= limit or remaining <= 0 or self._closed:
                return batch
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _take_compatible(self, batch: list[_Pending], rows: int, limit: int) -> int:
        key = batch[0].key
        kept: deque[_Pending] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.key == key and rows + item.rows <= limit:
                batch.append(item)
                rows += item.rows
            else:
                kept.append(item)
        self._queue.extendleft(reversed(kept))
        return rows

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        feeds = batch[0].feeds if len(batch) == 1 else _stack([p.feeds for p in batch])
        waited = time.perf_counter() - batch[0].enqueued
        start = time.perf_counter()
        rows = sum(p.rows for p in batch)
        try:
            if rows <= self._config.inline_max_rows:  # a thread hop (and GIL hand-over) costs more than the run
                outputs = self._run(feeds)
            else:
                outputs = await loop.run_in_executor(self._executor, self._run, feeds)
        except Exception as err:
            if len(batch) == 1:
                _resolve(batch[0], None, err)
                return
            for pending in batch:  # isolate the request that broke the run
                await self._execute([pending])
            return
        if self._observe is not None:
            self._observe(rows, waited, time.perf_counter() - start)
        if len(batch) == 1:
            _resolve(batch[0], outputs, None)
            return
        try:
            parts = _split(outputs, [p.rows for p in batch])
        except ValueError:  # outputs without a batch axis: run each request alone from now on
            self._batchable = False
            for pending in batch:
                await self._execute([pending])
            return
        for pending, part in zip(batch, parts, strict=True):
            _resolve(pending, part, None)


MIN_GAIN = 1.5  # a batched run must be this much faster per row than single runs ...
MIN_SAVED_MS = 0.05  # ... and save at least this much run time per row: below it, stacking, splitting and the
# per-batch wake-ups cost as much as they save (serve_bench: the 7 us XGBoost lost 4-8% to batching)


@dataclass(frozen=True)
class BatchingTrial:
    """What one batched run of `rows` copies saved against single runs, measured at warm-up."""

    rows: int
    single_ms: float  # one row alone
    batch_ms: float  # `rows` rows in one run
    gain: float  # rows * single / batch: how much faster per row

    @property
    def saved_ms_per_row(self) -> float:
        return self.single_ms - self.batch_ms / self.rows

    @property
    def pays(self) -> bool:
        return self.gain >= MIN_GAIN and self.saved_ms_per_row >= MIN_SAVED_MS


def try_batching(run: RunFn, feeds: Feeds, rows: int, repeats: int = 7) -> BatchingTrial:
    """Time one run of the first row alone and of `rows` stacked copies of it (best of `repeats` each). A
    memory-bound network reads its weights once per run, so 16 rows cost little more than one (batching pays);
    a tree ensemble runs in microseconds, so what batching could save is less than what it costs."""
    single = {n: a[:1] for n, a in feeds.items()}
    stacked = {n: np.repeat(a[:1], rows, axis=0) for n, a in feeds.items()}
    run(single)
    run(stacked)
    one = min(_timed(run, single) for _ in range(repeats))
    many = min(_timed(run, stacked) for _ in range(repeats))
    return BatchingTrial(rows, one * 1000, many * 1000, rows * one / max(many, 1e-9))


def _timed(run: RunFn, feeds: Feeds) -> float:
    start = time.perf_counter()
    run(feeds)
    return time.perf_counter() - start


def _resolve(pending: _Pending, outputs: Feeds | None, error: Exception | None) -> None:
    if pending.future.done():  # the caller went away
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        assert outputs is not None
        pending.future.set_result(outputs)


def _stack(all_feeds: list[Feeds]) -> Feeds:
    return {name: np.concatenate([f[name] for f in all_feeds], axis=0) for name in all_feeds[0]}


def _split(outputs: Feeds, rows: list[int]) -> list[Feeds]:
    total = sum(rows)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(f"output {name!r} has shape {array.shape}, not {total} rows")
    offsets = np.cumsum([0, *rows])
    return [{n: a[offsets[i] : offsets[i + 1]] for n, a in outputs.items()} for i in range(len(rows))]
