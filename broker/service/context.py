"""What every operation needs: configuration, clock, metadata, the shards; and lookups.

`ServiceContext` is a node view, built once by `node.py`. It is used from the asyncio loop only.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker import arns, error_messages
from broker.caller import Caller
from broker.clock import Clock
from broker.config import Config
from broker.crypto.master_keys import MasterKeys
from broker.error_messages import (
    STREAM_NAME_OR_ARN,
    missing_member,
    reshard_shard_not_found,
    shard_id_not_understood,
    shard_not_found,
    stream_not_found,
)
from broker.errors import ErrorCode, ShoalError
from broker.log.store import LogStore
from broker.meta.frontend import MetadataFrontend
from broker.meta.image import MetadataImage, ShardMeta, StreamMeta, StreamStatus
from broker.service.shards import ShardClient
from broker.service.throughput import Throttles
from broker.streams import namespaces
from broker.streams.namespaces import Namespace
from broker.streams.throttling import ThroughputLimits

# The caller of the operation this task runs (set by `KinesisService.call` around each call):
# the namespace (account, region) its stream names resolve in. Unset for the node's own calls,
# which act in the default namespace.
CURRENT_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "shoal_caller", default=None
)


def shard_throttles(
    config: Config,
    *,
    image: Callable[[], MetadataImage] | None = None,
    clock: Clock | None = None,
) -> Throttles:
    """The per-shard throughput budgets (served on shard leaders): the configuration's rates,
    overridden per stream by the limits in the metadata `image`."""
    return Throttles(
        ThroughputLimits(
            write_bytes_per_second=config.shard_write_bytes_per_second,
            write_records_per_second=config.shard_write_records_per_second,
            read_calls_per_second=config.shard_read_calls_per_second,
            read_bytes_per_second=config.shard_read_bytes_per_second,
        ),
        image=image,
        clock=clock,
    )


_STREAM_ARN = re.compile(r"arn:aws[\w-]*:kinesis:([\w-]+):(\d{12}):stream/(\S+)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceContext:
    config: Config
    clock: Clock
    metadata: MetadataFrontend
    shards: ShardClient  # appends and reads, here or on the shard's leader
    # What makes and wraps stream data keys (StartStreamEncryption); None: encryption at rest
    # is not available on this node (a bare context in unit tests).
    master_keys: MasterKeys | None = None

    @property
    def throttles(self) -> Throttles:
        return self.shards.throttles

    @property
    def store(self) -> LogStore:
        """This node's shard logs (the replicas it holds)."""
        return self.shards.store

    def now_ms(self) -> int:
        return self.clock.wall_ms()

    def image(self) -> MetadataImage:
        return self.metadata.image()

    def default_namespace(self) -> Namespace:
        """The node's configured account and region: where bare stream keys live."""
        return Namespace(account_id=self.config.account_id, region=self.config.region)

    def namespace(self) -> Namespace:
        """The namespace the current caller acts in (its account, the region it addressed)."""
        caller = CURRENT_CALLER.get()
        if caller is None:
            return self.default_namespace()
        return Namespace(account_id=caller.account_id, region=caller.region)

    def stream_key(self, name: str) -> str:
        """The metadata key of the stream `name` in the caller's namespace. A key already (a
        name resolved earlier in this call, passed back in) is kept: clients cannot send one,
        the model's name pattern has no "/"."""
        if namespaces.is_stream_key(name):
            return name
        return namespaces.stream_key(name, self.namespace(), default=self.default_namespace())

    def stream_arn(self, name: str) -> str:
        """The ARN of the stream `name` (or key) in its namespace."""
        if namespaces.is_stream_key(name):
            namespace = namespaces.namespace_of(name, default=self.default_namespace())
            return namespaces.stream_arn(namespaces.name_of(name), namespace)
        return namespaces.stream_arn(name, self.namespace())

    def in_callers_namespace(self, key: str) -> bool:
        """Whether the stream keyed `key` is the caller's to address: of its namespace, or of
        the namespace of the account whose resource policy granted this call (same region)."""
        default = self.default_namespace()
        owner = namespaces.namespace_of(key, default=default)
        namespace = self.namespace()
        if owner == namespace:
            return True
        caller = CURRENT_CALLER.get()
        granted = caller.granted_account if caller is not None else None
        return owner.region == namespace.region and owner.account_id == granted

    def account_phrase(self) -> str:
        return f"under account {self.namespace().account_id}"

    def stream_not_found(self, name: str) -> ShoalError:
        return ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            stream_not_found(namespaces.name_of(name), self.namespace().account_id),
        )

    def stream_name_from_arn(self, arn: str) -> str:
        """The stream key a stream ARN names, when it is of the caller's region and account,
        or of the account whose resource policy granted this call (`Caller.granted_account`);
        ResourceNotFound for another's (as if it did not exist: nothing about another account's
        streams shows)."""
        match = _STREAM_ARN.fullmatch(arn)
        if match is None:
            raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.invalid_stream_arn(arn=arn))
        region, account, name = match.groups()
        namespace = self.namespace()
        caller = CURRENT_CALLER.get()
        granted = caller is not None and caller.granted_account == account
        parsed = arns.parse(arn)
        foreign = parsed is None or not arns.of_region_partition(parsed)  # aws in cn-north-1
        if region != namespace.region or "/" in name or foreign:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, error_messages.stream_arn_not_found(arn=arn)
            )
        if account != namespace.account_id and not granted:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, error_messages.stream_arn_not_found(arn=arn)
            )
        owner = Namespace(account_id=account, region=region)
        return namespaces.stream_key(name, owner, default=self.default_namespace())

    def required_stream_arn(self, request: Mapping[str, Any]) -> str:
        """StreamARN of an operation that names its stream by ARN only (the model leaves it
        optional for the reserved StreamId alternative; AWS requires it)."""
        arn = request.get("StreamARN")
        if arn is None:
            raise missing_member("streamARN")
        assert isinstance(arn, str)
        return arn

    def requested_stream_name(self, request: Mapping[str, Any]) -> str:
        """The stream key StreamName or StreamARN names in the caller's namespace (AWS accepts
        either; both must then agree)."""
        name = request.get("StreamName")
        arn = request.get("StreamARN")
        if arn is not None:
            from_arn = self.stream_name_from_arn(arn)
            if name is not None and self.stream_key(name) != from_arn:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT,
                    error_messages.stream_name_arn_mismatch(name=name, arn=arn),
                )
            return from_arn
        if name is None:
            raise ShoalError(ErrorCode.VALIDATION, STREAM_NAME_OR_ARN)
        assert isinstance(name, str)
        return self.stream_key(name)

    def stream_for(self, request: Mapping[str, Any]) -> StreamMeta:
        """The live stream a request names, in any status but gone."""
        name = self.requested_stream_name(request)
        stream = self.image().stream(name, now_ms=self.now_ms())
        if stream is None:
            raise self.stream_not_found(name)
        return stream

    def stream_for_data(self, request: Mapping[str, Any]) -> StreamMeta:
        """A stream that takes reads and writes: ACTIVE or UPDATING, as on AWS."""
        stream = self.stream_for(request)
        status = stream.status(now_ms=self.now_ms())
        if status not in (StreamStatus.ACTIVE, StreamStatus.UPDATING):
            raise self.stream_not_found(stream.name)
        return stream

    def stream_for_shard_iterator(self, request: Mapping[str, Any]) -> StreamMeta:
        """GetShardIterator's stream. A stream the caller's namespace does not hold is
        reported by the shard the request names, as AWS reports it: "Shard shardId-… in stream
        … does not exist", or "Could not find shard <raw id> …" for an id it cannot read
        (kinesalite's recordings, 2015; a 2023 report of AWS answering shardId-000000000000 of
        a 1-shard stream the caller had not made, in ca-central-1, with the shard text). A
        stream that exists but takes no reads yet (CREATING, DELETING) is reported as the
        stream. SplitShard and MergeShards: `stream_for_reshard`; GetRecords on a deleted
        stream's iterator: `RecordsApi.get_records`; every other operation reports an unknown
        stream first."""
        key = self.requested_stream_name(request)
        if self.image().stream(key, now_ms=self.now_ms()) is None:
            shard_id = request["ShardId"]
            name = namespaces.name_of(key)
            account = self.namespace().account_id
            index = shard_index_of(shard_id)
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                shard_id_not_understood(shard_id, name, account)
                if index is None
                else shard_not_found(f"shardId-{index:012d}", name, account),
            )
        return self.stream_for_data(request)

    def stream_for_reshard(
        self, request: Mapping[str, Any], shard_ids: Sequence[str]
    ) -> StreamMeta:
        """SplitShard's and MergeShards' stream (`shard_ids`: the request's shard ids in AWS's
        order: ShardToSplit; ShardToMerge, AdjacentShardToMerge). A stream the caller's
        namespace does not hold is reported by the first of those ids that names no shard
        number AWS can read ("Could not find shard <raw id> …"), and otherwise as the stream:
        kinesalite's recordings of AWS (2015), which the 2023 GetShardIterator answer
        (`stream_for_shard_iterator`) shows still hold. A stream that exists is looked up
        first, and its shards after (`shard_for`)."""
        key = self.requested_stream_name(request)
        stream = self.image().stream(key, now_ms=self.now_ms())
        if stream is not None:
            return stream
        for shard_id in shard_ids:
            if shard_index_of(shard_id) is None:
                raise ShoalError(
                    ErrorCode.RESOURCE_NOT_FOUND,
                    shard_id_not_understood(
                        shard_id, namespaces.name_of(key), self.namespace().account_id
                    ),
                )
        raise self.stream_not_found(key)

    def shard_for(
        self, stream: StreamMeta, shard_id: str, *, resharding: bool = False
    ) -> ShardMeta:
        """The shard a caller's shard id names, in the forms AWS accepts: `shardId-<n>`, or
        any text whose part after the last dash (or the whole) is the shard number.
        `resharding`: SplitShard's and MergeShards' text for a shard the stream lacks."""
        account = self.namespace().account_id
        index = shard_index_of(shard_id)
        if index is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                shard_id_not_understood(shard_id, stream.display_name, account),
            )
        shard = stream.shard_by_index(index)
        expired = shard is not None and shard.is_expired(
            now_ms=self.now_ms(), retention_hours=stream.retention_hours
        )
        if shard is None or expired:
            missing = reshard_shard_not_found if resharding else shard_not_found
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                missing(f"shardId-{index:012d}", stream.display_name, account),
            )
        return shard


_SHARD_NUMBER = re.compile(r"[0-9]{1,128}")
_SHARD_NUMBER_MAX = 2_147_483_647  # AWS reads shard numbers as Java ints


def shard_index_of(shard_id: str) -> int | None:
    """The shard number in a shard id as AWS reads it, or None when it reads none."""
    number = shard_id.rsplit("-", 1)[-1]
    if _SHARD_NUMBER.fullmatch(number) is None:
        return None
    index = int(number)
    return index if index <= _SHARD_NUMBER_MAX else None
