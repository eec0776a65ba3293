"""The metadata quorum on pysyncobj (Raft): the ONE module that imports pysyncobj.

Shape (STYLE.md B.4): a SyncObj subclass with a single `@replicated` method that takes the
encoded command (bytes) and hands it to `_ReplicaState.apply_encoded`, which decodes it, runs
`state_machine.apply` and stores the next image. No Shoal logic lives in the subclass.

Threads: pysyncobj runs its own tick thread (`autoTick=True`). It applies committed entries and
runs completion callbacks there; those are handed to the event loop with
`loop.call_soon_threadsafe`. The loop thread only reads `_ReplicaState.image`, an immutable
object replaced by one reference assignment, so no lock is needed. The tick thread stops when
the thread that constructed the SyncObj ends (pysyncobj watches it), so `start()` constructs
it on the event loop's thread.

What pysyncobj does, checked in its 0.3.17 source (syncobj.py):
- A replicated method's return value is what `__applyLogEntries` passes to the caller's
  callback as `callback(result, FAIL_REASON.SUCCESS)`, on the node where the call was made.
  A call made on a follower is forwarded to the leader (`apply_command`); the leader answers
  with the log index, and the follower's callback fires when the follower applies that entry
  itself, with its own result (the same, as apply is deterministic).
- A one-node cluster elects itself once its election timeout passes (`__connectedToAnyone`
  is true with no peers; one vote is a majority).
- `journalFile` names the Raft log (pysyncobj's FileJournal: mmap, never fsynced, with a
  `.meta` side file for term, vote and commit index); `fullDumpFile` names the snapshot that
  log compaction writes, and that a follower behind the compacted log receives.

Durability (REFERENCE.md §4.4 pitfall 1): pysyncobj creates its journal with the module-level
`pysyncobj.syncobj.createJournal`. This module replaces that function, at import, with one that
returns `DurableJournal` (below): every appended entry is fsynced before `add` returns, so it
is on disk before this node acknowledges it or counts it towards a commit. The replacement is
process-wide, which is harmless because no other module imports pysyncobj.

When a command is answered (checked in syncobj.py): the leader appends an entry to its journal
(`DurableJournal.add` fsyncs before returning) and only then sends it; a follower appends
(fsynced) before it answers `next_node_idx` with success; the leader advances its commit index
only over entries of its own term held by a majority (itself included); callbacks fire when
the committed entry is applied. So every answered command is on disk on a majority of voters.
A follower's forwarded command is answered when the follower applies it, after the leader
committed it. The commit index on disk is written lazily: after a crash, it may be lower, which
only delays re-applying entries the next leader commits again.

Membership (dynamic, one change at a time; QuorumAdmin in quorum.py): `add_voter` and
`remove_voter` are pysyncobj's addNodeToCluster/removeNodeFromCluster. The leader takes a new
change only once the previous one and its own term's first entry are applied; a change takes
effect when appended (not when committed) and is undone if truncated, pysyncobj's
single-server scheme. The voter set lives in the log and in snapshots (`cluster`), so after a
restart it overrides the configured peers. A new voter is added first, then started with the
current voters as peers (until it is added, the voters refuse its connections). A voter removing
itself hands over leadership first and then asks the new leader over pysyncobj's utility
protocol (`syncobj_admin`'s), since a forwarded request from the node being removed is never
answered. Read-only members (`QuorumConfig.read_only`) run with `selfNode=None`: they follow
the log, forward proposals, never vote, listen on no port, and do not count for any majority.
A leader that hears from no majority for `leader_fallback_timeout_s` (3 s) steps down.

Snapshots: custom `serializer`/`deserializer` options make the full dump our own versioned
JSON (`image_codec`), never a pickle of our classes, and, as a side effect, stop pysyncobj from
forking for compaction (it only forks without a custom serializer; gRPC is not fork-safe).

Pickle on the wire: pysyncobj pickles its own messages. Our entries are bytes inside tuples of
builtins, and `password` encrypts (and so authenticates) the traffic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import logging
import os
import queue
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pysyncobj.syncobj
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.journal import Journal, MemoryJournal
from pysyncobj.monotonic import monotonic as raft_clock  # the clock of pysyncobj's deadlines
from pysyncobj.pickle import pickle as pysyncobj_pickle
from pysyncobj.utility import TcpUtility, UtilityException

from broker import error_messages
from broker.errors import ErrorCode, ShoalError, StartupRefused
from broker.meta import state_machine
from broker.meta.commands import Command, decode_command, encode_command
from broker.meta.image import MetadataImage
from broker.meta.image_codec import image_from_document, image_to_document
from broker.meta.quorum import (
    QuorumConfig,
    QuorumMembership,
    QuorumStatistics,
    wait_for_image_change,
)
from broker.meta.state_machine import Applied

log = logging.getLogger(__name__)

JOURNAL_FILE_NAME = "raft.journal"
SNAPSHOT_FILE_NAME = "raft.snapshot"
SNAPSHOT_FORMAT_VERSION = 1

Entry = tuple[bytes, int, int]  # pysyncobj's log entry: (command, index, term)


# --- Durable journal ---------------------------------------------------------------------------

_RECOVERY = (
    "this node will not start; recover it from the other voters: move {directory} aside and "
    'restart the node (docs/operations.md, "Metadata corruption")'
)


class MetadataCorruptionError(StartupRefused):
    """A metadata file (Raft journal, its meta file, the snapshot) failed its checks."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} {problem}; " + _RECOVERY.format(directory=path.parent))
        self.path = path


_RECENT_IMAGES_MAX = 256  # images kept for voters to be compared at one applied count

_JOURNAL_MAGIC = b"SHOALRJ\x00"
_JOURNAL_VERSION = 1
_FILE_HEADER = struct.Struct("<8sI")  # magic, format version
_RECORD_HEADER = struct.Struct("<IIQQ")  # payload length, crc32(index, term, payload), index, term
_RECORD_BYTES_MAX = 64 * 1024 * 1024  # a length beyond this is a torn or corrupt header
_META_FORMAT_VERSION = 1


def _fsync_dir(path: Path) -> None:
    """Makes a rename or a new file in `path` durable (the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_file_durably(path: Path, data: bytes) -> None:
    """tmp file, fsync, rename over `path`, fsync the directory: old or new, never torn."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _encode_record(entry: Entry) -> bytes:
    command, index, term = entry
    body = struct.pack("<QQ", index, term) + command
    return _RECORD_HEADER.pack(len(command), zlib.crc32(body), index, term) + command


class DurableJournal(Journal):  # type: ignore[misc]  # pysyncobj ships no types
    """pysyncobj's Journal interface, with every change on disk before the call returns.

    Log file: a header (magic, version), then records of (length, crc32, index, term, command).
    `add` appends and fdatasyncs. A crash can leave only a torn last record, which recovery
    drops (it was never acknowledged); a bad record followed by more data is corruption and
    stops the node. Truncating the suffix (`deleteEntriesFrom`) is an ftruncate plus fsync;
    compaction (`deleteEntriesTo`) rewrites the kept entries into a new file and renames it.

    Meta file (`<log>.meta`): JSON {v, current_term, voted_for, commit_index}, replaced
    atomically (tmp, fsync, rename, directory fsync). Term and vote are written before
    `setCurrentTerm` returns, as Raft requires; the commit index is written at most once a
    second (pysyncobj's timer) and on close, since a stale one only delays re-applying
    entries that the next leader commits again.

    Used only from pysyncobj's tick thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._meta_path = path.with_name(path.name + ".meta")
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        self._meta = self._read_meta()
        self._meta_dirty = False
        self._fd = self._open_and_recover()

    # Recovery.

    def _read_meta(self) -> dict[str, Any]:
        try:
            document = json.loads(self._meta_path.read_bytes())
        except FileNotFoundError:
            return {"current_term": 0, "voted_for": None, "commit_index": 1}
        except (OSError, ValueError) as exc:
            raise MetadataCorruptionError(self._meta_path, f"is unreadable ({exc})") from exc
        if not isinstance(document, dict) or document.get("v") != _META_FORMAT_VERSION:
            raise MetadataCorruptionError(self._meta_path, "is not a journal meta file we wrote")
        try:
            term, voted_for, commit = (
                document[key] for key in ("current_term", "voted_for", "commit_index")
            )
        except KeyError as exc:
            raise MetadataCorruptionError(self._meta_path, f"lacks {exc}") from exc
        if not isinstance(term, int) or not isinstance(commit, int):
            raise MetadataCorruptionError(self._meta_path, "holds a term or index not a number")
        return {"current_term": term, "voted_for": voted_for, "commit_index": commit}

    def _open_and_recover(self) -> int:
        if not self._path.exists():
            _write_file_durably(self._path, _FILE_HEADER.pack(_JOURNAL_MAGIC, _JOURNAL_VERSION))
        data = self._path.read_bytes()
        if len(data) < _FILE_HEADER.size:
            raise MetadataCorruptionError(self._path, "is shorter than a journal header")
        magic, version = _FILE_HEADER.unpack_from(data, 0)
        if magic != _JOURNAL_MAGIC:
            raise MetadataCorruptionError(self._path, "is not a Shoal Raft journal")
        if version != _JOURNAL_VERSION:
            raise MetadataCorruptionError(self._path, f"has unknown format version {version}")
        end = self._scan(data)
        fd = os.open(self._path, os.O_RDWR | os.O_APPEND)
        if end < len(data):
            log.warning(
                "raft_journal_torn_tail_dropped",
                extra={"path": str(self._path), "bytes": len(data) - end},
            )
            os.ftruncate(fd, end)
            os.fsync(fd)
        return fd

    def _scan(self, data: bytes) -> int:
        """Loads every whole record; returns the offset where the valid log ends."""
        offset = _FILE_HEADER.size
        while offset < len(data):
            record = self._parse_record(data, offset)
            if record is None:
                # A torn tail, unless a whole record follows: a length broken in the middle
                # of the log also runs past the end, and would silently drop the rest.
                last_index = self._entries[-1][1] if self._entries else None
                later = _later_record(data, offset + 1, after_index=last_index)
                if later is not None:
                    raise MetadataCorruptionError(
                        self._path,
                        f"is corrupt: the record at byte {offset} is broken, yet a whole "
                        f"record follows at byte {later}",
                    )
                return offset
            entry, size = record
            if self._entries and entry[1] != self._entries[-1][1] + 1:
                raise MetadataCorruptionError(
                    self._path, f"has non-consecutive entries at byte {offset}"
                )
            self._entries.append(entry)
            self._offsets.append(offset)
            offset += size
        return offset

    def _parse_record(self, data: bytes, offset: int) -> tuple[Entry, int] | None:
        """The record at `offset`, or None for a torn tail; raises on mid-log corruption."""
        if offset + _RECORD_HEADER.size > len(data):
            return None
        length, crc, index, term = _RECORD_HEADER.unpack_from(data, offset)
        end = offset + _RECORD_HEADER.size + length
        if length > _RECORD_BYTES_MAX or end > len(data):
            return None
        command = bytes(data[offset + _RECORD_HEADER.size : end])
        if zlib.crc32(struct.pack("<QQ", index, term) + command) != crc:
            # Only the last record can be torn: each one was fsynced before the next began.
            if end < len(data):
                raise MetadataCorruptionError(
                    self._path,
                    f"is corrupt: the record at byte {offset} fails its CRC before the log's end",
                )
            return None
        return (command, index, term), end - offset

    # Log.

    def add(self, command: bytes, idx: int, term: int) -> None:
        assert isinstance(command, bytes)
        if self._entries:
            assert idx == self._entries[-1][1] + 1
        offset = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            _write_all(self._fd, _encode_record((command, idx, term)))
            os.fdatasync(self._fd)
        except OSError:
            # A full disk (or an I/O error) mid-record: cut the partial record off, or the next
            # add would append after it and leave corruption mid-log. pysyncobj logs the error
            # and the entry is not added (a follower does not acknowledge it).
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, offset)
                os.fsync(self._fd)
            raise
        self._entries.append((command, idx, term))
        self._offsets.append(offset)

    def clear(self) -> None:
        self._truncate_at(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom < len(self._entries):
            self._truncate_at(entryFrom)

    def _truncate_at(self, position: int) -> None:
        if position < len(self._offsets):
            offset = self._offsets[position]
        else:
            offset = os.lseek(self._fd, 0, os.SEEK_END)
        os.ftruncate(self._fd, offset)
        os.fsync(self._fd)
        del self._entries[position:]
        del self._offsets[position:]

    def deleteEntriesTo(self, entryTo: int) -> None:
        # pysyncobj calls this after renaming a new snapshot into place without syncing the
        # directory; sync it first, or a crash could keep the short log and lose the snapshot.
        _fsync_dir(self._path.parent)
        kept = self._entries[entryTo:]
        records = [_encode_record(entry) for entry in kept]
        header = _FILE_HEADER.pack(_JOURNAL_MAGIC, _JOURNAL_VERSION)
        os.close(self._fd)
        _write_file_durably(self._path, header + b"".join(records))
        self._fd = os.open(self._path, os.O_RDWR | os.O_APPEND)
        self._entries = kept
        self._offsets = []
        offset = len(header)
        for record in records:
            self._offsets.append(offset)
            offset += len(record)

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        if self._meta_dirty:
            self._store_meta()
        os.close(self._fd)

    def flush(self) -> None:
        """FileJournal has it; everything here is already on disk."""

    # Meta.

    def _store_meta(self) -> None:
        document = {"v": _META_FORMAT_VERSION, **self._meta}
        _write_file_durably(self._meta_path, json.dumps(document, sort_keys=True).encode())
        self._meta_dirty = False

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self._meta["commit_index"] != raftCommitIndex:
            self._meta["commit_index"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        commit_index: int = self._meta["commit_index"]
        return commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        self._meta["current_term"] = term
        self._meta["voted_for"] = votedForNodeId
        self._store_meta()  # before any vote request or grant leaves this node

    def getCurrentTerm(self) -> int:
        term: int = self._meta["current_term"]
        return term

    def getVotedForNodeId(self) -> str | None:
        voted_for: str | None = self._meta["voted_for"]
        return voted_for

    def onOneSecondTimer(self) -> None:
        if self._meta_dirty:
            self._store_meta()


def _later_record(data: bytes, start: int, *, after_index: int | None) -> int | None:
    """The offset of the first whole record (CRC included) at or after `start` whose index
    is past `after_index` + 1 (the broken record's), or None: a tail torn by a crash has
    nothing whole after it."""
    for offset in range(start, len(data) - _RECORD_HEADER.size + 1):
        length, crc, index, term = _RECORD_HEADER.unpack_from(data, offset)
        end = offset + _RECORD_HEADER.size + length
        if length > _RECORD_BYTES_MAX or end > len(data):
            continue
        if after_index is not None and index != after_index + 2:
            continue
        command = data[offset + _RECORD_HEADER.size : end]
        if zlib.crc32(struct.pack("<QQ", index, term) + command) == crc:
            return offset
    return None


# --- Truncation only on conflict -------------------------------------------------------------


class Divergence(Exception):
    """A leader sent an entry that differs from one this replica already applied: the metadata
    state machines have diverged, a broken Raft invariant. This replica stops."""


def keep_held_entries(
    message: dict[str, Any], journal: Any, *, applied: int
) -> dict[str, Any] | Divergence:
    """An append_entries message rewritten so that pysyncobj never truncates entries this
    follower already holds and must keep (Raft truncates only on a conflict), or Divergence.

    pysyncobj 0.3.17 (syncobj.py, the append_entries handler) deletes every entry after
    `prevLogIdx` whenever any follows it, then appends the message's entries. A heartbeat or
    resend from a leader whose view of this follower lags (its optimistic nextIndex was rewound
    by a `reset`, or a stale duplicate arrives) therefore cuts entries the follower already
    acknowledged, even applied ones ("truncating already-applied log entries ... may have
    diverged", logged CRITICAL 13-17 times per 300 s chaos run). The entries come back with
    the leader's next messages, identical, and are not applied twice, so the images stay the
    same; but meanwhile the follower lacks entries the leader counted towards a commit: a
    leader crash in that window could elect a log without them.

    The entries after `prevLogIdx` that may stay, whatever the message holds: the applied ones
    (committed, so in every later leader's log at the same index and term) and those of the
    leader's own term (one leader per term). The message is moved past them (its entries that
    they cover must match them); pysyncobj then truncates only what really conflicts."""
    prev = message.get("prevLogIdx")
    if prev is None or message.get("transmission") is not None or len(journal) == 0:
        return message  # an install-snapshot or chunked message: pysyncobj's own handling
    first_index, last_index = journal[0][1], journal[-1][1]
    if prev >= last_index or prev < first_index:
        return message  # nothing after prev here to cut (or prev unknown: pysyncobj resets)
    if journal[prev - first_index][2] != message.get("prevLogTerm"):
        return message  # no match at prev: pysyncobj refuses it and cuts nothing
    leader_term = message.get("term", 0)
    keep_to = prev
    for index in range(prev + 1, last_index + 1):
        term = journal[index - first_index][2]
        if index > applied and term != leader_term:
            break
        keep_to = index
    if keep_to == prev:
        return message
    entries = list(message.get("entries") or [])
    for _, index, term in entries:
        if index > keep_to:
            break
        held_term = journal[index - first_index][2]
        if held_term != term:
            return Divergence(
                f"the leader sent entry {index} of term {term}, but this replica holds it with "
                f"term {held_term} (applied up to {applied})"
            )
    rewritten = dict(message)
    rewritten["prevLogIdx"] = keep_to
    rewritten["prevLogTerm"] = journal[keep_to - first_index][2]
    rewritten["entries"] = [entry for entry in entries if entry[1] > keep_to]
    return rewritten


def _create_journal(journal_file: str | None = None) -> Journal:
    if journal_file is None:
        return MemoryJournal()
    return DurableJournal(Path(journal_file))


# Installed at import (see the module docstring); SyncObj.__init__ looks the name up here.
pysyncobj.syncobj.createJournal = _create_journal


# --- Replicated state --------------------------------------------------------------------------


class _ReplicaState:
    """The image one node has applied, and the bridge from the tick thread to the loop.

    Written only on pysyncobj's tick thread; `image` is read from the loop thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, self_address: str | None) -> None:
        self.self_address = self_address  # None on a read-only member
        self.image = MetadataImage()
        self.failure: str | None = None  # set when this replica can no longer be trusted
        self.raft_state = 0  # pysyncobj's _RAFT_STATE: 0 follower, 1 candidate, 2 leader
        self._loop = loop
        self._notify_pending = False
        self.changed = asyncio.Event()  # loop thread only; replaced after each change
        self.recent: collections.deque[MetadataImage] = collections.deque(maxlen=_RECENT_IMAGES_MAX)

    def apply_encoded(self, data: bytes) -> Applied:
        """The body of the replicated method: decode, apply, store, notify."""
        try:
            command = decode_command(data)
            applied = state_machine.apply(self.image, command)
        except Exception as exc:
            # This replica cannot apply a committed entry (a newer format or a bug): it must
            # not serve or propose; pysyncobj will retry the entry and keep failing.
            self.failure = f"cannot apply a committed metadata command: {exc!r}"
            log.exception("metadata_apply_failed")
            raise
        self.set_image(applied.image)
        return applied

    def set_image(self, image: MetadataImage) -> None:
        self.image = image
        # The last few images by applied command count, for `image_after` (immutable: kept
        # by reference; they share every part that did not change).
        self.recent.append(image)
        if not self._notify_pending:
            self._notify_pending = True
            self.call_in_loop(self._notify_changed)

    def call_in_loop(self, callback: Callable[..., None], *args: object) -> None:
        # A closed loop raises RuntimeError: the quorum is being torn down, nobody is waiting.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _notify_changed(self) -> None:
        self._notify_pending = False
        self.changed.set()
        self.changed = asyncio.Event()

    # Snapshot hooks (SyncObjConf.serializer / deserializer), called on the tick thread.

    def write_snapshot(self, file_name: str, data: tuple[Entry, Entry, Any]) -> None:
        """pysyncobj passes (last applied entry, the one before, the cluster's nodes); the
        image is the one after the last applied entry, as the tick thread applies in order."""
        last_entry, previous_entry, cluster = data
        document = {
            "v": SNAPSHOT_FORMAT_VERSION,
            "image": image_to_document(self.image),
            "last_entry": _entry_to_document(last_entry),
            "previous_entry": _entry_to_document(previous_entry),
            # pysyncobj includes this node, or None on a read-only member.
            "cluster": sorted(str(node.id) for node in cluster if node is not None),
        }
        payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        fd = os.open(file_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, payload)
            os.fsync(fd)  # pysyncobj renames it into place; the journal syncs the directory
        finally:
            os.close(fd)

    def read_snapshot(self, file_name: str) -> tuple[Entry, Entry, set[str]]:
        """Loads the image from a snapshot (at restart, or received from the leader)."""
        path = Path(file_name)
        # A snapshot received from the leader was written and renamed without fsync, and the
        # journal is cleared right after this returns: make the snapshot durable first.
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(path.parent)
        try:
            document = json.loads(path.read_bytes())
            assert document["v"] == SNAPSHOT_FORMAT_VERSION
            image = image_from_document(document["image"])
            last_entry = _entry_from_document(document["last_entry"])
            previous_entry = _entry_from_document(document["previous_entry"])
        except Exception as exc:
            # pysyncobj logs and ignores a failing deserializer; this replica is then wrong.
            self.failure = f"cannot read the metadata snapshot {file_name}: {exc!r}"
            raise
        self.set_image(image)
        # pysyncobj (dynamic membership) makes these the partners, skipping its own Node; a
        # plain address would not compare equal to it, and the node would list itself.
        partners = {str(node) for node in document["cluster"]} - {self.self_address}
        return last_entry, previous_entry, partners


def verify_metadata_files(data_dir: Path) -> None:
    """Refuses (MetadataCorruptionError, one line) a Raft journal, journal meta or snapshot
    that fails its checks, before pysyncobj reads them: pysyncobj would stop on a broken
    journal with a traceback, and log and ignore a broken snapshot, then run without it."""
    journal = data_dir / JOURNAL_FILE_NAME
    if journal.exists():
        DurableJournal(journal)._destroy()  # reads and checks every record (and the meta)
    snapshot = data_dir / SNAPSHOT_FILE_NAME
    if not snapshot.exists():
        return
    try:
        document = json.loads(snapshot.read_bytes())
        if document["v"] != SNAPSHOT_FORMAT_VERSION:
            raise ValueError(f"unknown snapshot format version {document['v']!r}")
        image_from_document(document["image"])
        _entry_from_document(document["last_entry"])
        _entry_from_document(document["previous_entry"])
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise MetadataCorruptionError(snapshot, f"is not a readable snapshot ({exc!r})") from exc


def _entry_to_document(entry: Entry) -> list[object]:
    command, index, term = entry
    return [base64.b64encode(command).decode("ascii"), index, term]


def _entry_from_document(document: list[Any]) -> Entry:
    command, index, term = document
    try:
        raw = base64.b64decode(command, validate=True)
    except binascii.Error as exc:
        raise ValueError("bad base64 in snapshot entry") from exc
    return (raw, int(index), int(term))


_PRE_VOTE = "shoal_pre_vote"  # "would you vote for me at this term?" (`_onTick`)
_PRE_VOTE_ANSWER = "shoal_pre_vote_answer"


class _MetadataSyncObj(SyncObj):  # type: ignore[misc]  # pysyncobj ships no types
    """The Raft node. Its one replicated method delegates to `_ReplicaState`."""

    _SyncObj__raftElectionDeadline: float  # pysyncobj's, read and moved by the pre-vote

    def __init__(
        self,
        state: _ReplicaState,
        *,
        self_address: str | None,
        peers: list[str],
        conf: SyncObjConf,
        blank: bool = False,
    ) -> None:
        self._shoal_state = state  # before super().__init__: the tick thread starts there
        # Work handed to the tick thread (pysyncobj is not thread-safe outside its queues).
        self._shoal_tick_work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.shoal_partners: tuple[str, ...] = tuple(sorted(p for p in peers if p != self_address))
        # A voter that starts with no journal and no snapshot (a replaced disk, or a new
        # cluster) votes only for empty logs until it has applied what a leader had committed
        # (`_SyncObj__onMessageReceived`) or was elected itself (`_shoal_run_tick_work`).
        self._shoal_blank = blank
        self._shoal_catch_up_to: int | None = None
        self._shoal_withheld_term = -1
        # Pre-vote (see `_onTick`): when this node last heard a leader, the round it asked
        # (the term it would stand for, and who said yes) and the term a won round is for.
        self._shoal_leader_heard_at = float("-inf")  # a new process has heard no leader
        self._shoal_sticky_s = float(conf.raftMinTimeout)
        self._shoal_pre_vote: tuple[int, set[str]] | None = None
        self._shoal_pre_vote_won_term = -1
        super().__init__(self_address, peers, conf)
        self.addOnTickCallback(self._shoal_run_tick_work)

    # Pre-vote (Raft thesis 9.6), which pysyncobj lacks. Without it a voter that misses the
    # leader's heartbeats for an election timeout (a starved CPU, a long pause of its process)
    # stands for a higher term, and the healthy leader steps down on seeing that term: each
    # such hiccup costs the cluster an election (measured: 8 in 40 s with one follower at
    # nice 19 on a busy machine). Here a voter whose election timeout passed first asks the
    # other voters whether they would vote for it, without raising its term; a voter says yes
    # only when it has not heard a leader for the minimum election timeout itself (and the
    # asker's log is at least as complete). Only with a majority of yeses does pysyncobj's own
    # election start, one tick later. A dead leader is replaced as fast as before (the others
    # stopped hearing it too); a starved follower's question is refused and it follows the
    # leader again once it reads the heartbeats waiting for it. A transfer of leadership
    # (TimeoutNow, from the leader) skips the question. Older nodes ignore the two new message
    # types, so in a rolling upgrade they elect as before and vote in the real election.
    def _onTick(self, timeToWait: float = 0.0) -> None:  # pysyncobj's names
        if self._SyncObj__transport.ready:
            # Heartbeats already waiting in the socket first: after a starved stretch they show
            # the leader is alive before the election deadline is looked at.
            self._poller.poll(0)
        self._shoal_ask_before_standing()
        super()._onTick(timeToWait)

    def _shoal_ask_before_standing(self) -> None:
        if self._SyncObj__selfNode is None or self._SyncObj__raftState == _RAFT_LEADER:
            return
        if self._SyncObj__transferInProgress or not self._SyncObj__otherNodes:
            return  # asked by the leader to stand; or alone, where one vote is a majority
        now = raft_clock()
        if self._SyncObj__raftElectionDeadline >= now:
            return
        term = self.raftCurrentTerm + 1
        if self._shoal_pre_vote_won_term == term:
            return  # a majority said yes: pysyncobj's election starts in this tick
        # Not yet: hold the election for another timeout and ask first.
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        self._shoal_pre_vote = (term, {str(self._SyncObj__selfNode.id)})
        question = {
            "type": _PRE_VOTE,
            "term": term,
            "last_log_index": self._SyncObj__getCurrentLogIndex(),
            "last_log_term": self._SyncObj__getCurrentLogTerm(),
        }
        for node in self._SyncObj__otherNodes:
            self._SyncObj__transport.send(node, question)

    def _shoal_answer_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        term = int(message.get("term", 0))
        ours = (self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex())
        theirs = (int(message.get("last_log_term", 0)), int(message.get("last_log_index", 0)))
        granted = (
            self._SyncObj__selfNode is not None
            and term > self.raftCurrentTerm
            and self._SyncObj__raftState != _RAFT_LEADER
            and raft_clock() - self._shoal_leader_heard_at >= self._shoal_sticky_s
            and theirs >= ours
            and not (self._shoal_blank and theirs[0] > 0)
        )
        self._SyncObj__transport.send(
            node, {"type": _PRE_VOTE_ANSWER, "term": term, "granted": granted}
        )

    def _shoal_count_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        asked = self._shoal_pre_vote
        if asked is None or not message.get("granted") or message.get("term") != asked[0]:
            return
        term, yeses = asked
        yeses.add(str(node.id))
        if (
            term == self.raftCurrentTerm + 1
            and len(yeses) > (len(self._SyncObj__otherNodes) + 1) / 2
        ):
            self._shoal_pre_vote = None
            self._shoal_pre_vote_won_term = term
            self._SyncObj__raftElectionDeadline = 0.0  # stand at the next tick

    # pysyncobj's private message handler (`SyncObj.__onMessageReceived`, name-mangled), which
    # its transport calls for every message: the one hook into vote granting. A voter that
    # lost its journal forgot its vote and its log, so it would vote for any candidate, and
    # with one healthy voter elect a leader missing entries this voter had helped commit
    # (Raft needs stable storage for votedFor and the log). Until it caught up it therefore
    # votes only in a new cluster, whose candidates' logs hold no term yet.
    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == _PRE_VOTE:
            self._shoal_answer_pre_vote(node, message)
            return
        if kind == _PRE_VOTE_ANSWER:
            self._shoal_count_pre_vote(node, message)
            return
        if kind == "append_entries" and message.get("term", 0) >= self.raftCurrentTerm:
            self._shoal_leader_heard_at = raft_clock()
        if self._shoal_blank:
            kind = message.get("type")
            if kind == "request_vote" and message.get("last_log_term", 0) > 0:
                term = message.get("term", 0)
                if term != self._shoal_withheld_term:
                    self._shoal_withheld_term = term
                    log.warning(
                        "raft_vote_withheld",
                        extra={"candidate": str(node.id), "term": term, "reason": "no journal"},
                    )
                return
            if kind == "append_entries" and self._shoal_catch_up_to is None:
                self._shoal_catch_up_to = int(message.get("commit_index", 0))
        if (
            message.get("type") == "append_entries"
            and message.get("term", 0) >= self.raftCurrentTerm
        ):
            outcome = keep_held_entries(
                message, self._SyncObj__raftLog, applied=self.raftLastApplied
            )
            if isinstance(outcome, Divergence):
                self._shoal_state.failure = str(outcome)
                log.error("metadata_diverged", extra={"detail": str(outcome)})
                return
            message = outcome
        super()._SyncObj__onMessageReceived(node, message)

    def _shoal_run_tick_work(self) -> None:
        # A snapshot the loop thread may read: pysyncobj mutates its node sets on this thread.
        self.shoal_partners = tuple(sorted(str(node.id) for node in self.otherNodes))
        target = self._shoal_catch_up_to
        if self._shoal_blank and target is not None and self.raftLastApplied >= target:
            self._shoal_blank = False
            log.info("raft_voter_caught_up", extra={"applied": self.raftLastApplied})
        elif self._shoal_blank and self._isLeader():
            # Elected: a majority found its log at least as complete as theirs, so it holds
            # every committed entry (Raft's election restriction; a blank voter with an empty
            # log only wins in a new cluster). A voter that formed the cluster as its first
            # leader receives no append_entries, and without this stayed blank for good: once
            # it lost the leadership it withheld its vote from every candidate, and with one
            # other voter down no leader could be elected again (issue 20's fencing stall).
            self._shoal_blank = False
            log.info(
                "raft_voter_caught_up", extra={"applied": self.raftLastApplied, "elected": True}
            )
        while True:
            try:
                work = self._shoal_tick_work.get_nowait()
            except queue.Empty:
                return
            work()

    def call_on_tick_thread(self, work: Callable[[], None]) -> None:
        self._shoal_tick_work.put(work)

    @replicated  # type: ignore[untyped-decorator]
    def apply_encoded(self, data: bytes) -> Applied:
        return self._shoal_state.apply_encoded(data)


# --- The quorum --------------------------------------------------------------------------------

_FAILURE_TEXT = {
    FAIL_REASON.QUEUE_FULL: error_messages.METADATA_QUEUE_FULL,
    FAIL_REASON.MISSING_LEADER: error_messages.METADATA_NO_LEADER,
    FAIL_REASON.DISCARDED: error_messages.METADATA_COMMAND_DISCARDED,
    FAIL_REASON.NOT_LEADER: error_messages.METADATA_LEADER_CHANGED_BEFORE_COMMIT,
    FAIL_REASON.LEADER_CHANGED: error_messages.METADATA_LEADER_CHANGED,
    FAIL_REASON.REQUEST_DENIED: error_messages.METADATA_COMMAND_DENIED,
    FAIL_REASON.UNKNOWN_OUTCOME: error_messages.METADATA_OUTCOME_UNKNOWN,
}
_RAFT_ROLES = {0: "follower", 1: "candidate", 2: "leader"}


class PysyncobjQuorum:
    """MetadataQuorum over pysyncobj. A node view; one instance per node and per process
    thread. Lifecycle: `await start()`, use from the same event loop, `await stop()`."""

    def __init__(self, config: QuorumConfig) -> None:
        config.validate()
        self._config = config
        self._state: _ReplicaState | None = None
        self._syncobj: _MetadataSyncObj | None = None
        self._pending: set[asyncio.Future[object]] = set()

    def _sync_obj_conf(self, state: _ReplicaState) -> SyncObjConf:
        config = self._config
        data_dir = config.data_dir
        return SyncObjConf(
            password=config.password,
            autoTick=True,  # pysyncobj's own tick thread; completions go back via the loop
            # Send each entry at once instead of at the next heartbeat: p50 0.33 ms instead
            # of ~100 ms per blocking call on 3 local nodes (DESIGN.md §3).
            appendEntriesUseBatch=False,
            useFork=False,  # gRPC is not fork-safe; our serializer disables forking anyway
            dnsCacheTime=config.dns_cache_s,
            dnsFailCacheTime=config.dns_fail_cache_s,
            leaderFallbackTimeout=config.leader_fallback_timeout_s,
            raftMinTimeout=config.election_timeout_min_s,
            raftMaxTimeout=config.election_timeout_max_s,
            appendEntriesPeriod=config.heartbeat_interval_s,
            connectionTimeout=config.connection_timeout_s,
            connectionRetryTime=config.connection_retry_s,
            journalFile=str(data_dir / JOURNAL_FILE_NAME),
            fullDumpFile=str(data_dir / SNAPSHOT_FILE_NAME),
            serializer=state.write_snapshot,
            deserializer=state.read_snapshot,
            logCompactionMinEntries=config.log_compaction_entries_min,
            logCompactionMinTime=config.log_compaction_interval_s,
            commandsQueueSize=config.commands_queue_max,
            commandsWaitLeader=True,  # queue during an election; our deadline bounds the wait
            bindAddress=None if config.read_only else config.bind_address or config.self_address,
            bindRetryTime=1.0,
            maxBindRetries=config.bind_attempts_max,
            # Voters change one at a time through the log (add_voter/remove_voter).
            dynamicMembershipChange=True,
            onStateChanged=lambda _old, new: setattr(state, "raft_state", new),
        )

    async def start(self) -> None:
        assert self._syncobj is None, "started twice"
        data_dir = self._config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        journal, snapshot = data_dir / JOURNAL_FILE_NAME, data_dir / SNAPSHOT_FILE_NAME
        blank = not journal.exists() and not snapshot.exists()
        await asyncio.to_thread(verify_metadata_files, data_dir)
        self_address = None if self._config.read_only else self._config.self_address
        state = _ReplicaState(asyncio.get_running_loop(), self_address=self_address)
        # Constructed on the loop's thread on purpose: pysyncobj's tick thread exits when the
        # constructing thread does, and the loop's thread lives as long as the node.
        syncobj = _MetadataSyncObj(
            state,
            self_address=self_address,
            peers=list(self._config.peer_addresses),
            conf=self._sync_obj_conf(state),
            blank=blank and bool(self._config.peer_addresses) and self_address is not None,
        )
        self._state, self._syncobj = state, syncobj
        if self._config.read_only:
            return  # listens nowhere; pysyncobj's waitBinded would wait for a bind forever
        try:
            await asyncio.to_thread(syncobj.waitBinded)
        except pysyncobj.syncobj.SyncObjException as exc:
            await self.stop()
            raise ShoalError(
                ErrorCode.UNAVAILABLE,
                error_messages.metadata_quorum_cannot_listen(address=self._config.self_address),
            ) from exc

    async def stop(self) -> None:
        syncobj, self._syncobj = self._syncobj, None
        if syncobj is not None:
            await asyncio.to_thread(syncobj.destroy_synchronous)
        for future in self._pending:
            if not future.done():
                future.set_exception(
                    _unavailable(error_messages.METADATA_QUORUM_STOPPED, unknown=True)
                )
        self._pending.clear()

    async def propose(self, command: Command) -> object:
        syncobj, state = self._syncobj, self._state
        if syncobj is None or state is None:
            raise ShoalError(ErrorCode.UNAVAILABLE, error_messages.METADATA_QUORUM_NOT_STARTED)
        if state.failure is not None:
            raise ShoalError(ErrorCode.INTERNAL_FAILURE, state.failure)
        data = encode_command(command)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending.add(future)

        def on_done(result: object, reason: int) -> None:  # pysyncobj's tick thread
            state.call_in_loop(_settle, future, result, reason)

        try:
            syncobj.apply_encoded(data, callback=on_done)
            async with asyncio.timeout(self._config.propose_timeout_s):
                return await future
        except TimeoutError as exc:
            raise _unavailable(
                error_messages.METADATA_COMMAND_TIMEOUT_REASON, unknown=True
            ) from exc
        finally:
            self._pending.discard(future)

    def image(self) -> MetadataImage:
        return self._state.image if self._state is not None else MetadataImage()

    def image_after(self, applied_commands: int) -> MetadataImage | None:
        """The image this node had after `applied_commands` commands, if it still keeps it
        (the last few hundred); for comparing voters (every voter's must be the same)."""
        state = self._state
        if state is None:
            return None
        for image in list(state.recent):  # a copy: the tick thread appends meanwhile
            if image.applied_commands == applied_commands:
                return image
        return None

    async def wait_for_image(
        self, predicate: Callable[[MetadataImage], bool], *, timeout_s: float
    ) -> MetadataImage:
        state = self._state
        if state is None:
            raise ShoalError(ErrorCode.UNAVAILABLE, error_messages.METADATA_QUORUM_NOT_STARTED)
        return await wait_for_image_change(
            lambda: state.image, lambda: state.changed, predicate, timeout_s=timeout_s
        )

    def is_ready(self) -> bool:
        syncobj, state = self._syncobj, self._state
        if syncobj is None or state is None or state.failure is not None:
            return False
        return bool(syncobj.isReady()) and syncobj._getLeader() is not None

    def statistics(self) -> QuorumStatistics:
        syncobj, state = self._syncobj, self._state
        if syncobj is None or state is None:
            return QuorumStatistics(
                role="stopped",
                term=0,
                commit_index=0,
                last_applied=0,
                quorum_leader=None,
                applied_commands=self.image().applied_commands,
            )
        leader = syncobj._getLeader()
        return QuorumStatistics(
            role=_RAFT_ROLES.get(state.raft_state, "unknown"),
            term=int(syncobj.raftCurrentTerm),
            commit_index=int(syncobj.raftCommitIndex),
            last_applied=int(syncobj.raftLastApplied),
            quorum_leader=None if leader is None else str(leader.id),
            applied_commands=state.image.applied_commands,
        )

    # --- Leadership and membership (QuorumAdmin) -------------------------------------------

    def is_quorum_leader(self) -> bool:
        syncobj, state = self._syncobj, self._state
        if syncobj is None or state is None or state.failure is not None:
            return False
        return state.raft_state == _RAFT_LEADER

    def quorum_leader_address(self) -> str | None:
        syncobj = self._syncobj
        if syncobj is None:
            return None
        leader = syncobj._getLeader()
        return None if leader is None else str(leader.id)

    def membership(self) -> QuorumMembership:
        config = self._config
        partners = self._syncobj.shoal_partners if self._syncobj is not None else ()
        voters = partners if config.read_only else (*partners, config.self_address)
        return QuorumMembership(
            self_address=config.self_address,
            voters=tuple(sorted(voters)),
            read_only=config.read_only,
        )

    async def add_voter(self, address: str, *, timeout_s: float) -> None:
        _check_address(address)
        if address in self.membership().voters:
            return
        await self._change_membership("add", address, timeout_s=timeout_s)
        log.info("quorum_voter_added", extra={"address": address})

    async def remove_voter(self, address: str, *, timeout_s: float) -> None:
        _check_address(address)
        if address not in self.membership().voters:
            return
        if address != self._config.self_address:
            await self._change_membership("rem", address, timeout_s=timeout_s)
        else:
            await self._remove_self(timeout_s=timeout_s)
        log.info("quorum_voter_removed", extra={"address": address})

    async def _remove_self(self, *, timeout_s: float) -> None:
        """A voter removing itself: pysyncobj's leader refuses to remove itself, and a
        follower's forwarded request is never answered (the leader drops the connection to
        the node it removes before answering). So hand leadership over if needed, then ask
        the leader over pysyncobj's utility protocol, as `syncobj_admin -remove` does; it
        answers once the change is committed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self_address = self._config.self_address
        if self.is_quorum_leader() and not await self.transfer_leadership(timeout_s=timeout_s):
            raise ShoalError(
                ErrorCode.UNAVAILABLE, error_messages.METADATA_NO_VOTER_TOOK_LEADERSHIP
            )
        leader = self.quorum_leader_address()
        if leader is None or leader == self_address:
            raise _unavailable(error_messages.METADATA_NO_OTHER_LEADER, unknown=False)
        remaining_s = max(0.1, deadline - loop.time())
        answer = await asyncio.to_thread(
            _utility_command,
            leader,
            ["remove", self_address],
            password=self._config.password,
            timeout_s=remaining_s,
        )
        if not answer.startswith("SUCCESS"):
            raise _unavailable(error_messages.metadata_leader_answered(answer=answer), unknown=True)

    async def transfer_leadership(self, *, timeout_s: float, to: str | None = None) -> bool:
        syncobj, state = self._syncobj, self._state
        if syncobj is None or state is None or not self.is_quorum_leader():
            return False
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[int] = loop.create_future()

        def on_sent(_result: object, reason: int) -> None:  # tick thread
            state.call_in_loop(_resolve, sent, reason)

        syncobj.call_on_tick_thread(lambda: syncobj.transferLeadership(to, callback=on_sent))
        self_address = self._config.self_address
        try:
            async with asyncio.timeout(timeout_s):
                if await sent != FAIL_REASON.SUCCESS:
                    return False  # no caught-up voter to take over
                # pysyncobj offers no event for a leader change: poll, bounded by the timeout.
                while not self._other_leads(self_address):  # noqa: ASYNC110  # no event exists
                    await asyncio.sleep(_LEADER_POLL_S)
        except TimeoutError:
            return False
        log.info("quorum_leadership_transferred", extra={"to": self.quorum_leader_address()})
        return True

    def _other_leads(self, self_address: str) -> bool:
        leader = self.quorum_leader_address()
        return not self.is_quorum_leader() and leader is not None and leader != self_address

    async def _change_membership(self, kind: str, address: str, *, timeout_s: float) -> None:
        syncobj, state = self._syncobj, self._state
        if syncobj is None or state is None:
            raise ShoalError(ErrorCode.UNAVAILABLE, error_messages.METADATA_QUORUM_NOT_STARTED)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_done(_result: object, reason: int) -> None:  # tick thread
            state.call_in_loop(_resolve, done, reason)

        change = syncobj.addNodeToCluster if kind == "add" else syncobj.removeNodeFromCluster
        change(address, callback=on_done)
        try:
            async with asyncio.timeout(timeout_s):
                reason = await done
        except TimeoutError as exc:
            raise _unavailable(
                error_messages.METADATA_MEMBERSHIP_CHANGE_TIMED_OUT, unknown=True
            ) from exc
        if reason == FAIL_REASON.REQUEST_DENIED:
            # The leader allows one uncommitted change at a time, and none before its first
            # entry of the term committed.
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.METADATA_MEMBERSHIP_CHANGE_IN_PROGRESS,
            )
        if reason != FAIL_REASON.SUCCESS:
            unknown = reason in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME)
            raise _unavailable(_FAILURE_TEXT.get(reason, str(reason)), unknown=unknown)


_RAFT_LEADER = 2  # pysyncobj's _RAFT_STATE.LEADER
_LEADER_POLL_S = 0.02


def _utility_command(address: str, command: list[str], *, password: str, timeout_s: float) -> str:
    """One pysyncobj utility request (the `syncobj_admin` protocol); blocks: run in a thread."""
    utility = TcpUtility(password, timeout=timeout_s)
    try:
        result = utility.executeCommand(address, command)
    except UtilityException as exc:
        return f"FAIL {exc}"
    return str(result)


def _check_address(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT, error_messages.not_a_host_port(address=address)
        )


def _resolve(future: asyncio.Future[int], reason: int) -> None:
    if not future.done():
        future.set_result(reason)


def _settle(future: asyncio.Future[object], result: object, reason: int) -> None:
    """Completes a proposal on the loop thread (it may have timed out meanwhile)."""
    if future.done():
        return
    if reason != FAIL_REASON.SUCCESS:
        # LEADER_CHANGED (a forwarded command may sit in the old leader's log) and
        # UNKNOWN_OUTCOME may still apply; the other reasons mean it never will.
        unknown = reason in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME)
        future.set_exception(_unavailable(_FAILURE_TEXT.get(reason, str(reason)), unknown=unknown))
        return
    assert isinstance(result, Applied)
    if result.error is not None:
        future.set_exception(result.error)
    else:
        future.set_result(result.result)


def _unavailable(reason: str, *, unknown: bool) -> ShoalError:
    return ShoalError(
        ErrorCode.UNAVAILABLE,
        error_messages.metadata_unavailable(reason=reason, outcome_unknown=unknown),
    )


# --- Forcing a new quorum (shoal recover-quorum) --------------------------------------------------


def force_single_voter(
    data_dir: Path,
    *,
    self_address: str,
    transform: Callable[[MetadataImage], MetadataImage],
) -> tuple[MetadataImage, MetadataImage]:
    """Rewrites a stopped node's metadata quorum state so that it restarts as the only voter
    (Raft's "unsafe recovery": what etcd's --force-new-cluster does), continuing from every
    entry its journal holds, committed or not (as a new sole leader would commit them).

    Replays the snapshot and the journal into an image (pysyncobj membership entries aside),
    applies `transform` to it (`recovery.surviving_image`), and writes a snapshot of the result
    whose voter set is `self_address` alone, with an empty journal at the next index and a
    higher term. Returns (the replayed image, the written one). The node must be stopped."""
    journal_path = data_dir / JOURNAL_FILE_NAME
    snapshot_path = data_dir / SNAPSHOT_FILE_NAME
    image = MetadataImage()
    last_index, term = 1, 0
    if snapshot_path.exists():
        document = json.loads(snapshot_path.read_bytes())
        if document.get("v") != SNAPSHOT_FORMAT_VERSION:
            raise ValueError(f"{snapshot_path}: snapshot version {document.get('v')!r}")
        image = image_from_document(document["image"])
        _, last_index, term = _entry_from_document(document["last_entry"])
    journal = DurableJournal(journal_path) if journal_path.exists() else None
    if journal is not None:
        for command, index, entry_term in list(journal[:]):
            term = max(term, entry_term)
            if index <= last_index and snapshot_path.exists():
                continue
            last_index = max(last_index, index)
            if command[:1] != bytes([_REGULAR_COMMAND]):
                continue  # no-ops, membership and version entries
            # (method id, (encoded command,)): the call pysyncobj made of apply_encoded.
            call: Any = pysyncobj_pickle.loads(command[1:])
            args: Any = call[1] if isinstance(call, tuple) and len(call) > 1 else ()
            if len(args) == 1 and isinstance(args[0], bytes):
                image = state_machine.apply(image, decode_command(args[0])).image
        term = max(term, journal.getCurrentTerm())
        journal._destroy()
    replayed, recovered = image, transform(image)
    new_term = term + 1
    no_op = bytes([_NO_OP_COMMAND])
    previous, last = (no_op, last_index + 1, new_term), (no_op, last_index + 2, new_term)
    state = {
        "v": SNAPSHOT_FORMAT_VERSION,
        "image": image_to_document(recovered),
        "last_entry": _entry_to_document(last),
        "previous_entry": _entry_to_document(previous),
        "cluster": [self_address],
    }
    _write_file_durably(snapshot_path, json.dumps(state, sort_keys=True).encode())
    _write_file_durably(journal_path, _FILE_HEADER.pack(_JOURNAL_MAGIC, _JOURNAL_VERSION))
    meta = {
        "v": _META_FORMAT_VERSION,
        "current_term": new_term,
        "voted_for": None,
        "commit_index": last_index + 2,
    }
    _write_file_durably(
        journal_path.with_name(journal_path.name + ".meta"),
        json.dumps(meta, sort_keys=True).encode(),
    )
    return replayed, recovered


_REGULAR_COMMAND = 0  # pysyncobj's _COMMAND_TYPE.REGULAR
_NO_OP_COMMAND = 1  # _COMMAND_TYPE.NO_OP
