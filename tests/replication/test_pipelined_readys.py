"""Several Readys outstanding per replica (issue 18: etcd-raft's asynchronous storage writes).

A driver may take the next Ready while the last is being persisted, as long as both only
append (replica.py module docstring). What the replica counts as durable, what a follower
acknowledges and what a leader commits move only as each Ready is advanced, in order; a
truncation decided while a write is in flight is handed out only after it, and the records
it cuts never count as durable, though that write lands.
"""

from __future__ import annotations

import pytest

from broker.log.memory_store import MemoryLogStore
from broker.log.records import AppendBatch
from broker.replication.driver_core import DriverCore, run_calls
from broker.replication.messages import Append, AppendAck
from broker.replication.replica import Ready, ShardReplica
from broker.rpc.transport import replica_state
from broker.types import NodeId, Offset
from tests.meta.factories import one_stream_image, shard_meta
from tests.replication.test_replica import SHARD, A, B, C, Cluster, rec


def _acks(ready: Ready) -> list[AppendAck]:
    return [e.message for e in ready.to_send if isinstance(e.message, AppendAck)]


def _durable_end(replica: ShardReplica) -> int:
    return replica.statistics().durable_end


def _leader_with_follower() -> tuple[Cluster, ShardReplica]:
    """Epoch 1 led by A; B has its marker durably; B's next Readys are driven by hand."""
    c = Cluster()
    c.configure(1, A)
    c.settle()
    follower = c[B].r
    assert _durable_end(follower) == 1 and not follower.has_ready()
    return c, follower


def _append_to(c: Cluster, follower: NodeId, *texts: str) -> Append:
    """The leader's Append carrying `texts` to `follower`."""
    c[A].r.propose([rec(t) for t in texts], c.now)
    c[A].flush(c.now)
    (append,) = [m for m in c[A].take(follower) if isinstance(m, Append) and m.batches]
    return append


def test_a_follower_takes_its_next_ready_while_the_last_is_in_flight_and_advances_in_order() -> (
    None
):
    c, follower = _leader_with_follower()
    follower.step(_append_to(c, B, "x"), c.now)
    first = follower.ready()
    follower.step(_append_to(c, B, "y"), c.now)
    assert follower.has_ready()  # appends only: pipelined behind the first
    second = follower.ready()
    assert follower.outstanding() == 2
    assert [a.log_end for a in _acks(first)] == [2]
    assert [a.log_end for a in _acks(second)] == [3]
    # Nothing of either counts as durable until it is advanced, in order.
    assert _durable_end(follower) == 1
    with pytest.raises(AssertionError):
        follower.advance(second)
    follower.advance(first)
    assert _durable_end(follower) == 2
    follower.advance(second)
    assert _durable_end(follower) == 3 and follower.outstanding() == 0


def test_a_replicas_reported_state_is_its_durable_log_until_a_new_epochs_marker_is_advanced() -> (
    None
):
    """The controller's set-change guard (`_holders_before_change`) counts a replica holding
    the leader's marker by its ReplicaStatus (last epoch, log end); a marker still in flight
    must not count, or a holder that crashes before the write lands loses it again."""
    c, follower = _leader_with_follower()
    c.configure(2, A)
    (marker,) = [m for m in c[A].take(B) if isinstance(m, Append) and m.batches]
    follower.step(marker, c.now)
    in_flight = follower.ready()
    stats = follower.statistics()
    assert (stats.last_epoch, stats.log_end) == (2, 2)
    assert (stats.durable_last_epoch, stats.durable_end) == (1, 1)
    state = replica_state(stats, damaged=False)
    assert (state.last_epoch, state.log_end) == (1, 1)
    follower.advance(in_flight)
    state = replica_state(follower.statistics(), damaged=False)
    assert (state.last_epoch, state.log_end) == (2, 2)


def test_a_leaders_hw_follows_its_own_durable_end_ready_by_ready() -> None:
    c = Cluster()
    c.configure(1, A)
    c.settle()
    leader = c[A].r
    leader.propose([rec("x")], c.now)
    first = leader.ready()
    leader.propose([rec("y")], c.now)
    second = leader.ready()
    # Both followers acknowledge both records durably (they received the Appends ahead).
    for ready in (first, second):
        for envelope in ready.to_send:
            assert isinstance(envelope.message, Append)
            c[envelope.to].r.step(envelope.message, c.now)
            c[envelope.to].flush(c.now)
    for follower in (B, C):
        for message in c[follower].take(A):
            leader.step(message, c.now)
    assert leader.statistics().followers[0].match_end == 3
    assert leader.high_watermark == 1  # rule 3: its own durable end is still the marker
    leader.advance(first)
    assert leader.high_watermark == 2
    leader.advance(second)
    assert leader.high_watermark == 3


def test_a_truncation_waits_for_the_write_in_flight_and_what_it_cuts_never_counts() -> None:
    """B holds epoch 1's record at offset 1 in a write in flight when epoch 2's leader C, which
    never had it, sends other records there. The truncation (and the promise) wait for that
    write to be advanced; the cut record is not counted durable though its write landed; the
    acknowledgement of the old write stays in epoch 1, so no leader of epoch 2 counts it."""
    c, follower = _leader_with_follower()
    follower.step(_append_to(c, B, "x"), c.now)
    in_flight = follower.ready()
    assert [(a.epoch, a.log_end) for a in _acks(in_flight)] == [(1, 2)]
    other = AppendBatch(
        shard_uid=SHARD,
        first_offset=Offset(1),
        arrival_ms=c.now,
        records=(rec("other"),),
        epoch=2,
    )
    follower.step(
        Append(
            shard_uid=SHARD,
            epoch=2,
            leader=C,
            first_offset=Offset(1),
            prev_epoch=1,
            batches=(other,),
            leader_hw=Offset(1),
            leader_log_start=Offset(0),
        ),
        c.now,
    )
    assert follower.needs_order()
    assert not follower.has_ready()  # not behind a write in flight
    with pytest.raises(AssertionError):
        follower.ready()
    follower.advance(in_flight)
    assert _durable_end(follower) == 1  # offset 1's write landed, but it is being cut
    assert follower.has_ready()
    cut = follower.ready()
    assert cut.truncate_from == 1 and cut.promise == 2
    assert [(b.first_offset, b.epoch) for b in cut.appends] == [(1, 2)]
    assert [(a.epoch, a.log_end) for a in _acks(cut)] == [(2, 2)]
    assert not follower.has_ready()  # nothing goes behind an ordered Ready either
    follower.advance(cut)
    assert _durable_end(follower) == 2


def _single_replica_core() -> tuple[DriverCore, MemoryLogStore]:
    """A node leading a one-replica shard, its first turns persisted."""
    store = MemoryLogStore()
    core = DriverCore(node_id=A, store=store)
    image = one_stream_image(shard_meta(SHARD, replicas=(A,), leader=A, epoch=1))
    core.apply_image(image, now_ms=0, wall_ms=0)
    turn = core.take_turn()
    plan = core.persist_plan(turn, wall_ms=0)
    run_calls(store, plan.before)
    store.append(plan.appends)
    core.finish(turn)
    return core, store


class _Answer:
    def __init__(self) -> None:
        self.result: object = None

    def done(self) -> bool:
        return self.result is not None

    def set_result(self, result: object, /) -> None:
        self.result = result

    def set_exception(self, exception: BaseException, /) -> None:
        self.result = exception


def test_a_pipelined_turn_carries_records_only_and_a_prepare_waits_for_the_pipeline() -> None:
    """`DriverCore.take_pipelined_turn`: a turn behind one in flight takes the records
    proposed meanwhile; with nothing to append it waits (a turn per acknowledgement or high
    watermark costs CPU and gains nothing); a Prepare, whose promise must be persisted in
    order and answered only once durable, stops the pipeline until it drains."""
    core, _ = _single_replica_core()
    core.propose(SHARD, epoch=1, records=[rec("x")], now_ms=1, completion=_Answer())
    first = core.take_turn()
    assert [len(r.appends) for _, r in first.work] == [1]
    assert core.take_pipelined_turn() is None  # nothing proposed since
    core.propose(SHARD, epoch=1, records=[rec("y")], now_ms=2, completion=_Answer())
    second = core.take_pipelined_turn()
    assert second is not None and [len(r.appends) for _, r in second.work] == [1]
    core.propose(SHARD, epoch=1, records=[rec("z")], now_ms=3, completion=_Answer())
    promised = _Answer()
    assert core.prepare(SHARD, 2, now_ms=3, completion=promised)
    assert core.take_pipelined_turn() is None
    core.finish(first)
    core.finish(second)
    third = core.take_turn()
    ((_, ready),) = third.work
    assert ready.promise == 2 and len(ready.appends) == 1
    assert not promised.done()
    core.finish(third)
    assert promised.done()
