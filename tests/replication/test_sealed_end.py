"""`DriverCore.sealed_end`: the answer to the controller's seal request (pure, no I/O; the
driver shell's `seal` and the simulator both ask it)."""

from __future__ import annotations

from broker.log.memory_store import MemoryLogStore
from broker.log.records import new_record
from broker.meta.image import MetadataImage, ShardState
from broker.replication.driver_core import DriverCore, run_calls
from broker.types import NodeId, Offset, ShardUid
from tests.meta.factories import one_stream_image, shard_meta

NODE = NodeId("a")
SHARD = ShardUid(7)


class _Answer:
    """A producer's completion that only remembers being answered."""

    def __init__(self) -> None:
        self.answered = False

    def done(self) -> bool:
        return self.answered

    def set_result(self, result: object, /) -> None:
        self.answered = True

    def set_exception(self, exception: BaseException, /) -> None:
        self.answered = True


def _image(*, state: ShardState, epoch: int = 1) -> MetadataImage:
    # One replica: what it persists is committed.
    return one_stream_image(
        shard_meta(SHARD, state=state, replicas=(NODE,), leader=NODE, epoch=epoch)
    )


def _turns(core: DriverCore, store: MemoryLogStore) -> None:
    """Turns as the shell takes them (everything persisted at once) until none has work."""
    for _ in range(10):
        turn = core.take_turn()
        if not turn.work:
            core.finish(turn)
            return
        plan = core.persist_plan(turn, wall_ms=0)
        run_calls(store, plan.before)
        if plan.appends:
            store.append(plan.appends)
        run_calls(store, plan.beside)
        core.finish(turn)
    raise AssertionError("the turns did not settle")


def test_a_seal_is_answered_once_everything_accepted_before_it_is_committed() -> None:
    store = MemoryLogStore()
    core = DriverCore(node_id=NODE, store=store)
    core.apply_image(_image(state=ShardState.OPEN), now_ms=0, wall_ms=0)
    _turns(core, store)
    assert core.sealed_end(SHARD, 1) is None  # not sealing: no end to answer
    answer = _Answer()
    core.propose(SHARD, epoch=1, records=[new_record("k", b"x")], now_ms=1, completion=answer)
    core.apply_image(_image(state=ShardState.SEALING), now_ms=1, wall_ms=1)
    # The record accepted before the seal is not committed yet: not yet (the caller asks
    # again after the next turn).
    assert core.sealed_end(SHARD, 1) is None
    assert not answer.done()
    _turns(core, store)
    assert answer.done()
    end = core.sealed_end(SHARD, 1)
    assert end is not None and end > Offset(0)
    assert end == store.log_end(SHARD)


def test_a_seal_at_another_epoch_is_not_answered() -> None:
    """A leader change came first: the seal the controller asked at the old epoch, or one
    for an epoch this node does not know yet, gets no end."""
    store = MemoryLogStore()
    core = DriverCore(node_id=NODE, store=store)
    core.apply_image(_image(state=ShardState.SEALING, epoch=2), now_ms=0, wall_ms=0)
    _turns(core, store)
    assert core.sealed_end(SHARD, 2) is not None
    assert core.sealed_end(SHARD, 1) is None
    assert core.sealed_end(SHARD, 3) is None
    assert core.sealed_end(ShardUid(8), 2) is None
