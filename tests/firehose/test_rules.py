"""The pure rules of delivery streams: buffering, object keys, retries, destinations."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest

from broker.errors import ErrorCode, ShoalError
from broker.firehose import buffering, compression, destinations, object_keys
from broker.firehose.retry import RetrySchedule, schedule_for

MOMENT = datetime(2026, 3, 7, 9, 5, 3, tzinfo=UTC)


def test_size_or_interval_whichever_comes_first() -> None:
    hints = buffering.Hints(size_bytes=100, interval_ms=1_000)
    state = buffering.EMPTY
    assert buffering.flush_reason(state, hints, now_ms=10**9) is None  # empty: never
    state = state.add(60, now_ms=5_000)
    assert buffering.flush_due_ms(state, hints) == 6_000
    assert buffering.flush_reason(state, hints, now_ms=5_999) is None
    assert buffering.flush_reason(state, hints, now_ms=6_000) == "interval"
    state = state.add(40, now_ms=5_500)
    assert state.opened_ms == 5_000  # the interval counts from the buffer's first record
    assert buffering.flush_reason(state, hints, now_ms=5_500) == "size"


def test_hints_default_to_aws() -> None:
    assert buffering.hints_from({}) == buffering.Hints(
        size_bytes=5 * buffering.MIB, interval_ms=300_000
    )
    assert buffering.hints_from(
        {"BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}
    ) == buffering.Hints(size_bytes=buffering.MIB, interval_ms=0)


def test_default_key_layout() -> None:
    key = object_keys.object_key(
        prefix="logs/",
        delivery_stream_name="orders",
        version_id=3,
        moment=MOMENT,
        random_part="0f8fad5b-d9cb-469f-a165-70867728950e",
        extension=".gz",
    )
    assert key == (
        "logs/2026/03/07/09/orders-3-2026-03-07-09-05-03-0f8fad5b-d9cb-469f-a165-70867728950e.gz"
    )


def test_prefix_expressions_replace_the_default_layout() -> None:
    prefix = "y=!{timestamp:yyyy}/m=!{timestamp:MM}/!{firehose:random-string}/"
    expanded = object_keys.expand_prefix(prefix, MOMENT, random_string=lambda: "abc")
    assert expanded == "y=2026/m=03/abc/"
    errors = object_keys.expand_prefix(
        "err/!{firehose:error-output-type}/!{timestamp:yyyy-MM-dd'T'HH}/",
        MOMENT,
        random_string=lambda: "r",
        error_output_type="processing-failed",
    )
    assert errors == "err/processing-failed/2026-03-07T09/"
    with pytest.raises(object_keys.PrefixError):
        object_keys.check_prefix("!{partitionKeyFromQuery:customer}/")
    with pytest.raises(object_keys.PrefixError):
        object_keys.check_prefix("!{timestamp:QQQ}/")


def test_backoff_grows_is_capped_and_gives_up_after_the_duration() -> None:
    schedule = RetrySchedule(first_backoff_ms=100, max_backoff_ms=1_000, duration_ms=60_000)
    assert schedule.backoff_ms(1, jitter=0.0) == 50
    assert schedule.backoff_ms(2, jitter=0.999) < 200
    assert schedule.backoff_ms(20, jitter=0.5) <= 1_000
    assert not schedule.gives_up(first_failure_ms=0, now_ms=59_999)
    assert schedule.gives_up(first_failure_ms=0, now_ms=60_000)
    assert schedule_for({"DurationInSeconds": 30}, default_ms=1).duration_ms == 30_000


def _s3(**extra: object) -> dict[str, object]:
    return {"RoleARN": "arn:aws:iam::1:role/r", "BucketARN": "arn:aws:s3:::b", **extra}


def test_exactly_one_destination_and_s3_is_extended_s3() -> None:
    assert destinations.from_create({"S3DestinationConfiguration": _s3()}) == {
        "ExtendedS3DestinationConfiguration": _s3()
    }
    for request in (
        {},
        {"S3DestinationConfiguration": _s3(), "ExtendedS3DestinationConfiguration": _s3()},
    ):
        with pytest.raises(ShoalError) as raised:
            destinations.from_create(request)
        assert raised.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "configuration",
    [
        _s3(BucketARN="bucket"),
        _s3(BufferingHints={"SizeInMBs": 1}),
        _s3(Prefix="!{timestamp:yyyy}/"),  # expressions need an ErrorOutputPrefix
        _s3(DynamicPartitioningConfiguration={"Enabled": True}),
    ],
)
def test_configurations_firehose_refuses(configuration: dict[str, object]) -> None:
    with pytest.raises(ShoalError) as raised:
        destinations.check("ExtendedS3", configuration)
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT


def test_update_merges_the_same_type_and_replaces_another() -> None:
    current = {
        "ExtendedS3DestinationConfiguration": _s3(
            Prefix="a/", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 60}
        )
    }
    merged = destinations.merged_update(
        current, {"ExtendedS3DestinationUpdate": {"BufferingHints": {"IntervalInSeconds": 120}}}
    )
    assert merged["ExtendedS3DestinationConfiguration"]["Prefix"] == "a/"
    assert merged["ExtendedS3DestinationConfiguration"]["BufferingHints"] == {
        "SizeInMBs": 1,
        "IntervalInSeconds": 120,
    }
    with pytest.raises(ShoalError):
        destinations.merged_update(current, {"HttpEndpointDestinationUpdate": {"RoleARN": "r"}})


@pytest.mark.parametrize("compression_format", compression.FORMATS)
def test_every_compression_format_round_trips(compression_format: str) -> None:
    data = bytes(range(256)) * 3000  # several Hadoop-Snappy blocks
    packed = compression.compress(data, compression_format)
    assert compression.decompress(packed, compression_format) == data
    if compression_format == "GZIP":
        assert gzip.decompress(packed) == data  # what `zcat` and Athena read
