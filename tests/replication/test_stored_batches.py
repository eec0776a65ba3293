"""One encoding of a batch, end to end (issue 18 item 1): from the cluster's metadata format
`STORED_BATCHES_LEVEL` on, a leader encodes each batch once in format 3 with its CRC, and the
very same bytes go to its log, over the wire (protobuf) and into each follower's log, checked
against that CRC on the way in; below the level, batches are format 2 and travel as records
(what the previous release reads: tests/meta/test_metadata_format.py runs its decoders).

Real parts: the replica core, the wire codec with a protobuf round trip, RocksDB stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.api.internal.v1 import internal_pb2 as pb
from broker.log.records import (
    BATCH_FORMAT_VERSION,
    WRITTEN_BATCH_FORMAT_VERSION,
    AppendBatch,
    BatchHeader,
    NewRecord,
)
from broker.log.rocks_store import RocksLogStore
from broker.meta.metadata_format import FIRST_FORMAT, METADATA_FORMAT_MAX, STORED_BATCHES_LEVEL
from broker.replication.messages import Append, Envelope
from broker.replication.replica import (
    Proposal,
    ReplicaDurableState,
    ReplicationKnobs,
    ShardReplica,
    batch_format_for,
)
from broker.rpc.replication_codec import CorruptBatchError, envelope_from_proto, envelope_to_proto
from broker.types import NodeId, Offset, ShardUid

SHARD = ShardUid(7)
A, B = NodeId("a"), NodeId("b")
KNOBS = ReplicationKnobs(heartbeat_ms=10, resend_ms=100)


class _Node:
    def __init__(self, node_id: NodeId, path: Path) -> None:
        self.node_id = node_id
        self.store = RocksLogStore(path)
        durable = ReplicaDurableState.from_store(self.store, SHARD, rejoin_floor=None)
        self.replica = ShardReplica(SHARD, node_id, durable, knobs=KNOBS)
        self.sent: list[Envelope] = []
        self.persisted: list[AppendBatch] = []

    def flush(self) -> None:
        """Persists and sends what the replica has ready, as the driver does."""
        for _ in range(20):
            if not self.replica.has_ready():
                return
            ready = self.replica.ready()
            if ready.promise is not None:
                self.store.promise(SHARD, ready.promise)
            if ready.appends:
                self.store.append(ready.appends)
                self.persisted.extend(ready.appends)
            self.sent.extend(ready.to_send)
            self.replica.advance(ready)
        raise AssertionError("Readys never ran out")

    def stored_values(self) -> list[bytes]:
        batches = self.store.read_batches(
            SHARD, start_offset=Offset(0), end_offset=Offset(10**6), bytes_max=10**9
        )
        return [b.value for b in batches]


def _wire(envelope: Envelope, sender: NodeId) -> pb.ReplicationEnvelope:
    """The envelope as the follower's stream receives it (serialized and parsed again)."""
    return pb.ReplicationEnvelope.FromString(
        envelope_to_proto(envelope, sender=sender).SerializeToString()
    )


@pytest.fixture
def pair(tmp_path: Path) -> tuple[_Node, _Node]:
    return _Node(A, tmp_path / "a"), _Node(B, tmp_path / "b")


def _replicate(level: int, leader: _Node, follower: _Node) -> list[pb.ReplicationEnvelope]:
    """Leader A and follower B at metadata format `level`; one proposal, delivered over the
    wire; returns what went over it."""
    for node in (leader, follower):
        node.replica.configure(
            epoch=1,
            leader=A,
            replicas=(A, B),
            sealing=False,
            now_ms=1,
            batch_format=batch_format_for(level),
        )
        node.flush()
    records = [NewRecord(f"key-{i}", f"data-{i}".encode() * (i + 1)) for i in range(50)]
    records.append(NewRecord("ключ", b""))  # a multi-byte key and empty data
    proposal = leader.replica.propose(records, 2)
    assert isinstance(proposal, Proposal)
    leader.flush()
    wire = [_wire(e, A) for e in leader.sent if e.to == B]
    for message in wire:
        decoded = envelope_from_proto(message)
        assert decoded is not None
        follower.replica.step(decoded, 3)
        follower.flush()
    return wire


def test_from_the_level_on_the_leaders_bytes_are_what_every_log_stores(
    pair: tuple[_Node, _Node],
) -> None:
    leader, follower = pair
    wire = _replicate(METADATA_FORMAT_MAX, leader, follower)
    assert METADATA_FORMAT_MAX >= STORED_BATCHES_LEVEL
    sent = [b for m in wire for b in m.append.batches]
    assert sent, "the leader sent its batches"
    assert all(b.value and not b.records for b in sent), "stored bytes, not records"
    # The follower kept the bytes as they came: the same as the leader's, batch for batch.
    assert [b.value for b in sent] == leader.stored_values() == follower.stored_values()
    assert [b.value for b in sent] == [b.value for b in leader.persisted]
    assert {BatchHeader.parse(v).version for v in follower.stored_values()} == {
        BATCH_FORMAT_VERSION
    }
    # ... and what it decodes from them is what was proposed.
    data = follower.store.read(
        SHARD, start_offset=Offset(0), end_offset=Offset(100), records_max=100, bytes_max=10**6
    )
    assert [r.partition_key for r in data][-1] == "ключ"
    assert len(data) == 51
    # Sizes come from the bytes, without decoding a record, and agree with the records'.
    for batch in follower.persisted:
        assert batch.size_bytes == sum(r.size_bytes for r in batch.records)
    leader.store.close()
    follower.store.close()


def test_below_the_level_batches_are_format_2_and_travel_as_records(
    pair: tuple[_Node, _Node],
) -> None:
    leader, follower = pair
    level = STORED_BATCHES_LEVEL - 1
    assert batch_format_for(level) == batch_format_for(FIRST_FORMAT) == 2
    wire = _replicate(level, leader, follower)
    sent = [b for m in wire for b in m.append.batches]
    assert sent and all(b.records and not b.value for b in sent)
    for node in pair:
        versions = {BatchHeader.parse(v).version for v in node.stored_values()}
        assert versions == {WRITTEN_BATCH_FORMAT_VERSION}
        node.store.close()


def test_bytes_damaged_on_the_way_are_refused(pair: tuple[_Node, _Node]) -> None:
    leader, follower = pair
    wire = _replicate(METADATA_FORMAT_MAX, leader, follower)
    message = next(m for m in wire if m.append.batches)
    value = bytearray(message.append.batches[-1].value)
    value[len(value) // 2] ^= 0x01
    message.append.batches[-1].value = bytes(value)
    with pytest.raises(CorruptBatchError, match="CRC"):
        envelope_from_proto(message)
    for node in pair:
        node.store.close()


def test_the_format_a_replica_writes_never_goes_down(pair: tuple[_Node, _Node]) -> None:
    leader, _ = pair
    for level in (METADATA_FORMAT_MAX, FIRST_FORMAT):  # an older image applied late
        leader.replica.configure(
            epoch=1,
            leader=A,
            replicas=(A, B),
            sealing=False,
            now_ms=1,
            batch_format=batch_format_for(level),
        )
    leader.flush()
    leader.replica.propose([NewRecord("k", b"v")], 2)
    leader.flush()
    assert {b.version for b in leader.persisted} == {BATCH_FORMAT_VERSION}
    append = next(e.message for e in leader.sent if isinstance(e.message, Append))
    assert all(b.version == BATCH_FORMAT_VERSION for b in append.batches)
    for node in pair:
        node.store.close()


def test_an_encrypted_streams_batch_travels_in_the_clear_and_is_sealed_by_each_store(
    tmp_path: Path,
) -> None:
    """Encryption at rest: the leader's store seals, a catch-up read opens the batch and sends
    it in the clear (format 3, a CRC of its own), and the follower's store seals it again
    with its own key; both read back the records."""
    from tests.log.test_encrypted_store import Keys, raw_values

    leader = RocksLogStore(tmp_path / "a", keys=Keys())
    follower = RocksLogStore(tmp_path / "b", keys=Keys())
    records = tuple(NewRecord(f"secret-{i}", b"payload-%d" % i) for i in range(5))
    leader.append(
        [
            AppendBatch(
                shard_uid=SHARD,
                first_offset=Offset(0),
                arrival_ms=1,
                records=records,
                epoch=1,
                version=BATCH_FORMAT_VERSION,
            )
        ]
    )
    (read,) = leader.read_batches(
        SHARD, start_offset=Offset(0), end_offset=Offset(5), bytes_max=10**6
    )
    message = _wire(
        Envelope(
            to=B,
            message=Append(
                shard_uid=SHARD,
                epoch=1,
                leader=A,
                first_offset=Offset(0),
                prev_epoch=0,
                batches=(read,),
                leader_hw=Offset(0),
                leader_log_start=Offset(0),
            ),
        ),
        A,
    )
    (sent,) = message.append.batches
    assert not BatchHeader.parse(sent.value).encrypted and b"secret-0" in sent.value
    received = envelope_from_proto(message)
    assert isinstance(received, Append)
    follower.append(received.batches)
    for store in (leader, follower):
        got = store.read(
            SHARD, start_offset=Offset(0), end_offset=Offset(5), records_max=9, bytes_max=10**6
        )
        assert [r.partition_key for r in got] == [r.partition_key for r in records]
        store.close()
    for path in (tmp_path / "a", tmp_path / "b"):
        (stored,) = raw_values(path).values()
        assert BatchHeader.parse(stored).encrypted and b"secret-0" not in stored


@pytest.mark.parametrize("version", [WRITTEN_BATCH_FORMAT_VERSION, BATCH_FORMAT_VERSION])
def test_an_appends_envelope_is_the_bytes_its_messages_make(version: int) -> None:
    """`envelope_to_proto` builds an Append in place (no copies of its batches before the
    serialization's): the bytes are those of the same messages made by their constructors."""
    batches = tuple(
        AppendBatch(
            shard_uid=SHARD,
            first_offset=Offset(first),
            arrival_ms=1_000 + first,
            records=(NewRecord(f"k{first}", b"x" * 300), NewRecord("j", b"")),
            epoch=3,
            version=version,
        )
        for first in (4, 6)
    )
    append = Append(
        shard_uid=SHARD,
        epoch=3,
        leader=A,
        first_offset=Offset(4),
        prev_epoch=2,
        batches=batches,
        leader_hw=Offset(3),
        leader_log_start=Offset(1),
    )
    expected = pb.ReplicationEnvelope(
        from_node=A,
        to_node=B,
        append=pb.Append(
            shard_uid=SHARD,
            epoch=3,
            leader=A,
            first_offset=4,
            prev_epoch=2,
            batches=[
                pb.Batch(first_offset=b.first_offset, value=b.value)
                if version >= BATCH_FORMAT_VERSION
                else pb.Batch(
                    first_offset=b.first_offset,
                    arrival_ms=b.arrival_ms,
                    epoch=3,
                    records=[
                        pb.Record(partition_key=r.partition_key, data=r.data) for r in b.records
                    ],
                )
                for b in batches
            ],
            leader_hw=3,
            leader_log_start=1,
        ),
    )
    wire = envelope_to_proto(Envelope(to=B, message=append), sender=A).SerializeToString()
    assert wire == expected.SerializeToString()
    assert envelope_from_proto(pb.ReplicationEnvelope.FromString(wire)) == append
