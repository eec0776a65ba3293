"""The lease table's rules (broker/consumers/leases.py).

Goal: every operation does what the KCL's DynamoDB lease refresher does, refusals are values
that leave the table untouched, and the counter fences a worker that lost its lease: it can
neither renew, release nor checkpoint again, even after taking the same lease back.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.consumers import leases
from broker.consumers.leases import (
    SHARD_END,
    TRIM_HORIZON,
    Checkpoint,
    CheckpointLease,
    CreateLeases,
    DeleteApplication,
    DeleteLease,
    Lease,
    LeaseError,
    LeaseRefusal,
    LeaseTable,
    NewLease,
    ReleaseLease,
    RenewLease,
    StealLease,
    TakeLease,
)
from broker.errors import ErrorCode

APP = "app"
STREAM = "s"
SEQ_1 = "49000000000000000000000000000000000001"
SEQ_2 = "49000000000000000000000000000000000002"


def table_with(*shards: NewLease, application: str = APP, stream: str = STREAM) -> LeaseTable:
    table, result = leases.create_leases(
        leases.EMPTY,
        leases.CreateLeases(application=application, stream_name=stream, leases=tuple(shards)),
    )
    assert not isinstance(result, LeaseError)
    return table


def ok(outcome: tuple[LeaseTable, Any]) -> tuple[LeaseTable, Any]:
    table, result = outcome
    assert not isinstance(result, LeaseError), result
    return table, result


def refused(outcome: tuple[LeaseTable, Any], before: LeaseTable, refusal: LeaseRefusal) -> str:
    table, result = outcome
    assert isinstance(result, LeaseError)
    assert result.refusal is refusal, result
    assert table is before, "a refusal leaves the table as it was"
    return result.message


def lease_of(table: LeaseTable, shard: str = "shard-0") -> Lease:
    lease = table.get(APP, STREAM, shard)
    assert lease is not None
    return lease


def take(table: LeaseTable, owner: str, shard: str = "shard-0") -> tuple[LeaseTable, Lease]:
    lease = lease_of(table, shard)
    return ok(
        leases.take(
            table,
            leases.TakeLease(
                application=APP,
                stream_name=STREAM,
                lease_key=shard,
                owner=owner,
                expected_owner=lease.lease_owner,
                expected_counter=lease.lease_counter,
            ),
        )
    )


def do_checkpoint(
    table: LeaseTable, owner: str, counter: int, value: Checkpoint, *, pending: bool = False
) -> tuple[LeaseTable, Lease | LeaseError]:
    return leases.checkpoint(
        table,
        leases.CheckpointLease(
            application=APP,
            stream_name=STREAM,
            lease_key="shard-0",
            owner=owner,
            expected_counter=counter,
            checkpoint=value,
            pending=pending,
        ),
    )


# --- Checkpoint values --------------------------------------------------------------------


def test_checkpoint_order_is_the_kcls() -> None:
    ordered = [
        Checkpoint("AT_TIMESTAMP"),
        TRIM_HORIZON,
        Checkpoint("LATEST"),
        Checkpoint("5"),
        Checkpoint("5", 3),
        Checkpoint(SEQ_1),
        SHARD_END,
    ]
    shuffled = [ordered[i] for i in (3, 6, 0, 5, 1, 4, 2)]
    assert sorted(shuffled) == ordered
    assert all(a < b for a, b in itertools.pairwise(ordered))


@pytest.mark.parametrize(
    ("sequence_number", "sub_sequence_number"),
    [
        ("", 0),
        ("12a", 0),
        ("-1", 0),
        ("1", -1),
        ("SHARD_END", 1),
        ("LATEST", 2),
        ("9" * 130, 0),
    ],  # the model: 129 digits at most
)
def test_invalid_checkpoints_are_refused(sequence_number: str, sub_sequence_number: int) -> None:
    with pytest.raises(ValueError, match=r"."):
        Checkpoint(sequence_number, sub_sequence_number)


# --- create_leases --------------------------------------------------------------------------


def test_create_leases_is_idempotent_and_links_children() -> None:
    table = table_with(NewLease(shard_id="shard-0"), NewLease(shard_id="shard-1"))
    assert lease_of(table).lease_owner is None
    assert lease_of(table).lease_counter == 0
    assert lease_of(table).checkpoint == TRIM_HORIZON
    table, _ = take(table, "w1")
    again, result = ok(
        leases.create_leases(
            table,
            leases.CreateLeases(
                application=APP,
                stream_name=STREAM,
                leases=(
                    NewLease(shard_id="shard-0", checkpoint=Checkpoint("LATEST")),
                    NewLease(shard_id="shard-2", parent_shard_ids=("shard-0", "shard-1")),
                ),
            ),
        )
    )
    existing, child = result
    assert existing.lease_owner == "w1", "an existing lease is returned as it is"
    assert existing.checkpoint == TRIM_HORIZON
    assert child.parent_shard_ids == ("shard-0", "shard-1")
    assert lease_of(again, "shard-0").child_shard_ids == ("shard-2",)
    assert lease_of(again, "shard-1").child_shard_ids == ("shard-2",)
    # Creating the same again changes nothing, not even the object.
    same, _ = ok(
        leases.create_leases(
            again,
            leases.CreateLeases(
                application=APP,
                stream_name=STREAM,
                leases=(NewLease(shard_id="shard-2", parent_shard_ids=("shard-0", "shard-1")),),
            ),
        )
    )
    assert same is again


@pytest.mark.parametrize(
    ("application", "stream", "new"),
    [
        ("bad name!", STREAM, NewLease(shard_id="shard-0")),
        (APP, "", NewLease(shard_id="shard-0")),
        (APP, STREAM, NewLease(shard_id="")),
        (APP, STREAM, NewLease(shard_id="a", parent_shard_ids=("a",))),
        (APP, STREAM, NewLease(shard_id="a", parent_shard_ids=("b", "c", "d"))),
    ],
)
def test_create_leases_refuses_bad_requests(application: str, stream: str, new: NewLease) -> None:
    refused(
        leases.create_leases(
            leases.EMPTY,
            leases.CreateLeases(application=application, stream_name=stream, leases=(new,)),
        ),
        leases.EMPTY,
        LeaseRefusal.INVALID,
    )


# --- take, steal, renew, release ------------------------------------------------------------


def test_take_sets_owner_and_moves_counter_and_switches() -> None:
    table = table_with(NewLease(shard_id="shard-0"))
    table, lease = take(table, "w1")
    assert (lease.lease_owner, lease.lease_counter) == ("w1", 1)
    assert lease.owner_switches_since_checkpoint == 1
    assert lease_of(table) == lease
    table, lease = take(table, "w2")  # an expired lease, in w2's eyes
    assert (lease.lease_owner, lease.lease_counter) == ("w2", 2)
    assert lease.owner_switches_since_checkpoint == 2


def test_take_refuses_a_stale_observation() -> None:
    table = table_with(NewLease(shard_id="shard-0"))
    table, _ = take(table, "w1")
    for expected_owner, expected_counter in [(None, 0), ("w1", 0), ("w2", 1), (None, 1)]:
        message = refused(
            leases.take(
                table,
                leases.TakeLease(
                    application=APP,
                    stream_name=STREAM,
                    lease_key="shard-0",
                    owner="w3",
                    expected_owner=expected_owner,
                    expected_counter=expected_counter,
                ),
            ),
            table,
            LeaseRefusal.CONFLICT,
        )
        assert "held by 'w1' at counter 1" in message


def test_steal_takes_a_live_lease_and_fences_the_victim() -> None:
    table = table_with(NewLease(shard_id="shard-0"))
    table, _ = take(table, "victim")
    table, stolen = ok(
        leases.steal(
            table,
            leases.StealLease(
                application=APP,
                stream_name=STREAM,
                lease_key="shard-0",
                owner="thief",
                expected_owner="victim",
                expected_counter=1,
            ),
        )
    )
    assert (stolen.lease_owner, stolen.lease_counter) == ("thief", 2)
    refused(
        leases.renew(
            table,
            leases.RenewLease(
                application=APP,
                stream_name=STREAM,
                lease_key="shard-0",
                owner="victim",
                expected_counter=1,
            ),
        ),
        table,
        LeaseRefusal.CONFLICT,
    )
    refused(
        leases.steal(
            table,
            leases.StealLease(
                application=APP,
                stream_name=STREAM,
                lease_key="shard-0",
                owner="thief",
                expected_owner="thief",
                expected_counter=2,
            ),
        ),
        table,
        LeaseRefusal.INVALID,
    )


def test_renew_moves_the_counter_only_for_the_owner_at_its_counter() -> None:
    table = table_with(NewLease(shard_id="shard-0"))
    table, _ = take(table, "w1")
    table, renewed = ok(
        leases.renew(
            table,
            leases.RenewLease(
                application=APP,
                stream_name=STREAM,
                lease_key="shard-0",
                owner="w1",
                expected_counter=1,
            ),
        )
    )
    assert (renewed.lease_owner, renewed.lease_counter) == ("w1", 2)
    assert renewed.owner_switches_since_checkpoint == 1, "a renew is not a switch"
    for owner, counter in [("w1", 1), ("w2", 2)]:
        refused(
            leases.renew(
                table,
                leases.RenewLease(
                    application=APP,
                    stream_name=STREAM,
                    lease_key="shard-0",
                    owner=owner,
                    expected_counter=counter,
                ),
            ),
            table,
            LeaseRefusal.CONFLICT,
        )


def test_release_hands_over_without_expiry() -> None:
    table = table_with(NewLease(shard_id="shard-0"))
    table, _ = take(table, "w1")
    table, released = ok(
        leases.release(
            table,
            leases.ReleaseLease(
                application=APP,
                stream_name=STREAM,
                lease_key="shard-0",
                owner="w1",
                expected_counter=1,
            ),
        )
    )
    assert (released.lease_owner, released.lease_counter) == (None, 2)
    refused(
        leases.release(
            table,
            leases.ReleaseLease(
                application=APP,
                stream_name=STREAM,
                lease_key="shard-0",
                owner="w1",
                expected_counter=2,
            ),
        ),
        table,
        LeaseRefusal.CONFLICT,
    )
    table, lease = take(table, "w2")
    assert (lease.lease_owner, lease.lease_counter) == ("w2", 3)


def test_operations_on_a_missing_lease_are_not_found() -> None:
    table = table_with(NewLease(shard_id="shard-0"))
    refused(
        leases.renew(
            table,
            leases.RenewLease(
                application=APP,
                stream_name=STREAM,
                lease_key="shard-9",
                owner="w1",
                expected_counter=0,
            ),
        ),
        table,
        LeaseRefusal.NOT_FOUND,
    )
    refused(
        leases.take(
            table,
            leases.TakeLease(
                application="other",
                stream_name=STREAM,
                lease_key="shard-0",
                owner="w1",
                expected_owner=None,
                expected_counter=0,
            ),
        ),
        table,
        LeaseRefusal.NOT_FOUND,
    )


def test_refusals_map_to_the_documented_error_codes() -> None:
    assert LeaseRefusal.CONFLICT.error_code is ErrorCode.RESOURCE_IN_USE
    assert LeaseRefusal.NOT_FOUND.error_code is ErrorCode.RESOURCE_NOT_FOUND
    assert LeaseRefusal.INVALID.error_code is ErrorCode.INVALID_ARGUMENT


# --- checkpoint -----------------------------------------------------------------------------


def test_checkpoint_by_the_owner() -> None:
    table = table_with(NewLease(shard_id="shard-0"))
    table, lease = take(table, "w1")
    table, pending = ok(do_checkpoint(table, "w1", 1, Checkpoint(SEQ_2, 4), pending=True))
    assert pending.pending_checkpoint == Checkpoint(SEQ_2, 4)
    assert pending.checkpoint == TRIM_HORIZON
    table, done = ok(do_checkpoint(table, "w1", 1, Checkpoint(SEQ_1, 2)))
    assert done.checkpoint == Checkpoint(SEQ_1, 2)
    assert done.pending_checkpoint is None
    assert done.owner_switches_since_checkpoint == 0
    assert done.lease_counter == lease.lease_counter, "a checkpoint does not move the counter"
    message = refused(
        do_checkpoint(table, "w1", 1, Checkpoint(SEQ_1, 1)), table, LeaseRefusal.INVALID
    )
    assert "below" in message
    table, _ = ok(do_checkpoint(table, "w1", 1, SHARD_END))
    refused(do_checkpoint(table, "w1", 1, Checkpoint(SEQ_2)), table, LeaseRefusal.INVALID)
    ok(do_checkpoint(table, "w1", 1, SHARD_END))


def test_a_zombie_worker_cannot_checkpoint() -> None:
    """w1 stalls; w2 sees the counter stand still, takes the lease and checkpoints. w1 wakes
    up: its checkpoint, renew and release are refused. Even after w1 takes the lease back, a
    checkpoint made with its old counter (its old lease period) is refused."""
    table = table_with(NewLease(shard_id="shard-0"))
    table, old = take(table, "w1")
    table, _ = ok(do_checkpoint(table, "w1", old.lease_counter, Checkpoint(SEQ_1)))
    table, new = take(table, "w2")
    table, _ = ok(do_checkpoint(table, "w2", new.lease_counter, Checkpoint(SEQ_2)))
    refused(
        do_checkpoint(table, "w1", old.lease_counter, Checkpoint(SEQ_2, 7)),
        table,
        LeaseRefusal.CONFLICT,
    )
    refused(
        leases.release(
            table,
            leases.ReleaseLease(
                application=APP,
                stream_name=STREAM,
                lease_key="shard-0",
                owner="w1",
                expected_counter=old.lease_counter,
            ),
        ),
        table,
        LeaseRefusal.CONFLICT,
    )
    table, again = take(table, "w1")
    refused(
        do_checkpoint(table, "w1", old.lease_counter, Checkpoint(SEQ_2, 7)),
        table,
        LeaseRefusal.CONFLICT,
    )
    ok(do_checkpoint(table, "w1", again.lease_counter, Checkpoint(SEQ_2, 7)))
    assert lease_of(table).checkpoint == Checkpoint(SEQ_2)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["take", "renew", "checkpoint"]), st.sampled_from(["a", "b", "c"])
        ),
        max_size=60,
    )
)
def test_one_checkpointer_per_lease_period(steps: list[tuple[str, str]]) -> None:
    """Random takes, renews and checkpoints by three workers, each acting on what it last saw:
    a checkpoint succeeds only for the worker that took the lease last, with the counter it
    last got back; the counter never goes back; each lease period has one owner."""
    table = table_with(NewLease(shard_id="shard-0"))
    seen: dict[str, int] = {}  # worker -> the counter it got from its last successful call
    position = 0
    periods: dict[int, str] = {}  # counter at take -> owner
    for action, worker in steps:
        before = lease_of(table)
        if action == "take":
            table, result = leases.take(
                table,
                leases.TakeLease(
                    application=APP,
                    stream_name=STREAM,
                    lease_key="shard-0",
                    owner=worker,
                    expected_owner=before.lease_owner,
                    expected_counter=before.lease_counter,
                ),
            )
        elif action == "renew":
            table, result = leases.renew(
                table,
                leases.RenewLease(
                    application=APP,
                    stream_name=STREAM,
                    lease_key="shard-0",
                    owner=worker,
                    expected_counter=seen.get(worker, -1),
                ),
            )
        else:
            position += 1
            table, result = do_checkpoint(
                table, worker, seen.get(worker, -1), Checkpoint(str(position))
            )
        holder_is_worker = before.lease_owner == worker and seen.get(worker) == before.lease_counter
        if action == "take":
            assert isinstance(result, Lease)
            periods[result.lease_counter] = worker
        else:
            assert isinstance(result, Lease) == holder_is_worker
        if isinstance(result, Lease):
            seen[worker] = result.lease_counter
            assert result.lease_counter >= before.lease_counter
        if action == "checkpoint" and isinstance(result, Lease):
            assert result.lease_owner == worker
        assert lease_of(table).lease_counter >= before.lease_counter


# --- delete, list, parents_done -------------------------------------------------------------


def test_delete_application_and_list() -> None:
    table = table_with(NewLease(shard_id="shard-0"), NewLease(shard_id="shard-1"))
    table = leases.create_leases(
        table,
        leases.CreateLeases(
            application=APP, stream_name="t", leases=(NewLease(shard_id="shard-0"),)
        ),
    )[0]
    table = leases.create_leases(
        table,
        leases.CreateLeases(
            application="other", stream_name=STREAM, leases=(NewLease(shard_id="shard-0"),)
        ),
    )[0]
    assert leases.list_applications(table) == ("app", "other")
    listed = leases.list_leases(table, application=APP)
    assert [(lease.stream_name, lease.lease_key) for lease in listed] == [
        ("s", "shard-0"),
        ("s", "shard-1"),
        ("t", "shard-0"),
    ]
    assert len(leases.list_leases(table, application=APP, stream_name="t")) == 1
    assert leases.list_leases(table, application="nobody") == ()
    after, count = ok(leases.delete_application(table, leases.DeleteApplication(application=APP)))
    assert count == 3
    assert leases.list_applications(after) == ("other",)
    assert table.lease_count() == 4, "the old table is a snapshot"
    refused(
        leases.delete_application(after, leases.DeleteApplication(application=APP)),
        after,
        LeaseRefusal.NOT_FOUND,
    )
    assert after.without_stream(STREAM) == leases.EMPTY


def test_delete_lease_only_when_finished() -> None:
    table = table_with(NewLease(shard_id="shard-0"))
    refused(
        leases.delete_lease(
            table, leases.DeleteLease(application=APP, stream_name=STREAM, lease_key="shard-0")
        ),
        table,
        LeaseRefusal.INVALID,
    )
    table, lease = take(table, "w1")
    table, _ = ok(do_checkpoint(table, "w1", lease.lease_counter, SHARD_END))
    table, deleted = ok(
        leases.delete_lease(
            table, leases.DeleteLease(application=APP, stream_name=STREAM, lease_key="shard-0")
        )
    )
    assert deleted.checkpoint == SHARD_END
    assert table == leases.EMPTY


def test_parents_done() -> None:
    """A split child waits for its parent, a merge child for both; a parent without a lease
    (trimmed, or never leased) does not block."""
    table = table_with(
        NewLease(shard_id="shard-0"),
        NewLease(shard_id="shard-1"),
        NewLease(shard_id="shard-2", parent_shard_ids=("shard-0", "shard-1")),
        NewLease(shard_id="shard-3", parent_shard_ids=("shard-gone",)),
    )
    assert leases.parents_done(table, APP, STREAM, "shard-0")
    assert leases.parents_done(table, APP, STREAM, "shard-3")
    assert leases.parents_done(table, APP, STREAM, "shard-unknown")
    assert not leases.parents_done(table, APP, STREAM, "shard-2")
    for shard, expected in [("shard-0", False), ("shard-1", True)]:
        table, lease = take(table, "w1", shard)
        table, _ = ok(
            leases.checkpoint(
                table,
                leases.CheckpointLease(
                    application=APP,
                    stream_name=STREAM,
                    lease_key=shard,
                    owner="w1",
                    expected_counter=lease.lease_counter,
                    checkpoint=SHARD_END,
                ),
            )
        )
        assert leases.parents_done(table, APP, STREAM, "shard-2") is expected


def test_operations_as_values() -> None:
    """`apply_lease_operation` is what the state machine calls: one value per command."""
    table = leases.EMPTY
    operations: list[leases.LeaseOperation] = [
        CreateLeases(application=APP, stream_name=STREAM, leases=(NewLease(shard_id="shard-0"),)),
        TakeLease(
            application=APP,
            stream_name=STREAM,
            lease_key="shard-0",
            owner="w1",
            expected_owner=None,
            expected_counter=0,
        ),
        RenewLease(
            application=APP, stream_name=STREAM, lease_key="shard-0", owner="w1", expected_counter=1
        ),
        StealLease(
            application=APP,
            stream_name=STREAM,
            lease_key="shard-0",
            owner="w2",
            expected_owner="w1",
            expected_counter=2,
        ),
        CheckpointLease(
            application=APP,
            stream_name=STREAM,
            lease_key="shard-0",
            owner="w2",
            expected_counter=3,
            checkpoint=SHARD_END,
        ),
        ReleaseLease(
            application=APP, stream_name=STREAM, lease_key="shard-0", owner="w2", expected_counter=3
        ),
        DeleteLease(application=APP, stream_name=STREAM, lease_key="shard-0"),
    ]
    for operation in operations:
        table, result = leases.apply_lease_operation(table, operation)
        assert not isinstance(result, LeaseError), (operation, result)
    assert table.lease_count() == 0
    table, result = leases.apply_lease_operation(table, DeleteApplication(application=APP))
    assert isinstance(result, LeaseError)
    assert result.refusal is LeaseRefusal.NOT_FOUND


def test_plain_encoding_round_trips() -> None:
    table = table_with(
        NewLease(shard_id="shard-0"),
        NewLease(
            shard_id="shard-1", parent_shard_ids=("shard-0",), checkpoint=Checkpoint("LATEST")
        ),
    )
    table, lease = take(table, "w1")
    table, _ = ok(
        do_checkpoint(table, "w1", lease.lease_counter, Checkpoint(SEQ_1, 3), pending=True)
    )
    table = table_with(NewLease(shard_id="x"), application="other").with_leases(
        leases.list_leases(table, application=APP)
    )
    encoded = leases.table_to_list(table)
    assert json.loads(json.dumps(encoded)) == encoded
    assert leases.table_from_list(encoded) == table
