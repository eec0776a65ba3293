"""Test doubles around a real `MemoryLogStore`: a gate that holds the writer thread inside
`append` until the test releases it, and a store whose appends fail on demand."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

from broker.log.memory_store import MemoryLogStore
from broker.log.records import AppendBatch
from broker.log.store import LogStoreError

WAIT_S = 10.0  # a deadline for waits on the writer thread, far above what they take


class GatedStore(MemoryLogStore):
    """Blocks the first `append` until `release()`; later appends pass straight through. The
    gate is before the write, or with `at_sync` after it (its `written` called), where the
    real store fsyncs."""

    def __init__(self, *, at_sync: bool = False) -> None:
        super().__init__()
        self._at_sync = at_sync
        self.entered = threading.Event()
        self._gate = threading.Event()
        self.append_calls: list[int] = []  # batches per call

    def append(
        self, batches: Sequence[AppendBatch], *, written: Callable[[], object] | None = None
    ) -> None:
        self.append_calls.append(len(batches))
        if not self._at_sync:
            self._shut()
            super().append(batches, written=written)
            return

        def then_sync() -> None:
            if written is not None:
                written()
            self._shut()

        super().append(batches, written=then_sync)

    def _shut(self) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self._gate.wait(WAIT_S), "the test never released the gate"

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, WAIT_S)

    def release(self) -> None:
        self._gate.set()


class FailingStore(GatedStore):
    """Like GatedStore, but raises from the next `fail_next` appends before writing."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = 0
        self.release()

    def append(
        self, batches: Sequence[AppendBatch], *, written: Callable[[], object] | None = None
    ) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise LogStoreError("disk on fire")
        super().append(batches, written=written)
