"""ValidationException texts word for word, as AWS sends them (recorded against the real
service by kinesalite's tests, adjusted to the current model's patterns and enums): the member
order, each member's constraints in AWS's order (pattern, also on empty strings, then length,
then enum), Java's renderings of values, collections' strings reported together, ten at most."""

from __future__ import annotations

from typing import Any

import pytest

from broker.errors import ShoalError
from broker.gateway.validation import validate_request

NAME_PATTERN = "[a-zA-Z0-9_.-]+"


def message_of(operation: str, request: dict[str, Any]) -> str:
    with pytest.raises(ShoalError) as caught:
        validate_request(operation, request)
    assert caught.value.code.kinesis_name == "ValidationException"
    return caught.value.message


def violation(value: str, path: str, constraint: str) -> str:
    return f"Value {value} at '{path}' failed to satisfy constraint: {constraint}"


def test_missing_members_in_aws_order() -> None:
    assert message_of("GetShardIterator", {}) == (
        "2 validation errors detected: "
        + violation("null", "shardId", "Member must not be null")
        + "; "
        + violation("null", "shardIteratorType", "Member must not be null")
    )


def test_list_tags_for_stream_reports_limit_first_as_aws_does() -> None:
    request = {"StreamName": "", "ExclusiveStartTagKey": "", "Limit": 0}
    assert message_of("ListTagsForStream", request) == "4 validation errors detected: " + "; ".join(
        [
            violation("'0'", "limit", "Member must have value greater than or equal to 1"),
            violation(
                "''", "exclusiveStartTagKey", "Member must have length greater than or equal to 1"
            ),
            violation(
                "''",
                "streamName",
                f"Member must satisfy regular expression pattern: {NAME_PATTERN}",
            ),
            violation("''", "streamName", "Member must have length greater than or equal to 1"),
        ]
    )


def test_get_records_and_split_shard_report_members_in_awss_recorded_order() -> None:
    # kinesalite's recordings: GetRecords says `limit` first; SplitShard puts `streamName`
    # between its own two members.
    long = "a" * 513
    assert message_of("GetRecords", {"ShardIterator": long, "Limit": 100000}) == (
        "2 validation errors detected: "
        + violation("'100000'", "limit", "Member must have value less than or equal to 10000")
        + "; "
        + violation(
            f"'{long}'", "shardIterator", "Member must have length less than or equal to 512"
        )
    )
    name = "a" * 129
    request = {"StreamName": name, "ShardToSplit": name, "NewStartingHashKey": "0"}
    assert message_of("SplitShard", request) == (
        "2 validation errors detected: "
        + violation(f"'{name}'", "streamName", "Member must have length less than or equal to 128")
        + "; "
        + violation(
            f"'{name}'", "shardToSplit", "Member must have length less than or equal to 128"
        )
    )


def test_empty_strings_fail_their_pattern_then_their_length_and_stream_name_comes_last() -> None:
    request = {
        "StreamName": "",
        "ShardIteratorType": "",
        "ShardId": "",
        "StartingSequenceNumber": "",
    }
    enum = "[AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]"
    assert message_of("GetShardIterator", request) == "6 validation errors detected: " + "; ".join(
        [
            violation(
                "''", "shardId", f"Member must satisfy regular expression pattern: {NAME_PATTERN}"
            ),
            violation("''", "shardId", "Member must have length greater than or equal to 1"),
            violation("''", "shardIteratorType", f"Member must satisfy enum value set: {enum}"),
            violation(
                "''",
                "startingSequenceNumber",
                "Member must satisfy regular expression pattern: ^(0|([1-9]\\d{0,128}))$",
            ),
            violation(
                "''",
                "streamName",
                f"Member must satisfy regular expression pattern: {NAME_PATTERN}",
            ),
            violation("''", "streamName", "Member must have length greater than or equal to 1"),
        ]
    )


def test_maps_render_as_java_and_report_their_strings_together() -> None:
    assert message_of("AddTagsToStream", {"StreamName": "", "Tags": {}}) == (
        "3 validation errors detected: "
        + violation("'{}'", "tags", "Member must have length greater than or equal to 1")
        + "; "
        + violation(
            "''", "streamName", f"Member must satisfy regular expression pattern: {NAME_PATTERN}"
        )
        + "; "
        + violation("''", "streamName", "Member must have length greater than or equal to 1")
    )
    long_value = "v" * 257
    assert message_of("AddTagsToStream", {"StreamName": "s", "Tags": {"k": long_value}}) == (
        "1 validation error detected: "
        + violation(
            f"'{{k={long_value}}}'",
            "tags",
            "Map value must satisfy constraint: [Member must have length less than or equal to "
            "256, Member must have length greater than or equal to 0]",
        )
    )


def test_lists_of_strings_report_their_members_together() -> None:
    assert message_of("RemoveTagsFromStream", {"StreamName": "s", "TagKeys": ["a", ""]}) == (
        "1 validation error detected: "
        + violation(
            "'[a, ]'",
            "tagKeys",
            "Member must satisfy constraint: [Member must have length less than or equal to "
            "128, Member must have length greater than or equal to 1]",
        )
    )


def test_blobs_and_numbers_render_as_aws_renders_them() -> None:
    message = message_of(
        "PutRecord", {"StreamName": "s", "PartitionKey": "k", "Data": b"x" * (10 * 1024 * 1024 + 1)}
    )
    assert message == "1 validation error detected: " + violation(
        "'java.nio.HeapByteBuffer[pos=0 lim=10485761 cap=10485761]'",
        "data",
        "Member must have length less than or equal to 10485760",
    )
    assert message_of("CreateStream", {"StreamName": "s", "ShardCount": 0}) == (
        "1 validation error detected: "
        + violation("'0'", "shardCount", "Member must have value greater than or equal to 1")
    )


def test_at_most_ten_violations_are_counted_and_listed() -> None:
    records = [{"Data": b"", "PartitionKey": ""} for _ in range(12)]
    message = message_of("PutRecords", {"StreamName": "s", "Records": records})
    assert message.startswith("10 validation errors detected: ")
    assert message.count("failed to satisfy constraint") == 10
    assert "'records.10.member.partitionKey'" in message
    assert "'records.11.member.partitionKey'" not in message
