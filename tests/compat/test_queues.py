"""Kinesis queues through boto3 and gRPC: definitions, delivery with visibility timeouts,
acknowledgements, redelivery and the built-in dead-letter queue (broker/queues/).

The node's clock is manual: a visibility timeout passes when the test moves the clock, so no
test waits for one. Receives that find nothing use WaitTimeSeconds=1 (the smallest the model
allows) and so take about a second."""

from __future__ import annotations

from typing import Any

import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from broker.errors import ShoalError
from tests.compat.conftest import call, error_of, on_demand_stream

pytestmark = pytest.mark.integration


async def new_queue(kinesis: Any, name: str, stream_arn: str, **attributes: Any) -> str:
    created = await call(
        kinesis.create_queue,
        QueueName=name,
        StreamConfigurationList=[
            {"StreamARN": stream_arn, "StartingPosition": {"Type": "TRIM_HORIZON"}}
        ],
        **({"QueueAttributes": attributes} if attributes else {}),
    )
    arn: str = created["QueueDescription"]["QueueARN"]
    return arn


async def put(kinesis: Any, stream: str, *datas: bytes) -> None:
    for data in datas:
        await call(kinesis.put_record, StreamName=stream, Data=data, PartitionKey=data.decode())


async def receive(kinesis: Any, arn: str, **kwargs: Any) -> list[dict[str, Any]]:
    answer = await call(kinesis.receive_queue_records, QueueARN=arn, WaitTimeSeconds=1, **kwargs)
    records: list[dict[str, Any]] = answer["QueueRecords"]
    return records


async def test_queue_definitions(kinesis: Any) -> None:
    stream_arn = await on_demand_stream(kinesis, "orders")
    created = await call(
        kinesis.create_queue,
        QueueName="billing",
        StreamConfigurationList=[{"StreamARN": stream_arn}],
        Tags={"team": "pay"},
    )
    description = created["QueueDescription"]
    assert description["QueueStatus"] == "CREATING"
    arn = description["QueueARN"]
    assert arn.startswith("arn:aws:kinesis:us-east-1:") and ":queue/" in arn
    assert "billing" not in arn  # AWS: the resource id is not derived from the name
    described = (await call(kinesis.describe_queue, QueueARN=arn))["QueueDescription"]
    assert described["QueueStatus"] == "ACTIVE"
    assert described["StreamConfigurationList"] == [
        {"StreamARN": stream_arn, "StartingPosition": {"Type": "LATEST"}}
    ]
    assert described["QueueAttributes"] == {
        "VisibilityTimeoutSeconds": 30,
        "DeadLetterConfiguration": {"TargetType": "BUILT_IN", "MaxReceiveCount": 6},
    }

    code, _ = await error_of(
        kinesis.create_queue,
        QueueName="billing",
        StreamConfigurationList=[{"StreamARN": stream_arn}],
    )
    assert code == "ResourceInUseException"
    second = await new_queue(kinesis, "audit", stream_arn)
    other_stream = await on_demand_stream(kinesis, "clicks")
    third = await new_queue(kinesis, "clicks-q", other_stream)

    listed = await call(kinesis.list_queues)
    assert sorted(q["QueueARN"] for q in listed["QueueSummaries"]) == sorted([arn, second, third])
    filtered = await call(kinesis.list_queues, StreamFilter=[{"StreamARN": other_stream}])
    assert [q["QueueARN"] for q in filtered["QueueSummaries"]] == [third]
    page = await call(kinesis.list_queues, MaxResults=2)
    assert len(page["QueueSummaries"]) == 2
    rest = await call(kinesis.list_queues, NextToken=page["NextToken"])
    assert len(rest["QueueSummaries"]) == 1
    assert "NextToken" not in rest

    updated = await call(
        kinesis.update_queue,
        QueueARN=arn,
        QueueAttributes={"DeadLetterConfiguration": {"TargetType": "NONE"}},
    )
    assert updated["QueueDescription"]["QueueStatus"] == "UPDATING"
    attributes = (await call(kinesis.describe_queue, QueueARN=arn))["QueueDescription"][
        "QueueAttributes"
    ]
    assert attributes == {
        "VisibilityTimeoutSeconds": 30,
        "DeadLetterConfiguration": {"TargetType": "NONE"},
    }

    # Tags on a queue ARN, with AWS's character rules.
    await call(kinesis.tag_resource, ResourceARN=arn, Tags={"env": "prod"})
    await call(kinesis.untag_resource, ResourceARN=arn, TagKeys=["team"])
    listed_tags = await call(kinesis.list_tags_for_resource, ResourceARN=arn)
    assert listed_tags["Tags"] == [{"Key": "env", "Value": "prod"}]
    code, _ = await error_of(kinesis.tag_resource, ResourceARN=arn, Tags={"a;b": "c"})
    assert code == "InvalidArgumentException"

    # A stream with queues can be neither deleted nor made provisioned.
    code, message = await error_of(kinesis.delete_stream, StreamName="clicks")
    assert code == "ResourceInUseException"
    assert "queue" in message
    await call(kinesis.delete_queue, QueueARN=third)
    code, _ = await error_of(kinesis.describe_queue, QueueARN=third)
    assert code == "ResourceNotFoundException"
    await call(kinesis.delete_stream, StreamName="clicks")


async def test_queue_requests_aws_refuses(kinesis: Any) -> None:
    await call(kinesis.create_stream, StreamName="fixed", ShardCount=1)
    fixed = (await call(kinesis.describe_stream_summary, StreamName="fixed"))[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    code, _ = await error_of(
        kinesis.create_queue, QueueName="q", StreamConfigurationList=[{"StreamARN": fixed}]
    )
    assert code == "InvalidArgumentException"  # queues need an on-demand stream

    stream_arn = await on_demand_stream(kinesis, "demand")
    for configuration, attributes in [
        ({"StreamARN": stream_arn, "StartingPosition": {"Type": "AT_TIMESTAMP"}}, {}),
        (
            {
                "StreamARN": stream_arn,
                "StartingPosition": {"Type": "LATEST", "Timestamp": 1_700_000_000},
            },
            {},
        ),
        ({"StreamARN": stream_arn}, {"DeadLetterConfiguration": {"TargetType": "BUILT_IN"}}),
        (
            {"StreamARN": stream_arn},
            {"DeadLetterConfiguration": {"TargetType": "NONE", "MaxReceiveCount": 3}},
        ),
    ]:
        code, _ = await error_of(
            kinesis.create_queue,
            QueueName="q",
            StreamConfigurationList=[configuration],
            QueueAttributes=attributes,
        )
        assert code == "ValidationException", (configuration, attributes)
    code, _ = await error_of(
        kinesis.create_queue,
        QueueName="q",
        StreamConfigurationList=[{"StreamARN": stream_arn}, {"StreamARN": stream_arn}],
    )
    assert code == "ValidationException"
    missing = stream_arn.replace("stream/demand", "stream/absent")
    code, _ = await error_of(
        kinesis.create_queue, QueueName="q", StreamConfigurationList=[{"StreamARN": missing}]
    )
    assert code == "ResourceNotFoundException"
    code, _ = await error_of(
        kinesis.receive_queue_records,
        QueueARN="arn:aws:kinesis:us-east-1:000000000000:queue/nothing",
    )
    assert code == "ResourceNotFoundException"


async def test_delivery_acknowledgement_and_redelivery(kinesis: Any, clock: ManualClock) -> None:
    stream_arn = await on_demand_stream(kinesis, "work")
    await put(kinesis, "work", b"a", b"b", b"c")
    arn = await new_queue(kinesis, "workers", stream_arn, VisibilityTimeoutSeconds=60)

    first = await receive(kinesis, arn, Limit=2)
    second = await receive(kinesis, arn)
    got = first + second
    assert len(first) == 2
    assert sorted(r["Data"] for r in got) == [b"a", b"b", b"c"]
    assert all(r["ReceiveCount"] == 1 for r in got)
    assert len({r["RecordId"] for r in got}) == 3
    assert await receive(kinesis, arn) == []  # all in flight

    acked = await call(
        kinesis.acknowledge_queue_records,
        QueueARN=arn,
        Entries=[{"ReceiptHandle": got[0]["ReceiptHandle"]}],
    )
    assert acked["Successful"] == [{"ReceiptHandle": got[0]["ReceiptHandle"]}]
    assert acked["Failed"] == []

    clock.advance(ms=61_000)  # the other two become visible again
    again = await receive(kinesis, arn)
    assert sorted(r["RecordId"] for r in again) == sorted(r["RecordId"] for r in got[1:])
    assert all(r["ReceiveCount"] == 2 for r in again)
    assert {r["ReceiptHandle"] for r in again}.isdisjoint(r["ReceiptHandle"] for r in got)

    # The first receipt of a redelivered record no longer acts on it; the new one does.
    stale = await call(
        kinesis.acknowledge_queue_records,
        QueueARN=arn,
        Entries=[{"ReceiptHandle": got[1]["ReceiptHandle"]}, {"ReceiptHandle": "rubbish"}],
    )
    assert stale["Successful"] == []
    assert [f["ErrorCode"] for f in stale["Failed"]] == ["InvalidArgumentException"] * 2

    # Visibility 0: visible again at once, for any consumer.
    changed = await call(
        kinesis.update_queue_records_visibility,
        QueueARN=arn,
        Entries=[{"ReceiptHandle": again[0]["ReceiptHandle"], "VisibilityTimeoutSeconds": 0}],
    )
    assert len(changed["Successful"]) == 1
    third = await receive(kinesis, arn)
    assert [r["RecordId"] for r in third] == [again[0]["RecordId"]]
    assert third[0]["ReceiveCount"] == 3
    await call(
        kinesis.acknowledge_queue_records,
        QueueARN=arn,
        Entries=[
            {"ReceiptHandle": third[0]["ReceiptHandle"]},
            {"ReceiptHandle": again[1]["ReceiptHandle"]},
        ],
    )
    clock.advance(ms=3_600_000)
    assert await receive(kinesis, arn) == []  # every record acknowledged

    await put(kinesis, "work", b"d")
    latest = await receive(kinesis, arn)
    assert [r["Data"] for r in latest] == [b"d"]
    assert latest[0]["PartitionKey"] == "d"


async def test_dead_letter_queue(kinesis: Any, clock: ManualClock) -> None:
    stream_arn = await on_demand_stream(kinesis, "poison")
    await put(kinesis, "poison", b"bad")
    arn = await new_queue(
        kinesis,
        "strict",
        stream_arn,
        VisibilityTimeoutSeconds=10,
        DeadLetterConfiguration={"TargetType": "BUILT_IN", "MaxReceiveCount": 2},
    )
    for _ in range(2):
        (record,) = await receive(kinesis, arn)
        clock.advance(ms=11_000)
    assert await receive(kinesis, arn) == []  # received twice: now a dead-letter record

    dead = await call(kinesis.receive_dead_letter_queue_records, QueueARN=arn, WaitTimeSeconds=1)
    (letter,) = dead["QueueRecords"]
    assert letter["Data"] == b"bad"
    assert letter["RecordId"] == record["RecordId"]
    # A dead-letter receipt is for the dead-letter operations only.
    wrong = await call(
        kinesis.acknowledge_queue_records,
        QueueARN=arn,
        Entries=[{"ReceiptHandle": letter["ReceiptHandle"]}],
    )
    assert wrong["Failed"][0]["ErrorCode"] == "InvalidArgumentException"

    restored = await call(
        kinesis.restore_dead_letter_queue_records,
        QueueARN=arn,
        Entries=[{"ReceiptHandle": letter["ReceiptHandle"]}],
    )
    assert len(restored["Successful"]) == 1
    (back,) = await receive(kinesis, arn)
    assert back["ReceiveCount"] == 1  # restoring resets the count

    clock.advance(ms=11_000)
    (back,) = await receive(kinesis, arn)
    clock.advance(ms=11_000)
    (letter,) = (
        await call(kinesis.receive_dead_letter_queue_records, QueueARN=arn, WaitTimeSeconds=1)
    )["QueueRecords"]
    hidden = await call(
        kinesis.update_dead_letter_queue_records_visibility,
        QueueARN=arn,
        Entries=[{"ReceiptHandle": letter["ReceiptHandle"], "VisibilityTimeoutSeconds": 0}],
    )
    assert len(hidden["Successful"]) == 1
    (letter,) = (
        await call(kinesis.receive_dead_letter_queue_records, QueueARN=arn, WaitTimeSeconds=1)
    )["QueueRecords"]
    done = await call(
        kinesis.acknowledge_dead_letter_queue_records,
        QueueARN=arn,
        Entries=[{"ReceiptHandle": letter["ReceiptHandle"]}],
    )
    assert len(done["Successful"]) == 1
    clock.advance(ms=3_600_000)
    assert await receive(kinesis, arn) == []
    dead = await call(kinesis.receive_dead_letter_queue_records, QueueARN=arn, WaitTimeSeconds=1)
    assert dead["QueueRecords"] == []


async def test_queues_over_grpc(client: AsyncShoalClient, clock: ManualClock) -> None:
    await client.call(
        "CreateStream", {"StreamName": "g", "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}
    )
    summary = await client.call("DescribeStreamSummary", {"StreamName": "g"})
    stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
    created = await client.call(
        "CreateQueue",
        {
            "QueueName": "gq",
            "StreamConfigurationList": [
                {"StreamARN": stream_arn, "StartingPosition": {"Type": "TRIM_HORIZON"}}
            ],
            "QueueAttributes": {"VisibilityTimeoutSeconds": 5},
        },
    )
    arn = created["QueueDescription"]["QueueARN"]
    await client.call("PutRecord", {"StreamName": "g", "Data": b"x", "PartitionKey": "k"})
    got = await client.call("ReceiveQueueRecords", {"QueueARN": arn, "WaitTimeSeconds": 1})
    (record,) = got["QueueRecords"]
    assert record["Data"] == b"x"
    assert record["ReceiveCount"] == 1
    acked = await client.call(
        "AcknowledgeQueueRecords",
        {"QueueARN": arn, "Entries": [{"ReceiptHandle": record["ReceiptHandle"]}]},
    )
    assert len(acked["Successful"]) == 1
    clock.advance(ms=6_000)
    empty = await client.call("ReceiveQueueRecords", {"QueueARN": arn, "WaitTimeSeconds": 1})
    assert empty.get("QueueRecords", []) == []
    listed = await client.call("ListQueues", {})
    assert [q["QueueARN"] for q in listed["QueueSummaries"]] == [arn]
    with pytest.raises(ShoalError) as caught:
        await client.call("DescribeQueue", {"QueueARN": arn + "x"})
    assert caught.value.code.kinesis_name == "ResourceNotFoundException"
    await client.call("DeleteQueue", {"QueueARN": arn})
