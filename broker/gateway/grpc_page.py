"""GetRecords' answer on the gRPC door: its page written from the stored batch bytes.

The service answers a page of records as a `ShardPage` (runs of the stored batches' bytes,
`log.records.RecordRun`). Each record's partition key and data are copied from the batch
straight into its `Record` fields: no `StoredRecord`, dict or message per record. The
arrival timestamp and the EncryptionType field are made once per batch, and so is the
sequence-number arithmetic: the record at offset o is numbered `base | (o << shift)`, and since
the offset's bits lie clear of the base's (streams/sequence_numbers.py), a run's numbers are
`first + k * (1 << shift)`. `record_fields` writes the records (in C where it was compiled).

The rest of the answer (NextShardIterator, MillisBehindLatest, ChildShards) is serialized by
upb after the records, as `wire.record_page` does. The bytes are identical to upb's
serialization of the same answer as record dicts (tests/gateway/test_grpc_page.py). A page
without runs (read from a remote replica or the memory store) is shaped into record dicts and
written by `wire.record_page`, as is an answer that holds dicts already.

Pure: values in, bytes out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from broker.api.kinesis.v1 import kinesis_pb2
from broker.gateway.record_fields import RunFields, write_page
from broker.log.records import RecordRun
from broker.service.records import ShardPage
from broker.timestamps import datetime_from_ms
from broker.wire import record_page
from broker.wire.record_page import arrival_field, page_tail, varint

# A sealed record's Record.encryption_type (field 5, wire type 2: tag 0x2a) = "KMS".
_KMS = b"\x2a\x03KMS"
_EVENT = b"\x0a"  # SubscribeToShardEventStream.subscribe_to_shard_event = 1


def get_records_output(response: Mapping[str, Any]) -> bytes:
    """The serialized `GetRecordsOutput` of the service's GetRecords answer."""
    page = response.get("Records")
    if not isinstance(page, ShardPage):
        return record_page.get_records_output(response)
    runs = page.page.runs
    if runs is None:
        return record_page.get_records_output({**response, "Records": page.shaped()})
    return write_page(
        run_fields(runs, page.number_base), page_tail(response, kinesis_pb2.GetRecordsOutput)
    )


def subscribe_to_shard_event_stream(event: Mapping[str, Any]) -> bytes:
    """One serialized `SubscribeToShardEventStream` message: a SubscribeToShardEvent whose
    Records are a `ShardPage` with runs is written from the batch bytes (its records, then the
    rest by upb, in field 1 of the union); any other event by `wire.record_page`."""
    inner = event.get("SubscribeToShardEvent")
    page = inner.get("Records") if len(event) == 1 and isinstance(inner, Mapping) else None
    if not isinstance(page, ShardPage):
        return record_page.subscribe_to_shard_event_stream(event)
    assert inner is not None
    if page.page.runs is None:
        shaped = {"SubscribeToShardEvent": {**inner, "Records": page.shaped()}}
        return record_page.subscribe_to_shard_event_stream(shaped)
    body = write_page(
        run_fields(page.page.runs, page.number_base),
        page_tail(inner, kinesis_pb2.SubscribeToShardEvent),
    )
    return _EVENT + varint(len(body)) + body


def run_fields(
    runs: Sequence[RecordRun], number_base: Callable[[int], tuple[int, int]]
) -> list[RunFields]:
    """What the record writer needs of each run; `number_base(arrival_ms)` is (base, shift) of
    the run's sequence numbers."""
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
