"""`shoal serve` settles the heap once the node serves (broker/cli/serve.py `_settle_the_heap`):
what start-up allocated leaves the collector's walks, and young collections are rarer. In a
child interpreter: the collector's state is process-wide and pytest's must stay as it is."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

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


_PAGES_PROBE = """
import resource, sys
from broker.cli import serve
applied = serve._keep_page_memory() if sys.argv[1] == "kept" else False
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    pages = [b"\\x01" * (12 * 2**20) for _ in range(3)]  # three page-sized buffers, freed
    del pages
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(int(applied), *faults)
"""


def test_page_sized_buffers_reuse_memory_once_the_node_serves() -> None:
    """After `_keep_page_memory`, buffers of a GetRecords page's size are written into memory
    the process has, not pages the kernel must fault in again each time (glibc's defaults do:
    the control child)."""

    def run(mode: str) -> list[int]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run(
            [sys.executable, "-c", _PAGES_PROBE, mode],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env=env,
        ).stdout.split()
        return list(map(int, out))

    applied, *kept = run("kept")
    if not applied:
        pytest.skip("not glibc: malloc's thresholds cannot be set")
    _, *default = run("default")
    three_pages = 3 * 12 * 2**20 // resource.getpagesize()
    assert all(faults < three_pages // 10 for faults in kept[1:]), kept
    assert all(faults > three_pages // 2 for faults in default[1:]), default
