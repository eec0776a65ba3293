"""The small pure rules around the evaluator: the action and resource a request names, the
brute-force throttle, the gRPC signature and the CloudTrail event shape."""

from __future__ import annotations

from broker.audit.events import cloudtrail_event, is_data_event
from broker.iam import grpc_signing
from broker.iam.actions import (
    action_name,
    arn_account,
    request_tag_keys,
    request_tags,
    resource_arn,
)
from broker.iam.throttle import FailureThrottle

A = "111122223333"


def test_resources_from_arn_members_names_and_iterators() -> None:
    def iterator_stream(token: str) -> str | None:
        return "arn:aws:kinesis:eu-west-1:9:stream/it" if token == "T" else None

    def resource(service: str, request: dict[str, str]) -> str:
        return resource_arn(
            service, request, region="eu-west-1", account=A, iterator_stream=iterator_stream
        )

    assert resource("kinesis", {"StreamName": "s"}) == f"arn:aws:kinesis:eu-west-1:{A}:stream/s"
    consumer = f"arn:aws:kinesis:eu-west-1:{A}:stream/s/consumer/c:1"
    assert resource("kinesis", {"StreamARN": "x", "ConsumerARN": consumer}) == consumer
    assert resource("kinesis", {}) == "*"
    assert resource("kinesis", {"ShardIterator": "T"}) == "arn:aws:kinesis:eu-west-1:9:stream/it"
    assert resource("kinesis", {"ShardIterator": "forged"}) == "*"
    assert resource("firehose", {"DeliveryStreamName": "d"}) == (
        f"arn:aws:firehose:eu-west-1:{A}:deliverystream/d"
    )
    assert resource("kinesisanalytics", {"ApplicationName": "app"}) == (
        f"arn:aws:kinesisanalytics:eu-west-1:{A}:application/app"
    )
    assert resource("kinesisvideo", {"StreamName": "cam"}) == (
        f"arn:aws:kinesisvideo:eu-west-1:{A}:stream/cam/*"
    )
    assert action_name("kinesis", "PutRecord") == "kinesis:PutRecord"
    assert arn_account(f"arn:aws:kinesis:eu-west-1:{A}:stream/s") == A
    assert arn_account("*") is None


def test_request_tags_in_both_shapes() -> None:
    assert request_tags({"Tags": {"team": "blue"}}) == (("team", "blue"),)
    firehose = {"Tags": [{"Key": "team", "Value": "red"}, {"Key": "bare"}]}
    assert request_tags(firehose) == (("team", "red"), ("bare", ""))
    assert request_tag_keys(firehose) == ("team", "bare")
    assert request_tag_keys({"TagKeys": ["a", "b"]}) == ("a", "b")
    assert request_tag_keys({"TagKeyList": ["c"]}) == ("c",)
    assert request_tags({"StreamName": "s"}) == () == request_tag_keys({})


def test_throttle_blocks_after_the_failures_until_the_window_passes() -> None:
    throttle = FailureThrottle(failures_max=3, window_ms=1_000, addresses_max=2)
    for now in (0, 10, 20):
        assert not throttle.blocked("a", now_ms=now)
        throttle.failed("a", now_ms=now)
    assert throttle.blocked("a", now_ms=30)
    assert not throttle.blocked("b", now_ms=30)
    assert not throttle.blocked("a", now_ms=1_000)  # the window since the first failure passed
    for address in ("x", "y", "z"):  # bounded: the oldest address is forgotten
        throttle.failed(address, now_ms=2_000)
    assert len(throttle._windows) == 2


def test_grpc_signature_binds_key_method_time_and_region() -> None:
    date = grpc_signing.amz_date(1_700_000_000_000)
    assert date == "20231114T221320Z"
    base = grpc_signing.signature(secret="s", region="us-east-1", method="/a/B", date=date)
    assert base != grpc_signing.signature(secret="t", region="us-east-1", method="/a/B", date=date)
    assert base != grpc_signing.signature(secret="s", region="eu-west-1", method="/a/B", date=date)
    assert base != grpc_signing.signature(secret="s", region="us-east-1", method="/a/C", date=date)
    assert grpc_signing.fresh(date, now_ms=1_700_000_000_000 + 300_000)
    assert not grpc_signing.fresh(date, now_ms=1_700_000_000_000 + 300_001)
    assert not grpc_signing.fresh("yesterday", now_ms=0)
    assert "s" not in repr(grpc_signing.SigningKey("AKID", "s"))


def test_cloudtrail_event_shape_without_payloads() -> None:
    event = cloudtrail_event(
        signing_name="kinesis",
        operation="PutRecords",
        request={"StreamName": "s", "Records": [{"Data": b"x", "PartitionKey": "k"}] * 3},
        principal_arn=f"arn:aws:iam::{A}:user/alice",
        account_id=A,
        access_key_id="AKIA1",
        source_address="10.0.0.1",
        region="us-east-1",
        resource=f"arn:aws:kinesis:us-east-1:{A}:stream/s",
        error_code="AccessDeniedException",
        error_message="no",
        now_ms=1_700_000_000_000,
        event_id="e1",
    )
    assert event["userIdentity"] == {
        "type": "IAMUser",
        "principalId": "AKIA1",
        "arn": f"arn:aws:iam::{A}:user/alice",
        "accountId": A,
        "accessKeyId": "AKIA1",
        "userName": "alice",
    }
    assert event["requestParameters"] == {"StreamName": "s", "recordCount": 3}
    assert event["eventCategory"] == "Data" and not event["managementEvent"]
    assert event["resources"] == [
        {
            "ARN": f"arn:aws:kinesis:us-east-1:{A}:stream/s",
            "accountId": A,
            "type": "AWS::Kinesis::Stream",
        }
    ]
    assert (event["errorCode"], event["eventTime"]) == (
        "AccessDeniedException",
        "2023-11-14T22:13:20Z",
    )
    assert is_data_event("firehose", "PutRecordBatch")
    assert not is_data_event("kinesis", "CreateStream")
