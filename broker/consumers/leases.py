"""The consumer lease table: KCL lease semantics as pure functions over an immutable table.

One lease per (application, stream, shard), as the KCL keeps one DynamoDB row per shard
(../shared/REFERENCE.md §2.1). The names are the KCL's: `lease_key` (the shard id),
`lease_owner` (a worker id, or None), `lease_counter`, `checkpoint` (+ sub-sequence number),
`pending_checkpoint`, `owner_switches_since_checkpoint`, parent and child shard ids.

Every operation is a value (`TakeLease`, `RenewLease`, ...: the lease API, which the clients and
the state machine's commands take too) and a function `op(table, value) -> (new table, result |
LeaseError)`: deterministic, no clock, no randomness, no I/O, so the metadata state machine can
apply it on every replica and get the same image. On an error the table comes back unchanged
(the same object).

**Fencing.** take, steal, renew, release and checkpoint are compare-and-set on the lease's
`lease_counter` and `lease_owner` (take and steal: the owner and counter the taker observed;
renew, release and checkpoint: the caller must be the owner and know the current counter).
take, steal, renew and release increment the counter; so a worker that lost its lease (someone
took it, which moved the counter) can no longer renew, release or checkpoint it, even if it
later takes the same lease again with a newer counter. Unlike the KCL's `updateLease`, a
checkpoint does **not** increment the counter: it is fenced by it all the same, and one worker's
renewer and checkpointer then never invalidate each other's expected counter. Liveness is what
renew is for.

**Outcomes.** A refusal is a `LeaseError` value with a `LeaseRefusal` reason the worker reacts to:

* `CONFLICT`: the compare-and-set failed: the lease's owner or counter is not what the caller
  expected. For renew, release and checkpoint it means *the lease is lost*: stop processing the
  shard and never checkpoint it again. For take and steal it means someone else moved first:
  re-read and decide again. On the wire: ResourceInUseException (`ErrorCode.RESOURCE_IN_USE`);
  the lease API has no other use for that code, so a client maps it back to CONFLICT.
* `NOT_FOUND`: no such application, stream or lease (ResourceNotFoundException). For renew,
  release and checkpoint the lease is lost too (deleted).
* `INVALID`: the request cannot be right whatever the state (a checkpoint moving backwards or
  out of SHARD_END, a steal from oneself, a bad name): InvalidArgumentException. A bug in the
  caller, not a race.

**Expiry is not judged here.** No operation compares times: a worker counts a lease as expired
when *it* has not seen the counter change for `failover_ms` on its own monotonic clock
(`balancing.py`), then takes it with the counter it observed. If the owner renewed meanwhile,
the take fails with CONFLICT. That is the KCL's trick; it needs no synchronized clocks.

`parents_done` is the KCL's BlockOnParentShardTask rule: a child shard may be processed once
every parent's checkpoint is SHARD_END, a parent without a lease counting as trimmed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, assert_never

from broker import error_messages
from broker.errors import ErrorCode

# --- Limits (candidates for broker/limits.py) ----------------------------------------------
# An application name is the KCL's table name: DynamoDB's table-name rules. Outside the
# node's default namespace, applications and streams are keyed `<account>/<region>/<name>`
# (`streams/namespaces.py`; the lease service maps names to keys and back).
_NAMESPACE = r"(?:[0-9]{12}/[a-z0-9-]{1,32}/)?"
APPLICATION_NAME_PATTERN = re.compile(_NAMESPACE + r"[a-zA-Z0-9_.-]{1,255}")
WORKER_ID_CHARS_MAX = 256  # the KCL uses host:uuid; anything printable of bounded length
STREAM_NAME_PATTERN = re.compile(_NAMESPACE + r"[a-zA-Z0-9_.-]{1,128}")  # Kinesis's StreamName
SHARD_ID_CHARS_MAX = 128  # Kinesis's ShardId
PARENT_SHARDS_MAX = 2  # a split child has one parent, a merge child two
LEASES_PER_REQUEST_MAX = 10_000  # create_leases: a whole stream at its largest

_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The KCL's ExtendedSequenceNumber: a sequence number or a sentinel, and a sub-sequence.

    Ordering is the KCL's (and `broker.client.kpl.ExtendedSequenceNumber`'s, which the worker
    converts to and from): AT_TIMESTAMP < TRIM_HORIZON < LATEST < every sequence number (by
    integer value, then sub-sequence number) < SHARD_END. Sentinels carry sub-sequence 0.
    Raises ValueError for anything else, so a decoded wire value is valid or refused.
    """

    sequence_number: str
    sub_sequence_number: int = 0
    _sort_key: tuple[int, int, int] = field(init=False, repr=False, compare=False)

    SENTINELS: ClassVar[dict[str, int]] = {"AT_TIMESTAMP": -3, "TRIM_HORIZON": -2, "LATEST": -1}
    SHARD_END_NAME: ClassVar[str] = "SHARD_END"

    def __post_init__(self) -> None:
        if self.sub_sequence_number < 0:
            raise ValueError("a sub-sequence number is not negative")
        name = self.sequence_number
        if name == self.SHARD_END_NAME or name in self.SENTINELS:
            if self.sub_sequence_number != 0:
                raise ValueError(f"the sentinel {name} has no sub-sequence number")
            key = (1, 0, 0) if name == self.SHARD_END_NAME else (0, self.SENTINELS[name], 0)
        elif _DIGITS.fullmatch(name) is not None and len(name) <= 129:  # the model's limit
            key = (0, int(name), self.sub_sequence_number)
        else:
            raise ValueError(f"expected a sequence number or a sentinel checkpoint, got {name!r}")
        object.__setattr__(self, "_sort_key", key)

    @property
    def is_sentinel(self) -> bool:
        return self.sequence_number == self.SHARD_END_NAME or self.sequence_number in self.SENTINELS

    @property
    def is_shard_end(self) -> bool:
        return self.sequence_number == self.SHARD_END_NAME

    def __lt__(self, other: Checkpoint) -> bool:
        return self._sort_key < other._sort_key

    def __le__(self, other: Checkpoint) -> bool:
        return self._sort_key <= other._sort_key

    def __gt__(self, other: Checkpoint) -> bool:
        return self._sort_key > other._sort_key

    def __ge__(self, other: Checkpoint) -> bool:
        return self._sort_key >= other._sort_key


TRIM_HORIZON = Checkpoint("TRIM_HORIZON")
LATEST = Checkpoint("LATEST")
AT_TIMESTAMP = Checkpoint("AT_TIMESTAMP")
SHARD_END = Checkpoint("SHARD_END")


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """One shard's lease for one application: a row of the KCL's lease table.

    `lease_counter` starts at 0 and only grows. `owner_switches_since_checkpoint` counts takes
    since the last (final, not pending) checkpoint. `child_shard_ids` is filled in when the
    children's leases are created.
    """

    application: str
    stream_name: str
    lease_key: str  # the shard id
    lease_owner: str | None
    lease_counter: int
    checkpoint: Checkpoint
    pending_checkpoint: Checkpoint | None = None
    owner_switches_since_checkpoint: int = 0
    parent_shard_ids: tuple[str, ...] = ()
    child_shard_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.lease_counter >= 0
        assert self.owner_switches_since_checkpoint >= 0
        assert len(self.parent_shard_ids) <= PARENT_SHARDS_MAX
        assert self.lease_key not in self.parent_shard_ids
        if self.pending_checkpoint is not None:
            assert self.pending_checkpoint >= self.checkpoint

    @property
    def shard_id(self) -> str:
        return self.lease_key


@dataclass(frozen=True, slots=True, kw_only=True)
class NewLease:
    """A shard to lease: its id, its parents (lineage), and where processing starts."""

    shard_id: str
    parent_shard_ids: tuple[str, ...] = ()
    checkpoint: Checkpoint = TRIM_HORIZON


class LeaseRefusal(enum.Enum):
    """Why an operation was refused; see the module docstring for how a worker reacts."""

    CONFLICT = ErrorCode.RESOURCE_IN_USE
    NOT_FOUND = ErrorCode.RESOURCE_NOT_FOUND
    INVALID = ErrorCode.INVALID_ARGUMENT

    @property
    def error_code(self) -> ErrorCode:
        code: ErrorCode = self.value
        return code


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseError:
    """A refused lease operation, as a value (module docstring: Outcomes)."""

    refusal: LeaseRefusal
    message: str

    @property
    def error_code(self) -> ErrorCode:
        return self.refusal.error_code


_StreamLeases = Mapping[str, Lease]
_ApplicationLeases = Mapping[str, _StreamLeases]


@dataclass(frozen=True, slots=True)
class LeaseTable:
    """Every lease: application -> stream -> lease_key -> Lease. Immutable; the helpers copy
    only the path they change (copy-on-write), so an old table stays valid as a snapshot.

    A cluster view: it lives in the metadata image and changes only through the operations
    below, applied by the state machine. Safe to share between threads (nothing mutates it).
    """

    applications: Mapping[str, _ApplicationLeases] = field(default_factory=dict)

    def get(self, application: str, stream_name: str, lease_key: str) -> Lease | None:
        return self.applications.get(application, {}).get(stream_name, {}).get(lease_key)

    def stream_leases(self, application: str, stream_name: str) -> _StreamLeases:
        return self.applications.get(application, {}).get(stream_name, {})

    def application_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.applications))

    def stream_names(self, application: str) -> tuple[str, ...]:
        return tuple(sorted(self.applications.get(application, {})))

    def lease_count(self) -> int:
        return sum(len(s) for a in self.applications.values() for s in a.values())

    def with_leases(self, leases: Iterable[Lease]) -> LeaseTable:
        """This table with `leases` added or replaced (one copy of each path touched)."""
        applications = dict(self.applications)
        copied: dict[tuple[str, str], dict[str, Lease]] = {}
        for lease in leases:
            key = (lease.application, lease.stream_name)
            stream = copied.get(key)
            if stream is None:
                streams = dict(applications.get(lease.application, {}))
                stream = dict(streams.get(lease.stream_name, {}))
                streams[lease.stream_name] = stream
                applications[lease.application] = streams
                copied[key] = stream
            stream[lease.lease_key] = lease
        return LeaseTable(applications)

    def with_lease(self, lease: Lease) -> LeaseTable:
        return self.with_leases((lease,))

    def without_lease(self, application: str, stream_name: str, lease_key: str) -> LeaseTable:
        stream = dict(self.stream_leases(application, stream_name))
        if stream.pop(lease_key, None) is None:
            return self
        return self._with_stream(application, stream_name, stream)

    def without_application(self, application: str) -> LeaseTable:
        if application not in self.applications:
            return self
        applications = dict(self.applications)
        del applications[application]
        return LeaseTable(applications)

    def without_stream(self, stream_name: str) -> LeaseTable:
        """Drop every application's leases on `stream_name` (for DeleteStream)."""
        if not any(stream_name in streams for streams in self.applications.values()):
            return self
        applications: dict[str, _ApplicationLeases] = {}
        for application, streams in self.applications.items():
            kept = {name: leases for name, leases in streams.items() if name != stream_name}
            if kept:
                applications[application] = kept
        return LeaseTable(applications)

    def _with_stream(
        self, application: str, stream_name: str, stream: Mapping[str, Lease]
    ) -> LeaseTable:
        applications = dict(self.applications)
        streams = dict(applications.get(application, {}))
        if stream:
            streams[stream_name] = stream
        else:
            streams.pop(stream_name, None)
        if streams:
            applications[application] = streams
        else:
            applications.pop(application, None)
        return LeaseTable(applications)


EMPTY = LeaseTable()

# --- Operations as values: the lease API ------------------------------------------------------
# One value per operation, used everywhere an operation is named: the core functions below take
# it, the state machine's commands carry it, and every lease client (gRPC, in-process, in
# memory) takes it, so the parameters of an operation are written down once.


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateLeases:
    """Create a lease for each of `leases` that has none (`create_leases`)."""

    application: str
    stream_name: str
    leases: tuple[NewLease, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TakeLease:
    """`owner` takes the lease it observed held by `expected_owner` at `expected_counter`."""

    application: str
    stream_name: str
    lease_key: str
    owner: str
    expected_owner: str | None
    expected_counter: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StealLease:
    """`owner` takes a lease a live worker (`expected_owner`) holds, for balancing."""

    application: str
    stream_name: str
    lease_key: str
    owner: str
    expected_owner: str
    expected_counter: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewLease:
    """`owner`'s heartbeat on a lease it holds at `expected_counter`."""

    application: str
    stream_name: str
    lease_key: str
    owner: str
    expected_counter: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseLease:
    """`owner` gives up a lease it holds at `expected_counter`."""

    application: str
    stream_name: str
    lease_key: str
    owner: str
    expected_counter: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointLease:
    """`owner` records `checkpoint` (or, `pending`, prepares it) on a lease it holds."""

    application: str
    stream_name: str
    lease_key: str
    owner: str
    expected_counter: int
    checkpoint: Checkpoint
    pending: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteLease:
    """Forget a finished lease."""

    application: str
    stream_name: str
    lease_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteApplication:
    """Forget every lease of an application."""

    application: str


LeaseOperation = (
    CreateLeases
    | TakeLease
    | StealLease
    | RenewLease
    | ReleaseLease
    | CheckpointLease
    | DeleteLease
    | DeleteApplication
)
LeaseResult = Lease | tuple[Lease, ...] | int | LeaseError
_OwnerOperation = RenewLease | ReleaseLease | CheckpointLease
_KeyedOperation = TakeLease | StealLease | _OwnerOperation | DeleteLease

# --- Operations --------------------------------------------------------------------------


def _invalid(message: str) -> LeaseError:
    return LeaseError(refusal=LeaseRefusal.INVALID, message=message)


def _check_names(application: str, stream_name: str) -> LeaseError | None:
    if APPLICATION_NAME_PATTERN.fullmatch(application) is None:
        return _invalid(error_messages.lease_application_name_pattern(application=application))
    if STREAM_NAME_PATTERN.fullmatch(stream_name) is None:
        return _invalid(error_messages.lease_stream_name_pattern(stream_name=stream_name))
    return None


def _check_owner(owner: str) -> LeaseError | None:
    if not 1 <= len(owner) <= WORKER_ID_CHARS_MAX or not owner.isprintable():
        return _invalid(error_messages.lease_worker_id_invalid(chars_max=WORKER_ID_CHARS_MAX))
    return None


def _find(table: LeaseTable, operation: _KeyedOperation) -> Lease | LeaseError:
    """The lease the operation names, or the refusal."""
    application, stream_name = operation.application, operation.stream_name
    invalid = _check_names(application, stream_name)
    if invalid is not None:
        return invalid
    lease = table.get(application, stream_name, operation.lease_key)
    if lease is None:
        return LeaseError(
            refusal=LeaseRefusal.NOT_FOUND,
            message=error_messages.lease_not_found(
                application=application, stream_name=stream_name, lease_key=operation.lease_key
            ),
        )
    return lease


def _conflict(lease: Lease, *, expected_owner: str | None, expected_counter: int) -> LeaseError:
    return LeaseError(
        refusal=LeaseRefusal.CONFLICT,
        message=error_messages.lease_held_by_another(
            lease_key=lease.lease_key,
            owner=lease.lease_owner,
            counter=lease.lease_counter,
            expected_owner=expected_owner,
            expected_counter=expected_counter,
        ),
    )


def _held(table: LeaseTable, operation: _OwnerOperation) -> Lease | LeaseError:
    """The lease, if the operation's owner holds it at its expected counter (the owner-side
    CAS)."""
    lease = _find(table, operation)
    if isinstance(lease, LeaseError):
        return lease
    invalid = _check_owner(operation.owner)
    if invalid is not None:
        return invalid
    if lease.lease_owner != operation.owner or lease.lease_counter != operation.expected_counter:
        return _conflict(
            lease, expected_owner=operation.owner, expected_counter=operation.expected_counter
        )
    return lease


def create_leases(
    table: LeaseTable, operation: CreateLeases
) -> tuple[LeaseTable, tuple[Lease, ...] | LeaseError]:
    """Create a lease for each shard that has none, unowned at counter 0 with its checkpoint.

    Idempotent: an existing lease is returned as it is (its checkpoint and owner untouched),
    so racing workers that discover the same shards agree. Each existing parent lease gets the
    new child in `child_shard_ids`. Returns the leases for `leases`, in order, as they now are.
    """
    application, stream_name, leases = (
        operation.application,
        operation.stream_name,
        operation.leases,
    )
    invalid = _check_names(application, stream_name)
    if invalid is not None:
        return table, invalid
    if len(leases) > LEASES_PER_REQUEST_MAX:
        return table, _invalid(error_messages.too_many_leases(leases_max=LEASES_PER_REQUEST_MAX))
    for new in leases:
        if not 1 <= len(new.shard_id) <= SHARD_ID_CHARS_MAX:
            return table, _invalid(error_messages.lease_shard_id_length(shard_id=new.shard_id))
        if len(new.parent_shard_ids) > PARENT_SHARDS_MAX:
            return table, _invalid(error_messages.lease_too_many_parents(shard_id=new.shard_id))
        if new.shard_id in new.parent_shard_ids:
            return table, _invalid(error_messages.lease_own_parent(shard_id=new.shard_id))
    existing = table.stream_leases(application, stream_name)
    changed: dict[str, Lease] = {}
    for new in leases:
        if new.shard_id in existing or new.shard_id in changed:
            continue
        changed[new.shard_id] = Lease(
            application=application,
            stream_name=stream_name,
            lease_key=new.shard_id,
            lease_owner=None,
            lease_counter=0,
            checkpoint=new.checkpoint,
            parent_shard_ids=tuple(dict.fromkeys(new.parent_shard_ids)),
        )
        for parent_id in new.parent_shard_ids:
            parent = changed.get(parent_id) or existing.get(parent_id)
            if parent is not None and new.shard_id not in parent.child_shard_ids:
                children = (*parent.child_shard_ids, new.shard_id)
                changed[parent_id] = replace(parent, child_shard_ids=children)
    new_table = table.with_leases(changed.values()) if changed else table
    result = new_table.stream_leases(application, stream_name)
    return new_table, tuple(result[new.shard_id] for new in leases)


def take(
    table: LeaseTable, operation: TakeLease | StealLease
) -> tuple[LeaseTable, Lease | LeaseError]:
    """Make `owner` the owner, if the lease is still as observed (`expected_owner` at
    `expected_counter`): unowned, expired in the taker's eyes, or (via `steal`) held by a live
    worker. Increments the counter and `owner_switches_since_checkpoint`."""
    lease = _find(table, operation)
    if isinstance(lease, LeaseError):
        return table, lease
    invalid = _check_owner(operation.owner)
    if invalid is not None:
        return table, invalid
    expected_owner, expected_counter = operation.expected_owner, operation.expected_counter
    if lease.lease_owner != expected_owner or lease.lease_counter != expected_counter:
        return table, _conflict(
            lease, expected_owner=expected_owner, expected_counter=expected_counter
        )
    taken = replace(
        lease,
        lease_owner=operation.owner,
        lease_counter=lease.lease_counter + 1,
        owner_switches_since_checkpoint=lease.owner_switches_since_checkpoint + 1,
    )
    return table.with_lease(taken), taken


def steal(table: LeaseTable, operation: StealLease) -> tuple[LeaseTable, Lease | LeaseError]:
    """`take` of a lease held by another (live) worker, for balancing. The victim's next renew
    or checkpoint fails with CONFLICT, and it stops processing the shard."""
    if operation.expected_owner == operation.owner:
        return table, _invalid(error_messages.lease_steal_own(owner=operation.owner))
    return take(table, operation)


def renew(table: LeaseTable, operation: RenewLease) -> tuple[LeaseTable, Lease | LeaseError]:
    """Increment the counter of a lease `owner` holds: the heartbeat observers watch."""
    lease = _held(table, operation)
    if isinstance(lease, LeaseError):
        return table, lease
    renewed = replace(lease, lease_counter=lease.lease_counter + 1)
    return table.with_lease(renewed), renewed


def release(table: LeaseTable, operation: ReleaseLease) -> tuple[LeaseTable, Lease | LeaseError]:
    """Graceful handoff: `owner` gives the lease up (owner None, counter + 1), so another
    worker can take it at once instead of waiting for it to expire. Checkpoint first."""
    lease = _held(table, operation)
    if isinstance(lease, LeaseError):
        return table, lease
    released = replace(lease, lease_owner=None, lease_counter=lease.lease_counter + 1)
    return table.with_lease(released), released


def checkpoint(
    table: LeaseTable, operation: CheckpointLease
) -> tuple[LeaseTable, Lease | LeaseError]:
    """Record progress, fenced by owner and counter (the counter does not move).

    `pending=False`: the checkpoint becomes `checkpoint`, the pending checkpoint is cleared
    and `owner_switches_since_checkpoint` resets. `pending=True` (the KCL's
    prepareCheckpoint): only `pending_checkpoint` becomes `checkpoint`. Either way the value
    may not be below the current checkpoint, and nothing but SHARD_END may follow SHARD_END:
    a checkpoint never moves back.
    """
    lease = _held(table, operation)
    if isinstance(lease, LeaseError):
        return table, lease
    value = operation.checkpoint
    if value < lease.checkpoint:
        return table, _invalid(
            error_messages.lease_checkpoint_below(
                checkpoint=f"{value.sequence_number}/{value.sub_sequence_number}",
                current=(
                    f"{lease.checkpoint.sequence_number}/{lease.checkpoint.sub_sequence_number}"
                ),
            )
        )
    if operation.pending:
        updated = replace(lease, pending_checkpoint=value)
    else:
        updated = replace(
            lease, checkpoint=value, pending_checkpoint=None, owner_switches_since_checkpoint=0
        )
    return table.with_lease(updated), updated


def delete_lease(
    table: LeaseTable, operation: DeleteLease
) -> tuple[LeaseTable, Lease | LeaseError]:
    """Forget a finished lease (checkpoint SHARD_END), as the KCL's LeaseCleanupManager does.

    Only finished leases: deleting an unfinished parent would unblock its children early
    (`parents_done` treats a missing parent as trimmed). Returns the deleted lease.
    """
    lease = _find(table, operation)
    if isinstance(lease, LeaseError):
        return table, lease
    if not lease.checkpoint.is_shard_end:
        return table, _invalid(error_messages.lease_not_finished(lease_key=operation.lease_key))
    return table.without_lease(lease.application, lease.stream_name, lease.lease_key), lease


def delete_application(
    table: LeaseTable, operation: DeleteApplication
) -> tuple[LeaseTable, int | LeaseError]:
    """Forget every lease of `application` (all streams); returns how many there were."""
    application = operation.application
    if APPLICATION_NAME_PATTERN.fullmatch(application) is None:
        return table, _invalid(error_messages.lease_application_invalid(application=application))
    streams = table.applications.get(application)
    if streams is None:
        return table, LeaseError(
            refusal=LeaseRefusal.NOT_FOUND,
            message=error_messages.lease_no_application(application=application),
        )
    count = sum(len(leases) for leases in streams.values())
    return table.without_application(application), count


def apply_lease_operation(
    table: LeaseTable, operation: LeaseOperation
) -> tuple[LeaseTable, LeaseResult]:
    """Apply one operation: the single entry point for the metadata state machine."""
    match operation:
        case CreateLeases():
            return create_leases(table, operation)
        case TakeLease():
            return take(table, operation)
        case StealLease():
            return steal(table, operation)
        case RenewLease():
            return renew(table, operation)
        case ReleaseLease():
            return release(table, operation)
        case CheckpointLease():
            return checkpoint(table, operation)
        case DeleteLease():
            return delete_lease(table, operation)
        case DeleteApplication():
            return delete_application(table, operation)
        case _:
            assert_never(operation)


def list_leases(
    table: LeaseTable, *, application: str, stream_name: str | None = None
) -> tuple[Lease, ...]:
    """The application's leases (on one stream, or all), by stream then lease key."""
    streams = table.applications.get(application, {})
    names = sorted(streams) if stream_name is None else [stream_name]
    return tuple(lease for name in names for _, lease in sorted(streams.get(name, {}).items()))


def list_applications(table: LeaseTable) -> tuple[str, ...]:
    return table.application_names()


def parents_done_in(leases: Mapping[str, Lease], lease: Lease) -> bool:
    """Whether `lease`'s shard may be processed: every parent's checkpoint is SHARD_END, or
    the parent has no lease (trimmed, or never leased because processing started at LATEST)."""
    for parent_id in lease.parent_shard_ids:
        parent = leases.get(parent_id)
        if parent is not None and not parent.checkpoint.is_shard_end:
            return False
    return True


def parents_done(table: LeaseTable, application: str, stream_name: str, shard_id: str) -> bool:
    """`parents_done_in` for one shard of the table; a shard without a lease has no known
    parents, so it is not blocked."""
    leases = table.stream_leases(application, stream_name)
    lease = leases.get(shard_id)
    return lease is None or parents_done_in(leases, lease)


# --- Plain encoding (JSON-able), for the image snapshot and the commands ----------------------


def checkpoint_to_dict(value: Checkpoint) -> dict[str, Any]:
    return {
        "sequence_number": value.sequence_number,
        "sub_sequence_number": value.sub_sequence_number,
    }


def checkpoint_from_dict(data: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(str(data["sequence_number"]), int(data["sub_sequence_number"]))


def lease_to_dict(lease: Lease) -> dict[str, Any]:
    """A lease as JSON-able values; `lease_from_dict` reverses it exactly."""
    pending = lease.pending_checkpoint
    return {
        "application": lease.application,
        "stream_name": lease.stream_name,
        "lease_key": lease.lease_key,
        "lease_owner": lease.lease_owner,
        "lease_counter": lease.lease_counter,
        "checkpoint": checkpoint_to_dict(lease.checkpoint),
        "pending_checkpoint": checkpoint_to_dict(pending) if pending is not None else None,
        "owner_switches_since_checkpoint": lease.owner_switches_since_checkpoint,
        "parent_shard_ids": list(lease.parent_shard_ids),
        "child_shard_ids": list(lease.child_shard_ids),
    }


def lease_from_dict(data: Mapping[str, Any]) -> Lease:
    pending = data["pending_checkpoint"]
    owner = data["lease_owner"]
    return Lease(
        application=str(data["application"]),
        stream_name=str(data["stream_name"]),
        lease_key=str(data["lease_key"]),
        lease_owner=str(owner) if owner is not None else None,
        lease_counter=int(data["lease_counter"]),
        checkpoint=checkpoint_from_dict(data["checkpoint"]),
        pending_checkpoint=checkpoint_from_dict(pending) if pending is not None else None,
        owner_switches_since_checkpoint=int(data["owner_switches_since_checkpoint"]),
        parent_shard_ids=tuple(str(p) for p in data["parent_shard_ids"]),
        child_shard_ids=tuple(str(c) for c in data["child_shard_ids"]),
    )


def table_to_list(table: LeaseTable) -> list[dict[str, Any]]:
    """Every lease, in a stable order (application, stream, lease key)."""
    return [
        lease_to_dict(lease)
        for application in table.application_names()
        for lease in list_leases(table, application=application)
    ]


def table_from_list(data: Iterable[Mapping[str, Any]]) -> LeaseTable:
    return EMPTY.with_leases(lease_from_dict(item) for item in data)
