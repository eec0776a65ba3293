"""`PutEntries`: a PutRecords request's records as columns, read straight from its bytes.

A PutRecords request of 500 common records (exactly Data and PartitionKey each) becomes, on the
generic path, 500 upb sub-messages read field by field into 500 dicts, which the service then
takes apart again into columns. Here the columns are read in one C loop over the serialized
`PutRecordsInput` (`_put_entries.c`, built by the install step; `broker.compiled` loads it):
the partition keys (str and UTF-8), the data and each record's size (UTF-8 key + data, what
limits and throttles count). `PutEntries` carries them where the request's "Records" list goes:
it is a read-only sequence of the same dicts (made on access), and the service reads its columns
instead (`broker/service/records.py`).

The AWS door's JSON body is read the same way (`read_json_entries`): its "Records" list, as
orjson parsed it, into the keys and the base64 texts of the data, which the door decodes in one
call (`aws_codec.canonical_blobs`). A common JSON body is read before any parser sees it
(`read_json_body`): one C pass over its bytes gives the other members, the keys, and every
entry's base64 joined for one decode (`cut_blobs` then cuts the decode into the entries' data),
without orjson's 500 dicts and 1,000 strings.

Only the common entry is read here; any other (an explicit hash key, an empty or missing
member, an unknown or repeated field) gives None, as does a count outside the model's bounds,
and the caller reads the message through upb as before (the pure-Python path, the same
request: tests/wire/test_put_entries.py), so every validation error keeps its words and order.
Without the compiled module `read_put_entries` always answers None.

Pure: bytes in, values out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from broker import compiled

_compiled = compiled.load("broker.wire._put_entries")


class PutEntries(Sequence[dict[str, Any]]):
    """A PutRecords request's common records as columns (all four of one length, in request
    order); reads as the list of {"Data", "PartitionKey"} dicts the generic reader makes."""

    __slots__ = ("datas", "partition_keys", "partition_keys_utf8", "sizes")

    def __init__(
        self,
        partition_keys: list[str],
        partition_keys_utf8: list[bytes],
        datas: list[bytes],
        sizes: list[int],
    ) -> None:
        assert len(partition_keys) == len(partition_keys_utf8) == len(datas) == len(sizes)
        self.partition_keys = partition_keys
        self.partition_keys_utf8 = partition_keys_utf8
        self.datas = datas
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.datas)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [
                {"Data": data, "PartitionKey": key}
                for data, key in zip(self.datas[index], self.partition_keys[index], strict=True)
            ]
        return {"Data": self.datas[index], "PartitionKey": self.partition_keys[index]}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for data, key in zip(self.datas, self.partition_keys, strict=True):
            yield {"Data": data, "PartitionKey": key}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PutEntries):
            return (self.datas, self.partition_keys) == (other.datas, other.partition_keys)
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable columns, like the list it stands for

    def __repr__(self) -> str:
        return f"PutEntries({len(self)} records)"


def read_put_entries(
    raw: bytes,
    *,
    key_min: int,
    key_max: int,
    data_max: int,
    count_min: int,
    count_max: int,
) -> PutEntries | None:
    """The records of the serialized PutRecordsInput `raw` (already parsed once by upb, so
    well-formed) as columns, when every one is the common entry (Data of 1..data_max bytes and
    a PartitionKey of key_min..key_max characters, nothing else) and there are count_min to
    count_max of them; None otherwise, and always without the compiled module."""
    if _compiled is None:
        return None
    columns = _compiled.read(raw, key_min, key_max, data_max, count_min, count_max)
    if columns is None:
        return None
    keys, keys_utf8, datas, sizes = columns
    return PutEntries(keys, keys_utf8, datas, sizes)


def read_json_entries(
    records: list[Any], *, key_min: int, key_max: int, count_min: int, count_max: int
) -> tuple[list[str], list[bytes], list[str]] | None:
    """The AWS door's JSON "Records" list (as parsed) as (partition keys, their UTF-8, the
    Data texts: base64, for the caller to decode), when every entry is an object of exactly a
    "Data" string and a "PartitionKey" string of key_min..key_max characters and there are
    count_min to count_max of them; None otherwise, and always without the compiled module."""
    if _compiled is None:
        return None
    columns: tuple[list[str], list[bytes], list[str]] | None = _compiled.read_json(
        records, key_min, key_max, count_min, count_max
    )
    return columns


@dataclass(frozen=True, slots=True)
class JsonBodyColumns:
    """A common JSON PutRecords body as `read_json_body` read it: its top-level members in the
    body's order ("Records" mapped to None, the others to their strings), the partition keys
    (str and UTF-8), every entry's Data joined (each one's final padding turned into "A": one
    base64 decode for all), each entry's decoded data size, and each record's size (UTF-8 key
    + decoded data, as `PutEntries.sizes`)."""

    members: dict[str, str | None]
    partition_keys: list[str]
    partition_keys_utf8: list[bytes]
    base64: bytes
    data_sizes: list[int]
    sizes: list[int]


def read_json_body(
    body: bytes, *, key_min: int, key_max: int, data_max: int, count_min: int, count_max: int
) -> JsonBodyColumns | None:
    """The AWS door's JSON PutRecords `body` (its bytes, unparsed) as columns, when it is the
    common body: a "Records" array (once) of count_min..count_max entries of exactly "Data" (in
    canonical base64's length and final padding, of 1..data_max bytes decoded) and
    "PartitionKey" (key_min..key_max characters), every other top-level member a string, every
    name and string but Data printable ASCII without escapes. None otherwise (also for a body
    that is not JSON at all), and always without the compiled module: the caller parses the
    body then, which says what is wrong with it. Data's other characters are not checked here
    (a "=" before the final padding included): the caller must decode `base64` validating its
    alphabet and take the body as not common when that fails."""
    if _compiled is None:
        return None
    read = _compiled.read_json_body(body, key_min, key_max, data_max, count_min, count_max)
    if read is None:
        return None
    members, keys, keys_utf8, joined, data_sizes, sizes = read
    return JsonBodyColumns(members, keys, keys_utf8, joined, data_sizes, sizes)


def cut_blobs(decoded: bytes, data_sizes: list[int]) -> list[bytes] | None:
    """Each entry's data out of `decoded`, the base64 decode of `JsonBodyColumns.base64`: entry
    i's bytes begin where entry i-1's 3-byte groups end. None when `decoded` is not their total
    length (or without the compiled module)."""
    if _compiled is None:
        return None
    blobs: list[bytes] | None = _compiled.cut_blobs(decoded, data_sizes)
    return blobs


def split_base64(decoded: bytes, texts: list[str]) -> list[bytes] | None:
    """Each of `texts` decoded, given `decoded`, the base64 decode of the texts joined with every
    "=" turned into "A" (aws_codec.canonical_blobs); None when any is not canonical base64, or
    without the compiled module (the caller's Python loop then does it)."""
    if _compiled is None:
        return None
    blobs: list[bytes] | None = _compiled.split_base64(decoded, texts)
    return blobs


def compiled_reader() -> bool:
    """Whether the C reader was built (and from this source)."""
    return _compiled is not None
