"""AWS's formats through both doors (issue 14 item 3): 56-digit sequence numbers, accepted
everywhere a number is, ordered as strings and as integers; numbers of the previous layout
still accepted; shard iterators as standard base64 of AWS's shape, an altered one refused as
AWS refuses it."""

from __future__ import annotations

import base64
from typing import Any

import botocore.exceptions
import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.errors import ErrorCode, ShoalError
from broker.streams.sequence_numbers import (
    decode_sequence_number,
    encode_legacy_sequence_number,
    is_aws_layout,
)
from tests.compat.conftest import call

pytestmark = pytest.mark.integration


async def test_sequence_numbers_and_iterators_in_aws_shape(
    kinesis: Any, client: AsyncShoalClient
) -> None:
    await call(kinesis.create_stream, StreamName="formats", ShardCount=1)
    shard_id = "shardId-000000000000"
    puts = [
        await call(kinesis.put_record, StreamName="formats", Data=b"%d" % i, PartitionKey="k")
        for i in range(3)
    ]
    numbers = [p["SequenceNumber"] for p in puts]
    assert all(len(n) == 56 and n.isdigit() for n in numbers)
    assert numbers == sorted(numbers)  # as strings
    assert [int(n) for n in numbers] == sorted(int(n) for n in numbers)  # as integers
    assert len(set(numbers)) == 3
    assert all(is_aws_layout(n) for n in numbers)  # a new stream: AWS's bit layout

    # SequenceNumberForOrdering takes one; the next number is above it.
    ordered = await call(
        kinesis.put_record,
        StreamName="formats",
        Data=b"3",
        PartitionKey="k",
        SequenceNumberForOrdering=numbers[-1],
    )
    assert ordered["SequenceNumber"] > numbers[-1]

    shard = (await call(kinesis.list_shards, StreamName="formats"))["Shards"][0]
    starting = shard["SequenceNumberRange"]["StartingSequenceNumber"]
    assert len(starting) == 56
    assert starting <= numbers[0]

    # AT/AFTER_SEQUENCE_NUMBER, over the AWS door and the gRPC door alike.
    after = (
        await call(
            kinesis.get_shard_iterator,
            StreamName="formats",
            ShardId=shard_id,
            ShardIteratorType="AFTER_SEQUENCE_NUMBER",
            StartingSequenceNumber=numbers[0],
        )
    )["ShardIterator"]
    raw = base64.b64decode(after, validate=True)
    assert raw[:8] == bytes([0, 0, 0, 0, 0, 0, 0, 1])
    assert len(raw) == 152  # AWS's length for a name of up to 13 characters ("formats")
    read = await call(kinesis.get_records, ShardIterator=after)
    assert [r["SequenceNumber"] for r in read["Records"]] == [
        *numbers[1:],
        ordered["SequenceNumber"],
    ]
    over_grpc = await client.call(
        "GetShardIterator",
        {
            "StreamName": "formats",
            "ShardId": shard_id,
            "ShardIteratorType": "AT_SEQUENCE_NUMBER",
            "StartingSequenceNumber": numbers[1],
        },
    )
    grpc_read = await client.call("GetRecords", {"ShardIterator": over_grpc["ShardIterator"]})
    assert grpc_read["Records"][0]["SequenceNumber"] == numbers[1]

    # A number of the previous (38-digit) layout, as stored by a checkpoint before the
    # upgrade, names the same record.
    legacy = encode_legacy_sequence_number(decode_sequence_number(numbers[1]))
    assert len(legacy) == 38
    at_legacy = (
        await call(
            kinesis.get_shard_iterator,
            StreamName="formats",
            ShardId=shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=legacy,
        )
    )["ShardIterator"]
    legacy_read = await call(kinesis.get_records, ShardIterator=at_legacy)
    assert legacy_read["Records"][0]["SequenceNumber"] == numbers[1]

    # An altered iterator is refused as AWS refuses it, on both doors.
    altered = bytearray(raw)
    altered[40] ^= 1
    tampered = base64.b64encode(bytes(altered)).decode("ascii")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        await call(kinesis.get_records, ShardIterator=tampered)
    assert caught.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert caught.value.response["Error"]["Message"] == "Invalid ShardIterator."
    with pytest.raises(ShoalError) as refused:
        await client.call("GetRecords", {"ShardIterator": tampered})
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
