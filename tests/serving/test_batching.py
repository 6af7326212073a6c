"""Dynamic batching: batches form under concurrency, outputs go back to the right request, one bad request
does not fail its neighbours, incompatible shapes are not stacked, and a closed batcher drains its queue."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serving.deployment.batching import BatchConfig, Batcher, Feeds


class Recorder:
    """A fake session: y = 2x, slow enough that concurrent requests pile up; records every run's rows."""

    def __init__(self, delay: float = 0.03) -> None:
        self.delay = delay
        self.runs: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, feeds: Feeds) -> Feeds:
        x = feeds["x"]
        if np.isnan(x).any():
            raise ValueError("NaN in input")
        time.sleep(self.delay)
        with self.lock:
            self.runs.append(len(x))
        return {"y": x * 2, "sum": x.sum(axis=1)}


def _request(i: int, rows: int = 1, width: int = 3) -> Feeds:
    return {"x": np.full((rows, width), float(i), dtype=np.float32)}


async def _gather(batcher: Batcher, feeds: list[Feeds]) -> list[Feeds | BaseException]:
    return await asyncio.gather(*(batcher.infer(f) for f in feeds), return_exceptions=True)


def test_concurrent_requests_share_runs_and_get_their_own_rows() -> None:
    run = Recorder()

    async def scenario() -> list[Feeds | BaseException]:
        batcher = Batcher(run, BatchConfig(max_batch_size=16), batchable=True)
        return await _gather(batcher, [_request(i, rows=1 + i % 2) for i in range(10)])

    results = asyncio.run(scenario())
    for i, result in enumerate(results):
        assert isinstance(result, dict)
        assert result["y"].shape == (1 + i % 2, 3)
        assert np.all(result["y"] == 2 * i)
        assert np.all(result["sum"] == 3 * i)
    assert sum(run.runs) == sum(1 + i % 2 for i in range(10))
    assert len(run.runs) < 10  # some requests shared a run
    assert max(run.runs) > 1


def test_max_batch_size_caps_rows_per_run() -> None:
    run = Recorder()

    async def scenario() -> None:
        batcher = Batcher(run, BatchConfig(max_batch_size=4), batchable=True)
        await _gather(batcher, [_request(i) for i in range(12)])

    asyncio.run(scenario())
    assert max(run.runs) <= 4
    assert sum(run.runs) == 12


def test_queue_delay_waits_for_company() -> None:
    run = Recorder(delay=0.0)

    async def scenario() -> None:
        batcher = Batcher(run, BatchConfig(max_batch_size=8, max_queue_delay_s=0.2), batchable=True)

        async def late() -> Feeds:
            await asyncio.sleep(0.05)
            return await batcher.infer(_request(2))

        await asyncio.gather(batcher.infer(_request(1)), late())

    asyncio.run(scenario())
    assert run.runs == [2]


def test_without_delay_a_lone_request_runs_at_once() -> None:
    run = Recorder(delay=0.0)

    async def scenario() -> float:
        batcher = Batcher(run, BatchConfig(max_batch_size=8, max_queue_delay_s=0.0), batchable=True)
        start = time.perf_counter()
        await batcher.infer(_request(1))
        return time.perf_counter() - start

    assert asyncio.run(scenario()) < 0.1


def test_a_failing_request_does_not_fail_its_batch() -> None:
    run = Recorder()

    async def scenario() -> list[Feeds | BaseException]:
        batcher = Batcher(run, BatchConfig(max_batch_size=16), batchable=True)
        feeds = [_request(i) for i in range(6)]
        feeds[3]["x"][0, 0] = np.nan
        return await _gather(batcher, feeds)

    results = asyncio.run(scenario())
    assert isinstance(results[3], ValueError)
    assert all(isinstance(r, dict) for i, r in enumerate(results) if i != 3)


def test_different_trailing_shapes_are_not_stacked() -> None:
    run = Recorder()

    async def scenario() -> list[Feeds | BaseException]:
        batcher = Batcher(run, BatchConfig(max_batch_size=16), batchable=True)
        return await _gather(batcher, [_request(i, width=3 + i % 2) for i in range(6)])

    results = asyncio.run(scenario())
    for i, result in enumerate(results):
        assert isinstance(result, dict) and result["y"].shape == (1, 3 + i % 2)


def test_unbatchable_model_runs_one_request_at_a_time() -> None:
    run = Recorder()

    async def scenario() -> None:
        batcher = Batcher(run, BatchConfig(max_batch_size=16), batchable=False)
        assert not batcher.batchable
        await _gather(batcher, [_request(i) for i in range(5)])

    asyncio.run(scenario())
    assert run.runs == [1, 1, 1, 1, 1]


def test_outputs_without_batch_axis_turn_batching_off() -> None:
    calls: list[int] = []

    def scalar(feeds: Feeds) -> Feeds:
        calls.append(len(feeds["x"]))
        time.sleep(0.02)
        return {"total": np.asarray(feeds["x"].sum())}

    async def scenario() -> tuple[list[Feeds | BaseException], bool]:
        batcher = Batcher(scalar, BatchConfig(max_batch_size=16), batchable=True)
        results = await _gather(batcher, [_request(i) for i in range(5)])
        return results, batcher.batchable

    results, batchable = asyncio.run(scenario())
    assert not batchable
    assert [float(r["total"]) for r in results if isinstance(r, dict)] == [3.0 * i for i in range(5)]


def test_close_drains_the_queue_and_later_requests_still_run() -> None:
    run = Recorder()

    async def scenario() -> tuple[list[Feeds | BaseException], Feeds]:
        batcher = Batcher(run, BatchConfig(max_batch_size=2), batchable=True)
        pending = [asyncio.ensure_future(batcher.infer(_request(i))) for i in range(6)]
        await asyncio.sleep(0)  # let them queue
        batcher.close()
        drained = await asyncio.gather(*pending, return_exceptions=True)
        late = await batcher.infer(_request(9))
        await asyncio.sleep(0.05)
        assert all(w.done() for w in batcher._workers)
        return drained, late

    drained, late = asyncio.run(scenario())
    assert all(isinstance(r, dict) for r in drained)
    assert np.all(late["y"] == 18)


@pytest.mark.parametrize("instances", [1, 2])
def test_instances_bound_runs_in_flight(instances: int) -> None:
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def run(feeds: Feeds) -> Feeds:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.03)
        with lock:
            in_flight -= 1
        return {"y": feeds["x"]}

    async def scenario() -> None:
        batcher = Batcher(run, BatchConfig(max_batch_size=1, instances=instances), batchable=False)
        await _gather(batcher, [_request(i) for i in range(6)])

    asyncio.run(scenario())
    assert peak == instances


def test_batching_is_decided_by_measurement() -> None:
    """A run of microseconds gains nothing worth the stacking; a run with a fixed cost per call does."""
    from serving.deployment.batching import try_batching

    feeds = {"x": np.ones((1, 3), np.float32)}
    fast = try_batching(lambda f: {"y": f["x"] * 2}, feeds, 16)
    assert not fast.pays and fast.saved_ms_per_row < 0.05

    def fixed_cost(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(0.002)  # like a memory-bound network: reading the weights costs the same for 1 or 16 rows
        return {"y": f["x"]}

    slow = try_batching(fixed_cost, feeds, 16, repeats=3)
    assert slow.pays and slow.gain > 8 and slow.saved_ms_per_row > 1
