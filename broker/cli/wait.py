"""`--wait` for any command: poll a condition with a deadline, showing progress on a terminal.

Every command group uses the same two pieces: `add_wait_arguments(parser)` adds `--wait` and
`--timeout SECONDS`, and `wait_until(check, args=..., what=...)` polls `check()` (which returns
`(done, status)`) until it is done or the timeout passes. On a terminal the status is one line
on stderr rewritten in place (`\\r`) with the seconds elapsed; elsewhere (scripts, CI logs)
nothing is printed until the end, so output stays clean. A timeout raises `WaitTimeout`, which
`broker/cli/__init__.py` turns into one `error:` line and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TextIO

from broker.clock import Clock, SystemClock

POLL_INTERVAL_S = 0.5
DEFAULT_TIMEOUT_S = 300.0


class WaitTimeout(Exception):
    """The condition did not hold before the deadline; the message says what was last seen."""


def add_wait_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"wait until {what}")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"with --wait: give up after this many seconds ({DEFAULT_TIMEOUT_S:.0f})",
    )


class Progress:
    """A status line a terminal rewrites in place; silent when `stream` is not a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._live = self._stream.isatty()
        self._width = 0

    def show(self, text: str) -> None:
        if not self._live:
            return
        padding = " " * max(0, self._width - len(text))
        self._stream.write("\r" + text + padding)
        self._stream.flush()
        self._width = len(text)

    def done(self) -> None:
        if self._live and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
        self._width = 0


def wait_until(
    check: Callable[[], tuple[bool, str]],
    *,
    timeout_s: float,
    what: str,
    progress: Progress | None = None,
    interval_s: float = POLL_INTERVAL_S,
    clock: Clock | None = None,
) -> str:
    """Polls `check` until it reports done; returns its last status. Raises WaitTimeout."""
    progress = progress if progress is not None else Progress()
    clock = clock if clock is not None else SystemClock()
    started_ms = clock.monotonic_ms()
    try:
        while True:
            done, status = check()
            elapsed = (clock.monotonic_ms() - started_ms) / 1000
            if done:
                return status
            if elapsed > timeout_s:
                raise WaitTimeout(f"{what}: still {status} after {timeout_s:.0f} s")
            progress.show(f"{what}: {status} ({elapsed:.0f} s)")
            time.sleep(interval_s)  # a poll interval, bounded by timeout_s
    finally:
        progress.done()
