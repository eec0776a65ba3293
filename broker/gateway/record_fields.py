"""The `records` fields of GetRecords' gRPC page (GetRecordsOutput field 1, repeated), written
from runs of stored batch bytes: in C where the install step compiled `_record_fields.c`, in
Python otherwise. Both write the same bytes (tests/gateway/test_record_fields.py).

A page of 10,000 records costs the Python writer about 1.2 us per record, almost all in C calls
it cannot batch (int-to-decimal of each 56-digit sequence number, one `%` format, two slices),
plus a second copy of the whole page when the records are joined. The C writer walks each run
once to size the page exactly, then writes every record's fields straight from the batch bytes:
one copy of each byte, the sequence numbers in base-10^18 limbs (issue 18, the drain).

The C module is optional: `scripts/install` (and the image's build stage) compile it with the
package when a C compiler is there; without one the build goes on and this module uses the
Python writer. A compiled module built from another version of the C source than the one next
to it (an editable install not rebuilt after an edit) is not used (`broker.compiled`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

from broker import compiled
from broker.log.records import RECORD_HEADER_BYTES
from broker.wire.record_page import varint

_RECORD_HEADER = struct.Struct(">HI")  # the stored layout's pk_len, data_len (log/records.py)
assert _RECORD_HEADER.size == RECORD_HEADER_BYTES

_LIMB = 10**18
_LIMBS = 4
DIGITS_MAX = 18 * _LIMBS  # the C writer's four limbs; the layouts' numbers have 56 digits


class RunFields(NamedTuple):
    """One run of a page as its writer needs it: the records at [start, end) of `value` (the
    stored layout, in the clear), `record_count` of them; record k's sequence number is
    `first_number + k * step`; `arrival` and `encryption` are the whole fields every record of
    the run carries (`encryption` is b"" for a clear record)."""

    value: bytes
    start: int
    end: int
    record_count: int
    first_number: int
    step: int
    arrival: bytes
    encryption: bytes


def _limbs(number: int) -> tuple[int, int, int, int]:
    low, rest = number % _LIMB, number // _LIMB
    second, rest = rest % _LIMB, rest // _LIMB
    third, fourth = rest % _LIMB, rest // _LIMB
    return low, second, third, fourth


def _c_run(run: RunFields) -> tuple[object, ...] | None:
    """`run` in the C writer's form, or None when its numbers do not all have one length of at
    most 72 digits (never for the layouts' 56-digit numbers)."""
    last = run.first_number + max(run.record_count - 1, 0) * run.step
    digits = len(str(run.first_number))
    if run.first_number < 0 or digits > DIGITS_MAX or len(str(last)) != digits:
        return None
    return (
        run.value,
        run.start,
        run.end,
        run.record_count,
        digits,
        _limbs(run.first_number),
        _limbs(run.step),
        run.arrival,
        run.encryption,
    )


class _Heads(dict[int, bytes]):
    """Varint length heads by length, made on first use (a page repeats a few lengths)."""

    def __missing__(self, length: int) -> bytes:
        head = self[length] = varint(length)
        return head


def write_page_python(runs: Sequence[RunFields], tail: bytes) -> bytes:
    """The page in Python: the records fields of `runs`, then `tail`.

    Straight-line on purpose (it runs once per record of every page): one `%` format per
    record writes its field tags, length heads, number, arrival, data, key and encryption in
    field order; the data and key are copied from the batch bytes once, into that string."""
    parts: list[bytes] = []
    append = parts.append
    unpack_from = _RECORD_HEADER.unpack_from
    heads = _Heads()
    for run in runs:
        assert run.step > 0
        arrival, encryption, value = run.arrival, run.encryption, run.value
        # Per record: three tags and the number's one length byte (under 128 digits), the
        # arrival and encryption fields, then what varies.
        fixed = 4 + len(arrival) + len(encryption)
        position = run.start
        stop = run.first_number + run.record_count * run.step
        for number_value in range(run.first_number, stop, run.step):
            number = b"%d" % number_value
            key_length, data_length = unpack_from(value, position)
            key_at = position + RECORD_HEADER_BYTES
            data_at = key_at + key_length
            position = data_at + data_length
            data_head = heads[data_length]
            key_head = heads[key_length]
            size = fixed + len(number) + len(data_head) + data_length + len(key_head) + key_length
            append(
                b"\x0a%b\x0a%b%b%b\x1a%b%b\x22%b%b%b"
                % (
                    heads[size],
                    heads[len(number)],
                    number,
                    arrival,
                    data_head,
                    value[data_at:position],
                    key_head,
                    value[key_at:data_at],
                    encryption,
                )
            )
        if position != run.end:
            raise ValueError(f"a run's records end at {position}, not at {run.end}")
    append(tail)
    return b"".join(parts)


def _compiled() -> Callable[[Sequence[tuple[object, ...]], bytes], bytes] | None:
    module = compiled.load("broker.gateway._record_fields")
    if module is None:
        return None
    write: Callable[[Sequence[tuple[object, ...]], bytes], bytes] = module.write_page
    return write


_C_WRITE_PAGE = _compiled()
COMPILED = _C_WRITE_PAGE is not None  # what `write_page` uses (scripts/bench prints it)


def write_page_c(runs: Sequence[RunFields], tail: bytes) -> bytes:
    """The page by the C writer (only when `COMPILED`); a run it cannot take goes to Python."""
    assert _C_WRITE_PAGE is not None
    c_runs = []
    for run in runs:
        c_run = _c_run(run)
        if c_run is None:
            return write_page_python(runs, tail)
        c_runs.append(c_run)
    return _C_WRITE_PAGE(c_runs, tail)


write_page = write_page_c if COMPILED else write_page_python
