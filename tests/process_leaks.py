"""Finds the processes a test session started that are still running at its end.

A process a test or fixture starts and never stops outlives pytest: it keeps ports and data
directories, and if it inherited pytest's stdout or stderr, the CI step reading that pipe never
sees it close and runs until its own time limit. `mark_session` puts a token unique to this
pytest process into its environment, so every process started from it (and theirs in turn,
even after their parent died and they were re-parented to init) carries the token in
`/proc/PID/environ`; a child started with an environment of its own is still found through the
parent links in `/proc/PID/stat`. Linux only (elsewhere nothing is found).

Under pytest-xdist each worker has its own token and checks its own processes (the tests run
there); the controller's token is only in its workers' environments.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

_TOKEN_VARIABLE = "PYTEST_SHOAL_SESSION"  # not SHOAL_*: nodes warn about unknown SHOAL_ names
_PROC = Path("/proc")


@dataclass(frozen=True)
class Leftover:
    pid: int
    command: str


def mark_session() -> None:
    """Gives this process (and so everything it starts from now on) a token of its own."""
    os.environ[_TOKEN_VARIABLE] = f"{os.getpid()}-{uuid.uuid4().hex}"


def leftovers() -> list[Leftover]:
    """The live processes started from this one (not zombies: they hold nothing)."""
    token = os.environ.get(_TOKEN_VARIABLE)
    if token is None or not _PROC.is_dir():
        return []
    me = os.getpid()
    marker = f"{_TOKEN_VARIABLE}={token}".encode()
    parents: dict[int, int] = {}
    marked: set[int] = set()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if state == "Z":
            continue
        parents[pid] = int(parent)
        if marker in environ.split(b"\0"):
            marked.add(pid)
    found = set(marked)
    for pid in parents:
        ancestor = parents.get(pid)
        seen = 0
        while ancestor is not None and ancestor > 1 and seen < 64:
            if ancestor == me:
                found.add(pid)
                break
            ancestor, seen = parents.get(ancestor), seen + 1
    return [Leftover(pid, _command(pid)) for pid in sorted(found)]


def wait_gone(*, deadline_s: float) -> list[Leftover]:
    """The leftovers still running after up to `deadline_s` (processes being stopped as the
    session ends get that long to exit)."""
    give_up = time.monotonic() + deadline_s
    while True:
        left = leftovers()
        if not left or time.monotonic() > give_up:
            return left
        time.sleep(0.1)


def kill(left: list[Leftover]) -> None:
    for process in left:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(process.pid, signal.SIGKILL)


def _command(pid: int) -> str:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:300]
