"""Resource policies, server-side encryption settings, warm throughput and the record
distribution strategy: the Kinesis operations AWS added since 2023.

As in `control`, each mutation is one metadata command whose transition
(`meta/transitions/stream_features.py`) checks it against the image at apply time; this module
checks what needs no state (the policy document's grammar, the encryption type) and renders
the answers.

Scope: a resource policy is stored and returned exactly, not enforced here (access control
is the gateway's). StartStreamEncryption makes a new data key under the request's KeyId (the
node's master keys: a local key file or KMS, `broker/crypto/`), so a KeyId that names no
usable key is refused with KMS's error before anything changes; the command carries the key
wrapped, and from the moment a replica's node applies it, that replica seals the stream's new
batches with it (docs/ARCHITECTURE.md, "Encryption at rest"). Calling it again on an encrypted
stream (the same or another key) rotates the data key: batches sealed before keep theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from broker import error_messages
from broker.consumers.registry import parse_consumer_arn
from broker.errors import ErrorCode, ShoalError
from broker.meta import commands
from broker.meta.image import RecordDistribution, StreamMeta, StreamStatus
from broker.service.context import ServiceContext
from broker.streams.namespaces import name_of
from broker.streams.resource_policies import check_policy_document

Request = Mapping[str, Any]
Response = dict[str, Any]

NO_POLICY = "{}"  # what GetResourcePolicy answers for a resource without one


def _stream_of_resource(ctx: ServiceContext, arn: str) -> str:
    """The stream a ResourceARN (a stream's or a consumer's) belongs to; not-found as AWS
    reports it, stream first."""
    parts = parse_consumer_arn(arn)
    stream_arn = arn if parts is None else parts.stream_arn
    name = ctx.stream_name_from_arn(stream_arn)
    if ctx.image().stream(name, now_ms=ctx.now_ms()) is None:
        raise ctx.stream_not_found(name)
    return name


async def put_resource_policy(ctx: ServiceContext, request: Request) -> Response:
    arn: str = request["ResourceARN"]
    policy: str = request["Policy"]
    name = _stream_of_resource(ctx, arn)
    check_policy_document(policy)
    await ctx.metadata.propose(
        commands.PutResourcePolicy(
            now_ms=ctx.now_ms(), resource_arn=arn, stream_name=name, policy=policy
        )
    )
    return {}


async def get_resource_policy(ctx: ServiceContext, request: Request) -> Response:
    arn: str = request["ResourceARN"]
    name = _stream_of_resource(ctx, arn)
    now_ms = ctx.now_ms()
    image = ctx.image()
    stream = image.stream(name, now_ms=now_ms)
    if stream is None:
        raise ctx.stream_not_found(name)
    if parse_consumer_arn(arn) is None:
        return {"Policy": stream.resource_policy or NO_POLICY}
    consumer = image.consumers.by_arn(arn, now_ms=now_ms)
    if consumer is None or consumer.stream_uid != stream.uid:
        raise ShoalError(ErrorCode.RESOURCE_NOT_FOUND, error_messages.consumer_not_found(arn))
    policy = stream.consumer_policy(arn, created_ms=consumer.created_ms)
    return {"Policy": policy or NO_POLICY}


async def delete_resource_policy(ctx: ServiceContext, request: Request) -> Response:
    arn: str = request["ResourceARN"]
    name = _stream_of_resource(ctx, arn)
    await ctx.metadata.propose(
        commands.DeleteResourcePolicy(now_ms=ctx.now_ms(), resource_arn=arn, stream_name=name)
    )
    return {}


def _require_kms(request: Request) -> None:
    if request["EncryptionType"] != "KMS":
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.ENCRYPTION_TYPE_MUST_BE_KMS)


async def start_stream_encryption(ctx: ServiceContext, request: Request) -> Response:
    stream = ctx.stream_for(request)
    _require_kms(request)
    key_id: str = request["KeyId"]
    await start_encryption(ctx, stream, key_id=key_id)
    return {}


async def start_encryption(ctx: ServiceContext, stream: StreamMeta, *, key_id: str) -> None:
    """Encrypts `stream`'s new records under `key_id` with a new data key (also how the
    delivery and video services encrypt their internal streams)."""
    status = stream.status(now_ms=ctx.now_ms())
    if status is not StreamStatus.ACTIVE:  # checked again at apply; this spares a KMS call
        raise ShoalError(
            ErrorCode.RESOURCE_IN_USE,
            error_messages.stream_not_active(
                name=name_of(stream.name),
                account_id=ctx.namespace().account_id,
                status=status.value,
            ),
        )
    wrapped = await new_data_key(ctx, key_id, stream_arn=stream.arn)
    await ctx.metadata.propose(
        commands.SetStreamEncryption(
            now_ms=ctx.now_ms(),
            name=stream.name,
            encryption_type="KMS",
            key_id=key_id,
            updating_ms=ctx.config.knobs.stream_updating_ms,
            data_key=wrapped,
        )
    )


async def new_data_key(
    ctx: ServiceContext, key_id: str, *, stream_arn: str
) -> commands.WrappedDataKey:
    """A new data key for the stream `stream_arn` under `key_id`, wrapped (KMS's errors for a
    key that cannot be used)."""
    if ctx.master_keys is None:
        raise ShoalError(ErrorCode.KMS_INVALID_STATE, error_messages.ENCRYPTION_NOT_CONFIGURED)
    # KMS is a network call (and a key file a disk read): off the event loop.
    _, wrapped = await asyncio.to_thread(
        ctx.master_keys.new_data_key, key_id, stream_arn=stream_arn
    )
    return wrapped


async def stop_stream_encryption(ctx: ServiceContext, request: Request) -> Response:
    stream = ctx.stream_for(request)
    _require_kms(request)
    key_id: str = request["KeyId"]
    if stream.encryption_type == "KMS" and stream.key_id != key_id:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.encryption_key_mismatch(key_id, stream.display_name),
        )
    await ctx.metadata.propose(
        commands.SetStreamEncryption(
            now_ms=ctx.now_ms(),
            name=stream.name,
            encryption_type="NONE",
            key_id=None,
            updating_ms=ctx.config.knobs.stream_updating_ms,
        )
    )
    return {}


async def update_stream_warm_throughput(ctx: ServiceContext, request: Request) -> Response:
    name = ctx.requested_stream_name(request)
    result = await ctx.metadata.propose(
        commands.UpdateStreamWarmThroughput(
            now_ms=ctx.now_ms(),
            name=name,
            warm_throughput_mibps=request["WarmThroughputMiBps"],
            updating_ms=ctx.config.knobs.stream_updating_ms,
        )
    )
    assert isinstance(result, StreamMeta)
    # As of the call, as AWS answers before scaling: the new target, the previous current.
    warm: dict[str, int] = {"TargetMiBps": request["WarmThroughputMiBps"]}
    if result.previous_warm_throughput_mibps is not None:
        warm["CurrentMiBps"] = result.previous_warm_throughput_mibps
    return {"StreamARN": result.arn, "StreamName": result.display_name, "WarmThroughput": warm}


async def update_record_distribution(ctx: ServiceContext, request: Request) -> Response:
    name = ctx.stream_name_from_arn(ctx.required_stream_arn(request))
    await ctx.metadata.propose(
        commands.UpdateRecordDistribution(
            now_ms=ctx.now_ms(),
            name=name,
            strategy=RecordDistribution(request["RecordDistributionStrategy"]),
        )
    )
    return {}
