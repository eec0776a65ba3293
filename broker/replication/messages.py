"""The messages replicas and the controller exchange about one shard (decisions/0002).

Domain dataclasses, frozen; the transport maps them to and from the internal protobuf
(`proto/broker/api/internal/v1`), so wire types never reach the replica core (STYLE B.7).
Assume neither ordering nor delivery: every message may be lost, duplicated, delayed or
reordered, and the replica core is written for that.

- `Append`: the shard leader of `epoch` sends `batches` (dense, starting at `first_offset`,
  each with the epoch it was written in) to a follower. `prev_epoch` is the epoch of the record
  at `first_offset - 1` in the leader's log (0 when `first_offset` is 0 or the leader does not
  know it). An Append without batches is a heartbeat that still checks `prev_epoch` and carries
  the leader's high watermark. `leader_log_start` is the leader's first retained offset: a
  follower that cannot match below it drops its log and restarts there.
- `AppendAck`: a follower's answer. `ok=True`: the follower durably holds the leader's log up to
  `log_end` (the Ack is sent only after what it acknowledges is persisted). `ok=False`: refused;
  if `promised_epoch > epoch` the follower has promised a newer epoch (the leader is fenced),
  otherwise the logs did not match and `(log_end, last_epoch)` is a hint below the point of the
  refused Append: the follower's log up to `log_end` ends in `last_epoch`. `rejoining`: the
  follower lost its disk and must not count towards the leader's high watermark yet.
- `Prepare` / `Promise`: the controller's leader change. A replica that promises `epoch` refuses
  every Append of a lower epoch from then on and reports the durable `(last_epoch, log_end)` of
  its log; `ok=False` means it refused (it had promised more, or it is recovering from a lost
  disk and must not vote).
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.log.records import AppendBatch
from broker.meta import controller_core
from broker.types import NodeId, Offset, ShardUid


@dataclass(frozen=True, slots=True, kw_only=True)
class Append:
    shard_uid: ShardUid
    epoch: int
    leader: NodeId
    first_offset: Offset
    prev_epoch: int
    batches: tuple[AppendBatch, ...]
    leader_hw: Offset
    leader_log_start: Offset

    def __post_init__(self) -> None:
        assert self.epoch >= 1
        assert self.first_offset >= 0
        assert self.prev_epoch >= 0
        assert self.leader_log_start >= 0
        assert self.leader_hw >= 0
        offset = self.first_offset
        for batch in self.batches:
            assert batch.shard_uid == self.shard_uid, (batch.shard_uid, self.shard_uid)
            assert batch.first_offset == offset, (batch.first_offset, offset)
            assert batch.epoch <= self.epoch, (batch.epoch, self.epoch)
            offset = batch.end_offset

    @property
    def end_offset(self) -> Offset:
        """The offset after the last record carried (first_offset for a heartbeat)."""
        return self.batches[-1].end_offset if self.batches else self.first_offset


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendAck:
    shard_uid: ShardUid
    epoch: int  # the epoch of the Append answered
    sender: NodeId
    ok: bool
    log_end: Offset
    last_epoch: int
    promised_epoch: int
    # The sender lost its disk and has not rejoined for this epoch (replica.py): the leader
    # sends it the log but must not count it towards the high watermark.
    rejoining: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepare:
    shard_uid: ShardUid
    epoch: int

    def __post_init__(self) -> None:
        assert self.epoch >= 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Promise(controller_core.Promise):
    """The answer to a Prepare (`meta.controller_core.Promise`: ok, last_epoch, log_end,
    promised_epoch, defined once there) as a message: with the shard, the epoch of the Prepare
    answered and the replica that answers. The controller takes it as it is."""

    shard_uid: ShardUid
    epoch: int  # the epoch of the Prepare answered
    sender: NodeId


ReplicationMessage = Append | AppendAck | Prepare | Promise


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A message and the node it goes to."""

    to: NodeId
    message: ReplicationMessage
