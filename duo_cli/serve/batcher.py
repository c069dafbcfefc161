"""An asyncio micro-batcher: concurrent requests answered by one call of a batch function.

Rules: a lone request never waits (when nothing else could join it, the batch runs at
once); while a batch runs, new requests queue and the next batch takes all of them (up to
``max_batch``); if more requests are expected (``expected()``), the batch waits for them at
most ``max_wait_s``. Cancelled requests are dropped before the call. If a batch fails,
its items are retried one by one, so one bad item fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

logger = logging.getLogger(__name__)


class MicroBatcher:
    """Batches ``submit(item)`` calls into ``fn(items) -> results`` run on ``executor``.

    :param fn: the batch function (runs in the executor thread; one result per item).
    :param max_batch: most items per call (1 = one call per request).
    :param max_wait_s: longest wait for expected items to join a batch.
    :param expected: how many more items may arrive soon (0 = do not wait).
    :param executor: where ``fn`` runs; ``None``: in the event loop itself, which then parses
        no request while a batch runs (they wait in the socket buffers and form the next
        batch) but never fights a forward thread for the GIL.
    """

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], max_batch: int,
                 max_wait_s: float, expected: Callable[[], int], executor: Executor | None):
        self.fn = fn
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.expected = expected
        self.executor = executor
        self._queue: deque[tuple[Any, asyncio.Future]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.items = 0
        self.max_seen = 0

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Answer what is queued, then stop."""
        if self._task is None:
            return
        while self._queue:
            await asyncio.sleep(0.001)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, item: Any) -> Any:
        (result,) = await self.submit_many([item])
        if isinstance(result, BaseException):
            raise result
        return result

    async def submit_many(self, items: Sequence[Any]) -> list[Any]:
        """Queue ``items`` together (they go into the same batch, up to ``max_batch``);
        their results, an item's exception in its place."""
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._queue.extend(zip(items, futures, strict=True))
        self._wake.set()
        return await asyncio.gather(*futures, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._fill(loop)
            batch = []
            while self._queue and len(batch) < self.max_batch:
                item, fut = self._queue.popleft()
                if not fut.done():  # a cancelled request is dropped here
                    batch.append((item, fut))
            if not batch:
                continue
            self.batches += 1
            self.items += len(batch)
            self.max_seen = max(self.max_seen, len(batch))
            items = [b[0] for b in batch]
            if self.executor is None:
                results = self._call(items)
            else:
                results = await loop.run_in_executor(self.executor, self._call, items)
            for (_, fut), res in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait (bounded) while more items are expected and the batch is not full."""
        if self.max_wait_s <= 0 or self.max_batch == 1:
            return
        deadline = loop.time() + self.max_wait_s
        while len(self._queue) < self.max_batch and self.expected() > 0:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return

    def _call(self, items: list[Any]) -> list[Any]:
        try:
            results = list(self.fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for "
                                   f"{len(items)} items")
            return results
        except Exception as exc:
            if len(items) == 1:
                logger.exception("batch item failed")
                return [exc]
            logger.warning("a batch of %d failed (%s); retrying its items one by one",
                           len(items), exc)
            return [self._call([item])[0] for item in items]
