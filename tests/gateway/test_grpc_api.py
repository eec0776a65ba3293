"""The native gRPC API, operation by operation, against an in-process node on 127.0.0.1.

Every call goes through a real gRPC channel, the gateway's validation and the real RocksDB log;
the node's clock is a ManualClock so that expiry and retention run on virtual time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from broker.errors import ShoalError
from broker.node import Node
from broker.streams.hash_keys import partition_key_hash
from broker.streams.iterators import decode_iterator
from broker.streams.sequence_numbers import decode_sequence_number
from broker.types import Offset, ShardUid

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


async def expect_error(name: str, call: Any) -> ShoalError:
    with pytest.raises(ShoalError) as caught:
        await call
    assert caught.value.code.kinesis_name == name, caught.value
    return caught.value


async def create(client: AsyncShoalClient, name: str, shards: int = 1) -> None:
    await client.call("CreateStream", {"StreamName": name, "ShardCount": shards})


async def put(client: AsyncShoalClient, stream: str, key: str, data: bytes) -> dict[str, Any]:
    return await client.call("PutRecord", {"StreamName": stream, "PartitionKey": key, "Data": data})


async def iterator(
    client: AsyncShoalClient, stream: str, shard_id: str, kind: str = "TRIM_HORIZON", **extra: Any
) -> str:
    response = await client.call(
        "GetShardIterator",
        {"StreamName": stream, "ShardId": shard_id, "ShardIteratorType": kind, **extra},
    )
    token: str = response["ShardIterator"]
    return token


async def read_all(
    client: AsyncShoalClient, token: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Follow NextShardIterator until caught up or the shard's end; returns records and the
    last response."""
    records: list[dict[str, Any]] = []
    for _ in range(1_000):
        response = await client.call("GetRecords", {"ShardIterator": token})
        records.extend(response.get("Records", []))
        next_token = response.get("NextShardIterator")
        if next_token is None or (
            not response.get("Records") and response["MillisBehindLatest"] == 0
        ):
            return records, response
        token = next_token
    raise AssertionError("did not reach the end of the shard")


async def shard_ids(client: AsyncShoalClient, stream: str, **extra: Any) -> list[str]:
    response = await client.call("ListShards", {"StreamName": stream, **extra})
    return [shard["ShardId"] for shard in response["Shards"]]


async def test_stream_lifecycle(client: AsyncShoalClient) -> None:
    await create(client, "orders", 3)
    summary = (await client.call("DescribeStreamSummary", {"StreamName": "orders"}))[
        "StreamDescriptionSummary"
    ]
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["OpenShardCount"] == 3
    assert summary["RetentionPeriodHours"] == 24
    assert summary["StreamARN"] == "arn:aws:kinesis:us-east-1:000000000000:stream/orders"
    description = (await client.call("DescribeStream", {"StreamName": "orders"}))[
        "StreamDescription"
    ]
    assert [s["ShardId"] for s in description["Shards"]] == [
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
    ]
    ranges = [
        (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in description["Shards"]
    ]
    assert ranges[0][0] == 0 and ranges[-1][1] == 2**128 - 1
    assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(2))
    listed = await client.call("ListStreams", {})
    assert listed["StreamNames"] == ["orders"]
    assert listed["StreamSummaries"][0]["StreamStatus"] == "ACTIVE"
    await client.call("DeleteStream", {"StreamName": "orders"})
    await expect_error(
        "ResourceNotFoundException", client.call("DescribeStream", {"StreamName": "orders"})
    )
    assert (await client.call("ListStreams", {})).get("StreamNames", []) == []


async def test_racing_creates_exactly_one_wins(client: AsyncShoalClient) -> None:
    outcomes = await asyncio.gather(
        *(create(client, "race", 1) for _ in range(5)), return_exceptions=True
    )
    failures = [o for o in outcomes if isinstance(o, ShoalError)]
    assert len(failures) == 4
    assert all(f.code.kinesis_name == "ResourceInUseException" for f in failures)


async def test_errors_reach_grpc_clients_structured(node: Node) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}")
    from broker.api.kinesis.v1 import kinesis_pb2, kinesis_pb2_grpc

    stub = kinesis_pb2_grpc.KinesisServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DescribeStream(kinesis_pb2.DescribeStreamInput(stream_name="nope"))
    await channel.close()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]  # AioRpcError is a Call
    assert status is not None
    from google.rpc import error_details_pb2

    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "ResourceNotFoundException"


async def test_create_stream_rejects_bad_input(client: AsyncShoalClient) -> None:
    for request_fields in (
        {"StreamName": "bad name", "ShardCount": 1},
        {"StreamName": "x" * 129, "ShardCount": 1},
        {"StreamName": "zero", "ShardCount": 0},
        # Provisioned needs a shard count (with neither, AWS makes an on-demand stream).
        {"StreamName": "noshards", "StreamModeDetails": {"StreamMode": "PROVISIONED"}},
        {"StreamName": "toomany", "ShardCount": 100_000},
    ):
        await expect_error("ValidationException", client.call("CreateStream", request_fields))
    assert (await client.call("ListStreams", {}))["StreamNames"] == []  # nothing half-made


async def test_put_and_get_roundtrip(client: AsyncShoalClient) -> None:
    await create(client, "s", 2)
    written = [await put(client, "s", f"key-{i}", f"value-{i}".encode()) for i in range(20)]
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for i, result in enumerate(written):
        by_shard.setdefault(result["ShardId"], []).append({"i": i, **result})
        expected_shard = 0 if partition_key_hash(f"key-{i}") < 2**127 else 1
        assert result["ShardId"] == f"shardId-{expected_shard:012d}"
    for shard_id, results in by_shard.items():
        numbers = [int(r["SequenceNumber"]) for r in results]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        records, last = await read_all(client, await iterator(client, "s", shard_id))
        assert [r["SequenceNumber"] for r in records] == [r["SequenceNumber"] for r in results]
        assert [r["Data"] for r in records] == [f"value-{r['i']}".encode() for r in results]
        assert all(
            r["PartitionKey"] == f"key-{x['i']}" for r, x in zip(records, results, strict=True)
        )
        assert last["MillisBehindLatest"] == 0
        assert "NextShardIterator" in last


async def test_explicit_hash_key_routes(client: AsyncShoalClient) -> None:
    await create(client, "s", 4)
    for shard in range(4):
        key = str(shard * (2**128 // 4) + 5)
        result = await client.call(
            "PutRecord",
            {"StreamName": "s", "PartitionKey": "same", "Data": b"x", "ExplicitHashKey": key},
        )
        assert result["ShardId"] == f"shardId-{shard:012d}"
    await expect_error(
        "InvalidArgumentException",
        client.call(
            "PutRecord",
            {"StreamName": "s", "PartitionKey": "k", "Data": b"x", "ExplicitHashKey": str(2**128)},
        ),
    )


async def test_put_records_results_and_limits(client: AsyncShoalClient) -> None:
    await create(client, "s", 3)
    entries: list[dict[str, Any]] = [
        {"PartitionKey": f"k{i}", "Data": bytes([i % 256]) * 10} for i in range(500)
    ]
    response = await client.call("PutRecords", {"StreamName": "s", "Records": entries})
    assert response["FailedRecordCount"] == 0
    assert len(response["Records"]) == 500
    for entry, result in zip(entries, response["Records"], strict=True):
        expected = min(partition_key_hash(entry["PartitionKey"]) * 3 // 2**128, 2)
        assert result["ShardId"] == f"shardId-{expected:012d}"
    numbers = [int(r["SequenceNumber"]) for r in response["Records"]]
    assert len(set(numbers)) == 500
    await expect_error(
        "ValidationException",
        client.call("PutRecords", {"StreamName": "s", "Records": entries + entries[:1]}),
    )
    await expect_error(
        "ValidationException",
        client.call(
            "PutRecords",
            {"StreamName": "s", "Records": [{"PartitionKey": "k", "Data": b"x" * (1024 * 1024)}]},
        ),
    )
    await expect_error(
        "ValidationException",
        client.call("PutRecord", {"StreamName": "s", "PartitionKey": "", "Data": b"x"}),
    )
    await expect_error("ResourceNotFoundException", put(client, "missing", "k", b"x"))


async def test_oversized_record_is_rejected_and_nothing_written(client: AsyncShoalClient) -> None:
    await create(client, "s", 1)
    await expect_error("ValidationException", put(client, "s", "k", b"x" * (1024 * 1024)))
    # partition key bytes count too: 1 MiB data minus 1 byte plus a 2-byte key is too big
    await expect_error("ValidationException", put(client, "s", "kk", b"x" * (1024 * 1024 - 1)))
    ok = await put(client, "s", "k", b"x" * (1024 * 1024 - 1))
    records, _ = await read_all(client, await iterator(client, "s", ok["ShardId"]))
    assert len(records) == 1


async def test_iterator_types(client: AsyncShoalClient, clock: ManualClock) -> None:
    await create(client, "s", 1)
    shard = "shardId-000000000000"
    written = [await put(client, "s", "k", f"r{i}".encode()) for i in range(5)]
    numbers = [w["SequenceNumber"] for w in written]
    trim, _ = await read_all(client, await iterator(client, "s", shard))
    assert [r["SequenceNumber"] for r in trim] == numbers
    at, _ = await read_all(
        client,
        await iterator(client, "s", shard, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=numbers[2]),
    )
    assert [r["SequenceNumber"] for r in at] == numbers[2:]
    after, _ = await read_all(
        client,
        await iterator(
            client, "s", shard, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=numbers[2]
        ),
    )
    assert [r["SequenceNumber"] for r in after] == numbers[3:]
    latest_token = await iterator(client, "s", shard, "LATEST")
    latest, _ = await read_all(client, latest_token)
    assert latest == []
    await put(client, "s", "k", b"new")
    latest, _ = await read_all(client, latest_token)
    assert [r["Data"] for r in latest] == [b"new"]
    arrival = trim[3]["ApproximateArrivalTimestamp"]
    by_time, _ = await read_all(
        client, await iterator(client, "s", shard, "AT_TIMESTAMP", Timestamp=arrival)
    )
    assert by_time[0]["ApproximateArrivalTimestamp"] >= arrival
    # A timestamp after every record (the clock stood still), but not in the future.
    clock.advance(ms=2)
    after_all = datetime.fromtimestamp((clock.wall_ms() - 1) / 1000, tz=UTC)
    after, _ = await read_all(
        client, await iterator(client, "s", shard, "AT_TIMESTAMP", Timestamp=after_all)
    )
    assert after == []
    # One in the future is refused, as AWS refuses it.
    await expect_error(
        "InvalidArgumentException",
        iterator(
            client, "s", shard, "AT_TIMESTAMP", Timestamp=datetime.now(UTC) + timedelta(days=400)
        ),
    )


async def test_iterator_errors(client: AsyncShoalClient, clock: ManualClock) -> None:
    await create(client, "s", 2)
    other = await client.call(
        "PutRecord",
        {"StreamName": "s", "PartitionKey": "k", "Data": b"x", "ExplicitHashKey": str(2**127 + 1)},
    )
    assert other["ShardId"] == "shardId-000000000001"
    await expect_error(
        "InvalidArgumentException",
        iterator(
            client,
            "s",
            "shardId-000000000000",
            "AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=other["SequenceNumber"],
        ),
    )
    await expect_error(
        "InvalidArgumentException",
        iterator(
            client,
            "s",
            "shardId-000000000000",
            "AT_SEQUENCE_NUMBER",
            StartingSequenceNumber="12345",
        ),
    )
    await expect_error(
        "InvalidArgumentException",
        iterator(client, "s", "shardId-000000000000", "AT_SEQUENCE_NUMBER"),
    )
    await expect_error("ResourceNotFoundException", iterator(client, "s", "shardId-000000000007"))
    # The gRPC door reports an unknown stream as the HTTP door does (the not-found precedence).
    unreadable = await expect_error(
        "ResourceNotFoundException",
        client.call(
            "MergeShards",
            {"StreamName": "nowhere", "ShardToMerge": "s-0", "AdjacentShardToMerge": "2.14E4"},
        ),
    )
    assert unreadable.message.startswith("Could not find shard 2.14E4 in stream nowhere ")
    token = await iterator(client, "s", "shardId-000000000001")
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    await expect_error(
        "InvalidArgumentException", client.call("GetRecords", {"ShardIterator": tampered})
    )
    clock.advance(ms=300_001)
    await expect_error(
        "ExpiredIteratorException", client.call("GetRecords", {"ShardIterator": token})
    )
    fresh = await iterator(client, "s", "shardId-000000000001")
    clock.advance(ms=299_000)
    response = await client.call("GetRecords", {"ShardIterator": fresh})
    assert len(response["Records"]) == 1


async def test_get_records_limit_and_millis_behind(
    client: AsyncShoalClient, clock: ManualClock
) -> None:
    await create(client, "s", 1)
    await client.call(
        "PutRecords",
        {"StreamName": "s", "Records": [{"PartitionKey": "k", "Data": b"d"} for _ in range(30)]},
    )
    clock.advance(ms=5_000)
    token = await iterator(client, "s", "shardId-000000000000")
    first = await client.call("GetRecords", {"ShardIterator": token, "Limit": 10})
    assert len(first["Records"]) == 10
    assert first["MillisBehindLatest"] >= 5_000
    await expect_error(
        "ValidationException", client.call("GetRecords", {"ShardIterator": token, "Limit": 10_001})
    )
    rest, last = await read_all(client, first["NextShardIterator"])
    assert len(rest) == 20
    assert last["MillisBehindLatest"] == 0


async def test_split_shard(client: AsyncShoalClient) -> None:
    await create(client, "s", 1)
    before = [await put(client, "s", f"k{i}", b"old") for i in range(10)]
    await client.call(
        "SplitShard",
        {
            "StreamName": "s",
            "ShardToSplit": "shardId-000000000000",
            "NewStartingHashKey": str(2**127),
        },
    )
    shards = (await client.call("ListShards", {"StreamName": "s"}))["Shards"]
    assert [s["ShardId"] for s in shards] == [f"shardId-{i:012d}" for i in range(3)]
    parent, low, high = shards
    assert "EndingSequenceNumber" in parent["SequenceNumberRange"]
    assert low["ParentShardId"] == parent["ShardId"] == high["ParentShardId"]
    assert low["HashKeyRange"]["EndingHashKey"] == str(2**127 - 1)
    assert high["HashKeyRange"]["StartingHashKey"] == str(2**127)
    records, last = await read_all(client, await iterator(client, "s", parent["ShardId"]))
    assert [r["SequenceNumber"] for r in records] == [b["SequenceNumber"] for b in before]
    assert "NextShardIterator" not in last
    assert sorted(c["ShardId"] for c in last["ChildShards"]) == [low["ShardId"], high["ShardId"]]
    after = await put(client, "s", "k0", b"new")
    assert after["ShardId"] in (low["ShardId"], high["ShardId"])
    assert int(after["SequenceNumber"]) > max(int(b["SequenceNumber"]) for b in before)
    assert int(low["SequenceNumberRange"]["StartingSequenceNumber"]) > int(
        parent["SequenceNumberRange"]["EndingSequenceNumber"]
    )
    await expect_error(
        "InvalidArgumentException",
        client.call(
            "SplitShard",
            {"StreamName": "s", "ShardToSplit": "shardId-000000000000", "NewStartingHashKey": "5"},
        ),
    )
    await expect_error(
        "InvalidArgumentException",
        client.call(
            "SplitShard",
            {"StreamName": "s", "ShardToSplit": "shardId-000000000001", "NewStartingHashKey": "0"},
        ),
    )


async def test_merge_shards(client: AsyncShoalClient) -> None:
    await create(client, "s", 3)
    await expect_error(
        "InvalidArgumentException",
        client.call(
            "MergeShards",
            {
                "StreamName": "s",
                "ShardToMerge": "shardId-000000000000",
                "AdjacentShardToMerge": "shardId-000000000002",
            },
        ),
    )
    await client.call(
        "MergeShards",
        {
            "StreamName": "s",
            "ShardToMerge": "shardId-000000000001",
            "AdjacentShardToMerge": "shardId-000000000002",
        },
    )
    shards = (await client.call("ListShards", {"StreamName": "s"}))["Shards"]
    child = shards[-1]
    assert child["ShardId"] == "shardId-000000000003"
    assert child["ParentShardId"] == "shardId-000000000001"
    assert child["AdjacentParentShardId"] == "shardId-000000000002"
    assert child["HashKeyRange"]["EndingHashKey"] == str(2**128 - 1)
    open_ids = await shard_ids(client, "s", ShardFilter={"Type": "AT_LATEST"})
    assert open_ids == ["shardId-000000000000", "shardId-000000000003"]


async def test_update_shard_count(client: AsyncShoalClient) -> None:
    await create(client, "s", 2)
    response = await client.call(
        "UpdateShardCount",
        {"StreamName": "s", "TargetShardCount": 4, "ScalingType": "UNIFORM_SCALING"},
    )
    assert response["CurrentShardCount"] == 2 and response["TargetShardCount"] == 4
    summary = (await client.call("DescribeStreamSummary", {"StreamName": "s"}))[
        "StreamDescriptionSummary"
    ]
    assert summary["OpenShardCount"] == 4
    await client.call(
        "UpdateShardCount",
        {"StreamName": "s", "TargetShardCount": 3, "ScalingType": "UNIFORM_SCALING"},
    )
    open_shards = (
        await client.call("ListShards", {"StreamName": "s", "ShardFilter": {"Type": "AT_LATEST"}})
    )["Shards"]
    assert len(open_shards) == 3
    starts = sorted(int(s["HashKeyRange"]["StartingHashKey"]) for s in open_shards)
    # AWS merges one adjacent pair of the four quarters (spread evenly: the last two).
    assert starts == [0, 2**126, 2**127]
    await expect_error(
        "LimitExceededException",
        client.call(
            "UpdateShardCount",
            {"StreamName": "s", "TargetShardCount": 7, "ScalingType": "UNIFORM_SCALING"},
        ),
    )


async def test_writes_during_reshard_are_never_lost_or_doubled(client: AsyncShoalClient) -> None:
    """Producers keep writing while a split and then a merge run: every acknowledged record is
    read back exactly once, at the sequence number it was acknowledged with."""
    await create(client, "s", 2)
    acknowledged: dict[bytes, tuple[str, str]] = {}
    stop = asyncio.Event()
    enough = asyncio.Event()
    enough_count = [1 << 62]  # set after the merge: the acknowledgements to wait for

    async def producer(worker: int) -> None:
        i = 0
        while not stop.is_set():
            data = f"{worker}-{i}".encode()
            result = await put(client, "s", f"key-{worker}-{i % 7}", data)
            acknowledged[data] = (result["ShardId"], result["SequenceNumber"])
            if len(acknowledged) >= enough_count[0]:
                enough.set()
            i += 1

    tasks = [asyncio.create_task(producer(w)) for w in range(4)]
    await asyncio.sleep(0)
    await client.call(
        "SplitShard",
        {
            "StreamName": "s",
            "ShardToSplit": "shardId-000000000000",
            "NewStartingHashKey": str(2**126),
        },
    )
    await client.call(
        "MergeShards",
        {
            "StreamName": "s",
            "ShardToMerge": "shardId-000000000002",
            "AdjacentShardToMerge": "shardId-000000000003",
        },
    )
    # Keep writing until the children have taken writes too, then stop (bounded).
    enough_count[0] = len(acknowledged) + 40
    async with asyncio.timeout(30):
        await enough.wait()
    stop.set()
    await asyncio.gather(*tasks)
    seen: dict[bytes, tuple[str, str]] = {}
    for shard_id in await shard_ids(client, "s"):
        records, _ = await read_all(client, await iterator(client, "s", shard_id))
        for record in records:
            assert record["Data"] not in seen, "a record was stored twice"
            seen[record["Data"]] = (shard_id, record["SequenceNumber"])
    assert seen == acknowledged
    assert len(acknowledged) > 20


async def test_retention(client: AsyncShoalClient, clock: ManualClock, node: Node) -> None:
    await create(client, "s", 1)
    await put(client, "s", "k", b"old")
    await expect_error(
        "InvalidArgumentException",
        client.call(
            "DecreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 12}
        ),
    )
    await expect_error(
        "InvalidArgumentException",
        client.call(
            "IncreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 9000}
        ),
    )
    await client.call(
        "IncreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 48}
    )
    await expect_error(
        "InvalidArgumentException",
        client.call(
            "IncreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 30}
        ),
    )
    clock.advance(ms=30 * HOUR_MS)
    await put(client, "s", "k", b"new")
    records, _ = await read_all(client, await iterator(client, "s", "shardId-000000000000"))
    assert [r["Data"] for r in records] == [b"old", b"new"]
    await client.call(
        "DecreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 24}
    )
    records, _ = await read_all(client, await iterator(client, "s", "shardId-000000000000"))
    assert [r["Data"] for r in records] == [b"new"], "past retention is unreadable at once"
    assert node.service is not None
    await node.housekeeping_pass(node.service.ctx)
    records, _ = await read_all(client, await iterator(client, "s", "shardId-000000000000"))
    assert [r["Data"] for r in records] == [b"new"]
    summary = await client.call("DescribeStreamSummary", {"StreamName": "s"})
    assert summary["StreamDescriptionSummary"]["RetentionPeriodHours"] == 24


async def test_tags_both_forms(client: AsyncShoalClient) -> None:
    await create(client, "s", 1)
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s"
    await client.call("AddTagsToStream", {"StreamName": "s", "Tags": {"team": "a", "env": "dev"}})
    await client.call("TagResource", {"ResourceARN": arn, "Tags": {"cost": "42"}})
    listed = await client.call("ListTagsForStream", {"StreamName": "s"})
    assert listed["Tags"] == [
        {"Key": "cost", "Value": "42"},
        {"Key": "env", "Value": "dev"},
        {"Key": "team", "Value": "a"},
    ]
    assert listed["HasMoreTags"] is False
    page = await client.call(
        "ListTagsForStream", {"StreamName": "s", "Limit": 1, "ExclusiveStartTagKey": "cost"}
    )
    assert page["Tags"] == [{"Key": "env", "Value": "dev"}] and page["HasMoreTags"] is True
    await client.call("RemoveTagsFromStream", {"StreamName": "s", "TagKeys": ["env"]})
    await client.call("UntagResource", {"ResourceARN": arn, "TagKeys": ["cost"]})
    by_arn = await client.call("ListTagsForResource", {"ResourceARN": arn})
    assert by_arn["Tags"] == [{"Key": "team", "Value": "a"}]
    too_many = {f"k{i}": "v" for i in range(51)}
    await expect_error(
        "InvalidArgumentException",
        client.call("AddTagsToStream", {"StreamName": "s", "Tags": too_many}),
    )


async def test_stream_arn_is_accepted(client: AsyncShoalClient) -> None:
    await create(client, "s", 1)
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s"
    result = await client.call("PutRecord", {"StreamARN": arn, "PartitionKey": "k", "Data": b"x"})
    assert result["ShardId"] == "shardId-000000000000"
    summary = await client.call("DescribeStreamSummary", {"StreamARN": arn})
    assert summary["StreamDescriptionSummary"]["StreamName"] == "s"
    await expect_error(
        "InvalidArgumentException",
        client.call("DescribeStreamSummary", {"StreamARN": arn, "StreamName": "other"}),
    )
    await expect_error(
        "ResourceNotFoundException",
        client.call("DescribeStreamSummary", {"StreamARN": arn.replace("us-east-1", "eu-west-1")}),
    )


async def test_enhanced_monitoring_limits_and_mode(client: AsyncShoalClient) -> None:
    await create(client, "s", 2)
    enabled = await client.call(
        "EnableEnhancedMonitoring", {"StreamName": "s", "ShardLevelMetrics": ["ALL"]}
    )
    assert (
        enabled["CurrentShardLevelMetrics"] == [] if "CurrentShardLevelMetrics" in enabled else True
    )
    assert len(enabled["DesiredShardLevelMetrics"]) == 7
    disabled = await client.call(
        "DisableEnhancedMonitoring", {"StreamName": "s", "ShardLevelMetrics": ["IncomingBytes"]}
    )
    assert "IncomingBytes" not in disabled["DesiredShardLevelMetrics"]
    limits = await client.call("DescribeLimits", {})
    assert limits["OpenShardCount"] == 2
    assert limits["OnDemandStreamCount"] == 0
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s"
    await client.call(
        "UpdateStreamMode", {"StreamARN": arn, "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}
    )
    summary = (await client.call("DescribeStreamSummary", {"StreamName": "s"}))[
        "StreamDescriptionSummary"
    ]
    assert summary["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"
    assert (await client.call("DescribeLimits", {}))["OnDemandStreamCount"] == 1


async def test_pagination(client: AsyncShoalClient) -> None:
    for i in range(5):
        await create(client, f"s{i}", 1 if i else 7)
    names: list[str] = []
    request: dict[str, Any] = {"Limit": 2}
    for _ in range(10):
        page = await client.call("ListStreams", request)
        names += page["StreamNames"]
        if not page["HasMoreStreams"]:
            break
        request = {"Limit": 2, "NextToken": page["NextToken"]}
    assert names == [f"s{i}" for i in range(5)]
    first = await client.call("ListShards", {"StreamName": "s0", "MaxResults": 3})
    assert len(first["Shards"]) == 3
    await expect_error(
        "InvalidArgumentException",
        client.call("ListShards", {"StreamName": "s0", "NextToken": first["NextToken"]}),
    )
    second = await client.call("ListShards", {"NextToken": first["NextToken"], "MaxResults": 10})
    assert [s["ShardId"] for s in second["Shards"]] == [f"shardId-{i:012d}" for i in range(3, 7)]
    assert "NextToken" not in second
    page = await client.call(
        "DescribeStream",
        {"StreamName": "s0", "Limit": 4, "ExclusiveStartShardId": "shardId-000000000001"},
    )
    description = page["StreamDescription"]
    assert [s["ShardId"] for s in description["Shards"]] == [
        f"shardId-{i:012d}" for i in range(2, 6)
    ]
    assert description["HasMoreShards"] is True
    await expect_error(
        "InvalidArgumentException", client.call("ListShards", {"NextToken": "garbage"})
    )


async def test_list_shards_token_expires(client: AsyncShoalClient, clock: ManualClock) -> None:
    await create(client, "s", 3)
    first = await client.call("ListShards", {"StreamName": "s", "MaxResults": 1})
    clock.advance(ms=300_001)
    await expect_error(
        "ExpiredNextTokenException", client.call("ListShards", {"NextToken": first["NextToken"]})
    )


async def test_sequence_numbers_decode_to_shard_and_offset(client: AsyncShoalClient) -> None:
    await create(client, "s", 2)
    results = [
        await client.call(
            "PutRecord",
            {
                "StreamName": "s",
                "PartitionKey": "k",
                "Data": b"x",
                "ExplicitHashKey": str(2**127 + i),
            },
        )
        for i in range(3)
    ]
    positions = [decode_sequence_number(r["SequenceNumber"]) for r in results]
    assert [p.shard_index for p in positions] == [1, 1, 1]
    # Offset 0 holds the shard leader's epoch-start marker (a control record, decision 0002
    # rule 3): numbers skip it, and the records that follow are consecutive.
    first = positions[0].offset
    assert [p.offset for p in positions] == [first, first + 1, first + 2]
    assert first == 1


def _position(node: Node, token: str) -> tuple[ShardUid, Offset]:
    """The shard and offset an iterator names (what a page read ahead for it is keyed by)."""
    assert node.service is not None
    ctx = node.service.ctx
    position = decode_iterator(token, secret=ctx.image().iterator_secret, now_ms=ctx.now_ms())
    return ShardUid(position.shard_uid), Offset(position.offset)


async def test_a_paged_drain_takes_pages_read_ahead_and_never_a_record_past_retention(
    client: AsyncShoalClient, clock: ManualClock, node: Node
) -> None:
    """Through gRPC: each page that stops short of the end leaves the next one read ahead
    (service/read_ahead.py); following NextShardIterator returns every record once, in order,
    records written meanwhile included; and a page read ahead whose records passed retention
    before the reader came back is not returned (the next page starts after them)."""
    assert node.service is not None
    read_ahead = node.service.ctx.shards.read_ahead
    await create(client, "s", 1)

    async def put_batch(tag: str, count: int) -> list[bytes]:
        data = [f"{tag}-{i}".encode() for i in range(count)]
        entries = [{"PartitionKey": "k", "Data": d} for d in data]
        await client.call("PutRecords", {"StreamName": "s", "Records": entries})
        return data

    written = await put_batch("a", 25)
    token = await iterator(client, "s", "shardId-000000000000")
    seen: list[bytes] = []
    for page_number in range(20):
        page = await client.call("GetRecords", {"ShardIterator": token, "Limit": 7})
        seen.extend(record["Data"] for record in page["Records"])
        if page["MillisBehindLatest"] == 0 and not page["Records"]:
            break
        if len(seen) < len(written):
            assert read_ahead.holds(*_position(node, page["NextShardIterator"]))  # being read
        if page_number == 1:
            written += await put_batch("b", 9)  # past the end the read ahead was bounded by
        token = page["NextShardIterator"]
    assert seen == written

    # Retention: "old" arrives, "new" 24 h - 2 min later (retention is 24 h); the reader takes
    # a first page of "old" (the rest is read ahead), and comes back 3 min later.
    await create(client, "r", 1)
    old = [{"PartitionKey": "k", "Data": f"old-{i}".encode()} for i in range(10)]
    await client.call("PutRecords", {"StreamName": "r", "Records": old})
    clock.advance(ms=24 * HOUR_MS - 120_000)
    await client.call("PutRecord", {"StreamName": "r", "PartitionKey": "k", "Data": b"new"})
    token = await iterator(client, "r", "shardId-000000000000")
    first = await client.call("GetRecords", {"ShardIterator": token, "Limit": 4})
    assert [r["Data"] for r in first["Records"]] == [f"old-{i}".encode() for i in range(4)]
    assert read_ahead.holds(*_position(node, first["NextShardIterator"]))
    clock.advance(ms=180_000)
    second = await client.call(
        "GetRecords", {"ShardIterator": first["NextShardIterator"], "Limit": 4}
    )
    assert [r["Data"] for r in second["Records"]] == [b"new"]


async def test_an_iterators_first_page_is_read_ahead_and_its_first_read_takes_it(
    client: AsyncShoalClient, node: Node
) -> None:
    """GetShardIterator starts reading the page at its position (at the default Limit): a
    reader's first GetRecords takes it, written ahead for the gRPC door, with the records an
    ordinary read returns; at the shard's end (LATEST) nothing is read ahead."""
    assert node.service is not None
    read_ahead = node.service.ctx.shards.read_ahead
    await create(client, "first", 1)
    data = [f"r-{i}".encode() for i in range(30)]
    entries = [{"PartitionKey": "k", "Data": d} for d in data]
    await client.call("PutRecords", {"StreamName": "first", "Records": entries})
    latest = await iterator(client, "first", "shardId-000000000000", "LATEST")
    assert not read_ahead.holds(*_position(node, latest))
    token = await iterator(client, "first", "shardId-000000000000")
    assert read_ahead.holds(*_position(node, token))
    page = await client.call("GetRecords", {"ShardIterator": token})
    assert [record["Data"] for record in page["Records"]] == data
    assert not read_ahead.holds(*_position(node, token))  # taken
