"""The operations AWS added since 2023, through boto3 and gRPC: resource policies,
Start/StopStreamEncryption, UpdateStreamWarmThroughput and
UpdateStreamRecordDistributionStrategy."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import botocore.exceptions
import pytest

from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from broker.errors import ShoalError
from broker.node import Node
from tests.compat.conftest import call
from tests.conftest import shared_node_fixtures

# One node for the module: its tests use distinct names.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
clock, node, client = shared_node_fixtures()

# The AWS-managed key by its alias ARN: a key every node knows (broker/crypto/master_keys.py).
KEY = "arn:aws:kms:us-east-1:000000000000:alias/aws/kinesis"


def policy_for(arn: str) -> str:
    # Odd spacing and key order on purpose: the document must come back exactly.
    return (
        '{"Version":"2012-10-17",  "Statement":[{"Sid":"read","Effect":"Allow",'
        '"Principal":{"AWS":"arn:aws:iam::123456789012:root"},'
        '"Action":["kinesis:GetRecords","kinesis:DescribeStream*"],'
        f'"Resource":"{arn}"}}]}}'
    )


async def error_of(function: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        await call(function, **kwargs)
    error = caught.value.response["Error"]
    return error["Code"], error.get("Message", "")


async def create(kinesis: Any, name: str, **kwargs: Any) -> str:
    await call(kinesis.create_stream, StreamName=name, **kwargs)
    summary = await call(kinesis.describe_stream_summary, StreamName=name)
    arn: str = summary["StreamDescriptionSummary"]["StreamARN"]
    return arn


async def test_resource_policy_on_a_stream(kinesis: Any) -> None:
    arn = await create(kinesis, "policed", ShardCount=1)
    assert (await call(kinesis.get_resource_policy, ResourceARN=arn))["Policy"] == "{}"
    policy = policy_for(arn)
    await call(kinesis.put_resource_policy, ResourceARN=arn, Policy=policy)
    assert (await call(kinesis.get_resource_policy, ResourceARN=arn))["Policy"] == policy

    replaced = policy.replace("GetRecords", "PutRecord")
    await call(kinesis.put_resource_policy, ResourceARN=arn, Policy=replaced)
    assert (await call(kinesis.get_resource_policy, ResourceARN=arn))["Policy"] == replaced

    await call(kinesis.delete_resource_policy, ResourceARN=arn)
    assert (await call(kinesis.get_resource_policy, ResourceARN=arn))["Policy"] == "{}"
    code, _ = await error_of(kinesis.delete_resource_policy, ResourceARN=arn)
    assert code == "ResourceNotFoundException"


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        "{}",
        '{"Statement": []}',
        '{"Version": "2020-01-01", "Statement": {"Effect": "Allow", "Principal": "*",'
        ' "Action": "kinesis:*"}}',
        '{"Statement": {"Effect": "Maybe", "Principal": "*", "Action": "kinesis:*"}}',
        '{"Statement": {"Effect": "Allow", "Action": "kinesis:*"}}',
        '{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}}',
        '{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kinesis:*",'
        ' "Colour": "blue"}}',
    ],
)
async def test_malformed_policies_are_refused(kinesis: Any, document: str) -> None:
    name = "strict-" + hashlib.sha256(document.encode()).hexdigest()[:8]
    arn = await create(kinesis, name, ShardCount=1)
    code, message = await error_of(kinesis.put_resource_policy, ResourceARN=arn, Policy=document)
    assert code == "InvalidArgumentException"
    assert message.startswith("Invalid policy document: ")
    assert (await call(kinesis.get_resource_policy, ResourceARN=arn))["Policy"] == "{}"


async def test_resource_policy_on_a_consumer_and_unknown_resources(
    kinesis: Any, node: Node
) -> None:
    arn = await create(kinesis, "shared", ShardCount=1)
    consumer = await call(kinesis.register_stream_consumer, StreamARN=arn, ConsumerName="c")
    consumer_arn = consumer["Consumer"]["ConsumerARN"]
    policy = policy_for(consumer_arn).replace("kinesis:GetRecords", "kinesis:SubscribeToShard")
    await call(kinesis.put_resource_policy, ResourceARN=consumer_arn, Policy=policy)
    assert (await call(kinesis.get_resource_policy, ResourceARN=consumer_arn))["Policy"] == policy
    # The stream's own policy is a different one.
    assert (await call(kinesis.get_resource_policy, ResourceARN=arn))["Policy"] == "{}"

    gone = node.config.stream_arn("nothing")
    code, message = await error_of(kinesis.get_resource_policy, ResourceARN=gone)
    assert code == "ResourceNotFoundException"
    assert "nothing" in message
    code, _ = await error_of(
        kinesis.put_resource_policy, ResourceARN=f"{arn}/consumer/nobody:1", Policy=policy
    )
    assert code == "ResourceNotFoundException"


async def test_a_recreated_stream_has_no_policy(kinesis: Any) -> None:
    arn = await create(kinesis, "again", ShardCount=1)
    await call(kinesis.put_resource_policy, ResourceARN=arn, Policy=policy_for(arn))
    await call(kinesis.delete_stream, StreamName="again")
    await create(kinesis, "again", ShardCount=1)
    assert (await call(kinesis.get_resource_policy, ResourceARN=arn))["Policy"] == "{}"


async def test_stream_encryption_is_recorded_and_reported(kinesis: Any) -> None:
    await create(kinesis, "secret", ShardCount=1)
    code, _ = await error_of(
        kinesis.start_stream_encryption, StreamName="secret", EncryptionType="NONE", KeyId=KEY
    )
    assert code == "InvalidArgumentException"
    await call(
        kinesis.start_stream_encryption, StreamName="secret", EncryptionType="KMS", KeyId=KEY
    )
    summary = (await call(kinesis.describe_stream_summary, StreamName="secret"))[
        "StreamDescriptionSummary"
    ]
    assert (summary["EncryptionType"], summary["KeyId"]) == ("KMS", KEY)
    description = (await call(kinesis.describe_stream, StreamName="secret"))["StreamDescription"]
    assert (description["EncryptionType"], description["KeyId"]) == ("KMS", KEY)
    put = await call(kinesis.put_record, StreamName="secret", PartitionKey="k", Data=b"x")
    assert put["EncryptionType"] == "KMS"
    batch = await call(
        kinesis.put_records, StreamName="secret", Records=[{"PartitionKey": "k", "Data": b"y"}]
    )
    assert batch["EncryptionType"] == "KMS"

    code, _ = await error_of(
        kinesis.stop_stream_encryption, StreamName="secret", EncryptionType="KMS", KeyId="other"
    )
    assert code == "InvalidArgumentException"
    await call(kinesis.stop_stream_encryption, StreamName="secret", EncryptionType="KMS", KeyId=KEY)
    summary = (await call(kinesis.describe_stream_summary, StreamName="secret"))[
        "StreamDescriptionSummary"
    ]
    assert summary["EncryptionType"] == "NONE"
    assert "KeyId" not in summary
    code, _ = await error_of(
        kinesis.start_stream_encryption, StreamName="absent", EncryptionType="KMS", KeyId=KEY
    )
    assert code == "ResourceNotFoundException"


async def test_warm_throughput_needs_on_demand_and_the_billing_commitment(kinesis: Any) -> None:
    await create(kinesis, "provisioned", ShardCount=1)
    code, _ = await error_of(
        kinesis.update_stream_warm_throughput, StreamName="provisioned", WarmThroughputMiBps=10
    )
    assert code == "InvalidArgumentException"
    arn = await create(kinesis, "demand", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    code, message = await error_of(
        kinesis.update_stream_warm_throughput, StreamARN=arn, WarmThroughputMiBps=10
    )
    assert code == "InvalidArgumentException"
    assert "MinimumThroughputBillingCommitment" in message

    await call(
        kinesis.update_account_settings,
        MinimumThroughputBillingCommitment={"Status": "ENABLED"},
    )
    first = await call(kinesis.update_stream_warm_throughput, StreamARN=arn, WarmThroughputMiBps=10)
    assert first["StreamName"] == "demand"
    assert first["WarmThroughput"] == {"TargetMiBps": 10}
    second = await call(
        kinesis.update_stream_warm_throughput, StreamName="demand", WarmThroughputMiBps=40
    )
    assert second["WarmThroughput"] == {"TargetMiBps": 40, "CurrentMiBps": 10}
    summary = (await call(kinesis.describe_stream_summary, StreamName="demand"))[
        "StreamDescriptionSummary"
    ]
    # The node's UPDATING time is 0 in tests: the update is done.
    assert summary["WarmThroughput"] == {"TargetMiBps": 40, "CurrentMiBps": 40}
    code, _ = await error_of(
        kinesis.update_stream_warm_throughput, StreamARN=arn, WarmThroughputMiBps=10**6
    )
    assert code == "LimitExceededException"


async def test_auto_record_distribution_spreads_records_without_keys(
    kinesis: Any, clock: ManualClock
) -> None:
    arn = await create(kinesis, "fixed", ShardCount=1)
    code, _ = await error_of(
        kinesis.update_stream_record_distribution_strategy,
        StreamARN=arn,
        RecordDistributionStrategy="AUTO",
    )
    assert code == "InvalidArgumentException"

    arn = await create(kinesis, "spread", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    summary = (await call(kinesis.describe_stream_summary, StreamName="spread"))[
        "StreamDescriptionSummary"
    ]
    assert summary["RecordDistributionStrategy"] == "USER_PARTITION_KEY"
    kinesis_unchecked = kinesis  # boto3 requires PartitionKey only in its own validation
    code, message = await error_of(_put_without_key(kinesis_unchecked), StreamName="spread")
    assert code == "ValidationException"
    assert "'records.1.member.partitionKey'" in message

    await call(
        kinesis.update_stream_record_distribution_strategy,
        StreamARN=arn,
        RecordDistributionStrategy="AUTO",
    )
    summary = (await call(kinesis.describe_stream_summary, StreamName="spread"))[
        "StreamDescriptionSummary"
    ]
    assert summary["RecordDistributionStrategy"] == "AUTO"
    result = await call(_put_without_key(kinesis), StreamName="spread")
    assert result["FailedRecordCount"] == 0
    # The same partition key would land on one shard; AUTO ignores it.
    same_key = await call(
        kinesis.put_records,
        StreamName="spread",
        Records=[{"PartitionKey": "one", "Data": b"x"} for _ in range(64)],
    )
    assert len({entry["ShardId"] for entry in same_key["Records"]}) > 1


def _put_without_key(kinesis: Any) -> Any:
    """PutRecords with 64 records and no partition keys, past boto3's own validation."""

    def put(StreamName: str) -> Any:
        kinesis.meta.events.register_first(
            "before-parameter-build.kinesis.PutRecords", _drop_keys, unique_id="drop-keys"
        )
        try:
            return kinesis.put_records(
                StreamName=StreamName,
                Records=[{"PartitionKey": "k", "Data": b"x"} for _ in range(64)],
            )
        finally:
            kinesis.meta.events.unregister(
                "before-parameter-build.kinesis.PutRecords", unique_id="drop-keys"
            )

    return put


def _drop_keys(params: dict[str, Any], **_: Any) -> None:
    for record in params["Records"]:
        record.pop("PartitionKey", None)


async def test_the_new_operations_over_grpc(client: AsyncShoalClient, node: Node) -> None:
    await client.call(
        "CreateStream", {"StreamName": "g", "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}
    )
    arn = node.config.stream_arn("g")
    policy = policy_for(arn)
    await client.call("PutResourcePolicy", {"ResourceARN": arn, "Policy": policy})
    assert (await client.call("GetResourcePolicy", {"ResourceARN": arn}))["Policy"] == policy
    assert json.loads(policy)["Statement"][0]["Sid"] == "read"
    await client.call("DeleteResourcePolicy", {"ResourceARN": arn})
    with pytest.raises(ShoalError) as caught:
        await client.call("DeleteResourcePolicy", {"ResourceARN": arn})
    assert caught.value.code.kinesis_name == "ResourceNotFoundException"

    await client.call(
        "StartStreamEncryption", {"StreamARN": arn, "EncryptionType": "KMS", "KeyId": KEY}
    )
    summary = (await client.call("DescribeStreamSummary", {"StreamARN": arn}))[
        "StreamDescriptionSummary"
    ]
    assert summary["EncryptionType"] == "KMS"
    await client.call(
        "StopStreamEncryption", {"StreamARN": arn, "EncryptionType": "KMS", "KeyId": KEY}
    )
    await client.call(
        "UpdateStreamRecordDistributionStrategy",
        {"StreamARN": arn, "RecordDistributionStrategy": "AUTO"},
    )
    put = await client.call("PutRecord", {"StreamARN": arn, "Data": b"no key"})
    assert put["EncryptionType"] == "NONE"
    await client.call(
        "UpdateAccountSettings", {"MinimumThroughputBillingCommitment": {"Status": "ENABLED"}}
    )
    warm = await client.call(
        "UpdateStreamWarmThroughput", {"StreamARN": arn, "WarmThroughputMiBps": 5}
    )
    assert warm["WarmThroughput"]["TargetMiBps"] == 5
