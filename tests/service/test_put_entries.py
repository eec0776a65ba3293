"""PutRecords' records made at once (`records._new_records`: columns, or one loop) are those of
`_entry`, record by record: the same keys, data, sizes and hash keys, and the same first error."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from broker import limits
from broker.errors import ShoalError
from broker.log.records import NewRecords
from broker.meta.image import RecordDistribution, StreamMeta
from broker.service import records
from tests.meta.factories import one_stream, shard_meta

SHARD = shard_meta(1, created_ms=1_700_000_000_000)
STREAM = one_stream(SHARD, max_record_size_kib=1)


Columns = tuple[tuple[Any, ...], ...]


def whole(value: NewRecords | None) -> Columns | None:
    """Every column of the value (its equality compares the records only), with the hash keys
    it is routed by (a common record carries none: its key's MD5)."""
    if value is None:
        return None
    columns = (value.partition_keys, value.partition_keys_utf8, value.datas, value.sizes)
    assert value.size_bytes == sum(value.sizes)
    return (*columns, tuple(records._routing_keys(value)))


def one_by_one(stream: StreamMeta, raws: list[dict[str, Any]]) -> Columns | None:
    return whole(
        records._columns(
            [
                records._entry(stream, raw, records._put_records_path(i))
                for i, raw in enumerate(raws)
            ]
        )
    )


def test_entries_match_record_by_record() -> None:
    raws: list[dict[str, Any]] = [
        {"Data": b"a", "PartitionKey": "k"},
        {"Data": b"", "PartitionKey": "ключ"},  # UTF-8 counts in the size
        {"Data": b"b", "PartitionKey": "k", "ExplicitHashKey": "12345"},
        {"Data": b"c" * 1000, "PartitionKey": "x" * 24},  # exactly 1 KiB
    ]
    assert whole(records._new_records(STREAM, raws)) == one_by_one(STREAM, raws)


@pytest.mark.parametrize(
    "bad",
    [
        {"Data": b"c" * 1024, "PartitionKey": "k"},  # over the stream's 1 KiB record size
        {"Data": b"c"},  # no partition key on a stream routed by key
        {"Data": b"c", "PartitionKey": "k", "ExplicitHashKey": str(2**128)},
    ],
)
def test_the_first_error_is_record_by_records(bad: dict[str, Any]) -> None:
    raws = [{"Data": b"a", "PartitionKey": "k"}, bad, {"Data": b"c" * 2000, "PartitionKey": "k"}]
    with pytest.raises(ShoalError) as expected:
        one_by_one(STREAM, raws)
    with pytest.raises(ShoalError) as caught:
        records._new_records(STREAM, raws)
    assert (caught.value.code, caught.value.message) == (
        expected.value.code,
        expected.value.message,
    )


def test_auto_distributed_streams_ignore_partition_keys() -> None:
    auto = dataclasses.replace(STREAM, record_distribution=RecordDistribution.AUTO)
    made = records._new_records(auto, [{"Data": b"a"}, {"Data": b"b", "PartitionKey": "k"}])
    assert (made.partition_keys, made.sizes, made.size_bytes) == (("", "k"), (1, 2), 3)


def _random_raw(rng: random.Random) -> dict[str, Any]:
    """Mostly the common record; sometimes one of the odd ones, in any combination."""
    raw: dict[str, Any] = {
        "Data": rng.randbytes(rng.choice((1, 5, 1000, 1020, 1024))),
        "PartitionKey": rng.choice(("k", "ключ", "x" * 24, "🦈" * 3)),
    }
    odd = rng.random()
    if odd < 0.03:
        del raw["PartitionKey"]
    elif odd < 0.06:
        raw["ExplicitHashKey"] = rng.choice(("7", str(2**128), "007"))
    elif odd < 0.08:
        del raw["PartitionKey"]
        raw["ExplicitHashKey"] = "12"  # two members, but not the common two
    return raw


def test_random_puts_match_record_by_record() -> None:
    """Random PutRecords (the common record column by column, any odd one sends the request
    down the loop): the same entries, or the same first error, as record by record."""
    rng = random.Random(29)
    columns = 0
    for _ in range(600):
        raws = [_random_raw(rng) for _ in range(rng.choice((1, 2, 7, 40)))]
        try:
            expected: Columns | tuple[Any, str] | None = one_by_one(STREAM, raws)
        except ShoalError as error:
            expected = (error.code, error.message)
        try:
            got: Columns | tuple[Any, str] | None = whole(records._new_records(STREAM, raws))
        except ShoalError as error:
            got = (error.code, error.message)
        assert got == expected, raws
        columns += records._common_records(raws, limits.KiB) is not None
    assert columns > 100  # the column path was taken, not only the loop


def test_common_records_are_made_column_by_column() -> None:
    raws: list[dict[str, Any]] = [
        {"Data": b"a", "PartitionKey": "k"},
        {"Data": b"bc", "PartitionKey": "ключ"},
        {"PartitionKey": "🦈", "Data": b"d" * 1020},
    ]
    assert whole(records._common_records(raws, limits.KiB)) == one_by_one(STREAM, raws)
    # A record over the size, or one of three members, leaves it to the loop.
    assert (
        records._common_records([*raws, {"Data": b"e" * 1024, "PartitionKey": "k"}], 1024) is None
    )
    odd = {"Data": b"f", "PartitionKey": "k", "ExplicitHashKey": "1"}
    assert records._common_records([*raws, odd, {"Data": b"g"}], limits.KiB) is None


def test_an_entry_of_another_type_fails_as_record_by_record() -> None:
    """Not a mapping, or a key that is not a string (never past the doors' validation): the
    column path leaves it to the loop, which fails as it always did."""
    for odd in (None, {"Data": b"a", "PartitionKey": 7}, {"Data": None, "PartitionKey": "k"}):
        raws: list[Any] = [{"Data": b"a", "PartitionKey": "k"}, odd]
        assert records._common_records(raws, limits.KiB) is None
        with pytest.raises((AttributeError, TypeError)) as expected:
            one_by_one(STREAM, raws)
        with pytest.raises((AttributeError, TypeError)) as caught:
            records._new_records(STREAM, raws)
        assert type(caught.value) is type(expected.value)
