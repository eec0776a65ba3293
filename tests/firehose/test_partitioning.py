"""Dynamic partitioning: a MetadataExtraction JQ query gives each record its partition keys,
`!{partitionKeyFromQuery:...}` in the prefix puts each set in its own objects, and a record
the query cannot read goes to the error output as partitioning-failed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from broker.clock import ManualClock
from broker.node import Node
from tests.firehose.conftest import call, records_read, s3_destination, wait_read, wait_status
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


async def test_records_land_under_their_partition_keys(
    firehose: Any, s3_server: S3Server, clock: ManualClock, fh_node: Node
) -> None:
    s3_server.client().create_bucket(Bucket="partitioned")
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="by-customer",
        ExtendedS3DestinationConfiguration=s3_destination(
            "partitioned",
            Prefix="customer=!{partitionKeyFromQuery:customer}/year=!{timestamp:yyyy}/",
            ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
            BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 60},
            DynamicPartitioningConfiguration={"Enabled": True},
            ProcessingConfiguration={
                "Enabled": True,
                "Processors": [
                    {
                        "Type": "MetadataExtraction",
                        "Parameters": [
                            {
                                "ParameterName": "MetadataExtractionQuery",
                                "ParameterValue": "{customer: .customer_id}",
                            },
                            {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
                        ],
                    },
                    {"Type": "AppendDelimiterToRecord"},
                ],
            },
        ),
    )
    await wait_status(firehose, "by-customer", "ACTIVE")
    rows = [{"customer_id": customer, "n": i} for i in range(10) for customer in ("a", "b")]
    records = [json.dumps(row).encode() for row in rows] + [b"not json"]
    read_before = records_read(fh_node)
    await call(
        firehose.put_record_batch,
        DeliveryStreamName="by-customer",
        Records=[{"Data": data} for data in records],
    )
    await wait_read(fh_node, read_before + len(records))  # the deliverer reads them
    clock.advance(ms=61_000)
    async with asyncio.timeout(20):
        while True:
            objects = await asyncio.to_thread(s3_server.objects, "partitioned")
            by_customer: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
            for key, body in objects.items():
                for customer in by_customer:
                    if key.startswith(f"customer={customer}/year="):
                        by_customer[customer] += [json.loads(line) for line in body.splitlines()]
            errors = [key for key in objects if key.startswith("errors/partitioning-failed/")]
            if sum(map(len, by_customer.values())) >= 20 and errors:
                break
            await asyncio.sleep(0.1)
    for customer, got in by_customer.items():
        assert sorted(row["n"] for row in got) == list(range(10))
        assert {row["customer_id"] for row in got} == {customer}
    failed = json.loads(objects[errors[0]])
    assert failed["errorCode"] == "DynamicPartitioning.MetadataExtractionFailed"


async def test_a_partition_key_without_its_query_is_refused(firehose: Any) -> None:
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(
            firehose.create_delivery_stream,
            DeliveryStreamName="no-query",
            ExtendedS3DestinationConfiguration=s3_destination(
                "partitioned",
                Prefix="!{partitionKeyFromQuery:customer}/",
                ErrorOutputPrefix="errors/",
                DynamicPartitioningConfiguration={"Enabled": True},
            ),
        )
    assert raised.value.response["Error"]["Code"] == "InvalidArgumentException"
