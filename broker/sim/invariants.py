"""Named invariants, checked after every simulated event and at the end (STYLE B.5, DESIGN §4).

- `HighWatermarkMonotonic`: a replica's HW never goes back (per process incarnation: a restart
  may come back with a lower, lazily persisted HW, which only delays reads).
- `OneLeaderPerShardEpoch`: no two nodes ever lead one shard in one epoch.
- `CommittedPrefixIdentical`: every replica's log below its HW equals the committed log (an
  oracle built from every HW any replica reached: first seen wins, any difference fails).
- `ShardOrderStable`: a record once readable stays at its offset (the oracle never changes;
  reads through `LogStore.read` return the oracle's records, control records skipped).
- `SequenceNumbersUnique`: no record appears at two offsets (producers never retry here).
- `AcknowledgedNeverLost`: an acknowledged record is in the committed log at its offset, when
  acknowledged and at the end.
- `AcknowledgedDurableOnMajority`: when a record is acknowledged, a majority of the set the
  acknowledging leader counts from holds it synced (what a crash of every node would keep),
  unless a disk was lost while it was pending. Leaders send before their fsync and step
  acks while a turn's fsync is in flight: this is what keeps those orderings honest.
- `KnownEndCoversAcknowledged`: a replica that says its HW is the shard's committed end
  (`ShardReplica.knows_committed_end`: readers take a read that reaches it for the end of the
  shard) holds every acknowledged record below it, unless a newer epoch was prepared since
  (a deposed leader not told yet: the stale-read window ARCHITECTURE "Reads" names).
- `HashKeysCoveredOnce` (`control.SimController`, after every command applied): the stream's
  shards that are not closed cover every hash key exactly once, through every reshard.
- `ParentsBeforeChildren`: a closed parent holds no data record, acknowledged or committed, at
  or past the end offset its reshard recorded (`ShardMeta.end_offset`, the seal's answer), so
  a reader that reads the parent to its end and then its children reads every acknowledged
  record, the parent's first. A seal that answered before everything it accepted was
  committed, or a sealing leader that still accepts appends, shows here.
- `Liveness` (end only): after the faults stop, every shard converges within the deadline.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.log.records import StoredRecord
from broker.replication.replica import Role, ShardReplica
from broker.sim.cluster import SimCluster, SimNode
from broker.sim.workloads import Workload
from broker.types import NodeId, Offset, ShardUid

_Committed = tuple[int, bool, str, bytes]  # epoch, control, partition key, data
_READ_ALL = 2**40


class InvariantViolation(Exception):
    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        super().__init__(f"{name}: {detail}")


class Invariants:
    def __init__(self, cluster: SimCluster, workload: Workload) -> None:
        self._cluster = cluster
        self._workload = workload
        self.committed: dict[ShardUid, dict[Offset, _Committed]] = {}
        self._offset_of: dict[tuple[ShardUid, str, bytes], Offset] = {}
        self._hw_seen: dict[tuple[NodeId, ShardUid, int], Offset] = {}
        self._scanned: dict[tuple[NodeId, ShardUid, int], Offset] = {}
        self._leaders: dict[tuple[ShardUid, int], NodeId] = {}
        self._acknowledged_end: dict[ShardUid, Offset] = {}
        self._image = cluster.controller.image  # the last metadata image looked at
        self._sealed_ends: dict[ShardUid, Offset] = {}  # closed parents' end offsets
        self.checks = 0

    def replica_started(self, node: SimNode, shard_uid: ShardUid) -> None:
        key = (node.node_id, shard_uid, node.incarnation)
        self._scanned[key] = node.store.log_start(shard_uid)

    def after_step(self, label: str) -> None:
        del label
        self.checks += 1
        # One pass over every live replica (the simulator's hottest loop: after every event).
        # The replicas that take their HW for the shard's end are kept for the known-end check,
        # which must see this event's acknowledgements first (`_check_acknowledged`); nothing
        # between the two changes a replica.
        hw_seen, scanned, leaders = self._hw_seen, self._scanned, self._leaders
        known_ends: list[tuple[NodeId, ShardUid, ShardReplica]] = []
        for node in self._cluster.nodes.values():
            core = node.core
            if not node.alive or core is None:
                continue
            node_id, incarnation = node.node_id, node.incarnation
            for shard_uid, local in core.locals.items():
                replica = local.replica
                hw = replica.high_watermark
                key = (node_id, shard_uid, incarnation)
                seen = hw_seen.get(key, 0)
                if hw < seen:
                    raise InvariantViolation(
                        "HighWatermarkMonotonic", f"{node_id} {shard_uid}: {seen} -> {hw}"
                    )
                if hw != seen:
                    hw_seen[key] = hw
                if replica.role is Role.LEADER:
                    leader = leaders.setdefault((shard_uid, replica.epoch), node_id)
                    if leader != node_id:
                        self._one_leader(node_id, shard_uid, replica.epoch)
                if hw > scanned.get(key, 0):
                    self._scan(node, shard_uid, hw)
                if replica.knows_committed_end():
                    known_ends.append((node_id, shard_uid, replica))
        if self._cluster.controller.image is not self._image:
            self._new_image()
        if self._workload.newly_acknowledged:
            self._check_acknowledged()
        if known_ends:
            self._check_known_ends(known_ends)

    def _new_image(self) -> None:
        """Parents closed by the image just applied: what was acknowledged and committed on
        them so far lies below their end (`ParentsBeforeChildren`); later records are checked
        as they come (`_record_committed`, `_check_acknowledged`)."""
        image = self._image = self._cluster.controller.image
        for stream in image.streams.values():
            for shard in stream.shards:
                if shard.end_offset is None or shard.uid in self._sealed_ends:
                    continue
                end = self._sealed_ends[shard.uid] = shard.end_offset
                acknowledged = self._workload.acknowledged_records.get(shard.uid, {})
                for offset in acknowledged:
                    self._within_sealed_end(shard.uid, offset, "acknowledged")
                for offset, entry in self.committed.get(shard.uid, {}).items():
                    if offset >= end and not entry[1]:
                        self._within_sealed_end(shard.uid, offset, "committed")

    def _within_sealed_end(self, shard_uid: ShardUid, offset: Offset, what: str) -> None:
        end = self._sealed_ends.get(shard_uid)
        if end is not None and offset >= end:
            raise InvariantViolation(
                "ParentsBeforeChildren",
                f"{shard_uid} closed at end offset {end}: a data record {what} at {offset}",
            )

    def _check_known_ends(self, known_ends: list[tuple[NodeId, ShardUid, ShardReplica]]) -> None:
        quorum = self._cluster.controller
        for node_id, shard_uid, replica in known_ends:
            if shard_uid not in quorum.shards:
                continue
            if replica.epoch < quorum.prepared_epoch(shard_uid):
                continue
            acknowledged = self._acknowledged_end.get(shard_uid, Offset(0))
            if replica.high_watermark < acknowledged:
                raise InvariantViolation(
                    "KnownEndCoversAcknowledged",
                    f"{node_id} {shard_uid} epoch {replica.epoch}: HW "
                    f"{replica.high_watermark} taken for the end, {acknowledged} acknowledged",
                )

    def check_leaders(self, node: SimNode) -> None:
        """`OneLeaderPerShardEpoch` for one node, inside a turn (see `SimCluster._turn`)."""
        for shard_uid, replica in node.replicas.items():
            if replica.role is Role.LEADER:
                self._one_leader(node.node_id, shard_uid, replica.epoch)

    def _one_leader(self, node_id: NodeId, shard_uid: ShardUid, epoch: int) -> None:
        leader = self._leaders.setdefault((shard_uid, epoch), node_id)
        if leader != node_id:
            raise InvariantViolation(
                "OneLeaderPerShardEpoch", f"{shard_uid} epoch {epoch}: {leader} and {node_id}"
            )

    def _scan(self, node: SimNode, shard_uid: ShardUid, hw: Offset) -> None:
        key = (node.node_id, shard_uid, node.incarnation)
        start = max(self._scanned.get(key, Offset(0)), node.store.log_start(shard_uid))
        if hw <= start:
            return
        batches = node.store.read_batches(
            shard_uid, start_offset=Offset(start), end_offset=hw, bytes_max=_READ_ALL
        )
        offset = start
        for batch in batches:
            if batch.first_offset != offset:
                raise InvariantViolation(
                    "CommittedPrefixIdentical",
                    f"{node.node_id} {shard_uid}: hole below HW {hw} at {offset}",
                )
            for index, record in enumerate(batch.records):
                entry = (batch.epoch, batch.control, record.partition_key, record.data)
                self._record_committed(node.node_id, shard_uid, Offset(offset + index), entry)
            offset = batch.end_offset
        if offset != hw:
            raise InvariantViolation(
                "CommittedPrefixIdentical",
                f"{node.node_id} {shard_uid}: log ends at {offset}, below its HW {hw}",
            )
        self._scanned[key] = hw

    def _record_committed(
        self, node_id: NodeId, shard_uid: ShardUid, offset: Offset, entry: _Committed
    ) -> None:
        log = self.committed.setdefault(shard_uid, {})
        known = log.get(offset)
        if known is None:
            log[offset] = entry
            if not entry[1]:
                self._within_sealed_end(shard_uid, offset, "committed")
                identity = (shard_uid, entry[2], entry[3])
                other = self._offset_of.setdefault(identity, offset)
                if other != offset:
                    raise InvariantViolation(
                        "SequenceNumbersUnique",
                        f"{shard_uid}: {entry[3]!r} at offsets {other} and {offset}",
                    )
        elif known != entry:
            raise InvariantViolation(
                "CommittedPrefixIdentical",
                f"{node_id} {shard_uid} offset {offset}: {entry} but committed {known}",
            )

    def _check_acknowledged(self) -> None:
        workload = self._workload
        for shard_uid, offset, key, data, replica_set, disks_kept in workload.newly_acknowledged:
            entry = self.committed.get(shard_uid, {}).get(offset)
            if entry is None or entry[2:] != (key, data) or entry[1]:
                raise InvariantViolation(
                    "AcknowledgedNeverLost",
                    f"{shard_uid} offset {offset}: acknowledged {data!r}, committed {entry}",
                )
            if disks_kept:
                self._check_durable_on_majority(shard_uid, offset, (key, data), replica_set)
            self._within_sealed_end(shard_uid, offset, "acknowledged")
            end = self._acknowledged_end.get(shard_uid, Offset(0))
            self._acknowledged_end[shard_uid] = Offset(max(end, offset + 1))
        workload.newly_acknowledged.clear()

    def _check_durable_on_majority(
        self,
        shard_uid: ShardUid,
        offset: Offset,
        record: tuple[str, bytes],
        replica_set: tuple[NodeId, ...],
    ) -> None:
        """A majority of the set the acknowledging leader counted from holds the record synced
        (not the image's set now: seed 6988 added a fourth replica while the previous epoch's
        leader, not yet told, acknowledged on two of its three, as the protocol allows: the
        new epoch's leader was chosen holding the record)."""
        nodes = self._cluster.nodes
        holders = sorted(
            node_id
            for node_id in replica_set
            if node_id in nodes and nodes[node_id].store.durable_record(shard_uid, offset) == record
        )
        if len(holders) <= len(replica_set) // 2:
            raise InvariantViolation(
                "AcknowledgedDurableOnMajority",
                f"{shard_uid} offset {offset}: acknowledged while synced only on {holders} "
                f"of {list(replica_set)}",
            )

    def observed_read(
        self,
        node_id: NodeId,
        shard_uid: ShardUid,
        start: Offset,
        hw: Offset,
        records: Sequence[StoredRecord],
    ) -> None:
        log = self.committed.get(shard_uid, {})
        previous = start - 1
        for record in records:
            entry = log.get(record.offset)
            if not start <= record.offset < hw or record.offset <= previous:
                raise InvariantViolation(
                    "ShardOrderStable", f"{node_id} {shard_uid}: read {record.offset} out of order"
                )
            if entry is None or entry[1] or entry[2:] != (record.partition_key, record.data):
                raise InvariantViolation(
                    "ShardOrderStable",
                    f"{node_id} {shard_uid} offset {record.offset}: read {record.data!r}, "
                    f"committed {entry}",
                )
            for skipped in range(previous + 1, record.offset):
                if Offset(skipped) in log and not log[Offset(skipped)][1]:
                    raise InvariantViolation(
                        "ShardOrderStable",
                        f"{node_id} {shard_uid}: read skipped data record {skipped}",
                    )
            previous = record.offset

    def final_check(self) -> None:
        cluster = self._cluster
        if not cluster.converged():
            raise InvariantViolation("Liveness", f"no convergence: {cluster.summary()}")
        for shard_uid, image in sorted(cluster.controller.shards.items()):
            assert image.leader is not None
            leader = cluster.nodes[image.leader]
            end = leader.replicas[shard_uid].statistics().log_end
            reference = leader.store.read_batches(
                shard_uid, start_offset=Offset(0), end_offset=end, bytes_max=_READ_ALL
            )
            final = {
                Offset(batch.first_offset + index): (
                    batch.epoch,
                    batch.control,
                    record.partition_key,
                    record.data,
                )
                for batch in reference
                for index, record in enumerate(batch.records)
            }
            for node_id in image.replicas:
                node = cluster.nodes[node_id]
                node.store.check_consistency(shard_uid)
                self._scan(node, shard_uid, node.replicas[shard_uid].high_watermark)
            for offset, entry in self.committed.get(shard_uid, {}).items():
                if final.get(offset) != entry:
                    raise InvariantViolation(
                        "ShardOrderStable",
                        f"{shard_uid} offset {offset}: committed {entry}, "
                        f"final {final.get(offset)}",
                    )
            acknowledged = self._workload.acknowledged_records.get(shard_uid, {})
            for offset, (partition_key, data) in acknowledged.items():
                found = final.get(offset)
                if found is None or found[2:] != (partition_key, data):
                    raise InvariantViolation(
                        "AcknowledgedNeverLost",
                        f"{shard_uid} offset {offset}: acknowledged {data!r}, final {found}",
                    )
