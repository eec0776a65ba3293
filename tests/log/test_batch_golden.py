"""The stored bytes of a batch do not change with the value the put path hands in (issue 18,
item 1: `NewRecords`, the append's columns, written by `encode_batch` as they are).

Old logs must read back and followers store their leader's bytes as they are, so the layout is
pinned three ways: random batches encoded from `NewRecords` equal those encoded from a list of
`NewRecord`s and those of a reference encoder written here record by record from the layout in
broker/log/records.py's docstring (the encoder before the change, in its plainest form); and
one fixed batch's bytes are pinned by digest, as the encoder before the change wrote them
(checked against that commit's code), for both stored versions and both kinds of batch.
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib

import google_crc32c
import pytest

from broker.log.records import (
    AppendBatch,
    BatchHeader,
    NewRecord,
    NewRecords,
    decode_new_records,
    encode_batch,
)
from broker.types import Offset, ShardUid


def _reference(
    *, arrival_ms: int, epoch: int, control: bool, records: list[NewRecord], version: int
) -> bytes:
    """The layout, one record at a time: header (version u8, flags u8, arrival_ms u64, epoch
    u32, count u32, crc u32), then pk_len u16, data_len u32, key (UTF-8), data per record."""
    header = struct.pack(">BBQII", version, 1 if control else 0, arrival_ms, epoch, len(records))
    payload = b""
    for record in records:
        key = record.partition_key.encode("utf-8")
        payload += struct.pack(">HI", len(key), len(record.data)) + key + record.data
    crc = zlib.crc32(header + payload) if version == 2 else google_crc32c.value(header + payload)
    return header + struct.pack(">I", crc) + payload


_KEYS = ("k", "", "ключ", "🦈" * 3, "x" * 256, "user-42")


def _random_records(rng: random.Random) -> list[NewRecord]:
    count = rng.choice((1, 2, 3, 17, 500))
    return [
        NewRecord(
            rng.choice(_KEYS) + str(rng.randrange(1000)) * rng.randrange(2),
            rng.randbytes(rng.choice((0, 1, 7, 1024, 5000))),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("version", [2, 3])
def test_random_batches_of_the_value_are_the_reference_bytes(version: int) -> None:
    rng = random.Random(18 + version)
    for _ in range(150):
        records = _random_records(rng)
        arrival_ms = rng.randrange(2**63)
        epoch = rng.randrange(2**32)
        control = rng.random() < 0.2
        expected = _reference(
            arrival_ms=arrival_ms, epoch=epoch, control=control, records=records, version=version
        )
        value = NewRecords.of(records, [rng.randrange(2**128) for _ in records])
        for given in (value, records, tuple(records)):
            encoded = encode_batch(
                arrival_ms=arrival_ms, epoch=epoch, control=control, records=given, version=version
            )
            assert encoded == expected
        batch = AppendBatch(
            shard_uid=ShardUid(3),
            first_offset=Offset(10),
            arrival_ms=arrival_ms,
            records=value,
            control=control,
            epoch=epoch,
            version=version,
        )
        assert batch.value == expected
        assert batch.records is value  # taken as it is, not rebuilt
        assert batch.size_bytes == sum(len(r.partition_key.encode()) + len(r.data) for r in records)
        header = BatchHeader.parse(expected)
        assert decode_new_records(expected, header, begin=0, stop=len(records)) == tuple(records)


# The bytes of one fixed batch as the encoder before `NewRecords` wrote them (sha256, length
# 7377), per (version, control). Changing any of these changes what is stored on disk.
_GOLDEN = {
    (2, False): "b34cf951c04bc7b7bf9da71a5260b44809318563b62d05448e021b3e3240c261",
    (2, True): "c54ff9ad1a415c6a0618b9273f24a384821341021b6ec87bad80ebe9c765e4a8",
    (3, False): "f3c5bc54958f0bfc33c4f29b87c714b08a420f040b69375d947786f7a6288df0",
    (3, True): "6134fb57268925bea1685f5da7186b66f1ec1579150de03d6689415d075fda0c",
}


@pytest.mark.parametrize(("version", "control"), sorted(_GOLDEN))
def test_a_fixed_batch_keeps_its_stored_bytes(version: int, control: bool) -> None:
    records = [
        NewRecord(
            f"key-{i}-ключ-🦈" * (i % 3),
            bytes((i * 7 + j) % 256 for j in range(i * 13 % 200)),
        )
        for i in range(1, 60)
    ]
    for given in (records, NewRecords.of(records)):
        value = encode_batch(
            arrival_ms=1_700_000_000_123,
            epoch=7,
            control=control,
            records=given,
            version=version,
        )
        assert len(value) == 7377
        assert hashlib.sha256(value).hexdigest() == _GOLDEN[(version, control)]


def test_the_value_reads_as_its_records() -> None:
    records = [NewRecord("a", b"1"), NewRecord("ключ", b""), NewRecord("c", b"333")]
    value = NewRecords.of(records, [5, 6, 7])
    assert list(value) == records and value == records and value == tuple(records)
    assert value[1] == records[1] and value[-1] == records[-1]
    assert value.sizes == (2, 8, 4) and value.size_bytes == 14
    part = value.take([2, 0])
    assert list(part) == [records[2], records[0]]
    assert (part.sizes, part.hash_keys, part.size_bytes) == ((4, 2), (7, 5), 6)
    assert value.take([1]).hash_keys == (6,)
    assert len(value.take([])) == 0 and value.take([]).size_bytes == 0
    sliced = value[1:]
    assert list(sliced) == records[1:] and sliced.hash_keys == (6, 7)
    assert NewRecords.of(value) is value
    assert hash(value) == hash(tuple(records))
