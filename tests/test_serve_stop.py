"""`shoal serve` bounds a node's stop (broker/cli/serve.py `exit_unless_stopped_within`): a stop
stuck in one step, or a worker thread that keeps the interpreter from exiting, ends the process
with status 1 and a log line naming the step, instead of a process that never exits (seen once
in CI: `scripts/cluster` waited 60 s for a node after Ctrl-C)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

from broker.cli.serve import exit_unless_stopped_within

_ENDS_IN_TIME = """
from types import SimpleNamespace
from broker.cli.serve import exit_unless_stopped_within
exit_unless_stopped_within(SimpleNamespace(phase="stopped"), timeout_s=30)
"""


def test_a_process_that_ends_in_time_is_left_alone() -> None:
    """The watchdog is a daemon thread: a stop that finishes ends the process at once, with
    its own status, not 30 s later with the watchdog's."""
    child = subprocess.run(
        [sys.executable, "-c", _ENDS_IN_TIME], capture_output=True, text=True, timeout=20
    )
    assert child.returncode == 0
    assert "node_stop_timed_out" not in child.stderr


def test_a_stuck_stop_exits_with_status_1_naming_the_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exited: list[int] = []
    done = threading.Event()

    def exit_now(status: int) -> None:
        exited.append(status)
        done.set()

    node = SimpleNamespace(phase="leaving the metadata quorum")
    with caplog.at_level(logging.ERROR, logger="broker.cli.serve"):
        exit_unless_stopped_within(node, timeout_s=0.05, exit_now=exit_now)
        assert done.wait(timeout=10), "the watchdog never fired"
    assert exited == [1]
    [record] = [r for r in caplog.records if r.getMessage() == "node_stop_timed_out"]
    assert "leaving the metadata quorum" in record.__dict__["detail"]


_STUCK_AT_EXIT = """
import logging, sys, threading
from types import SimpleNamespace
from broker.cli.serve import exit_unless_stopped_within
logging.basicConfig(stream=sys.stderr, format="%(message)s %(detail)s")
threading.Thread(target=threading.Event().wait).start()  # a worker thread that never ends
exit_unless_stopped_within(SimpleNamespace(phase="closing the store"), timeout_s=0.5)
"""


def test_a_thread_that_keeps_the_interpreter_from_exiting_is_cut_short() -> None:
    child = subprocess.run(
        [sys.executable, "-c", _STUCK_AT_EXIT], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 1
    assert "node_stop_timed_out still closing the store after 0.5 s" in child.stderr
