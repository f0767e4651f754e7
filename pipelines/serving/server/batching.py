"""Dynamic batching: concurrent requests of one model grouped into one model call.

Requests queue up as ``(history row, k)``; one loop per model takes the first, waits at most
``max_wait_s`` for more (none by default: whatever queued while the previous call ran forms
the next batch, as Triton's dynamic batcher does with a zero queue delay), and runs the whole
batch in the model's own thread, so the event loop keeps reading requests meanwhile. A call
that fails or outlasts the deadline fails every request of its batch with :class:`ModelFailure`,
which the service answers from the popularity fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

Answer = tuple[np.ndarray, np.ndarray]
ModelCall = Callable[[np.ndarray, int], Answer]


class ModelFailure(Exception):
    """The model call of a request failed (``kind`` "error") or missed its deadline ("deadline")."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass
class _Pending:
    row: np.ndarray
    k: int
    future: asyncio.Future[Answer]


class Batcher:
    """Groups the requests of one model into batched calls of ``model(padded, k)``.

    Args:
        model: ``(padded [B, L], k) -> (items [B, k], scores [B, k])``; blocking.
        max_batch: The most rows of one call.
        max_wait_s: How long a batch waits for more rows after its first (0: no wait).
        deadline_s: A call slower than this fails its requests with "deadline".
        on_batch: Called with each call's batch size (metrics).
        enabled: False: every request is its own call (for measuring the difference).
    """

    def __init__(
        self,
        model: ModelCall,
        *,
        max_batch: int,
        max_wait_s: float,
        deadline_s: float,
        on_batch: Callable[[int], None] = lambda size: None,
        enabled: bool = True,
    ) -> None:
        self._model = model
        self._max_batch = max_batch if enabled else 1
        self._max_wait_s = max_wait_s if enabled else 0.0
        self._deadline_s = deadline_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        # one thread per model: calls of one model never overlap, other models run beside it
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    @property
    def pending(self) -> int:
        """Requests queued and not yet in a call."""
        return self._queue.qsize()

    def submit(self, row: np.ndarray, k: int) -> asyncio.Future[Answer]:
        """Queue one padded history row; the future resolves to its ``(items, scores)``.

        Raises:
            ModelFailure: The batcher is closed (its model was swapped out and drained).
        """
        if self._closing or self._task is None:
            raise ModelFailure("error", "the model is not serving (swapped out)")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(row, k, future))
        return future

    async def close(self) -> None:
        """Answer every queued request, then stop (a swapped-out model drains this way)."""
        if self._closing:
            return
        self._closing = True
        self._queue.put_nowait(None)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=False)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            if self._max_wait_s > 0 and len(batch) < self._max_batch:
                await asyncio.sleep(self._max_wait_s)
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a client may have gone away
        if not live:
            return
        k = max(p.k for p in live)
        padded = np.stack([p.row for p in live])
        self._on_batch(len(live))
        call = loop.run_in_executor(self._executor, self._model, padded, k)
        try:
            items, scores = await asyncio.wait_for(call, self._deadline_s)
        except TimeoutError:
            failure = ModelFailure(
                "deadline", f"model call exceeded {self._deadline_s * 1000:.0f} ms"
            )
            self._fail(live, failure)
            return
        except Exception as exc:  # any runtime failure degrades to the fallback, never a 5xx
            self._fail(live, ModelFailure("error", f"{type(exc).__name__}: {exc}"))
            return
        for row, pending in enumerate(live):
            if not pending.future.done():
                pending.future.set_result((items[row, : pending.k], scores[row, : pending.k]))

    @staticmethod
    def _fail(batch: list[_Pending], failure: ModelFailure) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(failure)
