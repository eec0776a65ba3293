"""The checks of the worker-process tests (process_fleet.py) catch what they claim to.

Goal: each invariant check over worker journals fails on a journal that breaks it and passes on
one that keeps it, so a green tests/consumers/test_worker_processes.py means something.
Method: small hand-written journals (the JSON lines worker_process.py writes, as dicts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.consumers.leases import SHARD_END, TRIM_HORIZON, Lease
from tests.consumers.process_fleet import (
    balanced,
    check_all_delivered,
    check_one_owner_per_lease_period,
    check_parents_before_children,
    read_journal,
)

SHARD = "shardId-000000000000"


def lease_op(
    t: int, worker: str, op: str, expected: int, counter: int | None, *, ok: bool | None = True
) -> dict[str, Any]:
    return {
        "ev": "lease",
        "t_ns": t,
        "worker": worker,
        "op": op,
        "shard": SHARD,
        "expected_counter": expected,
        "ok": ok,
        "counter": counter,
    }


def records(t: int, worker: str, shard: str, *data: str) -> dict[str, Any]:
    return {
        "ev": "records",
        "t_ns": t,
        "worker": worker,
        "shard": shard,
        "records": [[d, "1", 0] for d in data],
    }


HANDOVER = [
    lease_op(1, "a", "take", 0, 1),
    lease_op(2, "a", "checkpoint", 1, 1),
    lease_op(3, "a", "renew", 1, 2),
    lease_op(4, "b", "steal", 2, 3),
    lease_op(5, "a", "checkpoint", 2, None, ok=False),  # refused: a lost the lease
    lease_op(6, "b", "checkpoint", 3, 3),
    lease_op(7, "b", "renew", 3, 4),
    lease_op(8, "b", "checkpoint", 4, 4),
]


def test_one_owner_per_period_passes_a_clean_handover() -> None:
    assert check_one_owner_per_lease_period(HANDOVER) == {SHARD: 2}


def test_one_owner_per_period_catches_a_checkpoint_in_someone_elses_period() -> None:
    stale = [*HANDOVER, lease_op(9, "a", "checkpoint", 4, 4)]
    with pytest.raises(AssertionError, match="succeeded in the lease period b started"):
        check_one_owner_per_lease_period(stale)


def test_one_owner_per_period_catches_two_takes_of_one_counter() -> None:
    racing = [*HANDOVER[:1], lease_op(2, "b", "take", 0, 1)]
    with pytest.raises(AssertionError, match="reached twice"):
        check_one_owner_per_lease_period(racing)


def test_one_owner_per_period_catches_a_checkpoint_without_a_take() -> None:
    with pytest.raises(AssertionError, match="before any take"):
        check_one_owner_per_lease_period([lease_op(1, "a", "checkpoint", 0, 0)])


def test_parents_before_children() -> None:
    lineage = {"c": ["p"]}
    stored = {"p": ["p1", "p2"], "c": ["c1"]}
    good = [records(1, "a", "p", "p1"), records(2, "a", "p", "p2"), records(3, "b", "c", "c1")]
    check_parents_before_children(good, lineage=lineage, stored=stored)
    early = [records(1, "a", "p", "p1"), records(2, "b", "c", "c1"), records(3, "a", "p", "p2")]
    with pytest.raises(AssertionError, match="came before p's record p2"):
        check_parents_before_children(early, lineage=lineage, stored=stored)
    skipped = [records(1, "a", "p", "p1"), records(3, "b", "c", "c1")]
    with pytest.raises(AssertionError, match="never delivered"):
        check_parents_before_children(skipped, lineage=lineage, stored=stored)
    # A parent record delivered again after the child started is fine: its first delivery
    # came first (at least once).
    again = [*good, records(4, "c", "p", "p2")]
    check_parents_before_children(again, lineage=lineage, stored=stored)


def test_all_delivered() -> None:
    check_all_delivered([records(1, "a", "p", "x", "y")], ["x", "y"])
    with pytest.raises(AssertionError, match="1 records never delivered"):
        check_all_delivered([records(1, "a", "p", "x")], ["x", "y"])


def lease(key: str, owner: str | None, *, finished: bool = False) -> Lease:
    return Lease(
        application="app",
        stream_name="s",
        lease_key=key,
        lease_owner=owner,
        lease_counter=1,
        checkpoint=SHARD_END if finished else TRIM_HORIZON,
    )


def test_balanced() -> None:
    spread = [lease("0", "a"), lease("1", "a"), lease("2", "b"), lease("3", "c")]
    assert balanced(spread, {"a", "b", "c"})
    lopsided = [lease("0", "a"), lease("1", "a"), lease("2", "a"), lease("3", "b")]
    assert not balanced(lopsided, {"a", "b"})
    assert not balanced(spread, {"a", "b"}), "c is dead: its lease is not held by a live one"
    assert not balanced([lease("0", None)], {"a"}), "an unowned lease"
    assert not balanced([], {"a"}), "no leases yet"
    finished = [lease("0", None, finished=True), lease("1", "a"), lease("2", "b")]
    assert balanced(finished, {"a", "b"}), "finished leases do not count"


def test_a_journal_line_being_written_is_left_for_later(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text('{"ev": "started", "t_ns": 1, "worker": "w"}\n{"ev": "rec')
    assert read_journal(path) == [{"ev": "started", "t_ns": 1, "worker": "w"}]
    assert read_journal(tmp_path / "missing.jsonl") == []
