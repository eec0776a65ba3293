"""A put's answer prepared while its records are written (`records._Answer`, issue 18): taken as
it is when the append commits with the outcome it was prepared for, made again for any other;
the same entries either way, for a whole put and for one shard's part of it."""

from __future__ import annotations

from typing import Any

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.service import records
from broker.service.shards import AppendResult
from broker.streams.sequence_numbers import sequence_numbers_for
from broker.types import Offset
from broker.wire.put_results import written_entries
from tests.service.test_put_entries import SHARD, STREAM

ARRIVAL_MS = 1_700_000_000_123
FAILURE = ShoalError(ErrorCode.INTERNAL_FAILURE, error_messages.INTERNAL_SERVICE_FAILURE)
NO_CONTEXT: Any = None  # read only for a throttled record's refusal


def _expected(first_offset: int, count: int) -> list[dict[str, str]]:
    numbers = sequence_numbers_for(SHARD, Offset(first_offset), count, arrival_ms=ARRIVAL_MS)
    return [{"ShardId": SHARD.shard_id, "SequenceNumber": number} for number in numbers]


def test_a_prepared_answer_is_taken_for_its_outcome() -> None:
    answer = records._Answer(NO_CONTEXT, STREAM, SHARD, range(3), 3)
    outcome = AppendResult(first_offset=Offset(5), arrival_ms=ARRIVAL_MS)
    answer.prepare(outcome)
    prepared = answer._prepared
    assert prepared is not None
    results = records._Results(3, FAILURE)
    answer.settle(outcome, results)
    assert results.written == _expected(5, 3) and results.failed == []
    assert all(a is b for a, b in zip(results.written, prepared[1].written, strict=True))
    # The whole put, written by one shard: its columns for the door (`WrittenRun`).
    numbers = [entry["SequenceNumber"] for entry in _expected(5, 3)]
    assert results.run == (SHARD.shard_id, numbers)


def test_an_answer_prepared_for_another_outcome_is_made_again() -> None:
    answer = records._Answer(NO_CONTEXT, STREAM, SHARD, range(2), 2)
    answer.prepare(AppendResult(first_offset=Offset(5), arrival_ms=ARRIVAL_MS))
    results = records._Results(2, FAILURE)
    answer.settle(AppendResult(first_offset=Offset(9), arrival_ms=ARRIVAL_MS), results)
    assert results.written == _expected(9, 2)


def test_one_shards_part_of_a_put_fills_its_positions_only() -> None:
    for prepare in (True, False):
        answer = records._Answer(NO_CONTEXT, STREAM, SHARD, [0, 2], 3)
        outcome = AppendResult(first_offset=Offset(7), arrival_ms=ARRIVAL_MS)
        if prepare:
            answer.prepare(outcome)
        results = records._Results(3, FAILURE)
        answer.settle(outcome, results)
        first, second = _expected(7, 2)
        assert results.written == [first, FAILURE, second]
        assert results.failed == [] and results.run is None


def test_a_grpc_put_has_its_result_entries_written_while_it_is_fsynced() -> None:
    """A gRPC call's whole put (`door_bytes`) gets the door's bytes of its result entries made
    in `prepare` (during the fsync), the same `wire.put_results` writes, and kept by `settle`;
    any other put, or an answer made again at the commit, leaves them to the door."""
    outcome = AppendResult(first_offset=Offset(5), arrival_ms=ARRIVAL_MS)
    numbers = [entry["SequenceNumber"] for entry in _expected(5, 3)]
    for door_bytes, prepared_for in ((True, outcome), (False, outcome), (True, None)):
        answer = records._Answer(NO_CONTEXT, STREAM, SHARD, range(3), 3, door_bytes=door_bytes)
        if prepared_for is not None:
            answer.prepare(prepared_for)
        results = records._Results(3, FAILURE)
        answer.settle(outcome, results)
        assert results.run == (SHARD.shard_id, numbers)
        written_ahead = door_bytes and prepared_for is not None
        expected = written_entries(SHARD.shard_id, numbers) if written_ahead else None
        assert results.run_bytes == expected
    assert expected is None and written_entries(SHARD.shard_id, numbers) is not None
