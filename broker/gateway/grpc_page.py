"""GetRecords' answer on the gRPC door: its page written from the stored batch bytes.

The service answers a page of records as a `ShardPage` (runs of the stored batches' bytes,
`log.records.RecordRun`). Each record's partition key and data are copied from the batch
straight into its `Record` fields: no `StoredRecord`, dict or message per record; the arrival
timestamp, the EncryptionType field and the sequence-number arithmetic are made once per batch
(`wire.record_fields`, in C where it was compiled). A page read ahead for a gRPC reader comes
with its records fields written already, in the read's worker thread
(`ShardPage.records_written`): the answer is those bytes and the tail.

The rest of the answer (NextShardIterator, MillisBehindLatest, ChildShards) is serialized by
upb after the records, as `wire.record_page` does. The bytes are identical to upb's
serialization of the same answer as record dicts (tests/gateway/test_grpc_page.py). A page
without runs (read from a remote replica or the memory store) is shaped into record dicts and
written by `wire.record_page`, as is an answer that holds dicts already.

Pure: values in, bytes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.api.kinesis.v1 import kinesis_pb2
from broker.service.records import ShardPage
from broker.wire import record_page
from broker.wire.record_fields import run_fields, write_page
from broker.wire.record_page import page_tail, varint

_EVENT = b"\x0a"  # SubscribeToShardEventStream.subscribe_to_shard_event = 1


def get_records_output(response: Mapping[str, Any]) -> bytes:
    """The serialized `GetRecordsOutput` of the service's GetRecords answer."""
    page = response.get("Records")
    if not isinstance(page, ShardPage):
        return record_page.get_records_output(response)
    runs = page.page.runs
    if runs is None:
        return record_page.get_records_output({**response, "Records": page.shaped()})
    tail = page_tail(response, kinesis_pb2.GetRecordsOutput)
    if page.records_written is not None:
        return page.records_written + tail
    return write_page(run_fields(runs, page.number_base), tail)


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
