"""`DriverCore.persist_plan`: the order a turn's writes take (pure, no I/O)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from broker import limits
from broker.log.memory_store import MemoryLogStore
from broker.replication.driver_core import DriverCore, PersistPlan, Turn, run_calls
from broker.replication.replica import Ready
from broker.types import NodeId, Offset, ShardUid

SHARD = ShardUid(7)


class _Store(MemoryLogStore):
    """Records the store calls a plan makes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def set_high_watermark(self, shard_uid: ShardUid, offset: Offset) -> None:
        self.calls.append(("hw", offset))

    def truncate_suffix(self, shard_uid: ShardUid, *, from_offset: Offset) -> None:
        self.calls.append(("truncate", from_offset))

    def promise(self, shard_uid: ShardUid, epoch: int) -> None:
        self.calls.append(("promise", epoch))


def _ready(**changes: Any) -> Ready:
    fields: dict[str, Any] = {
        "reset_to": None,
        "truncate_from": None,
        "promise": None,
        "appends": (),
        "high_watermark": None,
        "to_send": (),
        "reads": (),
        "committed_end": None,
        "abandoned": False,
    }
    fields.update(changes)
    return Ready(**fields)


def _plan(core: DriverCore, ready: Ready) -> PersistPlan:
    local: Any = SimpleNamespace(replica=SimpleNamespace(shard_uid=SHARD))
    turn = Turn(work=[(local, ready)], promises=[], candidates=[], every=False)
    return core.persist_plan(turn, wall_ms=1_000_000)


@pytest.fixture(autouse=True)
def _every_turn_writes_its_hw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "replication_hw_flush_ms", 0)


def test_a_high_watermark_goes_beside_the_appends_when_nothing_must_precede_them() -> None:
    store = _Store()
    core = DriverCore(node_id=NodeId("a"), store=store)
    batch: Any = object()
    plan = _plan(core, _ready(appends=(batch,), high_watermark=Offset(3)))
    assert plan.before == ()
    assert plan.appends == (batch,)
    run_calls(store, plan.beside)
    assert store.calls == [("hw", 3)]


def test_a_high_watermark_goes_first_when_a_truncation_or_promise_precedes_the_appends() -> None:
    store = _Store()
    core = DriverCore(node_id=NodeId("a"), store=store)
    batch: Any = object()
    plan = _plan(core, _ready(appends=(batch,), high_watermark=Offset(3), promise=4))
    assert plan.beside == ()
    run_calls(store, plan.before)
    assert store.calls == [("hw", 3), ("promise", 4)]
    store.calls.clear()
    plan = _plan(core, _ready(appends=(batch,), high_watermark=Offset(5), truncate_from=Offset(6)))
    assert plan.beside == ()
    run_calls(store, plan.before)
    assert store.calls == [("hw", 5), ("truncate", 6)]
