"""Logical backup and restore of streams through the Kinesis API.

**Backup** (`back_up`), per stream, read first: the settings (retention, capacity mode, an
on-demand stream's warm throughput and record distribution, enhanced monitoring, record size
limit, encryption type and KeyId: never a key), tags, resource policies, registered consumers
and each one's resource policy, the throughput limits set on it (LimitsService), and every
shard of its lineage (hash range, parents); then each shard's records from where the previous
backup stopped (AFTER_SEQUENCE_NUMBER of the last one copied, else TRIM_HORIZON) up to its
tip, written as new segments; the manifest last. So a
backup is incremental, and consistent per shard: every segment is a gap-free run of the shard's
records, and a reader of the manifest sees only segments that were completely written. A
closed shard read to its end is not read again.

**Restore** (`restore`) recreates a stream on another cluster: CreateStream with the root
shards and the record size limit; for a stream backed up encrypted, StartStreamEncryption under
the same KeyId and a wait until every node holding one of its replicas has applied it
(`wait_keyed`), so no replica stores a restored record in the clear; then every split and merge
of the lineage in shard order (so the same shard ids and hash ranges come out), each shard's
records written to it (PutRecords with an explicit hash key inside the shard, in their order)
before it is resharded; then tags, retention, enhanced monitoring, consumers, the capacity mode
(with warm throughput and record distribution), and last the resource policies, their old ARNs
replaced by the new ones, and the throughput limits set with `shoal limits` (LimitsService).
Sequence numbers, arrival times and consumer ARNs are new (the API
cannot set them; `RestoreReport.sequence_map` maps old to new, for consumers' checkpoints);
record order within each shard and across the lineage is kept.

**Sealing**: an encrypted stream's segments are sealed (AES-256-GCM, `sealing.py`) under a data
key per backup run made by the cluster's master keys under the stream's KeyId (`BackupKeys`,
the BackupKeyService); the manifest keeps the keys wrapped, never in the clear, and each sealed
segment's place (data key, the sequence number it follows, its last one, its record count),
which the cipher authenticates with the stream's ARN, the shard and the segment's index; the
manifest itself carries a seal (a tag under the run's key over all the rest of it). A restore
checks the seal, opens every data key and authenticates every segment before it creates
anything: a missing or disabled key is KMS's error, an edited manifest or a tampered,
truncated or swapped segment a BackupError, and nothing is half restored. A clear stream's
backup is unchanged (manifest version 1).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from broker.backup import sealing
from broker.backup.store import BackupStore

# 1: every segment in the clear; 2: an encrypted stream's segments sealed (`sealing.py`),
# written only when a manifest has sealed segments, so older releases still restore the rest.
MANIFEST_VERSION = 2
_CLEAR_MANIFEST_VERSION = 1
SEGMENT_RECORDS_MAX = 10_000
# A segment is one object, held whole in memory while written and read: bounded in bytes too
# (10,000 records of 1 MiB would be a 13 GiB object in base64).
SEGMENT_BYTES_MAX = 64 * 1024 * 1024
_PUT_BATCH_RECORDS_MAX = 500  # PutRecords' limit
_PUT_BATCH_BYTES_MAX = 4 * 1024 * 1024  # below PutRecords' 5 MiB
_PUT_ATTEMPTS_MAX = 50

Call = Callable[[str, dict[str, Any]], dict[str, Any]]
_DEFAULT_DISTRIBUTION = "USER_PARTITION_KEY"
_SENTINELS = ("TRIM_HORIZON", "LATEST", "SHARD_END", "AT_TIMESTAMP")


class LeaseAccess(Protocol):
    """The consumer lease table through the public LeaseService (`broker/cli/backup.py`)."""

    def list_leases(self, stream: str) -> list[dict[str, Any]]:
        """Every application's leases on `stream`: {application, lease_key, checkpoint,
        sub_sequence, parents}."""
        ...

    def create_leases(self, application: str, stream: str, leases: list[dict[str, Any]]) -> None:
        """Creates leases {lease_key, checkpoint, sub_sequence, parents}."""
        ...


class LimitsAccess(Protocol):
    """A stream's throughput limit overrides through the public LimitsService (`shoal limits`)."""

    def stream_overrides(self, stream: str) -> dict[str, int]:
        """The rates set on `stream` (unset ones follow the cluster default)."""
        ...

    def set_stream_overrides(self, stream: str, rates: dict[str, int]) -> None: ...


class BackupKeys(Protocol):
    """Backup data keys made and opened by the cluster's master keys under the stream's KeyId
    (the BackupKeyService: `broker/client/backup_keys.py`). Raise `ShoalError` (KMS*)."""

    def generate(self, stream: str) -> tuple[bytes, dict[str, str]]:
        """A new data key for a backup of `stream`, and its wrapped form (JSON-ready)."""
        ...

    def open(self, wrapped: dict[str, str]) -> bytes:
        """The data key `generate` gave, from its wrapped form."""
        ...


class BackupError(Exception):
    """A backup or restore that cannot proceed; the message is for the operator."""


def manifest_key(stream: str) -> str:
    return f"streams/{stream}/manifest.json"


@dataclass
class BackupReport:
    stream: str
    records_copied: int = 0
    shards: int = 0


class _Sealer:
    """Seals this run's segments and its manifest under the run's data key (`material`,
    `wrapped`). The key joins the manifest's `data_keys` once a segment uses it; the manifest's
    seal names it itself, so a run copying nothing adds no key to open at restore."""

    def __init__(
        self, material: bytes, wrapped: dict[str, str], data_keys: list[dict[str, Any]]
    ) -> None:
        self.material = material
        self.wrapped = wrapped
        self.data_keys = data_keys  # the manifest's: earlier runs' keys, then this run's
        self._id: int | None = None

    def seal(self, entry: dict[str, Any], key: str, body: bytes, last: str, count: int) -> bytes:
        if self._id is None:
            self._id = len(self.data_keys)
            self.data_keys.append({"id": self._id, "wrapped": self.wrapped})
        place = {
            "data_key": self._id,
            "after": entry["last_sequence"],
            "last": last,
            "records": count,
        }
        entry.setdefault("sealed", {})[key] = place
        bound = _binding(self.wrapped["stream_arn"], entry, key, place)
        return sealing.seal(self.material, body, bound)


def _run_key(
    keys: BackupKeys | None,
    stream: str,
    encrypted: bool,
    previous: dict[str, Any] | None,
) -> tuple[bytes, dict[str, str]] | None:
    """The data key sealing this run: a new one for an encrypted stream; for a stream no
    longer encrypted whose backup is sealed, the previous seal's (its manifest stays sealed);
    None for a clear stream's clear backup. A sealed previous manifest is authenticated
    first: a run builds only on segment lists and keys nobody edited."""
    sealed_before = previous is not None and ("seal" in previous or "data_keys" in previous)
    if not encrypted and not sealed_before:
        return None
    if keys is None:
        raise BackupError(
            f"stream {stream} is encrypted (or its backup sealed): the backup is sealed with a "
            "key from the cluster's BackupKeyService, and none was given"
        )
    previous_key = _check_manifest_seal(previous, keys) if previous is not None else None
    if encrypted:
        return keys.generate(stream)
    assert previous is not None
    assert previous_key is not None
    return previous_key, previous["seal"]["wrapped"]


def _manifest_seal(
    material: bytes, wrapped: dict[str, str], manifest: dict[str, Any]
) -> dict[str, Any]:
    """The seal of a sealed backup's manifest: AES-GCM over nothing, authenticating the rest
    of the manifest (canonical JSON: settings, policies, leases, the segment lists and places)
    bound to the stream, so no part of it can be edited, dropped or swapped unnoticed."""
    blob = sealing.seal(material, b"", _manifest_bound(wrapped, manifest))
    return {"wrapped": wrapped, "tag": base64.b64encode(blob).decode()}


def _manifest_bound(wrapped: dict[str, str], manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "seal"}
    return (
        b"manifest\x00"
        + json.dumps(
            {"stream_arn": wrapped["stream_arn"], "manifest": body},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    )


def _check_manifest_seal(manifest: dict[str, Any], keys: BackupKeys | None) -> bytes | None:
    """A sealed backup's manifest (one with data keys or a seal) must carry a seal that
    authenticates it; its key opens through `keys` (KMS's errors when it cannot), and is
    returned (None for a clear backup's manifest, which has nothing to authenticate)."""
    if "seal" not in manifest and not manifest.get("data_keys"):
        return None
    if "seal" not in manifest:
        raise BackupError(f"the manifest of {manifest['stream']}'s sealed backup has no seal")
    if keys is None:
        raise BackupError(
            f"the backup of {manifest['stream']} is sealed: restoring it needs the cluster's "
            "BackupKeyService, and none was given"
        )
    seal = manifest["seal"]
    material = keys.open(seal["wrapped"])
    try:
        sealing.open_sealed(
            material,
            base64.b64decode(seal["tag"]),
            _manifest_bound(seal["wrapped"], manifest),
            name=manifest_key(manifest["stream"]),
        )
    except (sealing.SegmentRefusedError, ValueError) as error:
        raise BackupError(
            f"the manifest of {manifest['stream']}'s backup does not authenticate (edited, or "
            "another backup's): refused"
        ) from error
    return material


def _binding(stream_arn: str, entry: dict[str, Any], key: str, place: dict[str, Any]) -> bytes:
    return sealing.binding(
        stream_arn=stream_arn,
        shard_id=entry["shard_id"],
        index=entry["segments"].index(key) if key in entry["segments"] else len(entry["segments"]),
        after=place["after"],
        last=place["last"],
        records=place["records"],
        data_key=place["data_key"],
    )


def back_up(
    call: Call,
    store: BackupStore,
    stream: str,
    *,
    leases: LeaseAccess | None = None,
    keys: BackupKeys | None = None,
    limits: LimitsAccess | None = None,
) -> BackupReport:
    """An encrypted stream's new segments are sealed under a data key `keys` makes under the
    stream's KeyId (BackupError without `keys`); a clear stream's are JSON lines, as before."""
    previous = _load_manifest(store, stream)
    summary = call("DescribeStreamSummary", {"StreamName": stream})["StreamDescriptionSummary"]
    data_keys: list[dict[str, Any]] = list(previous.get("data_keys", [])) if previous else []
    encrypted = summary.get("EncryptionType", "NONE") != "NONE"
    run_key = _run_key(keys, stream, encrypted, previous)
    sealer = _Sealer(*run_key, data_keys) if run_key is not None else None
    segment_sealer = sealer if encrypted else None
    tags = _paged_tags(call, stream)
    consumers = _consumers(call, summary["StreamARN"])
    # Read before the records: every checkpoint then points at a record the backup holds.
    lease_rows = leases.list_leases(stream) if leases is not None else []
    overrides = limits.stream_overrides(stream) if limits is not None else {}
    listed = _paged_shards(call, stream)
    before = {s["shard_id"]: s for s in previous["shards"]} if previous else {}
    report = BackupReport(stream=stream, shards=len(listed))
    shards = []
    for shard in listed:
        entry = dict(before.get(shard["ShardId"]) or _shard_entry(shard))
        entry["closed"] = "EndingSequenceNumber" in shard["SequenceNumberRange"]
        if not entry.get("complete"):
            copied = _copy_shard(call, store, stream, entry, segment_sealer)
            report.records_copied += copied
        shards.append(entry)
    monitoring = summary.get("EnhancedMonitoring") or [{}]
    manifest = {
        "v": MANIFEST_VERSION if data_keys else _CLEAR_MANIFEST_VERSION,
        "stream": stream,
        "backed_up_at": datetime.now(UTC).isoformat(),
        "settings": {
            "retention_hours": summary["RetentionPeriodHours"],
            "mode": summary["StreamModeDetails"]["StreamMode"],
            "enhanced_metrics": sorted(monitoring[0].get("ShardLevelMetrics", [])),
            "max_record_size_kib": summary.get("MaxRecordSizeInKiB", 1024),
            "encryption": {
                "type": summary.get("EncryptionType", "NONE"),
                "key_id": summary.get("KeyId"),
            },
            "warm_throughput_mibps": (summary.get("WarmThroughput") or {}).get("TargetMiBps"),
            "record_distribution": summary.get("RecordDistributionStrategy"),
        },
        "stream_arn": summary["StreamARN"],
        "resource_policy": _policy(call, summary["StreamARN"]),
        "tags": tags,
        "consumers": sorted(consumers),
        "consumer_tags": {
            name: tags
            for name, arn in sorted(consumers.items())
            if (tags := _resource_tags(call, arn))
        },
        "consumer_policies": {
            name: {"arn": arn, "policy": policy}
            for name, arn in sorted(consumers.items())
            if (policy := _policy(call, arn)) is not None
        },
        "leases": lease_rows,
        "shards": shards,
    }
    if overrides:
        manifest["throughput_limits"] = overrides
    if data_keys:
        manifest["data_keys"] = data_keys
    if sealer is not None:
        manifest["v"] = MANIFEST_VERSION
        manifest["seal"] = _manifest_seal(sealer.material, sealer.wrapped, manifest)
    store.put(manifest_key(stream), json.dumps(manifest, indent=1).encode())
    return report


def _shard_entry(shard: dict[str, Any]) -> dict[str, Any]:
    return {
        "shard_id": shard["ShardId"],
        "hash_start": shard["HashKeyRange"]["StartingHashKey"],
        "hash_end": shard["HashKeyRange"]["EndingHashKey"],
        "parent": shard.get("ParentShardId"),
        "adjacent_parent": shard.get("AdjacentParentShardId"),
        "segments": [],
        "last_sequence": None,
        "records": 0,
        "complete": False,
    }


def _copy_shard(
    call: Call, store: BackupStore, stream: str, entry: dict[str, Any], sealer: _Sealer | None
) -> int:
    """Appends the shard's records after `last_sequence` as new segments (sealed by `sealer`
    when given); returns how many."""
    request: dict[str, Any] = {"StreamName": stream, "ShardId": entry["shard_id"]}
    if entry["last_sequence"] is None:
        request["ShardIteratorType"] = "TRIM_HORIZON"
    else:
        request["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
        request["StartingSequenceNumber"] = entry["last_sequence"]
    iterator: str | None = call("GetShardIterator", request)["ShardIterator"]
    pending: list[dict[str, Any]] = []
    pending_bytes = 0
    copied = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if not pending:
            return
        suffix = "jsonl" if sealer is None else "sealed"
        key = f"streams/{stream}/shards/{entry['shard_id']}/{len(entry['segments']):06d}.{suffix}"
        body = b"".join(json.dumps(r).encode() + b"\n" for r in pending)
        if sealer is not None:
            body = sealer.seal(entry, key, body, pending[-1]["seq"], len(pending))
        store.put(key, body)
        entry["segments"].append(key)
        entry["last_sequence"] = pending[-1]["seq"]
        entry["records"] += len(pending)
        pending, pending_bytes = [], 0

    while iterator is not None:
        response = call("GetRecords", {"ShardIterator": iterator, "Limit": 10_000})
        for record in response["Records"]:
            pending.append(
                {
                    "seq": record["SequenceNumber"],
                    "pk": record["PartitionKey"],
                    "ts": record["ApproximateArrivalTimestamp"].timestamp(),
                    "data": base64.b64encode(record["Data"]).decode(),
                }
            )
            copied += 1
            pending_bytes += len(pending[-1]["data"]) + len(record["PartitionKey"])
            if len(pending) >= SEGMENT_RECORDS_MAX or pending_bytes >= SEGMENT_BYTES_MAX:
                flush()
        iterator = response.get("NextShardIterator")
        if iterator is None:
            entry["complete"] = True  # a closed shard read to its end
        elif not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
            break  # at the tip of an open shard
    flush()
    return copied


@dataclass
class RestoreReport:
    stream: str
    records_written: int = 0
    shard_ids: dict[str, str] = field(default_factory=dict)  # backed-up id -> restored id
    sequence_map: dict[str, str] = field(default_factory=dict)  # old -> new sequence number
    sequence_shards: dict[str, str] = field(default_factory=dict)  # old sequence -> old shard


def restore(
    call: Call,
    store: BackupStore,
    stream: str,
    *,
    as_name: str | None = None,
    wait_active: Callable[[str], None],
    wait_keyed: Callable[[str], None],
    leases: LeaseAccess | None = None,
    keys: BackupKeys | None = None,
    limits: LimitsAccess | None = None,
) -> RestoreReport:
    """`wait_active(name)` returns once the stream is ACTIVE; `wait_keyed(name)` once every
    node holding a replica of the stream has applied the metadata the caller's last call
    changed (so each of them seals what it stores under the stream's key). `keys` opens a
    sealed backup's data keys (BackupError without them); `limits` sets the stream's
    throughput limit overrides (after the records, which they would otherwise throttle)."""
    manifest = _load_manifest(store, stream)
    if manifest is None:
        raise BackupError(f"no backup of stream {stream} in {store.describe()}")
    # Before anything is created: every data key opens here (a missing or disabled key is
    # KMS's error) and every sealed segment authenticates where the manifest places it (a
    # clear backup is read once, as before: it has nothing to authenticate).
    seal_key = _check_manifest_seal(manifest, keys)
    opened = _open_data_keys(manifest, keys, seal_key)
    if opened:
        for entry in manifest["shards"]:
            for _ in _records(store, entry, opened):
                pass
    _check_account_settings(call, manifest)
    target = as_name or stream
    shards = {s["shard_id"]: s for s in manifest["shards"]}
    roots = sorted(
        (s for s in manifest["shards"] if s["parent"] not in shards),
        key=lambda s: int(s["hash_start"]),
    )
    # CreateStream lays out uniform ranges. Roots that are not (their parents expired before
    # the backup: a stream resharded unevenly more than its retention ago) are carved from
    # one shard by splits, so their shard ids differ (`RestoreReport.shard_ids` maps them).
    uniform = [r["hash_start"] for r in roots] == _uniform_starts(len(roots))
    # The record size limit from the start: records above 1 MiB are then accepted.
    created: dict[str, Any] = {"StreamName": target, "ShardCount": len(roots) if uniform else 1}
    if manifest["settings"]["max_record_size_kib"] != 1024:
        created["MaxRecordSizeInKiB"] = manifest["settings"]["max_record_size_kib"]
    call("CreateStream", created)
    wait_active(target)
    _restore_encryption(call, target, manifest, wait_active, wait_keyed)
    report = RestoreReport(stream=target)
    if not uniform:
        _carve_roots(call, target, roots, wait_active)
    restored = {
        s["HashKeyRange"]["StartingHashKey"]: s
        for s in _paged_shards(call, target)
        if "EndingSequenceNumber" not in s["SequenceNumberRange"]
    }
    for root in roots:
        new = restored.get(root["hash_start"])
        if new is None or new["HashKeyRange"]["EndingHashKey"] != root["hash_end"]:
            raise BackupError(f"{root['shard_id']}'s hash range is not a root shard's range")
        report.shard_ids[root["shard_id"]] = new["ShardId"]
        _write_records(call, store, target, root, new["ShardId"], report, opened)
    # In shard order each reshard comes after those that made its parents, and a child's
    # records are written while it is open, right after the reshard that made it.
    for entry in manifest["shards"]:
        if entry["shard_id"] in report.shard_ids:
            continue
        before = set(report.shard_ids)
        _reshard(call, target, entry, shards, report, wait_active)
        if entry["shard_id"] not in report.shard_ids:
            raise BackupError(f"replaying the reshard that made {entry['shard_id']} made no match")
        for old_id in sorted(set(report.shard_ids) - before):
            _write_records(
                call, store, target, shards[old_id], report.shard_ids[old_id], report, opened
            )
    _restore_settings(call, target, manifest, wait_active)
    if limits is not None and manifest.get("throughput_limits"):
        limits.set_stream_overrides(target, manifest["throughput_limits"])
    if leases is not None:
        _restore_leases(leases, target, manifest, report)
    return report


def _check_account_settings(call: Call, manifest: dict[str, Any]) -> None:
    """What the target account must allow before anything is created: warm throughput needs
    the minimum throughput billing commitment, an account setting a backup does not carry."""
    if not manifest["settings"].get("warm_throughput_mibps"):
        return
    settings = call("DescribeAccountSettings", {})
    status = settings.get("MinimumThroughputBillingCommitment", {}).get("Status", "DISABLED")
    if status == "DISABLED":
        raise BackupError(
            f"{manifest['stream']} has warm throughput "
            f"({manifest['settings']['warm_throughput_mibps']} MiB/s), which needs the account "
            "setting MinimumThroughputBillingCommitment enabled on this cluster "
            "(UpdateAccountSettings); nothing was restored"
        )


def _uniform_starts(count: int) -> list[str]:
    """The starting hash keys of CreateStream's `count` shards (boundary i at i * 2^128 //
    count, as AWS lays them out)."""
    return [str((i * 2**128) // count) for i in range(count)]


def _carve_roots(
    call: Call, target: str, roots: list[dict[str, Any]], wait_active: Callable[[str], None]
) -> None:
    """Splits the new one-shard stream at each root's starting hash key, in hash order: the
    open shards then have the roots' ranges."""
    for root in roots[1:]:
        covering = next(
            s
            for s in _paged_shards(call, target)
            if "EndingSequenceNumber" not in s["SequenceNumberRange"]
            and int(s["HashKeyRange"]["StartingHashKey"]) < int(root["hash_start"])
            and int(root["hash_start"]) <= int(s["HashKeyRange"]["EndingHashKey"])
        )
        call(
            "SplitShard",
            {
                "StreamName": target,
                "ShardToSplit": covering["ShardId"],
                "NewStartingHashKey": root["hash_start"],
            },
        )
        wait_active(target)


def _restore_encryption(
    call: Call,
    target: str,
    manifest: dict[str, Any],
    wait_active: Callable[[str], None],
    wait_keyed: Callable[[str], None],
) -> None:
    """Encrypts the new, still empty stream under the backed-up KeyId before its first record.
    AWS's CreateStream cannot carry a key, and a node seals a replica's records with the key
    its own applied metadata holds: so the restore waits until every replica's node holds it.
    A KeyId the target cannot use fails the restore (KMS's error), before any record."""
    encryption = manifest["settings"].get("encryption") or {"type": "NONE"}
    if encryption["type"] == "NONE":
        return
    call(
        "StartStreamEncryption",
        {"StreamName": target, "EncryptionType": encryption["type"], "KeyId": encryption["key_id"]},
    )
    wait_active(target)
    wait_keyed(target)
    summary = call("DescribeStreamSummary", {"StreamName": target})["StreamDescriptionSummary"]
    if summary.get("EncryptionType") != encryption["type"]:
        raise BackupError(f"{target} is not encrypted after StartStreamEncryption: {summary}")


def _restore_leases(
    leases: LeaseAccess, target: str, manifest: dict[str, Any], report: RestoreReport
) -> None:
    """Each application's leases on the restored shards, checkpoints translated to the new
    sequence numbers (a checkpoint between copied records moves back to the last one before
    it, so nothing after it is skipped)."""
    copied: dict[str, list[tuple[int, str]]] = {}
    for old, new in report.sequence_map.items():
        copied.setdefault(_shard_of(report, old), []).append((int(old), new))
    by_application: dict[str, list[dict[str, Any]]] = {}
    for row in manifest.get("leases", []):
        if row["lease_key"] not in report.shard_ids:
            continue  # a shard the backup did not hold
        checkpoint = row["checkpoint"]
        if checkpoint not in _SENTINELS:
            earlier = [
                pair for pair in copied.get(row["lease_key"], []) if pair[0] <= int(checkpoint)
            ]
            checkpoint = max(earlier)[1] if earlier else "TRIM_HORIZON"
        by_application.setdefault(row["application"], []).append(
            {
                "lease_key": report.shard_ids[row["lease_key"]],
                "checkpoint": checkpoint,
                "sub_sequence": row["sub_sequence"] if checkpoint not in _SENTINELS else 0,
                "parents": [report.shard_ids[p] for p in row["parents"] if p in report.shard_ids],
            }
        )
    for application, rows in sorted(by_application.items()):
        leases.create_leases(application, target, rows)


def _shard_of(report: RestoreReport, old_sequence: str) -> str:
    return report.sequence_shards.get(old_sequence, "")


def _reshard(
    call: Call,
    target: str,
    entry: dict[str, Any],
    shards: dict[str, dict[str, Any]],
    report: RestoreReport,
    wait_active: Callable[[str], None],
) -> None:
    """Replays the split or merge that made `entry` (and its sibling, for a split)."""
    known = set(report.shard_ids.values())
    parent = report.shard_ids[entry["parent"]]
    if entry["adjacent_parent"] is not None:
        # Lower hash range first, as MergeShards requires (a backup taken from an older
        # release may record a merge that named the pair the other way round).
        low, high = sorted(
            (shards[entry["parent"]], shards[entry["adjacent_parent"]]),
            key=lambda s: int(s["hash_start"]),
        )
        call(
            "MergeShards",
            {
                "StreamName": target,
                "ShardToMerge": report.shard_ids[low["shard_id"]],
                "AdjacentShardToMerge": report.shard_ids[high["shard_id"]],
            },
        )
    else:
        siblings = sorted(
            (
                s
                for s in shards.values()
                if s["parent"] == entry["parent"] and not s["adjacent_parent"]
            ),
            key=lambda s: int(s["hash_start"]),
        )
        call(
            "SplitShard",
            {
                "StreamName": target,
                "ShardToSplit": parent,
                "NewStartingHashKey": siblings[-1]["hash_start"],
            },
        )
    wait_active(target)
    created = [  # open: not a parent (nor a shard closed carving the roots)
        s
        for s in _paged_shards(call, target)
        if s["ShardId"] not in known and "EndingSequenceNumber" not in s["SequenceNumberRange"]
    ]
    by_start = {s["HashKeyRange"]["StartingHashKey"]: s["ShardId"] for s in created}
    for old in shards.values():
        made_here = old["parent"] == entry["parent"] and old["hash_start"] in by_start
        if old["shard_id"] not in report.shard_ids and made_here:
            report.shard_ids[old["shard_id"]] = by_start[old["hash_start"]]


def _write_records(
    call: Call,
    store: BackupStore,
    target: str,
    entry: dict[str, Any],
    shard_id: str,
    report: RestoreReport,
    opened: dict[int, tuple[bytes, str]],
) -> None:
    low, high = int(entry["hash_start"]), int(entry["hash_end"])
    batch: list[dict[str, Any]] = []
    size = 0
    for record in _records(store, entry, opened):
        data = base64.b64decode(record["data"])
        # The partition key's own hash when it falls in the shard (as it did when first
        # written), else the shard's first key (it was written with an explicit hash key).
        key = int.from_bytes(hashlib.md5(record["pk"].encode()).digest(), "big")
        explicit = key if low <= key <= high else low
        batch.append(
            {
                "PartitionKey": record["pk"],
                "ExplicitHashKey": str(explicit),
                "Data": data,
                "_old": record["seq"],
            }
        )
        report.sequence_shards[record["seq"]] = entry["shard_id"]
        size += len(data) + len(record["pk"])
        if len(batch) >= _PUT_BATCH_RECORDS_MAX or size >= _PUT_BATCH_BYTES_MAX:
            _put_in_order(call, target, shard_id, batch, report)
            batch, size = [], 0
    _put_in_order(call, target, shard_id, batch, report)


def _put_in_order(
    call: Call, target: str, shard_id: str, batch: list[dict[str, Any]], report: RestoreReport
) -> None:
    """PutRecords, retrying a throttled tail (the shard's bucket ran dry: the records after
    the first refusal are refused too); a refusal in the middle would reorder, so it fails."""
    pending = batch
    for _ in range(_PUT_ATTEMPTS_MAX):
        if not pending:
            return
        records = [{k: v for k, v in r.items() if k != "_old"} for r in pending]
        answer = call("PutRecords", {"StreamName": target, "Records": records})
        first_failure = len(pending)
        for index, result in enumerate(answer["Records"]):
            if "SequenceNumber" not in result:
                first_failure = min(first_failure, index)
            elif index > first_failure:
                raise BackupError(
                    f"{shard_id}: a record was refused between accepted ones "
                    f"({result}); the restore would reorder the shard"
                )
            else:
                if result["ShardId"] != shard_id:
                    raise BackupError(f"a record for {shard_id} landed in {result['ShardId']}")
                report.sequence_map[pending[index]["_old"]] = result["SequenceNumber"]
                report.records_written += 1
        pending = pending[first_failure:]
    raise BackupError(f"{shard_id}: PutRecords kept refusing records (throttled?)")


def _open_data_keys(
    manifest: dict[str, Any], keys: BackupKeys | None, seal_key: bytes | None
) -> dict[int, tuple[bytes, str]]:
    """Each data key of a sealed backup: id -> (material, the stream ARN it is bound to). The
    last run's key usually sealed the manifest as well: `seal_key`, already open, is reused
    (one KMS Decrypt fewer)."""
    data_keys = manifest.get("data_keys", [])
    if not data_keys:
        return {}
    if keys is None:
        raise BackupError(
            f"the backup of {manifest['stream']} is sealed: restoring it needs the cluster's "
            "BackupKeyService, and none was given"
        )
    seal_wrapped = manifest.get("seal", {}).get("wrapped")
    opened = {}
    for k in data_keys:
        if seal_key is not None and k["wrapped"] == seal_wrapped:
            material = seal_key
        else:
            material = keys.open(k["wrapped"])
        opened[int(k["id"])] = (material, k["wrapped"]["stream_arn"])
    return opened


def _records(
    store: BackupStore, entry: dict[str, Any], opened: dict[int, tuple[bytes, str]]
) -> Iterator[dict[str, Any]]:
    """The shard's records in order. A sealed segment opens only in its place, and the
    segments chain: each starts after the previous one's last record, the last one ends at
    the manifest's `last_sequence`."""
    sealed = entry.get("sealed", {})
    previous_last: str | None = None
    for key in entry["segments"]:
        data = store.get(key)
        if data is None:
            raise BackupError(f"segment {key} named by the manifest is missing")
        place = sealed.get(key)
        if place is None and sealing.is_sealed(data):
            raise BackupError(f"segment {key} is sealed, and the manifest lists it as clear")
        if place is not None:
            if place["after"] != previous_last:
                raise BackupError(f"segment {key} does not follow the one before it: refused")
            if int(place["data_key"]) not in opened:
                raise BackupError(f"segment {key} names a data key the manifest lacks")
            material, stream_arn = opened[int(place["data_key"])]
            try:
                data = sealing.open_sealed(
                    material, data, _binding(stream_arn, entry, key, place), name=key
                )
            except sealing.SegmentRefusedError as error:
                raise BackupError(str(error)) from error
        count, last = 0, None
        for line in data.splitlines():
            record = json.loads(line)
            count, last = count + 1, record["seq"]
            yield record
        if place is not None and (count != place["records"] or last != place["last"]):
            raise BackupError(f"segment {key} does not hold what the manifest says: refused")
        if last is not None:
            previous_last = last
    if previous_last != entry["last_sequence"]:
        raise BackupError(
            f"shard {entry['shard_id']}'s segments end at {previous_last}, and the manifest "
            f"says {entry['last_sequence']}: a segment is missing"
        )


def _restore_settings(
    call: Call, target: str, manifest: dict[str, Any], wait_active: Callable[[str], None]
) -> None:
    settings = manifest["settings"]
    if manifest["tags"]:
        call("AddTagsToStream", {"StreamName": target, "Tags": manifest["tags"]})
    if settings["retention_hours"] > 24:
        call(
            "IncreaseStreamRetentionPeriod",
            {"StreamName": target, "RetentionPeriodHours": settings["retention_hours"]},
        )
    if settings["enhanced_metrics"]:
        call(
            "EnableEnhancedMonitoring",
            {"StreamName": target, "ShardLevelMetrics": settings["enhanced_metrics"]},
        )
    arn = call("DescribeStreamSummary", {"StreamName": target})["StreamDescriptionSummary"][
        "StreamARN"
    ]
    new_consumers: dict[str, str] = {}  # name -> its new ARN
    for name in manifest["consumers"]:
        registered = {"StreamARN": arn, "ConsumerName": name}
        if manifest.get("consumer_tags", {}).get(name):
            registered["Tags"] = manifest["consumer_tags"][name]
        answer = call("RegisterStreamConsumer", registered)
        new_consumers[name] = answer["Consumer"]["ConsumerARN"]
    if settings["mode"] == "ON_DEMAND":
        wait_active(target)
        call(
            "UpdateStreamMode",
            {"StreamARN": arn, "StreamModeDetails": {"StreamMode": "ON_DEMAND"}},
        )
        # Both need an on-demand stream.
        if settings.get("warm_throughput_mibps"):
            wait_active(target)
            call(
                "UpdateStreamWarmThroughput",
                {"StreamARN": arn, "WarmThroughputMiBps": settings["warm_throughput_mibps"]},
            )
        distribution = settings.get("record_distribution")
        if distribution not in (None, _DEFAULT_DISTRIBUTION):
            wait_active(target)
            call(
                "UpdateStreamRecordDistributionStrategy",
                {"StreamARN": arn, "RecordDistributionStrategy": distribution},
            )
    wait_active(target)
    # Policies last: one may deny the calls above. The old ARNs in them name the new ones.
    old_arn = manifest.get("stream_arn")
    if manifest.get("resource_policy"):
        call(
            "PutResourcePolicy",
            {"ResourceARN": arn, "Policy": _renamed(manifest["resource_policy"], old_arn, arn)},
        )
    for name, entry in manifest.get("consumer_policies", {}).items():
        new_arn = new_consumers[name]
        policy = _renamed(_renamed(entry["policy"], entry["arn"], new_arn), old_arn, arn)
        call("PutResourcePolicy", {"ResourceARN": new_arn, "Policy": policy})


def _renamed(policy: str, old_arn: str | None, new_arn: str) -> str:
    """The policy with `old_arn` (exactly, as a whole JSON string or a prefix of a longer
    ARN: a consumer's under its stream's) replaced by `new_arn`."""
    if old_arn is None or old_arn == new_arn:
        return policy
    return policy.replace(f'"{old_arn}"', f'"{new_arn}"').replace(f'"{old_arn}/', f'"{new_arn}/')


def _load_manifest(store: BackupStore, stream: str) -> dict[str, Any] | None:
    data = store.get(manifest_key(stream))
    if data is None:
        return None
    manifest: dict[str, Any] = json.loads(data)
    if manifest.get("v") not in (_CLEAR_MANIFEST_VERSION, MANIFEST_VERSION):
        raise BackupError(
            f"backup manifest version {manifest.get('v')!r} is not one this release reads "
            f"({_CLEAR_MANIFEST_VERSION} or {MANIFEST_VERSION})"
        )
    return manifest


def _paged_shards(call: Call, stream: str) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    request: dict[str, Any] = {"StreamName": stream}
    while True:
        page = call("ListShards", request)
        shards.extend(page.get("Shards", []))
        if "NextToken" not in page:
            return shards
        request = {"NextToken": page["NextToken"]}


def _paged_tags(call: Call, stream: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    request: dict[str, Any] = {"StreamName": stream}
    while True:
        page = call("ListTagsForStream", request)
        for tag in page.get("Tags", []):
            tags[tag["Key"]] = tag.get("Value", "")
        if not page.get("HasMoreTags") or not page.get("Tags"):
            return tags
        request = {"StreamName": stream, "ExclusiveStartTagKey": page["Tags"][-1]["Key"]}


def _consumers(call: Call, stream_arn: str) -> dict[str, str]:
    """Name -> ARN of each registered consumer."""
    consumers: dict[str, str] = {}
    request: dict[str, Any] = {"StreamARN": stream_arn}
    while True:
        page = call("ListStreamConsumers", request)
        consumers.update((c["ConsumerName"], c["ConsumerARN"]) for c in page.get("Consumers", []))
        if not page.get("NextToken"):
            return consumers
        request = {"StreamARN": stream_arn, "NextToken": page["NextToken"]}


def _resource_tags(call: Call, resource_arn: str) -> dict[str, str]:
    tags = call("ListTagsForResource", {"ResourceARN": resource_arn}).get("Tags", [])
    return {tag["Key"]: tag.get("Value", "") for tag in tags}


def _policy(call: Call, resource_arn: str) -> str | None:
    """The resource's policy document, None when it has none."""
    policy: str = call("GetResourcePolicy", {"ResourceARN": resource_arn})["Policy"]
    return None if policy in ("", "{}") else policy
