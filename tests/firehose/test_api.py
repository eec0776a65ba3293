"""The Firehose API through boto3's `firehose` client (AWS JSON 1.1 door) and the native gRPC
service, against an in-process node whose S3 is moto's server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.exceptions
import grpc
import pytest

from broker.api.firehose.v1 import firehose_pb2, firehose_pb2_grpc
from broker.clock import ManualClock
from broker.errors import ErrorCode, ShoalError
from broker.node import Node
from tests.firehose.conftest import (
    call,
    firehose_client,
    s3_destination,
    wait_encryption,
    wait_gone,
    wait_status,
)
from tests.s3_server import S3Server, running_s3_node

pytestmark = pytest.mark.integration


def _error(raised: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(raised.value.response["Error"]["Code"])


async def test_create_describe_list_delete(
    firehose: Any, s3_server: S3Server, fh_node: Node
) -> None:
    s3_server.client().create_bucket(Bucket="api-life")
    created = await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="orders",
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration=s3_destination(
            "api-life", Prefix="raw/", CompressionFormat="GZIP"
        ),
        Tags=[{"Key": "team", "Value": "data"}],
    )
    assert created["DeliveryStreamARN"] == (
        "arn:aws:firehose:us-east-1:000000000000:deliverystream/orders"
    )
    description = await wait_status(firehose, "orders", "ACTIVE")
    assert description["DeliveryStreamType"] == "DirectPut"
    assert description["VersionId"] == "1"
    assert description["HasMoreDestinations"] is False
    assert description["DeliveryStreamEncryptionConfiguration"] == {"Status": "DISABLED"}
    (destination,) = description["Destinations"]
    assert destination["DestinationId"] == "destinationId-000000000001"
    extended = destination["ExtendedS3DestinationDescription"]
    assert extended["BufferingHints"] == {"SizeInMBs": 5, "IntervalInSeconds": 300}
    assert extended["CompressionFormat"] == "GZIP"
    assert extended["Prefix"] == "raw/"
    assert extended["EncryptionConfiguration"] == {"NoEncryptionConfig": "NoEncryption"}
    assert destination["S3DestinationDescription"]["BucketARN"] == "arn:aws:s3:::api-life"

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(
            firehose.create_delivery_stream,
            DeliveryStreamName="orders",
            ExtendedS3DestinationConfiguration=s3_destination("api-life"),
        )
    assert _error(raised) == "ResourceInUseException"

    listed = await call(firehose.list_delivery_streams)
    assert "orders" in listed["DeliveryStreamNames"]  # with the package's other tests' streams
    assert listed["HasMoreDeliveryStreams"] is False
    tags = await call(firehose.list_tags_for_delivery_stream, DeliveryStreamName="orders")
    assert tags["Tags"] == [{"Key": "team", "Value": "data"}]

    assert fh_node.firehose is not None and fh_node.service is not None
    image = fh_node.firehose.service._metadata.image()
    internal = image.delivery_streams[created["DeliveryStreamARN"]].internal_stream
    await fh_node.service.call("DescribeStreamSummary", {"StreamName": internal})
    await call(firehose.delete_delivery_stream, DeliveryStreamName="orders")
    await wait_gone(firehose, "orders")
    with pytest.raises(ShoalError) as gone:  # the internal stream went with it
        await fh_node.service.call("DescribeStreamSummary", {"StreamName": internal})
    assert gone.value.code is ErrorCode.RESOURCE_NOT_FOUND
    assert "orders" not in (await call(firehose.list_delivery_streams))["DeliveryStreamNames"]


async def test_a_missing_bucket_fails_creation_with_a_failure_description(firehose: Any) -> None:
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="nowhere",
        ExtendedS3DestinationConfiguration=s3_destination("no-such-bucket-here"),
    )
    description = await wait_status(firehose, "nowhere", "CREATING_FAILED")
    assert description["FailureDescription"]["Type"] == "UNKNOWN_ERROR"
    assert "no-such-bucket-here" in description["FailureDescription"]["Details"]
    await call(firehose.delete_delivery_stream, DeliveryStreamName="nowhere")


async def test_bad_requests_get_aws_errors(firehose: Any, s3_server: S3Server) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(firehose.describe_delivery_stream, DeliveryStreamName="absent")
    assert _error(raised) == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(firehose.create_delivery_stream, DeliveryStreamName="no-destination")
    assert _error(raised) == "InvalidArgumentException"
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(firehose.put_record, DeliveryStreamName="absent", Record={"Data": b"x"})
    assert _error(raised) == "ResourceNotFoundException"


async def test_validation_comes_from_the_model(fh_node: Node) -> None:
    from tests.firehose.conftest import firehose_client

    client = firehose_client(f"http://127.0.0.1:{fh_node.http_port}", parameter_validation=False)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(client.describe_delivery_stream, DeliveryStreamName="bad name!")
    assert _error(raised) == "ValidationException"


async def test_puts_update_destination_tags_and_encryption(
    firehose: Any, s3_server: S3Server
) -> None:
    s3_server.client().create_bucket(Bucket="api-puts")
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="puts",
        ExtendedS3DestinationConfiguration=s3_destination("api-puts"),
    )
    await wait_status(firehose, "puts", "ACTIVE")
    one = await call(firehose.put_record, DeliveryStreamName="puts", Record={"Data": b"a\n"})
    assert one["RecordId"] and one["Encrypted"] is False
    batch = await call(
        firehose.put_record_batch,
        DeliveryStreamName="puts",
        Records=[{"Data": f"{i}\n".encode()} for i in range(500)],
    )
    assert batch["FailedPutCount"] == 0
    ids = [entry["RecordId"] for entry in batch["RequestResponses"]]
    assert len(ids) == len(set(ids)) == 500

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(
            firehose.put_record_batch,
            DeliveryStreamName="puts",
            Records=[{"Data": b"x" * 1_000_000} for _ in range(5)],
        )
    assert _error(raised) == "InvalidArgumentException"

    await call(
        firehose.update_destination,
        DeliveryStreamName="puts",
        CurrentDeliveryStreamVersionId="1",
        DestinationId="destinationId-000000000001",
        ExtendedS3DestinationUpdate={"Prefix": "v2/", "CompressionFormat": "Snappy"},
    )
    described = await wait_status(firehose, "puts", "ACTIVE")
    assert described["VersionId"] == "2"
    assert "LastUpdateTimestamp" in described
    extended = described["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert (extended["Prefix"], extended["CompressionFormat"]) == ("v2/", "Snappy")
    assert extended["BucketARN"] == "arn:aws:s3:::api-puts"
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await call(
            firehose.update_destination,
            DeliveryStreamName="puts",
            CurrentDeliveryStreamVersionId="1",
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"Prefix": "stale/"},
        )
    assert _error(raised) == "ConcurrentModificationException"

    await call(
        firehose.tag_delivery_stream,
        DeliveryStreamName="puts",
        Tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "1"}],
    )
    page = await call(firehose.list_tags_for_delivery_stream, DeliveryStreamName="puts", Limit=1)
    assert page["Tags"] == [{"Key": "a", "Value": "1"}] and page["HasMoreTags"] is True
    await call(firehose.untag_delivery_stream, DeliveryStreamName="puts", TagKeys=["a"])
    page = await call(firehose.list_tags_for_delivery_stream, DeliveryStreamName="puts")
    assert page["Tags"] == [{"Key": "b", "Value": "2"}]

    await call(
        firehose.start_delivery_stream_encryption,
        DeliveryStreamName="puts",
        DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"},
    )
    described = await wait_encryption(firehose, "puts", "ENABLED")
    assert described["DeliveryStreamEncryptionConfiguration"] == {
        "Status": "ENABLED",
        "KeyType": "AWS_OWNED_CMK",
    }
    put = await call(firehose.put_record, DeliveryStreamName="puts", Record={"Data": b"s\n"})
    assert put["Encrypted"] is True
    await call(firehose.stop_delivery_stream_encryption, DeliveryStreamName="puts")


async def test_two_accounts_or_regions_never_share_a_delivery_stream(
    fh_node: Node, s3_server: S3Server
) -> None:
    from broker.caller import Caller

    s3_server.client().create_bucket(Bucket="api-accounts")
    assert fh_node.firehose is not None
    service = fh_node.firehose.service
    request = {
        "DeliveryStreamName": "same",
        "ExtendedS3DestinationConfiguration": s3_destination("api-accounts"),
    }
    arns = set()
    for region, account in (
        ("us-east-1", "111111111111"),
        ("eu-west-1", "111111111111"),
        ("us-east-1", "222222222222"),
    ):
        caller = Caller(region=region, account_id=account, door="http")
        arns.add((await service.call("CreateDeliveryStream", request, caller))["DeliveryStreamARN"])
    assert len(arns) == 3
    image = fh_node.firehose.service._metadata.image()
    same = [meta for meta in image.delivery_streams.values() if meta.name == "same"]
    assert len({meta.internal_stream for meta in same}) == 3


async def test_the_native_grpc_service(fh_node: Node, s3_server: S3Server) -> None:
    s3_server.client().create_bucket(Bucket="api-grpc")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fh_node.grpc_port}") as channel:
        stub = firehose_pb2_grpc.FirehoseServiceStub(channel)
        created = await stub.CreateDeliveryStream(
            firehose_pb2.CreateDeliveryStreamInput(
                delivery_stream_name="native",
                extended_s3_destination_configuration=firehose_pb2.ExtendedS3DestinationConfiguration(
                    role_arn="arn:aws:iam::000000000000:role/firehose",
                    bucket_arn="arn:aws:s3:::api-grpc",
                ),
            )
        )
        assert created.delivery_stream_arn.endswith(":deliverystream/native")
        described = await stub.DescribeDeliveryStream(
            firehose_pb2.DescribeDeliveryStreamInput(delivery_stream_name="native")
        )
        description = described.delivery_stream_description
        assert description.delivery_stream_name == "native"
        assert (
            description.destinations[
                0
            ].extended_s3_destination_description.buffering_hints.size_in_m_bs
            == 5
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.DescribeDeliveryStream(
                firehose_pb2.DescribeDeliveryStreamInput(delivery_stream_name="absent")
            )
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND


async def test_puts_over_the_delivery_stream_limits_are_answered_slow_down(
    tmp_path: Path, clock: ManualClock, s3_server: S3Server
) -> None:
    s3_server.client().create_bucket(Bucket="api-limits")
    async with running_s3_node(
        tmp_path / "limited",
        clock,
        s3_server,
        firehose_write_records_per_second=400,  # 200 per internal shard
    ) as node:
        client = firehose_client(f"http://127.0.0.1:{node.http_port}")
        await call(
            client.create_delivery_stream,
            DeliveryStreamName="limited",
            ExtendedS3DestinationConfiguration=s3_destination("api-limits"),
        )
        await wait_status(client, "limited", "ACTIVE")
        clock.advance(ms=1_000)  # one second's worth of tokens
        answer = await call(
            client.put_record_batch,
            DeliveryStreamName="limited",
            Records=[{"Data": f"{i}\n".encode()} for i in range(500)],
        )
        failed = [entry for entry in answer["RequestResponses"] if "ErrorCode" in entry]
        assert answer["FailedPutCount"] == len(failed) >= 100
        assert {entry["ErrorCode"] for entry in failed} == {"ServiceUnavailableException"}
        assert {entry["ErrorMessage"] for entry in failed} == {"Slow down."}
        with pytest.raises(botocore.exceptions.ClientError) as raised:  # both buckets are empty
            await call(client.put_record, DeliveryStreamName="limited", Record={"Data": b"x"})
        assert _error(raised) == "ServiceUnavailableException"
        client.close()


# --- Every request shape of the firehose model (tests/required_members.py) --------------------
# Every operation of botocore's firehose model, with nothing, with only its required members and
# with each required member missing, through boto3 (its own validation off) and the gRPC door,
# and with each member of a wrong JSON type through the AWS JSON door: a missing member is
# AWS's ValidationException naming it, a wrong type a 4xx, never a 500/INTERNAL. The requests
# name a delivery stream of the door's own that exists, so "required only" reaches the service's
# own checks (the deletions come last).


async def _sweep_samples(firehose: Any, s3_server: S3Server, door: str) -> dict[str, Any]:
    name = f"api-sweep-{door}"
    s3_server.client().create_bucket(Bucket=name)
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_destination(name),
    )
    description = await wait_status(firehose, name, "ACTIVE")
    return {
        "DeliveryStreamName": name,
        "CurrentDeliveryStreamVersionId": description["VersionId"],
        "DestinationId": description["Destinations"][0]["DestinationId"],
        "Record": {"Data": b"x"},
        "Records": [{"Data": b"x"}],
        "Tags": [{"Key": "sweep", "Value": "v"}],
        "TagKeys": ["sweep"],
    }


def test_every_operation_of_the_model_is_served(fh_node: Node) -> None:
    from broker.gateway.validation import service_model
    from tests.required_members import grpc_operations

    modelled = set(service_model("firehose").operation_names)
    service = firehose_pb2.DESCRIPTOR.services_by_name["FirehoseService"]
    assert grpc_operations(service) == modelled


async def test_every_request_shape_through_boto3_never_answers_500(
    fh_node: Node, firehose: Any, s3_server: S3Server
) -> None:
    from broker.gateway.validation import service_model
    from tests.required_members import boto3_ask, sweep

    samples = await _sweep_samples(firehose, s3_server, "http")
    client = firehose_client(f"http://127.0.0.1:{fh_node.http_port}", parameter_validation=False)
    try:
        operations = service_model("firehose").operation_names
        problems = await sweep("firehose", operations, samples, boto3_ask(client))
    finally:
        client.close()
    assert not problems, "\n".join(problems)


async def test_every_request_shape_through_grpc_never_answers_internal(
    fh_node: Node, firehose: Any, s3_server: S3Server
) -> None:
    from tests.required_members import grpc_ask, grpc_operations, malformed_request_answer, sweep

    samples = await _sweep_samples(firehose, s3_server, "grpc")
    service = firehose_pb2.DESCRIPTOR.services_by_name["FirehoseService"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fh_node.grpc_port}") as channel:
        served = grpc_operations(service)
        problems = await sweep("firehose", served, samples, grpc_ask(channel, service))
        malformed = await malformed_request_answer(channel, service, "DescribeDeliveryStream")
    assert not problems, "\n".join(problems)
    assert malformed == (grpc.StatusCode.INVALID_ARGUMENT, "SerializationException")


async def test_every_member_of_a_wrong_type_gets_a_client_error(fh_node: Node) -> None:
    """Each member of each operation's input, top level and one level down, as a value of
    another JSON type (and bodies that are not a JSON object): a 4xx, never a 5xx."""
    from broker.gateway.validation import service_model
    from tests.required_members import wrong_type_bodies, wrong_type_problems

    target = service_model("firehose").metadata["targetPrefix"]
    samples = {"DeliveryStreamName": "api-wrong-types", "Record": {"Data": b"x"}}
    bodies = wrong_type_bodies("firehose", samples)
    assert len(bodies) > 100  # the scope is real
    requests = [
        (
            f"{operation} ({label})",
            "/",
            {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"{target}.{operation}"},
            body,
        )
        for operation, label, body in bodies
    ]
    problems = await wrong_type_problems(f"http://127.0.0.1:{fh_node.http_port}", requests)
    assert not problems, "\n".join(problems)
