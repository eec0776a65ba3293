"""`DriverCore.send_ahead`: which Appends go out before the turn is durable (pure, no I/O)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from broker.log.memory_store import MemoryLogStore
from broker.replication.driver_core import DriverCore, Turn
from broker.replication.messages import Append, Envelope
from broker.replication.replica import Ready
from broker.types import NodeId, Offset, ShardUid

FIRST = ShardUid(7)  # its leader raised the promise itself: a new shard's first epoch
SECOND = ShardUid(8)  # led in an epoch whose promise is already durable


def _append(shard_uid: ShardUid) -> Envelope:
    message = Append(
        shard_uid=shard_uid,
        epoch=1,
        leader=NodeId("a"),
        first_offset=Offset(0),
        prev_epoch=0,
        batches=(),
        leader_hw=Offset(0),
        leader_log_start=Offset(0),
    )
    return Envelope(to=NodeId("b"), message=message)


def _ready(shard_uid: ShardUid, *, promise: int | None) -> Ready:
    return Ready(
        reset_to=None,
        truncate_from=None,
        promise=promise,
        appends=(),
        high_watermark=None,
        to_send=(_append(shard_uid),),
        reads=(),
        committed_end=None,
        abandoned=False,
    )


def test_the_appends_of_a_ready_that_persists_a_promise_wait_for_it() -> None:
    """Rule 6 (replica.py) knows the epochs a reopened replica may have led in from its
    durable promise: a leader that sent its first Appends of an epoch before its own promise
    of it was durable, then crashed, would lead in that epoch again (scripts/sim seed 203:
    AcknowledgedDurableOnMajority). Those Appends go out with `finish`."""
    core = DriverCore(node_id=NodeId("a"), store=MemoryLogStore())
    first: Any = SimpleNamespace(replica=SimpleNamespace(shard_uid=FIRST))
    second: Any = SimpleNamespace(replica=SimpleNamespace(shard_uid=SECOND))
    turn = Turn(
        work=[(first, _ready(FIRST, promise=1)), (second, _ready(SECOND, promise=None))],
        promises=[],
        candidates=[],
        every=False,
    )
    ahead = core.send_ahead(turn)
    assert [envelope.message.shard_uid for envelope in ahead] == [SECOND]
    assert turn.sent_ahead == {SECOND}  # `finish` sends FIRST's, not SECOND's again
