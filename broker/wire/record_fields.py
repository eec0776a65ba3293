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
from typing import NamedTuple, Protocol

from broker import compiled
from broker.timestamps import datetime_from_ms
from broker.wire.record_page import arrival_field, varint

# The stored layout's pk_len, data_len (log/records.py RECORD_HEADER_BYTES; the wire layer sits
# below the log, so the layout is restated here and tests/gateway/test_record_fields.py checks
# that the two agree).
_RECORD_HEADER = struct.Struct(">HI")
RECORD_HEADER_BYTES = _RECORD_HEADER.size


class Run(Protocol):
    """A run of stored records as a read returns it (`log.records.RecordRun`)."""

    @property
    def value(self) -> bytes: ...
    @property
    def first_offset(self) -> int: ...
    @property
    def arrival_ms(self) -> int: ...
    @property
    def encrypted(self) -> bool: ...
    @property
    def record_count(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


_LIMB = 10**18
_LIMBS = 4
DIGITS_MAX = 18 * _LIMBS  # the C writer's four limbs; the layouts' numbers have 56 digits
# A sealed record's Record.encryption_type (field 5, wire type 2: tag 0x2a) = "KMS".
_KMS = b"\x2a\x03KMS"


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


_CWriter = Callable[[Sequence[tuple[object, ...]], bytes, bool], bytes]


def _compiled() -> _CWriter | None:
    module = compiled.load("broker.wire._record_fields")
    if module is None:
        return None
    write: _CWriter = module.write_page
    return write


_C_WRITE_PAGE = _compiled()
COMPILED = _C_WRITE_PAGE is not None  # what `write_page` uses (scripts/bench prints it)


def write_page_c(runs: Sequence[RunFields], tail: bytes, *, release_gil: bool = False) -> bytes:
    """The page by the C writer (only when `COMPILED`); a run it cannot take goes to Python.
    `release_gil`: the copy runs without the GIL (for a worker thread; `_record_fields.c`)."""
    assert _C_WRITE_PAGE is not None
    c_runs = []
    for run in runs:
        c_run = _c_run(run)
        if c_run is None:
            return write_page_python(runs, tail)
        c_runs.append(c_run)
    return _C_WRITE_PAGE(c_runs, tail, release_gil)


def _write_page_python(
    runs: Sequence[RunFields], tail: bytes, *, release_gil: bool = False
) -> bytes:
    """`write_page_python` under `write_page`'s signature (Python cannot give the GIL up)."""
    return write_page_python(runs, tail)


write_page = write_page_c if COMPILED else _write_page_python


def run_fields(
    runs: Sequence[Run], number_base: Callable[[int], tuple[int, int]]
) -> list[RunFields]:
    """What the record writer needs of each run; `number_base(arrival_ms)` is (base, shift) of
    the run's sequence numbers (`streams.sequence_numbers.record_number_base`).

    The arrival timestamp and the EncryptionType field are made once per batch, and so is the
    sequence-number arithmetic: the record at offset o is numbered `base | (o << shift)`, and
    since the offset's bits lie clear of the base's, a run's numbers are `first + k * step`
    with `step = 1 << shift`."""
    fields: list[RunFields] = []
    arrivals: dict[int, bytes] = {}
    for run in runs:
        arrival = arrivals.get(run.arrival_ms)
        if arrival is None:
            arrival = arrivals[run.arrival_ms] = arrival_field(datetime_from_ms(run.arrival_ms))
        base, shift = number_base(run.arrival_ms)
        first = base | (run.first_offset << shift)
        step = 1 << shift
        # The sum stands for the OR only while the offset field holds the offsets.
        last = run.first_offset + max(run.record_count - 1, 0)
        assert first + (last - run.first_offset) * step == base | (last << shift), (base, shift)
        fields.append(
            RunFields(
                run.value,
                run.start,
                run.end,
                run.record_count,
                first,
                step,
                arrival,
                _KMS if run.encrypted else b"",
            )
        )
    return fields


def records_ahead(runs: Sequence[Run], number_base: Callable[[int], tuple[int, int]]) -> bytes:
    """The records fields of a page read ahead, written in the read's worker thread (the C
    copy without the GIL): the gRPC door then answers `records_ahead + tail` (issue 18, the
    drain: the page's writing leaves the reader's wait)."""
    return write_page(run_fields(runs, number_base), b"", release_gil=True)
