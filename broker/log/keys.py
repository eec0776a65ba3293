"""Key layouts of the three column families that hold shard logs (DESIGN §5, REFERENCE §5.3).

All integers are unsigned big-endian, so RocksDB's bytewise order equals numeric order and one
shard's keys are contiguous:

- `records`:   shard_uid u64 | first_offset u64              -> one batch (`records.py`)
- `tsidx`:     shard_uid u64 | arrival_ms u64 | first_offset u64 -> b"" (one entry per batch)
- `shardmeta`: shard_uid u64                                 -> `ShardMeta` (below)

A `records` key names the first offset of a stored batch; the batch covers
[first_offset, first_offset + count), and the next key of the shard starts where it ends, so
the batch holding offset N is the last key <= shard_uid | N (a `seek_for_prev`).

The time index holds one entry per stored batch: a batch's records share one arrival time, and
arrival is non-decreasing along a shard, so the first entry at or after a time names the first
record at or after it. Trimming deletes whole batches (it cuts by arrival time), so the index
never points into a half-deleted batch; `truncate_suffix` may cut a batch, but keeps its first
offset, so its index entry stays right.

Replica state lives in `shardmeta` beside the log meta, under longer keys: every key of a shard
starts with its 8-byte uid, and readers of this column family take the shard from those 8 bytes,
so these keys need no format change and `delete_shard` deletes them with the shard's range:

- `shard_uid | KIND_EPOCH u8 | epoch u64` -> start_offset u64: one entry of the epoch history
  (KIP-101's leader-epoch cache), the first offset written in that epoch; sorted by epoch, and
  start offsets increase with it;
- `shard_uid | KIND_PROMISED u8`          -> epoch u64: the highest epoch promised (Prepare);
- `shard_uid | KIND_HIGH_WATERMARK u8`    -> offset u64: the last high watermark heard of.

`shardmeta` keeps what must outlive the records: log_end survives a trim that deletes every
record, so offsets are never reused, and last_arrival_ms keeps the clamp monotonic across a
restart. It is written in the same WriteBatch as the records it describes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from broker.types import Offset, ShardUid

SHARD_PREFIX_BYTES = 8
RECORD_KEY_BYTES = 16
TIME_KEY_BYTES = 24

_U64 = struct.Struct(">Q")
_RECORD_KEY = struct.Struct(">QQ")
_TIME_KEY = struct.Struct(">QQQ")
_U64_MAX = 2**64 - 1

# Above every key of any of our layouts: longer than the longest key, and all 0xff.
_PAST_LAST_SHARD = b"\xff" * (TIME_KEY_BYTES + 1)


def shard_prefix(shard_uid: ShardUid) -> bytes:
    """The 8 bytes every key of this shard starts with (the prefix extractor's length)."""
    assert 0 <= shard_uid <= _U64_MAX
    return _U64.pack(shard_uid)


def shard_prefix_end(shard_uid: ShardUid) -> bytes:
    """An exclusive upper bound above every key of this shard and below the next shard's."""
    assert 0 <= shard_uid <= _U64_MAX
    if shard_uid == _U64_MAX:
        return _PAST_LAST_SHARD
    return _U64.pack(shard_uid + 1)


def record_key(shard_uid: ShardUid, offset: Offset) -> bytes:
    assert 0 <= shard_uid <= _U64_MAX
    assert 0 <= offset <= _U64_MAX
    return _RECORD_KEY.pack(shard_uid, offset)


def parse_record_key(key: bytes) -> tuple[ShardUid, Offset]:
    assert len(key) == RECORD_KEY_BYTES, key
    shard_uid, offset = _RECORD_KEY.unpack(key)
    return ShardUid(shard_uid), Offset(offset)


def time_key(shard_uid: ShardUid, arrival_ms: int, offset: Offset) -> bytes:
    assert 0 <= shard_uid <= _U64_MAX
    assert 0 <= arrival_ms <= _U64_MAX
    assert 0 <= offset <= _U64_MAX
    return _TIME_KEY.pack(shard_uid, arrival_ms, offset)


def parse_time_key(key: bytes) -> tuple[ShardUid, int, Offset]:
    assert len(key) == TIME_KEY_BYTES, key
    shard_uid, arrival_ms, offset = _TIME_KEY.unpack(key)
    return ShardUid(shard_uid), arrival_ms, Offset(offset)


def meta_key(shard_uid: ShardUid) -> bytes:
    return shard_prefix(shard_uid)


def parse_meta_key(key: bytes) -> ShardUid:
    """The shard of any `shardmeta` key: the log meta key or a longer replica-state key."""
    assert len(key) >= SHARD_PREFIX_BYTES, key
    (shard_uid,) = _U64.unpack_from(key)
    return ShardUid(shard_uid)


META_FORMAT_VERSION = 1
_META = struct.Struct(">BQQQ")  # version, log_start, log_end, last_arrival_ms


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardMeta:
    """Per-shard state that outlives its records."""

    log_start: Offset  # first retained offset; == log_end when nothing is retained
    log_end: Offset  # next offset to write; never decreases, so offsets are never reused
    last_arrival_ms: int  # arrival of the last appended batch (0 before the first)

    def __post_init__(self) -> None:
        assert 0 <= self.log_start <= self.log_end
        assert self.last_arrival_ms >= 0


EMPTY_SHARD_META = ShardMeta(log_start=Offset(0), log_end=Offset(0), last_arrival_ms=0)


def encode_meta(meta: ShardMeta) -> bytes:
    return _META.pack(META_FORMAT_VERSION, meta.log_start, meta.log_end, meta.last_arrival_ms)


def decode_meta(value: bytes) -> ShardMeta | None:
    """The meta these bytes encode, or None if they are not a meta value we wrote."""
    if len(value) != _META.size:
        return None
    version, log_start, log_end, last_arrival_ms = _META.unpack(value)
    if version != META_FORMAT_VERSION or log_start > log_end:
        return None
    return ShardMeta(
        log_start=Offset(log_start), log_end=Offset(log_end), last_arrival_ms=last_arrival_ms
    )


# --- Replica state keys (see the module docstring) ------------------------------------------

KIND_EPOCH = 1
KIND_PROMISED = 2
KIND_HIGH_WATERMARK = 3
_KIND_KEY = struct.Struct(">QB")
_EPOCH_KEY = struct.Struct(">QBQ")
EPOCH_KEY_BYTES = _EPOCH_KEY.size


def epoch_key(shard_uid: ShardUid, epoch: int) -> bytes:
    assert 0 <= shard_uid <= _U64_MAX
    assert 0 <= epoch <= _U64_MAX
    return _EPOCH_KEY.pack(shard_uid, KIND_EPOCH, epoch)


def epoch_key_prefix(shard_uid: ShardUid) -> bytes:
    """The prefix of every epoch-history key of this shard."""
    return _KIND_KEY.pack(shard_uid, KIND_EPOCH)


def epoch_key_prefix_end(shard_uid: ShardUid) -> bytes:
    """An exclusive upper bound above every epoch-history key of this shard."""
    return _KIND_KEY.pack(shard_uid, KIND_EPOCH + 1)


def parse_epoch_key(key: bytes) -> tuple[ShardUid, int]:
    assert len(key) == EPOCH_KEY_BYTES, key
    shard_uid, kind, epoch = _EPOCH_KEY.unpack(key)
    assert kind == KIND_EPOCH, key
    return ShardUid(shard_uid), epoch


def promised_key(shard_uid: ShardUid) -> bytes:
    assert 0 <= shard_uid <= _U64_MAX
    return _KIND_KEY.pack(shard_uid, KIND_PROMISED)


def high_watermark_key(shard_uid: ShardUid) -> bytes:
    assert 0 <= shard_uid <= _U64_MAX
    return _KIND_KEY.pack(shard_uid, KIND_HIGH_WATERMARK)


def encode_u64(value: int) -> bytes:
    assert 0 <= value <= _U64_MAX
    return _U64.pack(value)


def decode_u64(value: bytes) -> int | None:
    """The integer these 8 bytes encode, or None if they are not one of our u64 values."""
    if len(value) != _U64.size:
        return None
    (number,) = _U64.unpack(value)
    return int(number)
