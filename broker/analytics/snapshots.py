"""Enhanced snapshots (kinesisanalyticsv2's CreateSnapshot, ImportSnapshot, ...): the record and
its rules, pure.

An enhanced snapshot belongs to an account and region, not to an application (AWS: "snapshots
are not scoped to an application"): one `Snapshot` per name in `ApplicationTable.snapshots`,
changed only by `ChangeAnalyticsSnapshot` (`broker/meta/transitions/analytics_applications.py`).
Every operation on a snapshot (ImportSnapshot, ExportSnapshot, DeleteSnapshot) is kept with it
for ListSnapshotOperations and DescribeSnapshotOperation.

What Shoal holds: CreateSnapshot needs a RUNNING Managed Service for Apache Flink application,
which Shoal never runs (it stores those and runs SQL), so snapshots come from ImportSnapshot.
The import reads the savepoint's objects under the source prefix (`snapshot_storage`) and
records their count, size and digest; the bytes stay at the source. ExportSnapshot copies them
to the destination prefix, after checking that the source still holds the same objects (the
export fails, as AWS's does, when the data is gone or changed).

Status, as applications show theirs: `status` is the settled one (READY or FAILED); a new
snapshot shows CREATING and a deleted one DELETING until `status_until_ms`; a DELETING
snapshot is gone once its timer has passed. An operation shows IN_PROGRESS until its EndTime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker import arns
from broker.analytics import messages
from broker.errors import ErrorCode, ShoalError

Document = dict[str, Any]

TAGS_MAX = 50
OPERATIONS_MAX = 100  # the operations kept per snapshot


def snapshot_key(account_id: str, region: str, name: str) -> str:
    return f"{account_id}/{region}/{name}"


def snapshot_arn(account_id: str, region: str, name: str) -> str:
    return arns.regional("kinesisanalytics", region, account_id, f"snapshot/{name}")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One enhanced snapshot (module docstring). Frozen; rules return a changed copy."""

    account_id: str
    region: str
    name: str
    arn: str
    description: str
    created_ms: int
    status: str  # READY or FAILED
    transient_status: str = ""  # CREATING or DELETING, until `status_until_ms`
    status_until_ms: int = 0
    initiator_operation: str = "ImportSnapshot"
    source: str = "{}"  # canonical JSON of SnapshotSourceDescription
    encryption: str = "{}"  # SnapshotEncryptionConfigurationDescription
    size_bytes: int = 0
    objects: int = 0  # how many objects the savepoint has at its source
    digest: str = ""  # of the source objects' keys, sizes and ETags (the export's check)
    tags: tuple[tuple[str, str], ...] = ()
    operations: tuple[str, ...] = ()  # canonical JSON of each operation, oldest first
    operations_made: int = 0

    @property
    def key(self) -> str:
        return snapshot_key(self.account_id, self.region, self.name)

    def status_at(self, now_ms: int) -> str:
        if self.transient_status and now_ms < self.status_until_ms:
            return self.transient_status
        if self.transient_status == "DELETING":
            return "DELETING"
        return self.status

    def is_gone(self, now_ms: int) -> bool:
        return self.transient_status == "DELETING" and now_ms >= self.status_until_ms

    def source_description(self) -> Document:
        value: Document = json.loads(self.source)
        return value

    def encryption_description(self) -> Document:
        value: Document = json.loads(self.encryption)
        return value

    def operation_records(self, now_ms: int) -> list[Document]:
        """The kept operations as seen at `now_ms`, newest first: IN_PROGRESS (without an
        EndTime) until their end."""
        records = []
        for text in reversed(self.operations):
            record: Document = json.loads(text)
            if now_ms < int(record["EndTime"]):
                record["SnapshotOperationStatus"] = "IN_PROGRESS"
                record.pop("EndTime")
                record.pop("SnapshotOperationFailureDetails", None)
            records.append(record)
        return records

    def source_prefix(self) -> Document:
        prefix: Document = self.source_description()["S3PrefixLocation"]
        return prefix


def _invalid(message: str) -> ShoalError:
    return ShoalError(ErrorCode.INVALID_ARGUMENT, message)


def not_found(name: str) -> ShoalError:
    return ShoalError(ErrorCode.RESOURCE_NOT_FOUND, messages.snapshot_not_found(name=name))


def _tags(tags: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    pairs = {str(tag["Key"]): str(tag.get("Value", "")) for tag in tags}
    if len(pairs) > TAGS_MAX:
        raise ShoalError(ErrorCode.TOO_MANY_TAGS, messages.snapshot_tags_max(maximum=TAGS_MAX))
    return tuple(sorted(pairs.items()))


def _operation_id(snapshot: Snapshot, sequence: int) -> str:
    text = f"{snapshot.arn}#{snapshot.created_ms}#{sequence}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_operation(
    snapshot: Snapshot,
    operation: str,
    *,
    now_ms: int,
    end_ms: int,
    error: str = "",
    details: Mapping[str, Any] | None = None,
) -> Snapshot:
    sequence = snapshot.operations_made + 1
    record: Document = {
        "SnapshotOperationId": _operation_id(snapshot, sequence),
        "SnapshotOperation": operation,
        "SnapshotOperationStatus": "FAILED" if error else "SUCCESSFUL",
        "SnapshotArn": snapshot.arn,
        "StartTime": now_ms,
        "EndTime": end_ms,
        **(details or {}),
    }
    if error:
        record["SnapshotOperationFailureDetails"] = {"ErrorInfo": {"ErrorString": error[:512]}}
    return dataclasses.replace(
        snapshot,
        operations=(*snapshot.operations, canonical(record))[-OPERATIONS_MAX:],
        operations_made=sequence,
    )


def _location(prefix: Mapping[str, Any]) -> Document:
    return {"LocationType": "S3", "S3PrefixLocation": dict(prefix)}


def _encryption(configuration: Mapping[str, Any] | None) -> Document:
    """An encryption configuration as described: AWS_OWNED_KEY when none is given."""
    if not configuration:
        return {"KeyType": "AWS_OWNED_KEY"}
    described = {"KeyType": str(configuration["KeyType"])}
    if configuration.get("KeyId"):
        described["KeyId"] = str(configuration["KeyId"])
    return described


def imported(
    *,
    account_id: str,
    region: str,
    name: str,
    request: Mapping[str, Any],
    found: Mapping[str, Any],
    now_ms: int,
    creating_ms: int,
) -> Snapshot:
    """ImportSnapshot: a new snapshot of the savepoint under the source prefix. `found` is what
    the source held (`objects`, `size_bytes`, `digest`) or why it could not be read (`error`):
    a snapshot FAILED to import keeps its name, as on AWS."""
    source = request["ImportSourceConfiguration"]
    prefix = dict(source["SourceS3PrefixLocation"])
    error = str(found.get("error", ""))
    snapshot = Snapshot(
        account_id=account_id,
        region=region,
        name=name,
        arn=snapshot_arn(account_id, region, name),
        description=str(request.get("SnapshotDescription", "")),
        created_ms=now_ms,
        status="FAILED" if error else "READY",
        transient_status="CREATING",
        status_until_ms=now_ms + creating_ms,
        source=canonical({"S3PrefixLocation": prefix}),
        encryption=canonical(_encryption(request.get("DestinationEncryptionConfiguration"))),
        size_bytes=0 if error else int(found["size_bytes"]),
        objects=0 if error else int(found["objects"]),
        digest="" if error else str(found["digest"]),
        tags=_tags(request.get("Tags", ())),
    )
    details: Document = {"SnapshotSourceLocationDescription": _location(prefix)}
    if source.get("SourceEncryptionConfiguration"):
        details["SourceEncryptionConfigurationDescription"] = _encryption(
            source["SourceEncryptionConfiguration"]
        )
    details["DestinationEncryptionConfigurationDescription"] = snapshot.encryption_description()
    return _with_operation(
        snapshot,
        "ImportSnapshot",
        now_ms=now_ms,
        end_ms=now_ms + creating_ms,
        error=error,
        details=details,
    )


def require_ready(snapshot: Snapshot, now_ms: int, operation: str) -> None:
    status = snapshot.status_at(now_ms)
    if status != "READY":
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            messages.snapshot_not_ready(name=snapshot.name, status=status, operation=operation),
        )


def exported(
    snapshot: Snapshot,
    request: Mapping[str, Any],
    result: Mapping[str, Any],
    *,
    now_ms: int,
    exporting_ms: int,
) -> Snapshot:
    """ExportSnapshot: the copy `result` (copied objects, or `error`) as the snapshot's
    operation. One export at a time (LimitExceeded while one is IN_PROGRESS)."""
    require_ready(snapshot, now_ms, "ExportSnapshot")
    for record in snapshot.operation_records(now_ms):
        if (
            record["SnapshotOperation"] == "ExportSnapshot"
            and record["SnapshotOperationStatus"] == "IN_PROGRESS"
        ):
            raise ShoalError(
                ErrorCode.LIMIT_EXCEEDED,
                messages.snapshot_export_in_progress(name=snapshot.name),
            )
    destination = request["ExportDestinationConfiguration"]
    details: Document = {
        "SnapshotSourceLocationDescription": _location(snapshot.source_prefix()),
        "SnapshotDestinationLocationDescription": _location(
            destination["DestinationS3PrefixLocation"]
        ),
        "SourceEncryptionConfigurationDescription": snapshot.encryption_description(),
        "DestinationEncryptionConfigurationDescription": _encryption(
            destination.get("DestinationEncryptionConfiguration")
        ),
    }
    return _with_operation(
        snapshot,
        "ExportSnapshot",
        now_ms=now_ms,
        end_ms=now_ms + exporting_ms,
        error=str(result.get("error", "")),
        details=details,
    )


def deleted(snapshot: Snapshot, created_ms: int, *, now_ms: int, deleting_ms: int) -> Snapshot:
    """DeleteSnapshot: a READY or FAILED snapshot, named with its creation time (as
    DeleteApplication's guard against deleting a recreated one)."""
    if created_ms != snapshot.created_ms and not (
        created_ms % 1000 == 0 and created_ms // 1000 == snapshot.created_ms // 1000
    ):
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            messages.snapshot_timestamp_mismatch(name=snapshot.name),
        )
    status = snapshot.status_at(now_ms)
    if status not in ("READY", "FAILED"):
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            messages.snapshot_not_deletable(name=snapshot.name, status=status),
        )
    if any(
        record["SnapshotOperationStatus"] == "IN_PROGRESS"
        for record in snapshot.operation_records(now_ms)
    ):
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            messages.snapshot_operation_in_progress(name=snapshot.name),
        )
    gone = dataclasses.replace(
        snapshot, transient_status="DELETING", status_until_ms=now_ms + deleting_ms
    )
    return _with_operation(gone, "DeleteSnapshot", now_ms=now_ms, end_ms=now_ms + deleting_ms)


def change_tags(
    snapshot: Snapshot, *, added: Sequence[Mapping[str, Any]], removed: Sequence[str]
) -> Snapshot:
    tags = dict(snapshot.tags)
    tags.update(_tags(added))
    for key in removed:
        tags.pop(key, None)
    if len(tags) > TAGS_MAX:
        raise ShoalError(ErrorCode.TOO_MANY_TAGS, messages.snapshot_tags_max(maximum=TAGS_MAX))
    return dataclasses.replace(snapshot, tags=tuple(sorted(tags.items())))


def info(snapshot: Snapshot, now_ms: int) -> Document:
    """ListSnapshots' SnapshotInfo (timestamps as epoch milliseconds)."""
    return {
        "SnapshotName": snapshot.name,
        "SnapshotArn": snapshot.arn,
        "SnapshotStatus": snapshot.status_at(now_ms),
        "SnapshotCreationTimestamp": snapshot.created_ms,
        "SnapshotInitiator": "USER",
        "SnapshotInitiatorOperation": snapshot.initiator_operation,
        "SnapshotFormat": "CANONICAL",
    }


def details(snapshot: Snapshot, now_ms: int) -> Document:
    """DescribeSnapshot's SnapshotInfoDetails (timestamps as epoch milliseconds)."""
    described = {
        **info(snapshot, now_ms),
        "SnapshotSourceDescription": snapshot.source_description(),
        "SnapshotEncryptionConfigurationDescription": snapshot.encryption_description(),
    }
    if snapshot.description:
        described["SnapshotDescription"] = snapshot.description
    if snapshot.status == "READY":
        described["SnapshotSizeInBytes"] = snapshot.size_bytes
    return described


def check_list_filters(request: Mapping[str, Any], members: Sequence[str]) -> None:
    given = [member for member in members if member in request]
    if len(given) > 1:
        raise _invalid(messages.at_most_one_of(members=", ".join(members), given=given))
