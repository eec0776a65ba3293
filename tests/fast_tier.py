"""The fast tier's guard: a test that starts a node process must say so with a marker.

`scripts/test --fast` selects the tests that need no node process by marker
(`FAST_TIER_SELECTION`). A test that starts a `shoal serve` (or `scripts/serve`,
`scripts/cluster`) child without the `process` or `cluster` marker would slip into that tier
and make it wait for node start-ups again. So every `subprocess.Popen` the test session makes
is seen by an audit hook (`install`), and one that starts a node process while an unmarked test
runs fails that test at once, in every tier, naming the test and the command.

Property tests try fewer examples in the fast tier (`examples`, `configure`): a quarter of what
the default run and CI try, which still run every property at its full count.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

import pytest

NODE_PROCESS_MARKERS = ("process", "cluster")
# What `scripts/test --fast` leaves out (its `-m` expression says the same).
FAST_TIER_SELECTION = "not process and not cluster and not slow"
# Scripts of this repository that start node processes.
_NODE_SCRIPTS = frozenset({"serve", "cluster"})

# The share of a property test's examples that the fast tier tries, and the fewest it tries.
FAST_EXAMPLES_SHARE = 0.25
FAST_EXAMPLES_MIN = 10
# Hypothesis' default count (a property test without `max_examples`).
DEFAULT_EXAMPLES = 100

_running: pytest.Item | None = None
_installed = False
_selected = False


class UnmarkedNodeProcess(AssertionError):
    """A test without the `process` or `cluster` marker started a node process."""


def starts_node_process(words: Sequence[str]) -> bool:
    """Whether this command line starts a node: `python -m broker serve`, `shoal serve`
    (also through the chaos tests' `sh -c ... exec` wrapper), `scripts/serve` or
    `scripts/cluster`."""
    for index, word in enumerate(words):
        path = PurePath(word)
        if path.name in ("broker", "shoal") and "serve" in words[index + 1 :]:
            return True
        if path.parent.name == "scripts" and path.name in _NODE_SCRIPTS:
            return True
    return False


def check(item: pytest.Item | None, argv: Sequence[str]) -> None:
    """Raises `UnmarkedNodeProcess` if `item` (the running test) lacks a node-process marker
    and `argv` starts a node."""
    if item is None or any(item.get_closest_marker(m) for m in NODE_PROCESS_MARKERS):
        return
    if starts_node_process(argv):
        raise UnmarkedNodeProcess(
            f"{item.nodeid} starts a node process ({' '.join(argv)}) but is "
            f"not marked {' or '.join(NODE_PROCESS_MARKERS)}: it would run in `scripts/test "
            "--fast`. Mark the test (or its module) with pytest.mark.process or "
            "pytest.mark.cluster."
        )


def running(item: pytest.Item | None) -> None:
    """The test whose setup, call or teardown runs now (None between tests)."""
    global _running
    _running = item


def _audit(event: str, arguments: tuple[Any, ...]) -> None:
    if event != "subprocess.Popen":
        return
    _executable, argv, _cwd, _env = arguments
    if isinstance(argv, (str, bytes)):
        words = os.fsdecode(argv).split()  # shell=True: one command line
    elif isinstance(argv, os.PathLike):
        words = [os.fsdecode(argv)]
    else:
        words = [os.fsdecode(word) for word in argv]
    check(_running, words)


def configure(config: pytest.Config) -> None:
    """Notes whether this run is the fast tier (its marker selection), before any test module
    is imported: `examples` is read when a module's decorators run."""
    global _selected
    _selected = config.option.markexpr == FAST_TIER_SELECTION


def selected() -> bool:
    """Whether this run is `scripts/test --fast` (or any run with its `-m` selection)."""
    return _selected


def examples(full: int) -> int:
    """How many examples a property test tries in this run: `full` in the default run and CI,
    `FAST_EXAMPLES_SHARE` of it (at least `FAST_EXAMPLES_MIN`) in the fast tier."""
    if not _selected:
        return full
    return min(full, max(FAST_EXAMPLES_MIN, round(full * FAST_EXAMPLES_SHARE)))


def install() -> None:
    """Adds the audit hook to this process (once: audit hooks cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        _installed = True
