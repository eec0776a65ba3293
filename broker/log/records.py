"""Record value objects of the shard log, and the bytes a batch of records is stored as.

`NewRecord` is what a producer hands in, `AppendBatch` is what the write path hands to a
`LogStore` (one shard, dense offsets, one arrival time), and `StoredRecord` is what a read gives
back. The batch encoding lives here, next to the types it encodes, so that every store that
persists bytes uses one codec and one corruption check.

One `AppendBatch` is stored as ONE value (Kafka's record batch), so the write path does one
`WriteBatch.put` per batch rather than per record, and a read decodes one header per batch.
Layout (all integers big-endian):

    header:  version u8 | flags u8 | arrival_ms u64 | epoch u32 | count u32 | crc u32
    payload: count x (pk_len u16 | data_len u32 | partition key (UTF-8) | data)

Version 3 (issue 20) checksums with CRC32C (Castagnoli, as Kafka's record
batches; `google-crc32c`, in hardware where the CPU has it); version 2 with zlib's CRC32. Both
are read, so a data directory written before needs no migration step: its version-2 batches
stay readable until retention trims them. Which one is written is the cluster's choice: a
follower stores its leader's bytes as they are, so a leader writes version 3 only once every
node reads it, i.e. once the cluster's metadata format is at `STORED_BATCHES_LEVEL`
(broker/meta/metadata_format.py); until then, and wherever the level is not known, version 2
(`WRITTEN_BATCH_FORMAT_VERSION`). The CRC covers the
header before it and the whole payload, so
it is the checksum of the stored bytes themselves: whatever carries those bytes (a follower's
log, a repair from another replica) can verify them end to end without decoding a record
(docs/ARCHITECTURE.md, "Batch format"). RocksDB checksums its blocks too,
but that does not catch a value that was wrong before it reached RocksDB, or a bug in our own
slicing; this check pairs the write-time encode with the read-time decode (STYLE B.9). A
mismatch is a broken invariant, so decoding raises `LogCorruptionError`, which nothing should
catch and continue from. Corruption is detected per batch: a read that does not touch the bad
batch still succeeds.

Decoding is lazy: `BatchHeader.parse` checks the CRC and the header; `decode_records` then walks
the record lengths up to the requested offset and builds `StoredRecord`s only for the records it
returns, stopping as soon as a cap is reached. The layout check that the records fill the
payload exactly happens whenever a read walks to the end of a batch.

`epoch` is the leader epoch that wrote the batch; 0 until replication exists. `flags` bit 0
(`FLAG_CONTROL`) marks a control batch (replication's epoch-start marker): its records take
offsets like any other, but reads skip them. Bit 1 (`FLAG_ENCRYPTED`) marks a batch of an
encrypted stream: its payload is sealed (`log/encryption.py`: key version, nonce, AES-256-GCM
ciphertext and tag) and `plain_value` opens it into the layout above before any record is
decoded; the CRC covers the sealed bytes, so corruption is found without the key. The other
flag bits are reserved and must be 0. This module knows nothing of keys: the store hands in a
`Sealer` or an `Opener` bound to the shard.
"""

from __future__ import annotations

import operator
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, overload

import google_crc32c

from broker import compiled
from broker.types import Offset, ShardUid

BATCH_FORMAT_VERSION = 3  # CRC32C. Version 2 (zlib's CRC32) is still read; version 1 stored
# one value per record and is not readable any more.
_CRC32_BATCH_VERSION = 2
_READABLE_VERSIONS = frozenset({_CRC32_BATCH_VERSION, BATCH_FORMAT_VERSION})
# What a batch is written in when its writer does not know the cluster's metadata format (or
# the cluster is below the level at which every node reads version 3; the replica core picks
# BATCH_FORMAT_VERSION from that level on): version 2, which every release reads.
WRITTEN_BATCH_FORMAT_VERSION = _CRC32_BATCH_VERSION

FLAG_CONTROL = 0x01
FLAG_ENCRYPTED = 0x02
_FLAGS_KNOWN = FLAG_CONTROL | FLAG_ENCRYPTED

# (payload, the header's bytes before the CRC) -> the sealed payload, and back.
Sealer = Callable[[bytes | memoryview, bytes], bytes]
Opener = Callable[[bytes, bytes], bytes]

# version, flags, arrival_ms, epoch, count; then the CRC32 of (these 18 bytes + payload).
_HEADER_BEFORE_CRC = struct.Struct(">BBQII")
_CRC = struct.Struct(">I")
BATCH_HEADER_BYTES = _HEADER_BEFORE_CRC.size + _CRC.size
_RECORD_HEADER = struct.Struct(">HI")  # pk_len, data_len
RECORD_HEADER_BYTES = _RECORD_HEADER.size

_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1
_U16_MAX = 2**16 - 1


class LogCorruptionError(Exception):
    """Stored data failed a check: a batch's CRC or layout, RocksDB's block checksum, or a
    hole in a shard's dense offsets.

    Not a `ShoalError`: the log is not what we wrote, so nothing may serve it. `shard_uid` and
    `offset` (the first offset that cannot be read back) say where, when the store knows:
    the replication driver then marks that range of the replica damaged, reads go to a healthy
    replica and the range is repaired from one (decisions/0002, "Corruption").
    """

    def __init__(
        self, message: str, *, shard_uid: ShardUid | None = None, offset: Offset | None = None
    ) -> None:
        super().__init__(message)
        self.shard_uid = shard_uid
        self.offset = offset

    def at(self, shard_uid: ShardUid, offset: Offset) -> LogCorruptionError:
        """The same error, located (when the code that found it did not know where)."""
        if self.shard_uid is not None:
            return self
        located = LogCorruptionError(
            f"shard {shard_uid} offset {offset}: {self}", shard_uid=shard_uid, offset=offset
        )
        located.__cause__ = self
        return located


def record_size_bytes(*, partition_key: str, data: bytes) -> int:
    """The size AWS counts against record and GetRecords limits: data plus partition key."""
    return len(partition_key.encode("utf-8")) + len(data)


def records_size_bytes(records: Iterable[StoredRecord]) -> int:
    """The summed `size_bytes` of a page of records, without two calls per record (a read's
    throttle and its metrics count up to 10,000 per GetRecords); a `RecordPage` knows its own."""
    if isinstance(records, RecordPage):
        return records.size_bytes
    return sum(
        [
            len(record.data)
            + (len(key) if (key := record.partition_key).isascii() else len(key.encode()))
            for record in records
        ]
    )


class NewRecord(NamedTuple):
    """A record as a producer sent it, before it has an offset or an arrival time.

    A NamedTuple for the same reason as StoredRecord: PutRecords builds 500 per call."""

    partition_key: str
    data: bytes

    @property
    def size_bytes(self) -> int:
        return record_size_bytes(partition_key=self.partition_key, data=self.data)


_new_tuple = tuple.__new__


def new_record(partition_key: str, data: bytes) -> NewRecord:
    """`NewRecord(partition_key, data)` at a third of the cost: a NamedTuple's own constructor
    is a generated Python function, and the put path makes one per record."""
    record: NewRecord = _new_tuple(NewRecord, (partition_key, data))
    return record


class StoredRecord(NamedTuple):
    """A record read back from a shard's log.

    A NamedTuple rather than a frozen dataclass because reads build up to 10 000 of them per
    call: a tuple is several times cheaper to make, and stays immutable.
    """

    offset: Offset
    arrival_ms: int  # epoch milliseconds; non-decreasing along a shard's offsets
    partition_key: str
    data: bytes
    # Whether this replica stored the record's batch sealed (its stream was encrypted when the
    # batch was appended here): a record's EncryptionType on reads, KMS or absent (NONE), as
    # AWS says it per record (records written before StartStreamEncryption stay clear after it).
    encrypted: bool = False

    @property
    def size_bytes(self) -> int:
        return record_size_bytes(partition_key=self.partition_key, data=self.data)


class RecordRun(NamedTuple):
    """Consecutive records of one stored batch, as a read returns them without decoding them:
    the batch's bytes in the clear (`plain_value`) and where the run lies in them.

    The records are at byte positions [start, end) of `value`, in the stored layout (module
    docstring); the first is at `first_offset`, the rest follow densely. `size_bytes` is the
    sum of their `size_bytes` (data plus partition key, AWS's measure)."""

    value: bytes
    first_offset: Offset
    arrival_ms: int
    encrypted: bool
    record_count: int
    start: int
    end: int
    size_bytes: int

    def sequence_numbers(self, base: int, shift: int) -> list[bytes]:
        """The run's sequence numbers as ASCII digits, in a layout where a record's number is
        `base | (offset << shift)` (the service computes base and shift once per batch)."""
        first = self.first_offset
        return [
            str(base | (offset << shift)).encode()
            for offset in range(first, first + self.record_count)
        ]


class RecordPage(Sequence[StoredRecord]):
    """The records one read returns (`LogStore.read_page`), kept as runs of stored batch
    bytes (issue 18: per-batch work on the read path). A door that writes records to its wire
    walks `runs` and copies each record's bytes once, with no object per record; anything else
    uses the page as a sequence of `StoredRecord`s, decoded on first use and kept.

    A page made from records (`RecordPage.of`: a remote replica's answer, the memory store)
    has no runs (`runs` is None). Immutable by contract."""

    __slots__ = ("_records", "_runs", "_size_bytes")

    def __init__(self, runs: Sequence[RecordRun] = ()) -> None:
        self._runs: tuple[RecordRun, ...] | None = tuple(runs)
        self._records: list[StoredRecord] | None = None
        self._size_bytes: int | None = None

    @classmethod
    def of(cls, records: Sequence[StoredRecord]) -> RecordPage:
        """A page of records already decoded (no runs)."""
        page = cls()
        page._runs = None
        page._records = list(records)
        return page

    @property
    def runs(self) -> tuple[RecordRun, ...] | None:
        return self._runs

    @property
    def size_bytes(self) -> int:
        if self._size_bytes is None:
            if self._runs is not None:
                self._size_bytes = sum(run.size_bytes for run in self._runs)
            else:
                self._size_bytes = records_size_bytes(self.records())
        return self._size_bytes

    def records(self) -> list[StoredRecord]:
        """The page's records, decoded once (the caller must not change the list)."""
        if self._records is None:
            assert self._runs is not None
            taken: list[StoredRecord] = []
            for run in self._runs:
                decode_run(run, taken)
            self._records = taken
        return self._records

    def first_arrival_ms(self) -> int:
        """The first record's arrival (the page is not empty)."""
        if self._runs is not None:
            return self._runs[0].arrival_ms
        return self.records()[0].arrival_ms

    def last_arrival_ms(self) -> int:
        """The last record's arrival (the page is not empty)."""
        if self._runs is not None:
            return self._runs[-1].arrival_ms
        return self.records()[-1].arrival_ms

    def next_offset(self) -> Offset:
        """The offset after the last record (the page is not empty)."""
        if self._runs is not None:
            last = self._runs[-1]
            return Offset(last.first_offset + last.record_count)
        return Offset(self.records()[-1].offset + 1)

    def from_offset(self, offset: Offset) -> RecordPage:
        """The same page without its records below `offset`."""
        if self._runs is None:
            return RecordPage.of([r for r in self.records() if r.offset >= offset])
        runs: list[RecordRun] = []
        for run in self._runs:
            if run.first_offset + run.record_count <= offset:
                continue
            if run.first_offset < offset:
                run = _run_suffix(run, offset - run.first_offset)
            runs.append(run)
        return RecordPage(runs)

    def __len__(self) -> int:
        if self._runs is not None:
            return sum(run.record_count for run in self._runs)
        assert self._records is not None
        return len(self._records)

    def __bool__(self) -> bool:
        return bool(self._runs) if self._runs is not None else bool(self._records)

    def __iter__(self) -> Iterator[StoredRecord]:
        return iter(self.records())

    @overload
    def __getitem__(self, index: int) -> StoredRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[StoredRecord]: ...

    def __getitem__(self, index: int | slice) -> StoredRecord | list[StoredRecord]:
        return self.records()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordPage):
            return self.records() == other.records()
        if isinstance(other, list):
            return self.records() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compared by records, like a list

    def __repr__(self) -> str:
        return f"RecordPage({self.records()!r})"


def _run_suffix(run: RecordRun, skip: int) -> RecordRun:
    """`run` without its first `skip` records (0 < skip < run.record_count)."""
    assert 0 < skip < run.record_count, (skip, run.record_count)
    start = _skip_records(run.value, run.start, skip)
    skipped = start - run.start - RECORD_HEADER_BYTES * skip
    return run._replace(
        first_offset=Offset(run.first_offset + skip),
        record_count=run.record_count - skip,
        start=start,
        size_bytes=run.size_bytes - skipped,
    )


class NewRecords(Sequence[NewRecord]):
    """The records of one append as ONE immutable columnar value (issue 18, item 1): their
    partition keys (as str and UTF-8), data, AWS sizes (UTF-8 key + data), the hash keys they
    were routed by (None: each partition key's MD5, computed only where needed, or not known
    by a forwarding node) and the total size, computed once.

    The service builds it once per request (from a door's `PutEntries` columns, or from the
    records it checked one by one) and every layer after it takes it as it is: the shard's
    throttle and meters read `sizes` and `size_bytes`, the load tracker `hash_keys`, the
    replica's `AppendBatch` keeps it and counts `size_bytes`, and `encode_batch` writes the
    UTF-8 keys and data columns straight into the stored layout; nothing re-zips it or
    recomputes a size. It still reads as the sequence of `NewRecord`s it stands for, for
    everything off the hot path (the memory store, forwarding, tests).

    Columns are tuples of one length (request order); never changed once made."""

    __slots__ = (
        "datas",
        "hash_keys",
        "partition_keys",
        "partition_keys_utf8",
        "size_bytes",
        "sizes",
    )

    partition_keys: tuple[str, ...]
    partition_keys_utf8: tuple[bytes, ...]
    datas: tuple[bytes, ...]
    sizes: tuple[int, ...]
    hash_keys: tuple[int, ...] | None
    size_bytes: int

    def __init__(
        self,
        partition_keys: Iterable[str],
        partition_keys_utf8: Iterable[bytes],
        datas: Iterable[bytes],
        sizes: Iterable[int],
        hash_keys: Iterable[int] | None = None,
    ) -> None:
        self.partition_keys = tuple(partition_keys)
        self.partition_keys_utf8 = tuple(partition_keys_utf8)
        self.datas = tuple(datas)
        self.sizes = tuple(sizes)
        self.hash_keys = None if hash_keys is None else tuple(hash_keys)
        count = len(self.datas)
        assert len(self.partition_keys) == len(self.partition_keys_utf8) == count
        assert len(self.sizes) == count
        assert self.hash_keys is None or len(self.hash_keys) == count
        self.size_bytes = sum(self.sizes)

    @classmethod
    def of(cls, records: Iterable[NewRecord], hash_keys: Iterable[int] | None = None) -> NewRecords:
        """The value of `records` (itself when it already is one and brings its hash keys, or
        no others are given): the keys encoded and the sizes counted column-wise, in C."""
        if type(records) is NewRecords and (hash_keys is None or records.hash_keys is not None):
            return records
        pairs = tuple(records)
        keys: tuple[str, ...] = tuple(map(_partition_key_of, pairs))
        datas: tuple[bytes, ...] = tuple(map(_data_of, pairs))
        keys_utf8 = tuple(map(str.encode, keys))
        sizes = map(operator.add, map(len, keys_utf8), map(len, datas))
        return cls(keys, keys_utf8, datas, sizes, hash_keys)

    def take(self, positions: Sequence[int]) -> NewRecords:
        """The records at `positions` (in that order), with their sizes and hash keys."""
        if not positions:
            return NewRecords((), (), (), (), None if self.hash_keys is None else ())
        pick = operator.itemgetter(*positions)
        if len(positions) == 1:
            (p,) = positions
            hash_keys = None if self.hash_keys is None else (self.hash_keys[p],)
            return NewRecords(
                (self.partition_keys[p],),
                (self.partition_keys_utf8[p],),
                (self.datas[p],),
                (self.sizes[p],),
                hash_keys,
            )
        return NewRecords(
            pick(self.partition_keys),
            pick(self.partition_keys_utf8),
            pick(self.datas),
            pick(self.sizes),
            None if self.hash_keys is None else pick(self.hash_keys),
        )

    def __len__(self) -> int:
        return len(self.datas)

    @overload
    def __getitem__(self, index: int) -> NewRecord: ...

    @overload
    def __getitem__(self, index: slice) -> NewRecords: ...

    def __getitem__(self, index: int | slice) -> NewRecord | NewRecords:
        if isinstance(index, slice):
            return NewRecords(
                self.partition_keys[index],
                self.partition_keys_utf8[index],
                self.datas[index],
                self.sizes[index],
                None if self.hash_keys is None else self.hash_keys[index],
            )
        return new_record(self.partition_keys[index], self.datas[index])

    def __iter__(self) -> Iterator[NewRecord]:
        return map(new_record, self.partition_keys, self.datas)

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same records (hash keys are routing, not content)."""
        if isinstance(other, NewRecords):
            return (self.partition_keys, self.datas) == (other.partition_keys, other.datas)
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))  # as the tuple of its records, which it equals

    def __repr__(self) -> str:
        return f"NewRecords({list(self)!r})"


_partition_key_of = operator.itemgetter(0)
_data_of = operator.itemgetter(1)


class AppendBatch:
    """Records for one shard at offsets [first_offset, first_offset + count).

    One arrival time covers the whole batch: the writer clamps it so that it never goes back
    within a shard, which is what lets the time index hold one entry per batch. A `control`
    batch (replication's markers) takes offsets but is never returned by `LogStore.read`.

    One value carries the records and their stored bytes (issue 18, "one encoding of a batch,
    end to end"): `value` is the batch encoded once in format `version` (with its CRC), and
    that same byte string goes to the local log, to every follower and into each follower's
    log. A batch made from records (the leader's proposal) encodes on first use of `value`; a
    batch made from stored bytes (`from_value`: a follower's copy of the leader's bytes, a
    catch-up read, a repair) verifies their CRC once and decodes its records only if someone
    asks for them (the memory store, tests): replication itself never does. `count` and
    `size_bytes` are computed once, when the batch is made. Immutable by contract (not
    enforced: a frozen class costs a Python call per attribute on the hot path).
    """

    __slots__ = (
        "_records",
        "_value",
        "arrival_ms",
        "control",
        "count",
        "epoch",
        "first_offset",
        "shard_uid",
        "size_bytes",
        "version",
    )

    def __init__(
        self,
        *,
        shard_uid: ShardUid,
        first_offset: Offset,
        arrival_ms: int,
        records: Sequence[NewRecord],
        control: bool = False,
        epoch: int = 0,  # the leader epoch that wrote it; 0 for unreplicated logs
        version: int = WRITTEN_BATCH_FORMAT_VERSION,
    ) -> None:
        assert records, "an empty batch has no offset to write"
        assert len(records) <= _U32_MAX
        assert first_offset >= 0
        assert 0 <= arrival_ms <= _U64_MAX
        assert 0 <= epoch <= _U32_MAX
        assert version in _READABLE_VERSIONS, version
        self.shard_uid = shard_uid
        self.first_offset = first_offset
        self.arrival_ms = arrival_ms
        self.control = control
        self.epoch = epoch
        self.version = version
        # The put path hands in its `NewRecords` as it is: nothing re-zipped or recounted.
        columns = NewRecords.of(records)
        self.count = len(columns)
        self._records: NewRecords | None = columns
        self._value: bytes | None = None
        self.size_bytes = columns.size_bytes

    @classmethod
    def from_value(
        cls,
        *,
        shard_uid: ShardUid,
        first_offset: Offset,
        value: bytes,
        header: BatchHeader | None = None,
    ) -> AppendBatch:
        """The batch stored as `value` (`BatchHeader.parse` checks its CRC, unless the caller
        already parsed it). The bytes are kept as they are: no record is decoded or
        re-encoded. Raises `LogCorruptionError` when they fail the check."""
        if header is None:
            header = BatchHeader.parse(value)
        assert first_offset >= 0
        batch = cls.__new__(cls)
        batch.shard_uid = shard_uid
        batch.first_offset = first_offset
        batch.arrival_ms = header.arrival_ms
        batch.control = header.control
        batch.epoch = header.epoch
        batch.version = header.version
        batch.count = header.count
        batch._records = None
        batch._value = value
        # Every byte of the payload is a record header or a key or data byte (the layout
        # check of every read holds it to that), so this is the sum of the records' sizes.
        batch.size_bytes = len(value) - BATCH_HEADER_BYTES - RECORD_HEADER_BYTES * header.count
        return batch

    @property
    def records(self) -> NewRecords:
        if self._records is None:
            assert self._value is not None
            header = BatchHeader.parse(self._value, verify_crc=False)
            self._records = NewRecords.of(
                decode_new_records(self._value, header, begin=0, stop=self.count)
            )
        return self._records

    @property
    def value(self) -> bytes:
        """The stored bytes of this batch (encoded at most once)."""
        if self._value is None:
            assert self._records is not None
            self._value = encode_batch(
                arrival_ms=self.arrival_ms,
                epoch=self.epoch,
                control=self.control,
                records=self._records,
                version=self.version,
            )
        return self._value

    @property
    def end_offset(self) -> Offset:
        """The offset after the last record of this batch."""
        return Offset(self.first_offset + self.count)

    def slice(self, start: Offset, end: Offset) -> AppendBatch:
        """The same batch restricted to offsets [start, end), which must overlap it."""
        begin = max(start, self.first_offset) - self.first_offset
        stop = min(end, self.end_offset) - self.first_offset
        assert 0 <= begin < stop <= self.count, (start, end, self.first_offset)
        if begin == 0 and stop == self.count:
            return self
        return AppendBatch(
            shard_uid=self.shard_uid,
            first_offset=Offset(self.first_offset + begin),
            arrival_ms=self.arrival_ms,
            records=self.records[begin:stop],
            control=self.control,
            epoch=self.epoch,
            version=self.version,
        )

    def _key(self) -> tuple[object, ...]:
        return (
            self.shard_uid,
            self.first_offset,
            self.arrival_ms,
            tuple(self.records),
            self.control,
            self.epoch,
        )

    def __eq__(self, other: object) -> bool:
        """Equal batches hold the same records at the same place (whatever their format)."""
        if not isinstance(other, AppendBatch):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"AppendBatch(shard_uid={self.shard_uid}, first_offset={self.first_offset}, "
            f"count={self.count}, arrival_ms={self.arrival_ms}, epoch={self.epoch}, "
            f"control={self.control}, version={self.version})"
        )


def encode_batch(
    *,
    arrival_ms: int,
    epoch: int,
    control: bool,
    records: Sequence[NewRecord],
    version: int = WRITTEN_BATCH_FORMAT_VERSION,
    sealer: Sealer | None = None,
) -> bytes:
    """The stored bytes of one batch in format `version` (layout in the module docstring);
    sealed with `sealer` when given (an encrypted stream's batch). A `NewRecords` (the put
    path's value) is written from its UTF-8 keys and data columns as they are."""
    assert records
    assert 0 <= arrival_ms <= _U64_MAX
    assert 0 <= epoch <= _U32_MAX
    columns = NewRecords.of(records)
    pks = columns.partition_keys_utf8
    return _seal(
        version=version,
        arrival_ms=arrival_ms,
        epoch=epoch,
        flags=FLAG_CONTROL if control else 0,
        count=len(pks),
        payload=_payload(pks, columns.datas),
        sealer=sealer,
    )


def _payload_in_python(pks: tuple[bytes, ...], datas: tuple[bytes, ...]) -> bytes:
    """The payload of records with these UTF-8 partition keys and data (module docstring's
    layout). Column-wise, so the per-record work runs in C (map, slicing, join), not in a
    Python loop."""
    if max(map(len, pks)) > _U16_MAX or max(map(len, datas)) > _U32_MAX:
        raise ValueError("a key or a data is too long for its length head")
    pieces: list[bytes] = [b""] * (3 * len(pks))
    pieces[0::3] = map(_RECORD_HEADER.pack, map(len, pks), map(len, datas))
    pieces[1::3] = pks
    pieces[2::3] = datas
    return b"".join(pieces)


def _seal(
    *,
    version: int,
    arrival_ms: int,
    epoch: int,
    flags: int,
    count: int,
    payload: bytes | memoryview,
    sealer: Sealer | None,
) -> bytes:
    assert version in _READABLE_VERSIONS, version
    if sealer is not None:
        flags |= FLAG_ENCRYPTED
    header = _HEADER_BEFORE_CRC.pack(version, flags, arrival_ms, epoch, count)
    # bytes(...) of a bytes object is that object (no copy); a view is only ever sealed.
    stored = sealer(payload, header) if sealer is not None else bytes(payload)
    if version == _CRC32_BATCH_VERSION:
        crc = zlib.crc32(stored, zlib.crc32(header))
    else:
        crc = google_crc32c.extend(google_crc32c.value(header), stored)
    return b"".join((header, _CRC.pack(crc), stored))


def batch_crc(value: bytes, version: int) -> int:
    """The checksum a stored batch of format `version` carries, computed over its bytes.

    CRC32C is taken over the payload in place by `_record_walk.crc32c` where it was built and
    the CPU has the instruction (no GIL held). google-crc32c takes only `bytes`, so otherwise
    the payload is sliced: a fresh copy of the batch that cost twice the checksum in a
    drain's profile (issue 18)."""
    before = value[: _HEADER_BEFORE_CRC.size]
    if version == _CRC32_BATCH_VERSION:
        return zlib.crc32(value[BATCH_HEADER_BYTES:], zlib.crc32(before))
    start: int = google_crc32c.value(before)
    if _compiled_walk is not None:
        in_place: int | None = _compiled_walk.crc32c(start, value, BATCH_HEADER_BYTES)
        if in_place is not None:
            return in_place
    crc: int = google_crc32c.extend(start, value[BATCH_HEADER_BYTES:])
    return crc


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchHeader:
    """The verified header of one stored batch; the first offset comes from the key."""

    arrival_ms: int
    epoch: int
    count: int
    flags: int
    version: int

    @property
    def control(self) -> bool:
        return bool(self.flags & FLAG_CONTROL)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    @staticmethod
    def parse(value: bytes, *, verify_crc: bool = True) -> BatchHeader:
        """The header of `encode_batch`'s bytes; raises `LogCorruptionError` on a mismatch.

        `verify_crc=False` is for callers that only need the header (the time-index cross
        check); everything that returns records verifies.
        """
        if len(value) < BATCH_HEADER_BYTES:
            raise LogCorruptionError(f"batch value of {len(value)} bytes is shorter than a header")
        version, flags, arrival_ms, epoch, count = _HEADER_BEFORE_CRC.unpack_from(value, 0)
        if version not in _READABLE_VERSIONS:
            raise LogCorruptionError(f"batch value has unknown format version {version}")
        if verify_crc:
            (crc_stored,) = _CRC.unpack_from(value, _HEADER_BEFORE_CRC.size)
            crc = batch_crc(value, version)
            if crc != crc_stored:
                raise LogCorruptionError(
                    f"batch value CRC {crc:#010x} != stored {crc_stored:#010x}"
                )
        if flags & ~_FLAGS_KNOWN:
            raise LogCorruptionError(f"batch value has unknown flags {flags:#04x}")
        if count == 0 or count * RECORD_HEADER_BYTES > len(value) - BATCH_HEADER_BYTES:
            raise LogCorruptionError(f"batch value cannot hold its {count} records")
        return BatchHeader(
            arrival_ms=arrival_ms, epoch=epoch, count=count, flags=flags, version=version
        )


def plain_value(value: bytes, header: BatchHeader, opener: Opener) -> bytes:
    """The batch with its payload in the clear (the layout every decoder here walks): `value`
    itself when it is not sealed. The CRC in the result is the sealed bytes' (already
    verified by `BatchHeader.parse`); the result is never stored."""
    if not header.encrypted:
        return value
    payload = opener(value[BATCH_HEADER_BYTES:], value[: _HEADER_BEFORE_CRC.size])
    return value[:BATCH_HEADER_BYTES] + payload


def _skip_in_python(value: bytes, position: int, count: int) -> int:
    """The position after `count` records from `position`; struct.error where a length head
    would be read past `value`."""
    unpack_from = _RECORD_HEADER.unpack_from
    for _ in range(count):
        pk_len, data_len = unpack_from(value, position)
        position += RECORD_HEADER_BYTES + pk_len + data_len
    return position


def _take_in_python(
    value: bytes,
    position: int,
    index: int,
    stop: int,
    room: int,
    taken_bytes: int,
    bytes_max: int,
    first_taken: bool,
) -> tuple[int, int, int, bool]:
    """`page_run`'s walk: the records from `position` (record `index` of its batch) while
    index < stop, until `room` are taken or the next would bring taken_bytes plus their bytes
    past bytes_max (unless it is the read's first: `first_taken` false, none taken here).
    Returns (the position and index after them, their bytes, whether a cap stopped it);
    struct.error where a length head would be read past `value`."""
    unpack_from = _RECORD_HEADER.unpack_from
    first = index
    run_bytes = 0
    while index < stop:
        pk_len, data_len = unpack_from(value, position)
        size = pk_len + data_len
        if taken_bytes + run_bytes + size > bytes_max and (first_taken or index > first):
            return position, index, run_bytes, True
        position += RECORD_HEADER_BYTES + size
        run_bytes += size
        index += 1
        if index - first == room:
            return position, index, run_bytes, True
    return position, index, run_bytes, False


# The walks in C where setup.py built broker/log/_record_walk.c (the same results, without a
# Python step per record: a 10,000-record page's walk), else in Python.
_compiled_walk = compiled.load("broker.log._record_walk")
_skip: Callable[[bytes, int, int], int] = (
    _compiled_walk.skip if _compiled_walk is not None else _skip_in_python
)
_take: Callable[[bytes, int, int, int, int, int, int, bool], tuple[int, int, int, bool]] = (
    _compiled_walk.take if _compiled_walk is not None else _take_in_python
)


def _payload(pks: tuple[bytes, ...], datas: tuple[bytes, ...]) -> bytes:
    """A batch's payload written by C in one allocation (the put path's 500 records: 0.095 ->
    ~0.065 ms per 512 KB encode, issue 18), else joined from pieces: also when a data is a
    bytes-like object other than bytes, which the C code does not take."""
    if _compiled_walk is not None:
        try:
            written: bytes = _compiled_walk.payload(pks, datas)
            return written
        except TypeError:
            pass
    return _payload_in_python(pks, datas)


def _skip_records(value: bytes, position: int, count: int) -> int:
    """The position after `count` records starting at `position` (a length scan, no objects)."""
    position = _skip(value, position, count)
    if position > len(value):
        raise LogCorruptionError(f"batch records run past the value's {len(value)} bytes")
    return position


def check_layout(value: bytes, header: BatchHeader) -> None:
    """The batch's records fill its payload exactly (after its CRC passed): what a read that
    walks to the end of the batch checks, without building a record. A sealed batch is
    checked by its CRC here, and by its tag and layout where a read opens it."""
    if header.encrypted:
        return
    try:
        end = _skip_records(value, BATCH_HEADER_BYTES, header.count)
    except struct.error as exc:  # only reachable past a CRC collision
        raise LogCorruptionError("batch has a broken layout") from exc
    if end != len(value):
        raise LogCorruptionError("batch has bytes after its records")


def decode_records(
    value: bytes,
    header: BatchHeader,
    *,
    first_offset: Offset,
    start_offset: Offset,
    end_offset: Offset,
    records_max: int,
    bytes_max: int,
    taken: list[StoredRecord],
    taken_bytes: int,
) -> tuple[int, bool]:
    """Appends to `taken` this batch's records in [start_offset, end_offset), within the caps.

    The caps are those of `LogStore.read`, counted over `taken` as a whole (so the first record
    of the whole read is always taken). Returns the new byte total and whether a cap stopped
    the read. Builds objects only for the records it takes.
    """
    assert first_offset <= start_offset < first_offset + header.count, (first_offset, header)
    assert len(taken) < records_max
    skip = start_offset - first_offset
    stop = min(header.count, end_offset - first_offset)
    position = _skip_records(value, BATCH_HEADER_BYTES, skip)
    unpack_from = _RECORD_HEADER.unpack_from
    arrival_ms = header.arrival_ms
    encrypted = header.encrypted
    append = taken.append
    new_record = tuple.__new__
    room = records_max - len(taken)
    index = skip
    capped = False
    try:
        while index < stop:
            pk_len, data_len = unpack_from(value, position)
            size = pk_len + data_len
            if taken_bytes + size > bytes_max and taken:
                capped = True
                break
            pk_at = position + RECORD_HEADER_BYTES
            data_at = pk_at + pk_len
            position = data_at + data_len
            # tuple.__new__ skips the NamedTuple's Python-level __new__ (half the cost per
            # record); the offset is a plain int at run time, as Offset is a NewType.
            append(
                new_record(
                    StoredRecord,
                    (
                        first_offset + index,
                        arrival_ms,
                        value[pk_at:data_at].decode("utf-8"),
                        value[data_at:position],
                        encrypted,
                    ),
                )
            )
            taken_bytes += size
            index += 1
            room -= 1
            if room == 0:
                capped = True
                break
    except (struct.error, UnicodeDecodeError) as exc:  # only reachable past a CRC collision
        raise LogCorruptionError(f"batch at offset {first_offset} has a broken layout") from exc
    if position > len(value):
        raise LogCorruptionError(f"batch at offset {first_offset} runs past its value")
    if index == header.count and position != len(value):
        raise LogCorruptionError(f"batch at offset {first_offset} has bytes after its records")
    return taken_bytes, capped


def page_run(
    value: bytes,
    header: BatchHeader,
    *,
    first_offset: Offset,
    start_offset: Offset,
    end_offset: Offset,
    records_max: int,
    bytes_max: int,
    taken_records: int,
    taken_bytes: int,
) -> tuple[RecordRun | None, int, bool]:
    """This batch's records in [start_offset, end_offset) within the caps, as a run of its
    bytes (`value` in the clear): `decode_records`' rules and checks, with no object per
    record. The caps count over the whole read so far (`taken_records`, `taken_bytes`), and
    the first record of the whole read is always taken. Returns (the run, or None when the
    caps leave no room for one, the new byte total, whether a cap stopped the read)."""
    assert first_offset <= start_offset < first_offset + header.count, (first_offset, header)
    assert taken_records < records_max
    skip = start_offset - first_offset
    stop = min(header.count, end_offset - first_offset)
    room = records_max - taken_records
    try:
        start = _skip_records(value, BATCH_HEADER_BYTES, skip)
        position, index, run_bytes, capped = _take(
            value, start, skip, stop, room, taken_bytes, bytes_max, taken_records > 0
        )
    except struct.error as exc:  # only reachable past a CRC collision
        raise LogCorruptionError(f"batch at offset {first_offset} has a broken layout") from exc
    if position > len(value):
        raise LogCorruptionError(f"batch at offset {first_offset} runs past its value")
    if index == header.count and position != len(value):
        raise LogCorruptionError(f"batch at offset {first_offset} has bytes after its records")
    if index == skip:
        return None, taken_bytes, capped
    run = RecordRun(
        value,
        Offset(first_offset + skip),
        header.arrival_ms,
        header.encrypted,
        index - skip,
        start,
        position,
        run_bytes,
    )
    return run, taken_bytes + run_bytes, capped


def decode_run(run: RecordRun, taken: list[StoredRecord]) -> None:
    """Appends the run's records to `taken`, as `StoredRecord`s."""
    value = run.value
    unpack_from = _RECORD_HEADER.unpack_from
    append = taken.append
    new_record = tuple.__new__
    arrival_ms = run.arrival_ms
    encrypted = run.encrypted
    position = run.start
    offset: int = run.first_offset
    try:
        for offset in range(run.first_offset, run.first_offset + run.record_count):
            pk_len, data_len = unpack_from(value, position)
            pk_at = position + RECORD_HEADER_BYTES
            data_at = pk_at + pk_len
            position = data_at + data_len
            append(
                new_record(
                    StoredRecord,
                    (
                        offset,
                        arrival_ms,
                        value[pk_at:data_at].decode("utf-8"),
                        value[data_at:position],
                        encrypted,
                    ),
                )
            )
    except (struct.error, UnicodeDecodeError) as exc:  # only reachable past a CRC collision
        raise LogCorruptionError(f"batch at offset {offset} has a broken layout") from exc
    assert position == run.end, (position, run.end)


def decode_new_records(
    value: bytes, header: BatchHeader, *, begin: int, stop: int
) -> tuple[NewRecord, ...]:
    """Records [begin, stop) of a verified batch (indexes within it), for replication reads."""
    assert 0 <= begin < stop <= header.count, (begin, stop, header.count)
    position = _skip_records(value, BATCH_HEADER_BYTES, begin)
    unpack_from = _RECORD_HEADER.unpack_from
    taken: list[NewRecord] = []
    try:
        for _ in range(begin, stop):
            pk_len, data_len = unpack_from(value, position)
            pk_at = position + RECORD_HEADER_BYTES
            data_at = pk_at + pk_len
            position = data_at + data_len
            taken.append(new_record(value[pk_at:data_at].decode("utf-8"), value[data_at:position]))
    except (struct.error, UnicodeDecodeError) as exc:  # only reachable past a CRC collision
        raise LogCorruptionError("batch has a broken layout") from exc
    if position > len(value):
        raise LogCorruptionError("batch runs past its value")
    if stop == header.count and position != len(value):
        raise LogCorruptionError("batch has bytes after its records")
    return tuple(taken)


def sealed_batch(value: bytes, sealer: Sealer) -> bytes:
    """The stored bytes of a batch in the clear (`value`, as encoded once and replicated) with
    its payload sealed by `sealer`: the same header with the encrypted flag and a CRC over the
    sealed bytes. The payload is taken as it is, so the records are neither decoded nor
    encoded again (what an encrypted stream's leader and followers store)."""
    version, flags, arrival_ms, epoch, count = _HEADER_BEFORE_CRC.unpack_from(value, 0)
    assert not flags & FLAG_ENCRYPTED, "a sealed batch is never sealed again"
    return _seal(
        version=version,
        arrival_ms=arrival_ms,
        epoch=epoch,
        flags=flags,
        count=count,
        payload=memoryview(value)[BATCH_HEADER_BYTES:],  # read by the cipher, not copied
        sealer=sealer,
    )


def truncate_batch(
    value: bytes, header: BatchHeader, *, keep: int, sealer: Sealer | None = None
) -> bytes:
    """The bytes of the same batch with only its first `keep` records (a new CRC). `value`
    is in the clear (`plain_value`); an encrypted batch is sealed again with `sealer`."""
    assert 0 < keep < header.count, (keep, header.count)
    assert header.encrypted == (sealer is not None), header
    end = _skip_records(value, BATCH_HEADER_BYTES, keep)
    return _seal(
        version=header.version,
        arrival_ms=header.arrival_ms,
        epoch=header.epoch,
        flags=header.flags & ~FLAG_ENCRYPTED,
        count=keep,
        payload=value[BATCH_HEADER_BYTES:end],
        sealer=sealer,
    )
