"""`World`: the simulator's event heap, virtual clock and seeded randomness.

Events are `(due_ms, sequence_no, label, action)` tuples (compared in C: the heap is the
simulator's hottest structure); ties break by insertion order (sequence numbers are unique, so
labels and actions are never compared), never by object identity, so a seed replays exactly.
Randomness comes from `random(name)`: one `Random` per named stream derived from the seed, so
adding draws to one stream (say, a new workload) does not change another's (the fault
schedule).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

_Event = tuple[int, int, str, Callable[[], None]]  # due_ms, sequence_no, label, action


class World:
    """The virtual clock and the heap of things that will happen."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.now_ms = 0
        self.steps = 0
        self._heap: list[_Event] = []
        self._sequence_no = 0
        self._streams: dict[str, random.Random] = {}

    def random(self, name: str) -> random.Random:
        """The named random stream of this seed (the same object on every call)."""
        stream = self._streams.get(name)
        if stream is None:
            stream = random.Random(f"{self.seed}/{name}")
            self._streams[name] = stream
        return stream

    def schedule(self, delay_ms: int, label: str, action: Callable[[], None]) -> None:
        assert delay_ms >= 0
        self._sequence_no += 1
        heapq.heappush(self._heap, (self.now_ms + delay_ms, self._sequence_no, label, action))

    def step(self) -> str | None:
        """Runs the next event; returns its label, or None if nothing is scheduled."""
        if not self._heap:
            return None
        due_ms, _, label, action = heapq.heappop(self._heap)
        assert due_ms >= self.now_ms
        self.now_ms = due_ms
        self.steps += 1
        action()
        return label

    @property
    def pending(self) -> int:
        return len(self._heap)
