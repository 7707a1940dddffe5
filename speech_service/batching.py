"""Continuous batching: the model takes everything that queued while it was busy.

Ray Serve's `@serve.batch` (2.60) forms batches eagerly: after a batch's first item it waits
`batch_wait_timeout_s` for company, hands the batch over to wait for the model, and at once starts
forming the next one. So every lone request pays the whole wait, and with no wait, batches under
load are of one item, formed while the model was still busy with the previous call.

`ContinuousBatcher` forms a batch when the model is free instead: an idle model starts on the first
item at once (or after `wait_s` of waiting for company, if set); items that arrive during a call queue
and the next call takes them all, up to `max_batch_size`. One call runs at a time. Items whose caller
was cancelled (a streaming client hung up) are dropped before a call. Plain asyncio, no Ray.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class ContinuousBatcher(Generic[Item, Result]):
    """`await submit(item)` gives `run([..., item, ...])`'s result for that item.

    `run` takes a list of items and returns one result per item, in order; an exception it raises
    goes to every caller of that call. `max_batch_size` and `wait_s` may be changed at any time and
    apply from the next call on. All use must be from one event loop."""

    def __init__(self, run: Callable[[list[Item]], Awaitable[Sequence[Result]]],
                 max_batch_size: int = 8, wait_s: float = 0.0) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s  # how long an idle model waits for company before its first call
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None  # runs calls while there is work; None when idle

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._arrived.set()
        if self._worker is None:
            # An empty context: the worker serves many callers, so it must not carry the first
            # one's context (request id in log lines) through its whole busy period.
            self._worker = contextvars.Context().run(asyncio.create_task, self._work())
        return await future  # cancelling the caller cancels this future, which drops its item

    def queued(self) -> int:
        """Items waiting for a call whose callers still wait."""
        return sum(not future.done() for _, future in self._queue)

    async def _work(self) -> None:
        try:
            await self._wait_for_company()
            while batch := self._take():
                await self._call(batch)
        except asyncio.CancelledError:  # the event loop is shutting down: no caller waits for ever
            for _, future in self._queue:
                future.cancel()
            raise
        finally:
            self._worker = None  # no await after the last `_take`: a later submit starts a new worker

    async def _wait_for_company(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while self.queued() < self.max_batch_size and (left := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11
                return

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        while self._queue and len(batch) < self.max_batch_size:
            item, future = self._queue.popleft()
            if not future.done():  # done before its call: its caller was cancelled
                batch.append((item, future))
        return batch

    async def _call(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        futures = [future for _, future in batch]
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch call returned {len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:  # the worker itself was cancelled (event loop shutting down)
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the call raised is its callers' to handle
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results):
            if not future.done():  # a caller cancelled during the call gets nothing
                future.set_result(result)
