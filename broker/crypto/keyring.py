"""The node's keyring: the `BatchKeys` the shard log seals and opens batches with.

Which data key seals a shard's new batches comes from the metadata image this node has
applied: the stream owning the shard, if it is encrypted, and its newest data key (so a
replica seals from the moment its node applies StartStreamEncryption: AWS, too, says records
written in the first seconds may still be stored in the clear). Opening looks the key up by
the version the batch names. Unwrapped keys are cached in memory (never written anywhere), so
the master key (a file read, or a KMS Decrypt) is used once per data key per process.

Thread-safe: the group-commit thread, readers and the event loop all call it; the shard ->
stream map is rebuilt only when the image's stream table changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from broker.crypto.master_keys import MasterKeyError, MasterKeys
from broker.log.encryption import DataKey, KeyUnavailableError
from broker.meta.commands import RewrapStreamDataKeys
from broker.meta.image import MetadataImage, StreamDataKey, StreamMeta
from broker.types import ShardUid, StreamUid

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UnopenableKey:
    """A data key of the cluster this node's master key does not open, and why."""

    stream: str
    wrapping: str  # which master key wraps it: `cluster:<id>`, `local:<id>` or `kms:<arn>`
    error: str


class Keyring:
    def __init__(self, master: MasterKeys, image: Callable[[], MetadataImage]) -> None:
        self._master = master
        self._image = image
        self._lock = threading.Lock()
        self._streams_seen: object = None  # the image's stream table the map was built from
        self._stream_by_shard: dict[ShardUid, StreamMeta] = {}
        # (stream uid, version) -> the unwrapped key; the wrapped bytes are checked too, so a
        # re-wrap (same key) reuses it and nothing stale survives a recreated stream.
        self._unwrapped: dict[tuple[StreamUid, int], tuple[bytes, DataKey]] = {}
        self._reported: set[tuple[StreamUid, int]] = set()  # keys logged as unavailable

    @property
    def master(self) -> MasterKeys:
        return self._master

    def sealing_key(self, shard_uid: ShardUid) -> DataKey | None:
        stream = self._stream_of(shard_uid)
        if stream is None:
            return None
        key = stream.sealing_data_key
        if key is None:
            return None
        return self._data_key(stream, key)

    def opening_key(self, shard_uid: ShardUid, version: int) -> DataKey:
        stream = self._stream_of(shard_uid)
        if stream is None:
            raise KeyUnavailableError(
                f"shard {shard_uid} holds encrypted batches, and no stream of this node's "
                "metadata image has data keys for it"
            )
        for key in stream.data_keys:
            if key.version == version:
                return self._data_key(stream, key)
        raise KeyUnavailableError(
            f"shard {shard_uid}: stream {stream.name} has no data key {version} "
            "in this node's metadata image"
        )

    def unopenable(self, image: MetadataImage) -> UnopenableKey | None:
        """The first data key of `image` this node's master key cannot unwrap, trying one key
        per wrapping (master key) in use; None when every wrapping opens. The wrapped data
        keys in the quorum are the check values: a wrong master key fails their AEAD tag, so
        nothing about the key itself is stored or compared. Asks the master key itself (a
        key file read again if it changed, a KMS Decrypt), never the cache of unwrapped keys,
        so a running node finds a key file replaced or a KMS key disabled under it."""
        tried: set[str] = set()
        for stream in image.streams.values():
            for key in stream.data_keys:
                if key.wrapping in tried:
                    continue
                tried.add(key.wrapping)
                try:
                    self._master.unwrap(key, stream_arn=stream.arn)
                except MasterKeyError as error:
                    return UnopenableKey(
                        stream=stream.name, wrapping=key.wrapping, error=str(error)
                    )
        return None

    def warm(self, stream: StreamMeta) -> None:
        """Unwraps the stream's keys now (off the write path), raising what `unwrap` would."""
        for key in stream.data_keys:
            self._data_key(stream, key)

    def rewrap_commands(self, image: MetadataImage, *, now_ms: int) -> list[RewrapStreamDataKeys]:
        """One command per stream whose data keys a master-key rotation left wrapped by an
        older master key (empty with KMS, which rotates behind the same key id)."""
        commands = []
        for stream in image.streams.values():
            rewrapped = []
            for key in stream.data_keys:
                try:
                    fresh = self._master.rewrap(key, stream_arn=stream.arn)
                except MasterKeyError:
                    continue  # not this node's to fix: it cannot open that key either
                if fresh is not None:
                    rewrapped.append(
                        StreamDataKey(
                            version=key.version,
                            wrapped=fresh.wrapped,
                            wrapping=fresh.wrapping,
                            created_ms=key.created_ms,
                        )
                    )
            if rewrapped:
                commands.append(
                    RewrapStreamDataKeys(
                        now_ms=now_ms,
                        name=stream.name,
                        stream_uid=stream.uid,
                        rewrapped=tuple(rewrapped),
                    )
                )
        return commands

    def _stream_of(self, shard_uid: ShardUid) -> StreamMeta | None:
        streams = self._image().streams
        with self._lock:
            if streams is not self._streams_seen:
                self._stream_by_shard = {
                    shard.uid: stream
                    for stream in streams.values()
                    if stream.data_keys
                    for shard in stream.shards
                }
                self._streams_seen = streams
            return self._stream_by_shard.get(shard_uid)

    def _data_key(self, stream: StreamMeta, key: StreamDataKey) -> DataKey:
        cache_key = (stream.uid, key.version)
        with self._lock:
            cached = self._unwrapped.get(cache_key)
        if cached is not None and cached[0] == key.wrapped:
            return cached[1]
        try:
            material = self._master.unwrap(key, stream_arn=stream.arn)
        except MasterKeyError as error:
            # Loud, once per key and process: this node cannot write or read the stream's
            # sealed batches until it can (usually: not the cluster's master key file).
            if cache_key not in self._reported:
                self._reported.add(cache_key)
                log.error(
                    "data_key_unavailable",
                    extra={"stream": stream.name, "version": key.version, "error": str(error)},
                )
            raise KeyUnavailableError(str(error)) from error
        data_key = DataKey.of(key.version, material)
        with self._lock:
            self._unwrapped[cache_key] = (key.wrapped, data_key)
        return data_key
