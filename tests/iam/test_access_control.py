"""Access control through the public doors of one node with `access_control` on: principals
and keys made with the IamService (signed by the bootstrap root key), boto3 calls refused and
allowed by policies with AWS's message, another account's stream refused, the web console
acting as the signed-in principal, old signatures (replays) refused, key guessing throttled,
and a principal's key refused on the node-to-node RPCs.

One node for the module (its tests use their own stream and principal names); the guessing
test runs last, since it leaves this address throttled."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import grpc
import httpx
import pytest
import pytest_asyncio

from broker.api.iam.v1 import iam_pb2, iam_pb2_grpc
from broker.api.internal.v1 import internal_pb2, internal_pb2_grpc
from broker.api.kinesis.v1 import kinesis_pb2, kinesis_pb2_grpc
from broker.api.leases.v1 import leases_pb2, leases_pb2_grpc
from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock, SystemClock
from broker.errors import ErrorCode, ShoalError
from broker.iam import grpc_signing
from broker.iam.grpc_signing import SigningKey
from broker.node import Node
from tests.conftest import node_config, running_node

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ROOT_KEY, ROOT_SECRET = "AKIDROOT", "root-secret"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
ACCOUNT = "000000000000"
OTHER = "444455556666"


@dataclass
class Iam:
    node: Node
    stub: Any

    async def call(
        self, method: str, request: Any, *, key: str = ROOT_KEY, secret: str = ROOT_SECRET
    ) -> Any:
        metadata = grpc_signing.signed_metadata(
            access_key_id=key,
            secret=secret,
            region="us-east-1",
            method=f"/broker.api.iam.v1.IamService/{method}",
            wall_ms=SystemClock().wall_ms(),
        )
        return await getattr(self.stub, method)(request, metadata=metadata, timeout=10)

    async def user(
        self, account: str, name: str, *policies: dict[str, Any]
    ) -> tuple[str, str, str]:
        principal = await self.call(
            "CreatePrincipal", iam_pb2.CreatePrincipalRequest(account_id=account, name=name)
        )
        for index, statement in enumerate(policies):
            await self.call(
                "AttachPolicy",
                iam_pb2.AttachPolicyRequest(
                    principal_arn=principal.arn,
                    policy_name=f"p{index}",
                    document=json.dumps({"Version": "2012-10-17", "Statement": statement}),
                ),
            )
        key = await self.call(
            "CreateAccessKey", iam_pb2.CreateAccessKeyRequest(principal_arn=principal.arn)
        )
        return principal.arn, key.access_key_id, key.secret_access_key


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def iam(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Iam]:
    clock = ManualClock(wall_ms=SystemClock().wall_ms())  # signatures are checked against it
    config = node_config(
        tmp_path_factory.mktemp("iam") / "node",
        settings={"aws_credentials": (f"{ROOT_KEY}:{ROOT_SECRET}",), "access_control": True},
    )
    async with running_node(config, clock) as node:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}")
        try:
            yield Iam(node=node, stub=iam_pb2_grpc.IamServiceStub(channel))
        finally:
            await channel.close()


def kinesis(node: Node, key: str, secret: str) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


async def aws(method: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(method, **kwargs)


async def refused(method: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await aws(method, **kwargs)
    error: Any = raised.value.response["Error"]
    return dict(error)


async def test_policies_decide_with_aws_messages(iam: Iam) -> None:
    root = kinesis(iam.node, ROOT_KEY, ROOT_SECRET)
    await aws(root.create_stream, StreamName="orders", ShardCount=1)
    stream_arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/orders"
    writer_arn, key, secret = await iam.user(
        ACCOUNT,
        "writer",
        {
            "Effect": "Allow",
            "Action": ["kinesis:PutRecord", "kinesis:Describe*"],
            "Resource": stream_arn,
        },
        {"Effect": "Deny", "Action": "kinesis:DescribeStream", "Resource": "*"},
    )
    writer = kinesis(iam.node, key, secret)
    await aws(writer.put_record, StreamName="orders", Data=b"x", PartitionKey="k")
    await aws(writer.describe_stream_summary, StreamName="orders")
    error = await refused(
        writer.get_shard_iterator,
        StreamName="orders",
        ShardId="shardId-000000000000",
        ShardIteratorType="TRIM_HORIZON",
    )
    assert error["Code"] == "AccessDeniedException"
    assert error["Message"] == (
        f"User: {writer_arn} is not authorized to perform: kinesis:GetShardIterator on "
        f"resource: {stream_arn} because no identity-based policy allows the "
        "kinesis:GetShardIterator action"
    )
    error = await refused(writer.describe_stream, StreamName="orders")
    assert error["Message"].endswith("with an explicit deny in an identity-based policy")
    assert (await refused(writer.list_streams))["Code"] == "AccessDeniedException"
    # Every service of the node, each with its own actions.
    for service, method, action in (
        ("firehose", "list_delivery_streams", "firehose:ListDeliveryStreams"),
        ("kinesisvideo", "list_streams", "kinesisvideo:ListStreams"),
        ("kinesisanalytics", "list_applications", "kinesisanalytics:ListApplications"),
    ):
        other = boto3.client(
            service,
            endpoint_url=f"http://127.0.0.1:{iam.node.http_port}",
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=botocore.config.Config(retries={"total_max_attempts": 1}),
        )
        error = await refused(getattr(other, method))
        assert error["Code"] == "AccessDeniedException", service
        assert f"is not authorized to perform: {action} on resource: *" in error["Message"]

    simulated = await iam.call(
        "Simulate",
        iam_pb2.SimulateRequest(
            principal_arn=writer_arn, action="kinesis:DescribeStream", resource=stream_arn
        ),
    )
    assert (simulated.allowed, simulated.decision) == (False, "explicitDeny")
    assert simulated.matched_statements == ["p1/statement 1"]

    # Detach the deny: in force on the next request (one node: its own apply).
    await iam.call(
        "DetachPolicy", iam_pb2.DetachPolicyRequest(principal_arn=writer_arn, policy_name="p1")
    )
    await aws(writer.describe_stream, StreamName="orders")

    # Secrets never come back: the listing has ids and status only.
    keys = await iam.call("ListAccessKeys", iam_pb2.ListAccessKeysRequest(principal_arn=writer_arn))
    assert secret not in str(keys)
    rotated = await iam.call("RotateAccessKey", iam_pb2.RotateAccessKeyRequest(access_key_id=key))
    assert (await refused(writer.describe_stream, StreamName="orders"))[
        "Code"
    ] == "UnrecognizedClientException"
    renewed = kinesis(iam.node, rotated.access_key_id, rotated.secret_access_key)
    await aws(renewed.describe_stream, StreamName="orders")


async def test_another_account_cannot_reach_the_stream(iam: Iam) -> None:
    root = kinesis(iam.node, ROOT_KEY, ROOT_SECRET)
    await aws(root.create_stream, StreamName="private", ShardCount=1)
    stream_arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/private"
    everything = {"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}
    bob_arn, key, secret = await iam.user(OTHER, "bob", everything)
    bob = kinesis(iam.node, key, secret)
    for method, kwargs in (
        (bob.describe_stream_summary, {"StreamARN": stream_arn}),
        (bob.put_record, {"StreamARN": stream_arn, "Data": b"x", "PartitionKey": "k"}),
        (bob.list_shards, {"StreamARN": stream_arn}),
        (bob.list_stream_consumers, {"StreamARN": stream_arn}),
        (bob.get_resource_policy, {"ResourceARN": stream_arn}),
        (
            bob.describe_stream_consumer,
            {"ConsumerARN": f"{stream_arn}/consumer/app:1700000000"},
        ),
    ):
        error = await refused(method, **kwargs)
        assert error["Code"] == "AccessDeniedException", method
        assert error["Message"].endswith(
            "because no resource-based policy allows the "
            f"kinesis:{error['Message'].split('kinesis:')[1].split(' ')[0]} action"
        )
    # A resource policy granting bob's account opens exactly what it names.
    grant = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
                "Action": [
                    "kinesis:DescribeStreamSummary",
                    "kinesis:GetShardIterator",
                    "kinesis:GetRecords",
                ],
                "Resource": stream_arn,
            }
        ],
    }
    await aws(root.put_resource_policy, ResourceARN=stream_arn, Policy=json.dumps(grant))
    summary = await aws(bob.describe_stream_summary, StreamARN=stream_arn)
    assert summary["StreamDescriptionSummary"]["StreamName"] == "private"
    # Reading across accounts, as AWS allows it: by ARN, iterator and records.
    await aws(root.put_record, StreamName="private", Data=b"shared", PartitionKey="k")
    iterator = await aws(
        bob.get_shard_iterator,
        StreamARN=stream_arn,
        ShardId="shardId-000000000000",
        ShardIteratorType="TRIM_HORIZON",
    )
    read = await aws(bob.get_records, ShardIterator=iterator["ShardIterator"], StreamARN=stream_arn)
    assert [record["Data"] for record in read["Records"]] == [b"shared"]
    assert (await refused(bob.put_record, StreamARN=stream_arn, Data=b"x", PartitionKey="k"))[
        "Code"
    ] == "AccessDeniedException"
    assert bob_arn.startswith(f"arn:aws:iam::{OTHER}:")
    # Bob's account is its own namespace: the same name is another stream, and listings and
    # errors name only his account's streams.
    await aws(root.create_stream, StreamName="ledger", ShardCount=1)
    await aws(bob.create_stream, StreamName="private", ShardCount=1)
    mine = await aws(bob.describe_stream_summary, StreamName="private")
    assert mine["StreamDescriptionSummary"]["StreamARN"] == stream_arn.replace(ACCOUNT, OTHER)
    assert (await aws(bob.list_streams))["StreamNames"] == ["private"]
    theirs = await aws(root.describe_stream_summary, StreamName="private")
    assert theirs["StreamDescriptionSummary"]["StreamARN"] == stream_arn
    error = await refused(bob.describe_stream_summary, StreamName="ledger")
    assert error["Code"] == "ResourceNotFoundException"
    assert error["Message"] == f"Stream ledger under account {OTHER} not found."

    # Nor through the native lease table (cluster-wide: `shoal:*` actions are operators')...
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{iam.node.grpc_port}")
    try:
        method = "/broker.api.leases.v1.LeaseService/ListApplications"
        stub = leases_pb2_grpc.LeaseServiceStub(channel)
        metadata = grpc_signing.signed_metadata(
            access_key_id=key, secret=secret, region="us-east-1", method=method,
            wall_ms=SystemClock().wall_ms(),
        )  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListApplications(leases_pb2.ListApplicationsRequest(), metadata=metadata)
        assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert f"User: {bob_arn} is not authorized to perform: shoal:ListApplications" in str(
            raised.value.details()
        )
    finally:
        await channel.close()
    # ...nor the metrics endpoint, whose labels name every stream: operators' keys only.
    url = f"http://127.0.0.1:{iam.node.metrics_port}/metrics"
    assert await asyncio.to_thread(_scrape, url, key, secret) == 401
    assert await asyncio.to_thread(_scrape, url, None, None) == 401
    assert await asyncio.to_thread(_scrape, url, ROOT_KEY, ROOT_SECRET) == 200


def _scrape(url: str, user: str | None, password: str | None) -> int:
    request = urllib.request.Request(url)
    if user is not None and password is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def test_tag_conditions_decide_by_the_resource_and_the_request(iam: Iam) -> None:
    """aws:ResourceTag/<key> reads the addressed stream's tags; aws:RequestTag/<key> and
    aws:TagKeys the tags a request sets (the condition keys AWS defines for Kinesis)."""
    root = kinesis(iam.node, ROOT_KEY, ROOT_SECRET)
    await aws(root.create_stream, StreamName="tagged-blue", ShardCount=1, Tags={"team": "blue"})
    await aws(root.create_stream, StreamName="tagged-red", ShardCount=1, Tags={"team": "red"})
    blue = {"StringEquals": {"aws:ResourceTag/team": "blue"}}
    _, key, secret = await iam.user(
        ACCOUNT,
        "blue-team",
        {"Effect": "Allow", "Action": "kinesis:DescribeStreamSummary", "Resource": "*",
         "Condition": blue},
        {"Effect": "Allow", "Action": "kinesis:CreateStream", "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"},
                       "ForAllValues:StringEquals": {"aws:TagKeys": ["team"]}}},
    )  # fmt: skip
    member = kinesis(iam.node, key, secret)
    await aws(member.describe_stream_summary, StreamName="tagged-blue")
    error = await refused(member.describe_stream_summary, StreamName="tagged-red")
    assert error["Code"] == "AccessDeniedException"
    await aws(member.create_stream, StreamName="made-blue", ShardCount=1, Tags={"team": "blue"})
    for tags in ({"team": "red"}, {"team": "blue", "cost": "x"}):
        error = await refused(
            member.create_stream, StreamName="made-other", ShardCount=1, Tags=tags
        )
        assert error["Code"] == "AccessDeniedException", tags
    error = await refused(member.create_stream, StreamName="made-other", ShardCount=1)
    assert error["Code"] == "AccessDeniedException"


async def test_principal_keys_cannot_call_internal_rpcs(iam: Iam) -> None:
    """The node-to-node services take only the node signature (Raft password): even the
    root key, and a fortiori another account's key, cannot read shards through them."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{iam.node.grpc_port}")
    try:
        stub = internal_pb2_grpc.NodeServiceStub(channel)
        method = "/broker.api.internal.v1.NodeService/ShardRead"
        metadata = grpc_signing.signed_metadata(
            access_key_id=ROOT_KEY,
            secret=ROOT_SECRET,
            region="us-east-1",
            method=method,
            wall_ms=SystemClock().wall_ms(),
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ShardRead(internal_pb2.ShardReadRequest(), metadata=metadata, timeout=10)
        assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
        forged = (
            (grpc_signing.DATE_HEADER, grpc_signing.amz_date(SystemClock().wall_ms())),
            (grpc_signing.NODE_SIGNATURE_HEADER, "0" * 64),
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ShardRead(internal_pb2.ShardReadRequest(), metadata=forged, timeout=10)
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # The Raft password's node signature opens the node-to-node services only: it is not
        # a way around policies on the public ones.
        method = "/broker.api.kinesis.v1.KinesisService/ListStreams"
        date = grpc_signing.amz_date(SystemClock().wall_ms())
        node_signed = (
            (grpc_signing.DATE_HEADER, date),
            (
                grpc_signing.NODE_SIGNATURE_HEADER,
                grpc_signing.node_signature(
                    raft_password=iam.node.config.raft_password, method=method, date=date
                ),
            ),
        )
        kinesis_stub = kinesis_pb2_grpc.KinesisServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await kinesis_stub.ListStreams(
                kinesis_pb2.ListStreamsInput(), metadata=node_signed, timeout=10
            )
        assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()


async def test_audit_trail_records_control_plane_and_refusals(iam: Iam) -> None:
    root = kinesis(iam.node, ROOT_KEY, ROOT_SECRET)
    await aws(root.create_stream, StreamName="audited", ShardCount=1)
    reader_arn, key, secret = await iam.user(ACCOUNT, "reader")
    reader = kinesis(iam.node, key, secret)
    await refused(reader.delete_stream, StreamName="audited")
    await aws(root.put_record, StreamName="audited", Data=b"x", PartitionKey="k")
    await refused(kinesis(iam.node, key, "wrong").list_streams)

    answer = await iam.call("LookupEvents", iam_pb2.LookupEventsRequest())
    events = [json.loads(line) for line in answer.events]
    by_name = {(e["eventSource"], e["eventName"], e.get("errorCode")): e for e in events}
    created = by_name[("kinesis.amazonaws.com", "CreateStream", None)]
    assert created["userIdentity"]["type"] == "Root"
    assert created["userIdentity"]["accessKeyId"] == ROOT_KEY
    assert created["sourceIPAddress"] == "127.0.0.1"
    assert created["requestParameters"] == {"StreamName": "audited", "ShardCount": 1}
    assert created["resources"][0]["ARN"].endswith(":stream/audited")
    denied = by_name[("kinesis.amazonaws.com", "DeleteStream", "AccessDeniedException")]
    assert denied["userIdentity"]["arn"] == reader_arn
    assert ("kinesis.amazonaws.com", "ListStreams", "InvalidSignatureException") in by_name
    assert ("iam.amazonaws.com", "CreatePrincipal", None) in by_name
    # Data-plane calls are off by default (Config.audit_data_plane).
    assert ("kinesis.amazonaws.com", "PutRecord", None) not in by_name
    # Filters: only errors of the reader.
    answer = await iam.call(
        "LookupEvents",
        iam_pb2.LookupEventsRequest(principal_arn=reader_arn, only_errors=True),
    )
    assert [json.loads(line)["eventName"] for line in answer.events] == ["DeleteStream"]
    # The trail's stream is not reachable through the public doors.
    streams = await aws(root.list_streams)
    assert all(not name.startswith("__shoal") for name in streams["StreamNames"])


async def test_cli_manages_principals_and_reads_the_trail(
    iam: Iam, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from broker.cli import main

    base = [
        "--endpoint", f"127.0.0.1:{iam.node.grpc_port}",
    ]  # fmt: skip
    signed = ["--access-key-id", ROOT_KEY, "--secret-access-key", ROOT_SECRET]

    def shoal(*argv: str) -> str:
        assert main([*base, *argv]) == 0, argv
        return capsys.readouterr().out

    arn = (
        await asyncio.to_thread(shoal, "iam", "create-principal", OTHER, "carol", *signed)
    ).strip()
    assert arn == f"arn:aws:iam::{OTHER}:user/carol"
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps({"Statement": {"Effect": "Allow", "Action": "kinesis:List*", "Resource": "*"}})
    )
    await asyncio.to_thread(shoal, "iam", "attach-policy", arn, "lister", str(policy), *signed)
    answer = await asyncio.to_thread(shoal, "iam", "simulate", arn, "kinesis:ListStreams", *signed)
    assert answer.startswith("allowed:")
    answer = await asyncio.to_thread(shoal, "iam", "simulate", arn, "kinesis:DeleteStream", *signed)
    assert "implicitDeny" in answer and "no identity-based policy allows" in answer
    created = await asyncio.to_thread(shoal, "iam", "create-key", arn, "--json", *signed)
    key = json.loads(created)
    listed = await asyncio.to_thread(shoal, "iam", "list-keys", arn, *signed)
    assert key["access_key_id"] in listed and key["secret_access_key"] not in listed
    # Deactivated, a key authenticates nobody; reactivated, it works again.
    carol = kinesis(iam.node, key["access_key_id"], key["secret_access_key"])
    await aws(carol.list_streams)
    key_id = key["access_key_id"]
    status = await asyncio.to_thread(shoal, "iam", "set-key-status", key_id, "Inactive", *signed)
    assert status.split() == [key_id, "Inactive"]
    assert (await refused(carol.list_streams))["Code"] == "UnrecognizedClientException"
    await asyncio.to_thread(shoal, "iam", "set-key-status", key_id, "Active", *signed)
    await aws(carol.list_streams)
    # Unsigned: refused with the reason, exit 1.
    assert await asyncio.to_thread(main, [*base, "iam", "list-principals"]) == 1
    assert "MissingAuthenticationToken" in capsys.readouterr().err
    lines = await asyncio.to_thread(shoal, "audit", "--event-name", "AttachPolicy", *signed)
    events = [json.loads(line) for line in lines.splitlines()]
    assert arn in [event["requestParameters"]["principal_arn"] for event in events]
    await asyncio.to_thread(shoal, "iam", "delete-principal", arn, *signed)


@contextlib.asynccontextmanager
async def _console_session(node: Node, key: str, secret: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client signed in to the node's console with this key pair."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}", timeout=30) as web:
        page = await web.get("/console/sign-in")
        found = CSRF.search(page.text)
        assert found is not None
        signed = await web.post(
            "/console/sign-in",
            data={"csrf": found.group(1), "access_key_id": key, "secret_access_key": secret},
        )
        assert signed.status_code == 303, signed.text
        yield web


async def test_the_console_acts_as_the_signed_in_principal(iam: Iam) -> None:
    """Each console page is authorized with the actions the AWS console calls for it: an
    allowed page shows, a refused one is a 403 page with AWS's message, optional sections say
    which action they need, and another account's console sees none of this account."""
    root = kinesis(iam.node, ROOT_KEY, ROOT_SECRET)
    for name in ("console-open", "console-closed"):
        await aws(root.create_stream, StreamName=name, ShardCount=1)
    open_arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/console-open"
    closed_arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/console-closed"
    viewer_arn, key, secret = await iam.user(
        ACCOUNT,
        "console-viewer",
        {"Effect": "Allow", "Action": "kinesis:ListStreams", "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": [
                "kinesis:DescribeStreamSummary",
                "kinesis:ListShards",
                "kinesis:GetShardIterator",
                "kinesis:GetRecords",
            ],
            "Resource": open_arn,
        },
    )
    await aws(root.put_record, StreamName="console-open", Data=b"hello-console", PartitionKey="k")
    async with _console_session(iam.node, key, secret) as web:
        listing = await web.get("/console/streams")
        assert listing.status_code == 200 and viewer_arn in listing.text
        assert "console-open" in listing.text and "console-closed" in listing.text
        page = await web.get("/console/streams/console-open")
        assert page.status_code == 200, page.text
        assert "shardId-000000000000" in page.text
        assert "do not allow <code>kinesis:ListStreamConsumers</code>" in page.text
        records = await web.get("/console/streams/console-open/records", params={"go": "1"})
        assert records.status_code == 200 and "hello-console" in records.text
        closed = await web.get("/console/streams/console-closed")
        assert closed.status_code == 403 and "AccessDeniedException" in closed.text
        assert (
            f"User: {viewer_arn} is not authorized to perform: kinesis:DescribeStreamSummary "
            f"on resource: {closed_arn} because no identity-based policy allows"
        ) in closed.text
        overview = await web.get("/console")
        assert overview.status_code == 403
        assert "not authorized to perform: shoal:ClusterStatus" in overview.text
        found = CSRF.search(page.text)
        assert found is not None
        put = await web.post(
            "/console/streams/console-open/records",
            data={"csrf": found.group(1), "partition_key": "k", "data": "x"},
        )
        assert put.status_code == 403 and "kinesis:PutRecord" in put.text
        for family in ("/console/delivery-streams", "/console/video", "/console/applications"):
            refused_page = await web.get(family)
            assert refused_page.status_code == 403, family
        # In the region the selector chose, the same name is another stream, and the policy
        # (which names the us-east-1 stream) is checked against that region's ARN.
        west_root = boto3.client(
            "kinesis",
            endpoint_url=f"http://127.0.0.1:{iam.node.http_port}",
            region_name="eu-west-1",
            aws_access_key_id=ROOT_KEY,
            aws_secret_access_key=ROOT_SECRET,
            config=botocore.config.Config(retries={"total_max_attempts": 1}),
        )
        await aws(west_root.create_stream, StreamName="console-open", ShardCount=1)
        west_root.close()
        west = await web.get("/console/streams/console-open", params={"region": "eu-west-1"})
        assert west.status_code == 403
        assert f"on resource: {open_arn.replace('us-east-1', 'eu-west-1')} because" in west.text
        east = await web.get("/console/streams/console-open", params={"region": "us-east-1"})
        assert east.status_code == 200, east.text
    # Another account's principal allowed everything in its own account sees none of it.
    _, other_key, other_secret = await iam.user(
        OTHER, "console-other", {"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}
    )
    async with _console_session(iam.node, other_key, other_secret) as web:
        listing = await web.get("/console/streams")
        assert listing.status_code == 200 and "console-open" not in listing.text
        page = await web.get("/console/streams/console-open")
        assert page.status_code == 400 and "ResourceNotFoundException" in page.text
        assert f"under account {OTHER} not found" in page.text
        # Its own stream of the same name is the one it sees.
        other = kinesis(iam.node, other_key, other_secret)
        await aws(other.create_stream, StreamName="console-open", ShardCount=1)
        page = await web.get("/console/streams/console-open")
        assert page.status_code == 200, page.text
        assert open_arn.replace(ACCOUNT, OTHER) in page.text and open_arn not in page.text
        assert "do not allow <code>shoal:DescribeStreamLimits</code>" in page.text
    # A wrong secret does not sign in.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{iam.node.http_port}") as web:
        page = await web.get("/console/sign-in")
        found = CSRF.search(page.text)
        assert found is not None
        wrong = await web.post(
            "/console/sign-in",
            data={"csrf": found.group(1), "access_key_id": key, "secret_access_key": "nope"},
        )
        assert wrong.status_code == 401


async def test_grpc_door_signed_by_principal_keys(iam: Iam) -> None:
    """The native client signs with the same keys; policies and messages as on the AWS door."""
    root = AsyncShoalClient(
        f"127.0.0.1:{iam.node.grpc_port}", signing_key=SigningKey(ROOT_KEY, ROOT_SECRET)
    )
    await root.call("CreateStream", {"StreamName": "native", "ShardCount": 1})
    arn, key, secret = await iam.user(
        ACCOUNT, "producer", {"Effect": "Allow", "Action": "kinesis:PutRecord", "Resource": "*"}
    )
    producer = AsyncShoalClient(
        f"127.0.0.1:{iam.node.grpc_port}", signing_key=SigningKey(key, secret)
    )
    unsigned = AsyncShoalClient(f"127.0.0.1:{iam.node.grpc_port}")
    try:
        await producer.call(
            "PutRecord", {"StreamName": "native", "Data": b"x", "PartitionKey": "k"}
        )
        with pytest.raises(ShoalError) as raised:
            await producer.call("DeleteStream", {"StreamName": "native"})
        assert raised.value.code is ErrorCode.ACCESS_DENIED
        assert raised.value.message.startswith(
            f"User: {arn} is not authorized to perform: kinesis:DeleteStream"
        )
        with pytest.raises(ShoalError) as raised:
            await unsigned.call("ListStreams", {})
        assert raised.value.code is ErrorCode.MISSING_AUTHENTICATION_TOKEN
    finally:
        for client in (root, producer, unsigned):
            await client.close()


async def test_backup_keys_need_their_shoal_actions(iam: Iam) -> None:
    """The BackupKeyService hands out the data keys that open a sealed backup: only a
    principal allowed `shoal:GenerateBackupKey` / `shoal:OpenBackupKey` gets one (Kinesis
    permissions on the stream are not enough); nobody unsigned."""
    from broker.client.backup_keys import BackupKeyClient

    endpoint = f"127.0.0.1:{iam.node.grpc_port}"
    root = AsyncShoalClient(endpoint, signing_key=SigningKey(ROOT_KEY, ROOT_SECRET))
    try:
        await root.call("CreateStream", {"StreamName": "vaulted", "ShardCount": 1})
        await root.call(
            "StartStreamEncryption",
            {"StreamName": "vaulted", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
        )
    finally:
        await root.close()
    reader_arn, reader_key, reader_secret = await iam.user(
        ACCOUNT, "stream-admin", {"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}
    )
    _, operator_key, operator_secret = await iam.user(
        ACCOUNT,
        "backup-operator",
        {
            "Effect": "Allow",
            "Action": ["shoal:GenerateBackupKey", "shoal:OpenBackupKey"],
            "Resource": "*",
        },
    )

    def keys(signing_key: SigningKey | None) -> BackupKeyClient:
        return BackupKeyClient(endpoint, signing_key=signing_key)

    def generate(signing_key: SigningKey | None) -> tuple[bytes, dict[str, str]]:
        with keys(signing_key) as client:
            return client.generate("vaulted")

    with pytest.raises(ShoalError) as raised:
        await asyncio.to_thread(generate, SigningKey(reader_key, reader_secret))
    assert raised.value.code is ErrorCode.ACCESS_DENIED
    assert f"User: {reader_arn} is not authorized to perform: shoal:GenerateBackupKey" in (
        raised.value.message
    )
    with pytest.raises(ShoalError) as raised:
        await asyncio.to_thread(generate, None)
    assert raised.value.code is ErrorCode.MISSING_AUTHENTICATION_TOKEN

    operator = SigningKey(operator_key, operator_secret)
    material, wrapped = await asyncio.to_thread(generate, operator)
    assert len(material) == 32 and wrapped["key_id"] == "alias/aws/kinesis"

    def open_key(signing_key: SigningKey) -> bytes:
        with keys(signing_key) as client:
            return client.open(wrapped)

    assert await asyncio.to_thread(open_key, operator) == material
    with pytest.raises(ShoalError) as raised:
        await asyncio.to_thread(open_key, SigningKey(reader_key, reader_secret))
    assert raised.value.code is ErrorCode.ACCESS_DENIED


async def test_cli_acts_in_the_region_it_resolves_and_signs_for(
    iam: Iam, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One rule for the CLI's signing region and namespace region: `--region`, AWS_REGION,
    AWS_DEFAULT_REGION, the AWS config profile's region, else the node's. A principal of
    another account makes four streams of one name, one per rule, each in its own region of its
    own account; the region header is covered by the signature."""
    from broker.cli import main

    _, key, secret = await iam.user(
        OTHER, "regional", {"Effect": "Allow", "Action": ["kinesis:*", "shoal:*"], "Resource": "*"}
    )
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = ap-south-1\n[profile west]\nregion = us-west-2\n")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "SHOAL_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    base = ["--endpoint", f"127.0.0.1:{iam.node.grpc_port}", "--json"]
    signed = {"SHOAL_ACCESS_KEY_ID": key, "SHOAL_SECRET_ACCESS_KEY": secret}

    def shoal(*argv: str, env: dict[str, str] | None = None, code: int = 0) -> str:
        with monkeypatch.context() as scoped:
            for name, value in {**signed, **(env or {})}.items():
                scoped.setenv(name, value)
            assert main([*base, *argv]) == code, argv
        captured = capsys.readouterr()
        return captured.out if code == 0 else captured.err

    rules: list[tuple[list[str], dict[str, str], str]] = [
        ([], {}, "us-east-1"),  # no rule names one: the node's region
        (["--region", "eu-west-1"], {"AWS_REGION": "eu-central-1"}, "eu-west-1"),
        ([], {"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-north-1"}, "eu-central-1"),
        ([], {"AWS_DEFAULT_REGION": "eu-north-1", "AWS_CONFIG_FILE": str(config)}, "eu-north-1"),
        (["--profile", "west"], {"AWS_CONFIG_FILE": str(config)}, "us-west-2"),
        ([], {"AWS_CONFIG_FILE": str(config)}, "ap-south-1"),
    ]

    def regional() -> None:
        for shards, (flags, env, _) in enumerate(rules, start=1):
            shoal(*flags, "create-stream", "cli-orders", "--shard-count", str(shards), env=env)
        for shards, (flags, env, region) in enumerate(rules, start=1):
            described = json.loads(shoal(*flags, "describe-stream", "cli-orders", env=env))
            summary = described["Summary"]
            assert summary["StreamARN"] == f"arn:aws:kinesis:{region}:{OTHER}:stream/cli-orders"
            assert summary["OpenShardCount"] == shards
        # Records, leases and limits stay in their region.
        shoal("--region", "eu-west-1", "put", "cli-orders", "west", "-k", "k")
        west = [
            json.loads(line)
            for line in shoal("--region", "eu-west-1", "read", "cli-orders").splitlines()
        ]
        assert [base64.b64decode(record["Data"]) for record in west] == [b"west"]
        assert shoal("read", "cli-orders").strip() == ""
        limits = json.loads(shoal("--region", "eu-west-1", "limits", "get", "cli-orders"))
        assert limits["stream_name"] == "cli-orders"
        missing = shoal("--region", "sa-east-1", "limits", "get", "cli-orders", code=1)
        assert "ResourceNotFoundException" in missing and "cli-orders" in missing
        # An unknown profile is a usage error, as the AWS CLI's.
        assert "nowhere" in shoal("--profile", "nowhere", "list-streams", code=2)

    await asyncio.to_thread(regional)

    # The region header is signed: a signature for one region does not address another.
    method = "/broker.api.kinesis.v1.KinesisService/ListStreams"
    pairs = dict(SigningKey(key, secret).metadata(method, "eu-west-1"))
    pairs[grpc_signing.REGION_HEADER] = "us-east-1"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{iam.node.grpc_port}") as channel:
        stub = kinesis_pb2_grpc.KinesisServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListStreams(
                kinesis_pb2.ListStreamsInput(), metadata=tuple(pairs.items()), timeout=10
            )
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "signature does not match" in str(raised.value.details())


async def test_replayed_and_guessed_signatures_refused(iam: Iam) -> None:
    method = "/broker.api.iam.v1.IamService/ListPrincipals"
    old = SystemClock().wall_ms() - 6 * 60 * 1000
    stale = grpc_signing.signed_metadata(
        access_key_id=ROOT_KEY, secret=ROOT_SECRET, region="us-east-1", method=method, wall_ms=old
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await iam.stub.ListPrincipals(iam_pb2.ListPrincipalsRequest(), metadata=stale, timeout=10)
    assert "Signature expired" in str(raised.value.details())
    # Unsigned calls are refused too.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await iam.stub.ListPrincipals(iam_pb2.ListPrincipalsRequest(), timeout=10)
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # Guessing: after 20 failures from this address even the right key is turned away.
    codes = []
    for attempt in range(22):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await iam.call(
                "ListPrincipals", iam_pb2.ListPrincipalsRequest(), secret=f"guess-{attempt}"
            )
        codes.append(str(raised.value.details()))
    assert "Too many failed authentication attempts" in codes[-1]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await iam.call("ListPrincipals", iam_pb2.ListPrincipalsRequest())
    assert "Too many failed authentication attempts" in str(raised.value.details())
