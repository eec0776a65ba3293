"""What AWS accepts and refuses at the edges, through boto3: shard id forms and their
not-found texts, SequenceNumberForOrdering 0, AT_TIMESTAMP in the future, GetShardIterator's
position texts, and a CREATING stream (described without shards, deletable)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from broker.clock import ManualClock
from tests.compat.conftest import boto_client, call
from tests.conftest import node_config, running_node

pytestmark = pytest.mark.integration

ACCOUNT = "000000000000"


async def error_of(function: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        await call(function, **kwargs)
    error = caught.value.response["Error"]
    return error["Code"], error.get("Message", "")


async def iterator_error(kinesis: Any, stream: str, shard_id: str, **extra: Any) -> tuple[str, str]:
    return await error_of(
        kinesis.get_shard_iterator,
        StreamName=stream,
        ShardId=shard_id,
        ShardIteratorType=extra.pop("ShardIteratorType", "LATEST"),
        **extra,
    )


async def test_shard_ids_in_every_form_aws_accepts(kinesis: Any) -> None:
    await call(kinesis.create_stream, StreamName="forms", ShardCount=2)
    for shard_id in ("shardId-000000000001", "shardId-1", "1", "anything-1", "a-b-00001"):
        answer = await call(
            kinesis.get_shard_iterator,
            StreamName="forms",
            ShardId=shard_id,
            ShardIteratorType="TRIM_HORIZON",
        )
        assert answer["ShardIterator"], shard_id

    assert await iterator_error(kinesis, "forms", "shardId-5") == (
        "ResourceNotFoundException",
        f"Shard shardId-000000000005 in stream forms under account {ACCOUNT} does not exist",
    )
    for raw in ("ABKLFD8", "2147483648", "shardId-002147483648", "2.14E4"):
        assert await iterator_error(kinesis, "forms", raw) == (
            "ResourceNotFoundException",
            f"Could not find shard {raw} in stream forms under account {ACCOUNT}.",
        )
    # GetShardIterator on a stream the caller does not have names the shard, as AWS does
    # (kinesalite's recordings; a 2023 AWS answer for shard 0 of a stream never made).
    assert await iterator_error(kinesis, "absent", "ABKLFD8") == (
        "ResourceNotFoundException",
        f"Could not find shard ABKLFD8 in stream absent under account {ACCOUNT}.",
    )
    assert await iterator_error(kinesis, "absent", "shardId-7") == (
        "ResourceNotFoundException",
        f"Shard shardId-000000000007 in stream absent under account {ACCOUNT} does not exist",
    )
    # SplitShard and MergeShards name a shard id they cannot read, and otherwise the stream
    # (one node for both: the suite's time).
    await split_and_merge_name_an_unreadable_shard_id(kinesis, known="forms")


# Shard ids AWS reads no shard number from (past 2^31-1, not digits), and ids it reads
# (kinesalite's recordings of both, 2015).
UNREADABLE_SHARD_IDS = ("2147483648", "shardId-002147483648", "ABKLFD8", "2.14E4")
READABLE_SHARD_IDS = ("2147483647", "anything-2147483647", "a-00002147483647", "-00002147483647")


async def split_and_merge_name_an_unreadable_shard_id(kinesis: Any, *, known: str) -> None:
    """kinesalite's recordings of AWS: SplitShard and MergeShards on a stream the caller does
    not have report the first shard id they cannot read (ShardToMerge before
    AdjacentShardToMerge), as the caller sent it; with readable ids, the stream. `known`: a
    stream of two shards."""
    stream_missing = (
        "ResourceNotFoundException",
        f"Stream gone under account {ACCOUNT} not found.",
    )

    def shard_missing(raw: str) -> tuple[str, str]:
        return (
            "ResourceNotFoundException",
            f"Could not find shard {raw} in stream gone under account {ACCOUNT}.",
        )

    for raw in UNREADABLE_SHARD_IDS + READABLE_SHARD_IDS:
        expected = shard_missing(raw) if raw in UNREADABLE_SHARD_IDS else stream_missing
        split = await error_of(
            kinesis.split_shard, StreamName="gone", ShardToSplit=raw, NewStartingHashKey="0"
        )
        assert split == expected, raw
        for shard, adjacent in ((raw, "x-0"), ("x-0", raw)):
            merge = await error_of(
                kinesis.merge_shards,
                StreamName="gone",
                ShardToMerge=shard,
                AdjacentShardToMerge=adjacent,
            )
            assert merge == expected, (shard, adjacent)
    assert await error_of(
        kinesis.merge_shards,
        StreamName="gone",
        ShardToMerge="ABKLFD8",
        AdjacentShardToMerge="2.14E4",
    ) == shard_missing("ABKLFD8")
    # A stream the caller has: the stream is looked up first, then its shards in order.
    assert await error_of(
        kinesis.merge_shards,
        StreamName=known,
        ShardToMerge="shardId-5",
        AdjacentShardToMerge="ABKLFD8",
    ) == (
        "ResourceNotFoundException",
        f"Could not find shard shardId-000000000005 in stream {known} under account {ACCOUNT}.",
    )
    assert await error_of(
        kinesis.split_shard, StreamName=known, ShardToSplit="2.14E4", NewStartingHashKey="0"
    ) == (
        "ResourceNotFoundException",
        f"Could not find shard 2.14E4 in stream {known} under account {ACCOUNT}.",
    )


async def test_get_shard_iterator_position_texts(kinesis: Any) -> None:
    await call(kinesis.create_stream, StreamName="positions", ShardCount=1)
    both = (
        "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and "
        "StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. "
    )
    assert await iterator_error(
        kinesis, "positions", "shardId-0", ShardIteratorType="AT_SEQUENCE_NUMBER"
    ) == (
        "InvalidArgumentException",
        both + "Request specified AT_SEQUENCE_NUMBER and no StartingSequenceNumber.",
    )
    assert await iterator_error(
        kinesis, "positions", "shardId-0", ShardIteratorType="LATEST", StartingSequenceNumber="5"
    ) == (
        "InvalidArgumentException",
        both + "Request specified LATEST and also a StartingSequenceNumber.",
    )


async def test_at_timestamp_in_the_future_is_refused(kinesis: Any, clock: ManualClock) -> None:
    await call(kinesis.create_stream, StreamName="time", ShardCount=1)
    now = datetime.fromtimestamp(clock.wall_ms() / 1000, tz=UTC)
    code, message = await iterator_error(
        kinesis,
        "time",
        "shardId-0",
        ShardIteratorType="AT_TIMESTAMP",
        Timestamp=now + timedelta(seconds=10),
    )
    assert code == "InvalidArgumentException"
    assert "cannot be greater than the currentTimestampInMillis" in message
    answer = await call(
        kinesis.get_shard_iterator,
        StreamName="time",
        ShardId="shardId-0",
        ShardIteratorType="AT_TIMESTAMP",
        Timestamp=now,
    )
    assert answer["ShardIterator"]


async def test_sequence_number_for_ordering_zero_is_accepted(kinesis: Any) -> None:
    await call(kinesis.create_stream, StreamName="ordered", ShardCount=1)
    first = await call(
        kinesis.put_record,
        StreamName="ordered",
        PartitionKey="k",
        Data=b"a",
        SequenceNumberForOrdering="0",
    )
    second = await call(
        kinesis.put_record,
        StreamName="ordered",
        PartitionKey="k",
        Data=b"b",
        SequenceNumberForOrdering=first["SequenceNumber"],
    )
    assert int(second["SequenceNumber"]) > int(first["SequenceNumber"])
    # A number of AWS's own layout, from any stream, is accepted; one AWS cannot read is
    # refused with AWS's text (kinesalite's recordings).
    aws_own = str(int("2ffffffffff7fffffffffffffff000000000007fffffff2", 16))
    await call(
        kinesis.put_record,
        StreamName="ordered",
        PartitionKey="k",
        Data=b"c",
        SequenceNumberForOrdering=aws_own,
    )
    unreadable = str(int("20000000000000000000000000000000000000000000004", 16))
    assert await error_of(
        kinesis.put_record,
        StreamName="ordered",
        PartitionKey="k",
        Data=b"d",
        SequenceNumberForOrdering=unreadable,
    ) == (
        "InvalidArgumentException",
        f"ExclusiveMinimumSequenceNumber {unreadable} used in PutRecord on stream ordered "
        f"under account {ACCOUNT} is invalid.",
    )


async def test_merge_names_the_lower_shard_first_as_aws_does(kinesis: Any) -> None:
    await call(kinesis.create_stream, StreamName="merging", ShardCount=2)
    assert await error_of(
        kinesis.merge_shards,
        StreamName="merging",
        ShardToMerge="shardId-000000000001",
        AdjacentShardToMerge="shardId-000000000000",
    ) == (
        "InvalidArgumentException",
        "Shards shardId-000000000001 and shardId-000000000000 in stream merging under account "
        f"{ACCOUNT} are not an adjacent pair of shards eligible for merging",
    )
    # Split and merge name a missing shard with their own text; a key past 2^128-1 gets the
    # split's range text (kinesalite's recordings).
    assert await error_of(
        kinesis.split_shard,
        StreamName="merging",
        ShardToSplit="shardId-5",
        NewStartingHashKey="2",
    ) == (
        "ResourceNotFoundException",
        f"Could not find shard shardId-000000000005 in stream merging under account {ACCOUNT}.",
    )
    too_big = "9" * 39
    assert await error_of(
        kinesis.split_shard,
        StreamName="merging",
        ShardToSplit="shard-1",
        NewStartingHashKey=too_big,
    ) == (
        "InvalidArgumentException",
        f"NewStartingHashKey {too_big} used in SplitShard() on shard shardId-000000000001 in "
        f"stream merging under account {ACCOUNT} is not both greater than one plus the shard's "
        f"StartingHashKey {2**127} and less than the shard's EndingHashKey {2**128 - 1}.",
    )
    await call(
        kinesis.merge_shards,
        StreamName="merging",
        ShardToMerge="shardId-000000000000",
        AdjacentShardToMerge="shardId-000000000001",
    )


async def test_a_creating_stream_shows_no_shards_and_may_be_deleted(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = node_config(tmp_path / "node", stream_creating_ms=60_000, stream_deleting_ms=60_000)
    async with running_node(config, clock) as node:
        kinesis = boto_client(f"http://127.0.0.1:{node.http_port}")
        try:
            await call(kinesis.create_stream, StreamName="young", ShardCount=3)
            description = (await call(kinesis.describe_stream, StreamName="young"))[
                "StreamDescription"
            ]
            assert description["StreamStatus"] == "CREATING"
            assert description["Shards"] == []
            assert description["HasMoreShards"] is False
            await call(kinesis.delete_stream, StreamName="young")
            summary = (await call(kinesis.describe_stream_summary, StreamName="young"))[
                "StreamDescriptionSummary"
            ]
            assert summary["StreamStatus"] == "DELETING"
        finally:
            kinesis.close()


async def test_tag_characters_as_aws_checks_them(kinesis: Any) -> None:
    invalid = (
        "Some tags contain invalid characters. Valid characters: "
        "Unicode letters, digits, white space, _ . / = + - % @ :."
    )
    # Not-found comes first, whatever the tags hold.
    code, message = await error_of(kinesis.add_tags_to_stream, StreamName="nope", Tags={";": "x"})
    assert (code, message) == (
        "ResourceNotFoundException",
        f"Stream nope under account {ACCOUNT} not found.",
    )
    await call(kinesis.create_stream, StreamName="tagged", ShardCount=1)
    for tags in ({"abc;def": "1"}, {"abc\tdef": "1"}, {"a": "line\nbreak"}, {"a,b": "1"}):
        assert await error_of(kinesis.add_tags_to_stream, StreamName="tagged", Tags=tags) == (
            "InvalidArgumentException",
            invalid,
        )
    assert await error_of(
        kinesis.remove_tags_from_stream, StreamName="tagged", TagKeys=["abc;def"]
    ) == ("InvalidArgumentException", invalid)
    code, message = await error_of(
        kinesis.add_tags_to_stream, StreamName="tagged", Tags={"abc%def": "1"}
    )
    assert code == "InvalidArgumentException"
    assert message == (
        f"Failed to add tags to stream tagged under account {ACCOUNT} because some tags "
        "contained illegal characters. The allowed characters are Unicode letters, "
        "white-spaces, '_',',','/','=','+','-','@',':'."
    )
    code, message = await error_of(
        kinesis.remove_tags_from_stream, StreamName="tagged", TagKeys=["abc%def"]
    )
    assert message.startswith("Failed to remove tags from stream tagged under account")
    code, message = await error_of(
        kinesis.create_stream, StreamName="born-tagged", ShardCount=1, Tags={"k": "v;"}
    )
    assert (code, message) == ("InvalidArgumentException", invalid)

    tags = {"ü0 _.": "a", "/=+-@:": "é ü", "team:owner": "a:b"}  # AWS allows ":"
    await call(kinesis.add_tags_to_stream, StreamName="tagged", Tags=tags)
    listed = (await call(kinesis.list_tags_for_stream, StreamName="tagged"))["Tags"]
    assert {t["Key"]: t["Value"] for t in listed} == tags
    await call(kinesis.remove_tags_from_stream, StreamName="tagged", TagKeys=list(tags))


async def test_a_stream_created_without_shard_count_is_on_demand_with_four_shards(
    kinesis: Any,
) -> None:
    """localstack's test_create_stream_without_shard_count, recorded against AWS: four open
    shards. A shard count alone still means provisioned; provisioned without one is refused."""
    await call(kinesis.create_stream, StreamName="unsized")
    summary = (await call(kinesis.describe_stream_summary, StreamName="unsized"))[
        "StreamDescriptionSummary"
    ]
    assert summary["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert summary["OpenShardCount"] == 4
    await call(kinesis.create_stream, StreamName="sized", ShardCount=1)
    summary = (await call(kinesis.describe_stream_summary, StreamName="sized"))[
        "StreamDescriptionSummary"
    ]
    assert summary["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert await error_of(
        kinesis.create_stream,
        StreamName="unsized-provisioned",
        StreamModeDetails={"StreamMode": "PROVISIONED"},
    ) == (
        "ValidationException",
        "1 validation error detected: Value null at 'shardCount' failed to satisfy "
        "constraint: Member must not be null",
    )


async def test_an_updating_stream_shows_its_previous_topology_until_active(
    tmp_path: Path, clock: ManualClock
) -> None:
    """AWS keeps the old shards on view while a reshard makes the stream UPDATING (kinesalite:
    2 shards during a 2 -> 4 UpdateShardCount); the new topology shows once it is ACTIVE."""
    config = node_config(tmp_path / "node", stream_updating_ms=60_000)
    async with running_node(config, clock) as node:
        kinesis = boto_client(f"http://127.0.0.1:{node.http_port}")
        try:
            await call(kinesis.create_stream, StreamName="growing", ShardCount=2)
            before = (await call(kinesis.list_shards, StreamName="growing"))["Shards"]
            await call(kinesis.put_record, StreamName="growing", Data=b"x", PartitionKey="k")

            async def topology() -> tuple[str, list[Any], list[Any], int]:
                description = (await call(kinesis.describe_stream, StreamName="growing"))[
                    "StreamDescription"
                ]
                listed = (await call(kinesis.list_shards, StreamName="growing"))["Shards"]
                summary = (await call(kinesis.describe_stream_summary, StreamName="growing"))[
                    "StreamDescriptionSummary"
                ]
                return (
                    description["StreamStatus"],
                    description["Shards"],
                    listed,
                    summary["OpenShardCount"],
                )

            await call(
                kinesis.update_shard_count,
                StreamName="growing",
                TargetShardCount=4,
                ScalingType="UNIFORM_SCALING",
            )
            status, described, listed, open_count = await topology()
            assert status == "UPDATING"
            assert described == listed == before
            assert open_count == 2
            clock.advance(ms=60_000)
            status, described, listed, open_count = await topology()
            assert status == "ACTIVE"
            assert described == listed
            assert len(described) == 6
            assert open_count == 4
            assert [s["ShardId"] for s in described[:2]] == [s["ShardId"] for s in before]
            assert all("EndingSequenceNumber" in s["SequenceNumberRange"] for s in described[:2])

            # A merge and a split: the same, each until its UPDATING ends.
            children = [
                s for s in described if "EndingSequenceNumber" not in s["SequenceNumberRange"]
            ]
            await call(
                kinesis.merge_shards,
                StreamName="growing",
                ShardToMerge=children[0]["ShardId"],
                AdjacentShardToMerge=children[1]["ShardId"],
            )
            status, during, listed, open_count = await topology()
            assert (status, during, listed, open_count) == ("UPDATING", described, described, 4)
            clock.advance(ms=60_000)
            status, merged, _, open_count = await topology()
            assert (status, len(merged), open_count) == ("ACTIVE", 7, 3)
            await call(
                kinesis.split_shard,
                StreamName="growing",
                ShardToSplit=merged[-1]["ShardId"],
                NewStartingHashKey=str(
                    (
                        int(merged[-1]["HashKeyRange"]["StartingHashKey"])
                        + int(merged[-1]["HashKeyRange"]["EndingHashKey"])
                    )
                    // 2
                ),
            )
            status, during, listed, open_count = await topology()
            assert (status, during, listed, open_count) == ("UPDATING", merged, merged, 3)
            clock.advance(ms=60_000)
            status, split, _, open_count = await topology()
            assert (status, len(split), open_count) == ("ACTIVE", 9, 4)
        finally:
            kinesis.close()


async def test_an_iterator_outlives_its_stream_as_awss_does(kinesis: Any) -> None:
    """kinesalite's recording of AWS: an iterator names its stream; once the stream is deleted
    and created again under that name, the iterator of a shard the new stream has reads that
    shard (200, no records yet, a next iterator), and that of a shard it lacks is not found."""
    await call(kinesis.create_stream, StreamName="reborn", ShardCount=2)
    iterators = [
        (
            await call(
                kinesis.get_shard_iterator,
                StreamName="reborn",
                ShardId=f"shardId-{index}",
                ShardIteratorType="LATEST",
            )
        )["ShardIterator"]
        for index in (0, 1)
    ]
    await call(kinesis.delete_stream, StreamName="reborn")
    # Deleted: each iterator's shard is reported, not the stream (kinesalite's recording).
    for index, iterator in enumerate(iterators):
        assert await error_of(kinesis.get_records, ShardIterator=iterator) == (
            "ResourceNotFoundException",
            f"Shard shardId-00000000000{index} in stream reborn under account {ACCOUNT} "
            "does not exist",
        )
    await call(kinesis.create_stream, StreamName="reborn", ShardCount=1)
    assert await error_of(kinesis.get_records, ShardIterator=iterators[1]) == (
        "ResourceNotFoundException",
        f"Shard shardId-000000000001 in stream reborn under account {ACCOUNT} does not exist",
    )
    answer = await call(kinesis.get_records, ShardIterator=iterators[0])
    assert answer["Records"] == []
    await call(kinesis.put_record, StreamName="reborn", Data=b"new", PartitionKey="k")
    # In double quotes, an iterator reads as itself (localstack's
    # test_get_records_shard_iterator_with_surrounding_quotes, validated against AWS).
    quoted = f'"{answer["NextShardIterator"]}"'
    answer = await call(kinesis.get_records, ShardIterator=quoted)
    assert [record["Data"] for record in answer["Records"]] == [b"new"]
    assert await error_of(kinesis.get_records, ShardIterator=quoted[:-1]) == (
        "InvalidArgumentException",
        "Invalid ShardIterator.",
    )
