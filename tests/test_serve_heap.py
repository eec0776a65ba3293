"""`shoal serve` settles the heap once the node serves (broker/cli/serve.py `_settle_the_heap`):
what start-up allocated leaves the collector's walks, and young collections are rarer. In a
child interpreter: the collector's state is process-wide and pytest's must stay as it is."""

from __future__ import annotations

import subprocess
import sys

from broker import limits

_PROBE = """
import gc
from broker.cli import serve
before = gc.get_freeze_count()
older = gc.get_threshold()[1:]
serve._settle_the_heap()
print(before, gc.get_freeze_count(), *gc.get_threshold(), *older)
"""


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    before, frozen, young, gen1, gen2, old1, old2 = map(int, out)
    assert before == 0
    assert frozen > 10_000  # the modules and what they built, not a handful of objects
    assert young == limits.gc_young_allocations > 700  # CPython's default: 700
    assert (gen1, gen2) == (old1, old2)
