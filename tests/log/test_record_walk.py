"""The walk of a stored batch's record lengths in C (broker/log/_record_walk.c) gives what the
Python walk gives, caps and layout errors included, and a read takes the same pages with
either (tests.gateway.test_grpc_page runs the store through both); its payload writer writes
the bytes the Python join writes."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import pytest

from broker import compiled
from broker.log import records

walk = compiled.load("broker.log._record_walk")
NOT_BUILT = "the C walk was not built (no C compiler when scripts/install ran)"
needs_c = pytest.mark.skipif(walk is None, reason=NOT_BUILT)


def payload(rng: random.Random, count: int) -> bytes:
    lengths = [(rng.choice((0, 1, 9, 256)), rng.choice((0, 1, 100, 70_000))) for _ in range(count)]
    return b"HEAD" + b"".join(struct.pack(">HI", k, d) + b"k" * k + b"d" * d for k, d in lengths)


def outcome(call: Callable[..., Any], *arguments: Any) -> Any:
    try:
        return call(*arguments)
    except struct.error:
        return "struct.error"


@needs_c
def test_the_c_walk_gives_the_python_walks_results() -> None:
    assert walk is not None
    rng = random.Random(3)
    for _ in range(300):
        count = rng.randint(0, 12)
        value = payload(rng, count)
        if rng.random() < 0.3:  # cut short, or with bytes after the records
            value = value[: rng.randint(0, len(value))] if rng.random() < 0.5 else value + b"x"
        skip = rng.randint(0, count)
        start = outcome(records._skip_in_python, value, 4, skip)
        assert outcome(walk.skip, value, 4, skip) == start
        if start == "struct.error":
            continue
        arguments = (
            value,
            start,
            skip,
            rng.randint(skip, count + 1),  # stop
            rng.randint(1, 10),  # room
            rng.choice((0, 50, 300)),  # taken_bytes
            rng.choice((1, 100, 1_000, 200_000)),  # bytes_max
            rng.random() < 0.5,  # first_taken
        )
        assert outcome(walk.take, *arguments) == outcome(records._take_in_python, *arguments), (
            arguments
        )


@needs_c
def test_the_c_walk_refuses_arguments_of_other_types() -> None:
    assert walk is not None
    with pytest.raises(TypeError):
        walk.skip("text", 0, 1)
    with pytest.raises(struct.error):
        walk.skip(b"\x00" * 5, 0, 1)
    with pytest.raises(struct.error):
        walk.take(b"\x00" * 6, 7, 0, 1, 1, 0, 10, False)


@pytest.mark.parametrize("name", ["broker.log._record_walk", "broker.wire._record_fields"])
def test_a_build_of_another_source_is_not_used(
    name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = compiled.load(name)
    if module is None:
        pytest.skip(f"{name} was not built (no C compiler when scripts/install ran)")
    monkeypatch.setattr(module, "SOURCE_SHA256", "0" * 64)
    with caplog.at_level("WARNING", logger="broker.compiled"):
        assert compiled.load(name) is None
    assert "built from another version" in caplog.text


@needs_c
def test_the_c_payload_is_the_python_payload() -> None:
    """A batch's payload written by C (`payload`) is byte for byte the one joined in Python, and
    both refuse a key or a data too long for its length head."""
    assert walk is not None
    rng = random.Random(5)
    for _ in range(200):
        count = rng.randint(1, 40)
        keys = tuple(rng.randbytes(rng.choice((0, 1, 17, 256, 1024))) for _ in range(count))
        datas = tuple(rng.randbytes(rng.choice((0, 1, 1024, 70_000))) for _ in range(count))
        assert walk.payload(keys, datas) == records._payload_in_python(keys, datas)
    too_long_key = (b"k" * 65_536,)
    for write in (walk.payload, records._payload_in_python):
        with pytest.raises(ValueError, match="too long"):
            write(too_long_key, (b"d",))
    with pytest.raises(ValueError, match="differ"):
        walk.payload((b"k",), ())
    with pytest.raises(TypeError):
        walk.payload((b"k",), ("text",))
    with pytest.raises(TypeError):
        walk.payload([b"k"], [b"d"])


def test_a_batch_whose_data_is_not_bytes_is_encoded_as_if_it_were() -> None:
    """The C payload takes bytes only; a bytearray or memoryview data (outside NewRecord's
    typed contract, but what a library typed Any could hand over, and what the Python join
    takes) is encoded by the Python code, to the same stored bytes, not refused."""
    plain = [records.NewRecord("k", b"data"), records.NewRecord("j", b"")]
    other = [
        records.NewRecord("k", bytearray(b"data")),  # type: ignore[arg-type]
        records.NewRecord("j", memoryview(b"")),  # type: ignore[arg-type]
    ]
    encoded = records.encode_batch(arrival_ms=7, epoch=1, control=False, records=plain)
    assert records.encode_batch(arrival_ms=7, epoch=1, control=False, records=other) == encoded


@needs_c
def test_the_c_crc32c_is_google_crc32cs_over_the_slice() -> None:
    """`crc32c(crc, value, start)` is google-crc32c's extend of `crc` over value[start:], for
    lengths on each side of its three-stream blocks (3 x 4,096 bytes) and odd starts; a start
    outside the value is refused. (None only on a CPU without SSE 4.2: then nothing to check.)"""
    assert walk is not None
    import google_crc32c

    rng = random.Random(9)
    block = 3 * 4096
    lengths = [*range(20), block - 1, block, block + 1, 2 * block + 7, 520_019]
    lengths += [rng.randrange(1, 200_000) for _ in range(50)]
    for length in lengths:
        value = rng.randbytes(length)
        for start in {0, min(5, length), min(19, length), length}:
            crc = rng.getrandbits(32)
            found = walk.crc32c(crc, value, start)
            if found is None:
                pytest.skip("this CPU has no CRC32C instruction")
            assert found == google_crc32c.extend(crc, value[start:]), (length, start)
    with pytest.raises(ValueError, match="outside"):
        walk.crc32c(0, b"abc", 4)


def test_a_batchs_checksum_is_the_same_in_place_and_sliced(monkeypatch: pytest.MonkeyPatch) -> None:
    """`batch_crc` of a CRC32C batch gives the same checksum with and without the C code."""
    batch = records.encode_batch(
        arrival_ms=1,
        epoch=1,
        control=False,
        records=[records.NewRecord("k", bytes(range(256)) * 40) for _ in range(50)],
        version=records.BATCH_FORMAT_VERSION,
    )
    with_c = records.batch_crc(batch, records.BATCH_FORMAT_VERSION)
    monkeypatch.setattr(records, "_compiled_walk", None)
    assert records.batch_crc(batch, records.BATCH_FORMAT_VERSION) == with_c
    assert records.BatchHeader.parse(batch).count == 50
