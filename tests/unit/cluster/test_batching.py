"""The replica's adaptive batcher: a batch is what queued while the model ran; faults stay with
the request that caused them."""

from __future__ import annotations

import asyncio
import threading

import pytest

from slimline.cluster.batching import Batcher


class Model:
    """Records each call's texts; the first call can be held until released; "boom" fails."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        self.started.set()
        self.release.wait(10)
        if "boom" in texts:
            raise ValueError("boom is not a text this model takes")
        return [t.upper() for t in texts]


def test_a_lone_request_runs_alone_at_once() -> None:
    model = Model()

    async def go() -> list[str]:
        return await Batcher(model, max_texts=16).submit(["a", "b"])

    assert asyncio.run(go()) == ["A", "B"]
    assert model.calls == [["a", "b"]]


def test_requests_that_queue_while_the_model_runs_share_the_next_batch_up_to_max_texts() -> None:
    model = Model(hold_first=True)

    async def go() -> list[list[str]]:
        batcher = Batcher(model, max_texts=4)
        first = asyncio.create_task(batcher.submit(["first"]))
        await asyncio.to_thread(model.started.wait, 10)  # the model is busy with "first"
        queued = [asyncio.create_task(batcher.submit([f"q{i}", f"r{i}"])) for i in range(3)]
        await asyncio.sleep(0.05)
        model.release.set()
        got = await asyncio.gather(first, *queued)
        assert (batcher.batches, batcher.texts) == (3, 7)
        return got

    assert asyncio.run(go()) == [["FIRST"], ["Q0", "R0"], ["Q1", "R1"], ["Q2", "R2"]]
    # two queued requests (4 texts) fill the second batch; the third waits for the next one
    assert model.calls == [["first"], ["q0", "r0", "q1", "r1"], ["q2", "r2"]]


def test_a_request_that_fails_its_batch_fails_alone() -> None:
    model = Model(hold_first=True)

    async def go() -> list[object]:
        batcher = Batcher(model, max_texts=16)
        first = asyncio.create_task(batcher.submit(["warm"]))
        await asyncio.to_thread(model.started.wait, 10)
        rest = [asyncio.create_task(batcher.submit(t)) for t in (["ok"], ["boom"], ["fine"])]
        await asyncio.sleep(0.05)
        model.release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    warm, ok, boom, fine = asyncio.run(go())
    assert (warm, ok, fine) == (["WARM"], ["OK"], ["FINE"])
    assert isinstance(boom, ValueError)
    assert ["ok", "boom", "fine"] in model.calls  # tried together first, then one by one


def test_a_request_whose_client_left_is_not_run() -> None:
    model = Model(hold_first=True)

    async def go() -> None:
        batcher = Batcher(model, max_texts=16)
        first = asyncio.create_task(batcher.submit(["first"]))
        await asyncio.to_thread(model.started.wait, 10)
        gone = asyncio.create_task(batcher.submit(["gone"]))
        kept = asyncio.create_task(batcher.submit(["kept"]))
        await asyncio.sleep(0.05)
        gone.cancel()
        model.release.set()
        assert await kept == ["KEPT"] and await first == ["FIRST"]
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(go())
    assert model.calls == [["first"], ["kept"]]
