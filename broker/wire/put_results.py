"""The result entries of a PutRecords answer (`PutRecordsOutput.records`, field 2) written by one
shard whole, as protobuf bytes from its columns: the shard id and the sequence numbers in
request order. Each entry is a head, its number and the shard's field, so they all are one join,
no step per record; the bytes are upb's for the same entries (tests/gateway/test_put_records.py).

Apart from the door (gateway/put_records.py) so that the service can write them ahead, while the
records are fsynced (service/records.py `_Answer.prepare`). Pure: values in, bytes out.
"""

from __future__ import annotations

from collections.abc import Sequence

# PutRecordsOutput.records = 2 (tag 0x12); PutRecordsResultEntry: sequence_number = 1 (0x0a),
# shard_id = 2 (0x12).


def written_entries(shard_id: str, numbers: Sequence[str]) -> bytes | None:
    """The result entries of `numbers` (all written by `shard_id`), or None when they do not
    fit the one-join form (an empty run, numbers of different lengths, text that is not ASCII,
    an entry past one-byte lengths): the caller then writes them one by one."""
    shard_field = ascii_field("\x12", shard_id)
    if shard_field is None or not numbers:
        return None
    size = len(numbers[0])
    body_size = size + 2 + len(shard_field)
    if body_size >= 0x80 or min(map(len, numbers)) != size or max(map(len, numbers)) != size:
        return None
    text = "".join(numbers)
    if not text.isascii():
        return None
    head = f"\x12{chr(body_size)}\x0a{chr(size)}"
    return (head + (shard_field + head).join(numbers) + shard_field).encode()


def ascii_field(tag: str, text: str) -> str | None:
    """A short ASCII string field (tag, one-byte length, text) as text; None otherwise."""
    return f"{tag}{chr(len(text))}{text}" if text.isascii() and len(text) < 0x80 else None
