"""Adaptive request batching for a replica: a batch is whatever arrived while the model was busy.

Why not `serve.batch`: Serve (2.60) forms the next batch as soon as the previous one is handed to
its worker, before the model is free. With no wait, every batch under load is one request (the
rest queue behind the model one at a time); with a wait, a lone request pays the whole wait (the
5 ms default was a third of p50 at one client). Here the loop takes the next batch only when the
model is free: a lone request runs at once, and under load every request that queued during a
model call joins the next one, up to `max_texts` texts.

One request whose texts fail a batch does not fail the others: the batch is rerun one request at
a time, and only the failing request gets the error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

R = TypeVar("R")


class Batcher(Generic[R]):
    """Runs `run(texts) -> one result per text` in a thread, one batch at a time."""

    def __init__(self, run: Callable[[list[str]], list[R]], max_texts: int, wait_s: float = 0.0) -> None:
        """`wait_s` > 0 holds each batch that long for more requests, even at one client (the
        old fixed-window behaviour, for a load of many tiny requests that never overlap)."""
        self.run, self.max_texts, self.wait_s = run, max_texts, wait_s
        self._queue: deque[tuple[list[str], asyncio.Future[list[R]]]] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # batches run, and the texts in them: what /model reports
        self.texts = 0

    async def submit(self, texts: list[str]) -> list[R]:
        """One result per text, in order; the model's exception for these texts if they fail."""
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._queue.append((texts, future))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._loop())
        return await future

    def _take(self) -> list[tuple[list[str], asyncio.Future[list[R]]]]:
        """The next batch: the oldest waiting request, then more while they fit in max_texts."""
        batch: list[tuple[list[str], asyncio.Future[list[R]]]] = []
        size = 0
        while self._queue:
            texts, future = self._queue[0]
            if future.done():  # its client went away
                self._queue.popleft()
                continue
            if batch and size + len(texts) > self.max_texts:
                break
            self._queue.popleft()
            batch.append((texts, future))
            size += len(texts)
        return batch

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            if self.wait_s > 0:
                await asyncio.sleep(self.wait_s)
            batch = self._take()
            if not batch:
                continue
            self.batches += 1
            self.texts += sum(len(texts) for texts, _ in batch)
            await self._answer(batch)

    async def _answer(self, batch: list[tuple[list[str], asyncio.Future[list[R]]]]) -> None:
        flat = [t for texts, _ in batch for t in texts]
        try:
            results = await asyncio.to_thread(self.run, flat)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for texts, future in batch:  # which request failed it: each alone
                try:
                    _settle(future, await asyncio.to_thread(self.run, texts))
                except Exception as alone:
                    _settle(future, alone)
            return
        at = 0
        for texts, future in batch:
            _settle(future, results[at : at + len(texts)])
            at += len(texts)


def _settle(future: asyncio.Future[R], outcome: R | BaseException) -> None:
    if future.done():  # cancelled meanwhile: nobody waits for it
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
