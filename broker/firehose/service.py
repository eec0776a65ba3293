"""FirehoseService: the Data Firehose operations, once, for both doors (an OperationService).

Requests arrive decoded and validated against botocore's firehose model. Delivery streams are
metadata records (`broker.meta.delivery_streams`) in the caller's account and region; every
change is a metadata command checked at apply time. PutRecord and PutRecordBatch append to the
delivery stream's internal Kinesis stream through this node's KinesisService and answer only
once that append is acknowledged (replicated and durable), so an acknowledged record survives
the crash of any minority of nodes until it is delivered.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from broker.caller import Caller
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.firehose import destinations, messages
from broker.firehose.describe import delivery_stream_description
from broker.firehose.probe import FirehoseProbe
from broker.meta import commands
from broker.meta.delivery_streams import (
    DeliveryStreamMeta,
    DeliveryStreamStatus,
    canonical_json,
    delivery_stream_arn,
)
from broker.meta.frontend import MetadataFrontend
from broker.meta.metadata_format import DELIVERY_ENCRYPTION_STATES_LEVEL
from broker.meta.transitions.delivery_streams import not_found

Request = Mapping[str, Any]
Response = dict[str, Any]

# AWS's quotas: PutRecordBatch carries at most 4 MiB (the model bounds the count at 500 and a
# record at 1,000 KiB); 50 tags per delivery stream; 5,000 delivery streams per region.
BATCH_BYTES_MAX = 4 * 1024 * 1024
TAGS_MAX = 50
DELIVERY_STREAMS_MAX = 5000
_LIST_LIMIT_DEFAULT = 10
_TAGS_LIMIT_DEFAULT = 50


class KinesisCalls(Protocol):
    """This node's Kinesis operations as the node itself (`in_process.LocalKinesis`)."""

    async def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]: ...


def _invalid(message: str) -> ShoalError:
    return ShoalError(ErrorCode.INVALID_ARGUMENT, message)


class FirehoseService:
    """Every Firehose operation of one node. Loop only; one per node."""

    def __init__(
        self,
        *,
        metadata: MetadataFrontend,
        kinesis: KinesisCalls,
        clock: Clock,
        default_caller: Caller,
        on_change: Callable[[], None] = lambda: None,
        probe: FirehoseProbe | None = None,
    ) -> None:
        self._metadata = metadata
        self._kinesis = kinesis
        self._clock = clock
        self._default_caller = default_caller
        self._on_change = on_change  # wakes the lifecycle reconciler
        self._probe = probe
        self._handlers: dict[str, Callable[[Request, Caller], Awaitable[Response]]] = {
            "CreateDeliveryStream": self._create,
            "DeleteDeliveryStream": self._delete,
            "DescribeDeliveryStream": self._describe,
            "ListDeliveryStreams": self._list,
            "PutRecord": self._put_record,
            "PutRecordBatch": self._put_record_batch,
            "UpdateDestination": self._update_destination,
            "TagDeliveryStream": self._tag,
            "UntagDeliveryStream": self._untag,
            "ListTagsForDeliveryStream": self._list_tags,
            "StartDeliveryStreamEncryption": self._start_encryption,
            "StopDeliveryStreamEncryption": self._stop_encryption,
        }

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self._handlers)

    async def call(
        self, operation: str, request: Request, caller: Caller | None = None
    ) -> Response:
        return await self._handlers[operation](request, caller or self._default_caller)

    # --- Lookups --------------------------------------------------------------------------

    @staticmethod
    def _arn(request: Request, caller: Caller) -> str:
        return delivery_stream_arn(
            region=caller.region, account_id=caller.account_id, name=request["DeliveryStreamName"]
        )

    def _meta(self, request: Request, caller: Caller) -> DeliveryStreamMeta:
        meta = self._metadata.image().delivery_streams.get(self._arn(request, caller))
        if meta is None:
            raise not_found(request["DeliveryStreamName"], caller.account_id)
        return meta

    async def _propose(self, command: commands.Command) -> DeliveryStreamMeta:
        result = await self._metadata.propose(command)
        assert isinstance(result, DeliveryStreamMeta), result
        self._on_change()
        return result

    # --- Control plane --------------------------------------------------------------------

    async def _create(self, request: Request, caller: Caller) -> Response:
        stream_type = request.get("DeliveryStreamType") or "DirectPut"
        for unsupported in ("MSKSourceConfiguration", "DatabaseSourceConfiguration"):
            if request.get(unsupported) is not None:
                raise _invalid(messages.source_not_supported(source=unsupported))
        source = request.get("KinesisStreamSourceConfiguration")
        if stream_type == "KinesisStreamAsSource":
            if source is None:
                raise _invalid(messages.SOURCE_CONFIGURATION_REQUIRED)
        elif stream_type == "DirectPut":
            if source is not None:
                raise _invalid(messages.SOURCE_CONFIGURATION_NOT_ALLOWED)
        else:
            raise _invalid(messages.stream_type_not_supported(stream_type=stream_type))
        destination = destinations.from_create(request)
        encryption = request.get("DeliveryStreamEncryptionConfigurationInput") or {}
        key_type, key_arn = _encryption_key(encryption)
        if key_type and stream_type != "DirectPut":
            raise _invalid(messages.ENCRYPTION_ONLY_FOR_DIRECT_PUT)
        tags = _tags(request.get("Tags") or [])
        meta = await self._propose(
            commands.CreateDeliveryStream(
                now_ms=self._clock.wall_ms(),
                arn=self._arn(request, caller),
                name=request["DeliveryStreamName"],
                account_id=caller.account_id,
                region=caller.region,
                uid=secrets.token_hex(6),
                delivery_stream_type=stream_type,
                destination_json=canonical_json(destination),
                source_json="" if source is None else canonical_json(dict(source)),
                encryption_key_type=key_type,
                encryption_key_arn=key_arn,
                tags=tags,
                delivery_streams_max=DELIVERY_STREAMS_MAX,
            )
        )
        return {"DeliveryStreamARN": meta.arn}

    async def _delete(self, request: Request, caller: Caller) -> Response:
        await self._propose(
            commands.DeleteDeliveryStream(
                now_ms=self._clock.wall_ms(),
                arn=self._arn(request, caller),
                name=request["DeliveryStreamName"],
            )
        )
        return {}

    async def _describe(self, request: Request, caller: Caller) -> Response:
        meta = self._meta(request, caller)
        description = delivery_stream_description(meta)
        start = request.get("ExclusiveStartDestinationId")
        if start is not None and start >= meta.destination_id:
            description["Destinations"] = []
        return {"DeliveryStreamDescription": description}

    async def _list(self, request: Request, caller: Caller) -> Response:
        wanted_type = request.get("DeliveryStreamType")
        start = request.get("ExclusiveStartDeliveryStreamName")
        limit = request.get("Limit") or _LIST_LIMIT_DEFAULT
        names = sorted(
            meta.name
            for meta in self._metadata.image().delivery_streams.values()
            if meta.account_id == caller.account_id
            and meta.region == caller.region
            and not meta.is_channel
            and (wanted_type is None or meta.delivery_stream_type == wanted_type)
            and (start is None or meta.name > start)
        )
        return {
            "DeliveryStreamNames": names[:limit],
            "HasMoreDeliveryStreams": len(names) > limit,
        }

    async def _update_destination(self, request: Request, caller: Caller) -> Response:
        meta = self._meta(request, caller)
        kind, configuration = meta.destination()
        current = {kind + "DestinationConfiguration": configuration}
        merged = destinations.merged_update(current, request)
        try:
            version = int(request["CurrentDeliveryStreamVersionId"])
        except ValueError as error:
            raise _invalid(messages.VERSION_ID_NOT_A_NUMBER) from error
        await self._propose(
            commands.UpdateDeliveryStreamDestination(
                now_ms=self._clock.wall_ms(),
                arn=meta.arn,
                name=meta.name,
                current_version_id=version,
                destination_id=request["DestinationId"],
                destination_json=canonical_json(merged),
            )
        )
        return {}

    async def _tag(self, request: Request, caller: Caller) -> Response:
        await self._propose(
            commands.ChangeDeliveryStreamTags(
                now_ms=self._clock.wall_ms(),
                arn=self._arn(request, caller),
                name=request["DeliveryStreamName"],
                added=_tags(request["Tags"]),
                tags_max=TAGS_MAX,
            )
        )
        return {}

    async def _untag(self, request: Request, caller: Caller) -> Response:
        await self._propose(
            commands.ChangeDeliveryStreamTags(
                now_ms=self._clock.wall_ms(),
                arn=self._arn(request, caller),
                name=request["DeliveryStreamName"],
                removed=tuple(request["TagKeys"]),
                tags_max=TAGS_MAX,
            )
        )
        return {}

    async def _list_tags(self, request: Request, caller: Caller) -> Response:
        meta = self._meta(request, caller)
        start = request.get("ExclusiveStartTagKey")
        limit = request.get("Limit") or _TAGS_LIMIT_DEFAULT
        tags = [(key, value) for key, value in meta.tags if start is None or key > start]
        return {
            "Tags": [{"Key": key, "Value": value} for key, value in tags[:limit]],
            "HasMoreTags": len(tags) > limit,
        }

    async def _start_encryption(self, request: Request, caller: Caller) -> Response:
        meta = self._meta(request, caller)
        if meta.delivery_stream_type != "DirectPut":
            raise _invalid(messages.encryption_needs_direct_put(name=meta.name))
        key_type, key_arn = _encryption_key(
            request.get("DeliveryStreamEncryptionConfigurationInput")
            or {"KeyType": "AWS_OWNED_CMK"}
        )
        if self._settled_at_once():
            await self._start_encryption_at_once(meta, key_type, key_arn)
            return {}
        # ENABLING: the lifecycle reconciler encrypts the internal stream that holds the
        # records, then settles it ENABLED, or ENABLING_FAILED when the key cannot be used
        # (as AWS: asynchronous, the call returns at once).
        await self._set_encryption(meta, key_type, key_arn)
        return {}

    async def _stop_encryption(self, request: Request, caller: Caller) -> Response:
        meta = self._meta(request, caller)
        await self._set_encryption(meta, "", "")  # first: as in _start_encryption_at_once
        if self._settled_at_once() and meta.delivery_stream_type == "DirectPut":
            await encrypt_internal_stream(self._kinesis, meta.internal_stream, "", "")
        return {}

    def _settled_at_once(self) -> bool:
        """Below metadata format 4 there are no ENABLING and DISABLING states: the change is
        made during the call, as the binaries of level 3 make it."""
        return self._metadata.image().metadata_format < DELIVERY_ENCRYPTION_STATES_LEVEL

    async def _start_encryption_at_once(
        self, meta: DeliveryStreamMeta, key_type: str, key_arn: str
    ) -> None:
        # The setting first, then the internal stream that holds the records: the lifecycle
        # reconciler brings the internal stream to the delivery stream's setting, so in the
        # other order it could undo the change before the setting lands. A key that cannot
        # be used is refused here, and the previous setting restored.
        await self._set_encryption(meta, key_type, key_arn)
        try:
            await encrypt_internal_stream(self._kinesis, meta.internal_stream, key_type, key_arn)
        except ShoalError as error:
            if error.code is ErrorCode.INVALID_KMS_RESOURCE:
                await self._set_encryption(meta, meta.encryption_key_type, meta.encryption_key_arn)
            raise

    async def _set_encryption(self, meta: DeliveryStreamMeta, key_type: str, key_arn: str) -> None:
        await self._propose(
            commands.SetDeliveryStreamEncryption(
                now_ms=self._clock.wall_ms(),
                arn=meta.arn,
                name=meta.name,
                key_type=key_type,
                key_arn=key_arn,
            )
        )

    # --- Data plane -----------------------------------------------------------------------

    def _writable(self, request: Request, caller: Caller) -> DeliveryStreamMeta:
        meta = self._meta(request, caller)
        if meta.delivery_stream_type != "DirectPut":
            raise _invalid(messages.not_permitted_on_type(stream_type=meta.delivery_stream_type))
        if meta.status is not DeliveryStreamStatus.ACTIVE:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND,
                messages.not_active(
                    name=meta.name, account_id=meta.account_id, status=meta.status.value
                ),
            )
        return meta

    async def _append(
        self, meta: DeliveryStreamMeta, records: list[bytes]
    ) -> tuple[list[dict[str, Any]], bool]:
        """Appends `records` to the internal stream: one Kinesis result entry per record, and
        whether they were stored encrypted (the internal stream's answer, so records put while
        ENABLING are not, as on AWS). A call that failed as a whole is a
        ServiceUnavailableException (retryable, as AWS's)."""
        try:
            response = await self._kinesis.call(
                "PutRecords",
                {
                    "StreamName": meta.internal_stream,
                    "Records": [
                        {"Data": data, "PartitionKey": secrets.token_hex(8)} for data in records
                    ],
                },
            )
        except ShoalError as error:
            if not error.code.spec.retryable:
                raise
            raise ShoalError(
                ErrorCode.SERVICE_UNAVAILABLE_EXCEPTION,
                messages.not_stored_durably(problem=error.message),
            ) from error
        entries: list[dict[str, Any]] = response["Records"]
        assert len(entries) == len(records)
        encrypted = response.get("EncryptionType") == "KMS"
        if self._probe is not None:
            stored = [
                data
                for data, entry in zip(records, entries, strict=True)
                if "SequenceNumber" in entry
            ]
            throttled = sum(
                1
                for entry in entries
                if entry.get("ErrorCode") == ErrorCode.THROUGHPUT_EXCEEDED.kinesis_name
            )
            self._probe.records_put(
                meta.name, records=len(stored), size=sum(map(len, stored)), throttled=throttled
            )
        return entries, encrypted

    async def _put_record(self, request: Request, caller: Caller) -> Response:
        meta = self._writable(request, caller)
        (entry,), encrypted = await self._append(meta, [request["Record"]["Data"]])
        if "SequenceNumber" not in entry:
            raise ShoalError(ErrorCode.SERVICE_UNAVAILABLE_EXCEPTION, _failure_message(entry))
        return {"RecordId": entry["SequenceNumber"], "Encrypted": encrypted}

    async def _put_record_batch(self, request: Request, caller: Caller) -> Response:
        meta = self._writable(request, caller)
        records = [record["Data"] for record in request["Records"]]
        total = sum(len(data) for data in records)
        if total > BATCH_BYTES_MAX:
            raise _invalid(messages.batch_too_large(total=total, bytes_max=BATCH_BYTES_MAX))
        responses: list[dict[str, Any]] = []
        failed = 0
        entries, encrypted = await self._append(meta, records)
        for entry in entries:
            if "SequenceNumber" in entry:
                responses.append({"RecordId": entry["SequenceNumber"]})
                continue
            failed += 1
            responses.append(
                {
                    "ErrorCode": "ServiceUnavailableException",
                    "ErrorMessage": _failure_message(entry),
                }
            )
        return {
            "FailedPutCount": failed,
            "Encrypted": encrypted,
            "RequestResponses": responses,
        }


def _failure_message(entry: Mapping[str, Any]) -> str:
    """Firehose's message for a record its internal stream did not take: over the delivery
    stream's limits ("Slow down.", as AWS answers), or not stored (retry)."""
    if entry.get("ErrorCode") == ErrorCode.THROUGHPUT_EXCEEDED.kinesis_name:
        return "Slow down."
    return f"The record could not be stored durably; retry. ({entry.get('ErrorMessage', '')})"


# The KeyId the internal stream is encrypted under for an AWS_OWNED_CMK delivery stream: the
# AWS-managed Kinesis key (the node's current master key with a key file).
AWS_OWNED_KEY_ID = "alias/aws/kinesis"


def internal_key_id(key_type: str, key_arn: str) -> str | None:
    """The KeyId a delivery stream's internal stream must be encrypted under; None: clear."""
    if not key_type:
        return None
    return key_arn if key_type == "CUSTOMER_MANAGED_CMK" else AWS_OWNED_KEY_ID


# The DeliveryStreamFailureType of each KMS error Kinesis reports for a key that cannot be used
# (KMSThrottlingException is not one: it is retried).
_KMS_FAILURE_TYPES = {
    ErrorCode.KMS_NOT_FOUND: "KMS_KEY_NOT_FOUND",
    ErrorCode.KMS_DISABLED: "DISABLED_KMS_KEY",
    ErrorCode.KMS_INVALID_STATE: "INVALID_KMS_KEY",
    ErrorCode.KMS_ACCESS_DENIED: "KMS_ACCESS_DENIED",
    ErrorCode.KMS_OPT_IN_REQUIRED: "KMS_OPT_IN_REQUIRED",
}


class UnusableKey(ShoalError):
    """InvalidKMSResourceException, as Firehose reports a key that cannot be used, with the
    DeliveryStreamFailureType a FailureDescription gives it."""

    def __init__(self, failure_type: str, message: str) -> None:
        super().__init__(ErrorCode.INVALID_KMS_RESOURCE, message)
        self.failure_type = failure_type


async def encrypt_internal_stream(
    kinesis: KinesisCalls, stream_name: str, key_type: str, key_arn: str
) -> None:
    """Brings the internal stream's encryption to what the delivery stream asks for: Start
    (a new data key) or StopStreamEncryption, or nothing when it already is. A key that
    cannot be used is `UnusableKey` (InvalidKMSResourceException, as Firehose reports it)."""
    wanted = internal_key_id(key_type, key_arn)
    try:
        summary = await kinesis.call("DescribeStreamSummary", {"StreamName": stream_name})
    except ShoalError as error:
        if error.code is ErrorCode.RESOURCE_NOT_FOUND:
            return  # not created yet: the lifecycle encrypts it once it is
        raise
    current = summary["StreamDescriptionSummary"]
    if current.get("EncryptionType") == "KMS":
        if current.get("KeyId") == wanted:
            return
        if wanted is None:
            request = {"StreamName": stream_name, "EncryptionType": "KMS"}
            await kinesis.call("StopStreamEncryption", {**request, "KeyId": current["KeyId"]})
            return
    elif wanted is None:
        return
    await kms_failures_as_unusable(
        kinesis.call(
            "StartStreamEncryption",
            {"StreamName": stream_name, "EncryptionType": "KMS", "KeyId": wanted},
        )
    )


T = TypeVar("T")


async def kms_failures_as_unusable(call: Awaitable[T]) -> T:
    """Awaits `call`, raising a KMS error about a key that cannot be used as `UnusableKey`."""
    try:
        return await call
    except ShoalError as error:
        failure_type = _KMS_FAILURE_TYPES.get(error.code)
        if failure_type is not None:
            raise UnusableKey(failure_type, error.message) from error
        raise


def _encryption_key(encryption: Mapping[str, Any]) -> tuple[str, str]:
    if not encryption:
        return "", ""
    key_type = str(encryption["KeyType"])
    key_arn = str(encryption.get("KeyARN") or "")
    if key_type == "CUSTOMER_MANAGED_CMK" and not key_arn:
        raise _invalid(messages.KEY_ARN_REQUIRED)
    if key_type == "AWS_OWNED_CMK" and key_arn:
        raise _invalid(messages.KEY_ARN_NOT_ALLOWED)
    return key_type, key_arn


def _tags(tags: list[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(tag["Key"]), str(tag.get("Value") or "")) for tag in tags)
