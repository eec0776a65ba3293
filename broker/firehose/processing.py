"""Data transformation: the processors of a ProcessingConfiguration, and AWS's
Firehose-to-Lambda event and result contract. Pure (the invocation itself is passed in).

Event (one invocation per chunk of at most the processor's BufferSizeInMBs, 1 MiB by default):

    {"invocationId": "<uuid>", "deliveryStreamArn": "<arn>", "region": "<region>",
     "records": [{"recordId": "<id>", "approximateArrivalTimestamp": <ms>, "data": "<base64>"}]}

Result: {"records": [{"recordId": "<id>", "result": "Ok" | "Dropped" | "ProcessingFailed",
"data": "<base64>"}]}, every recordId of the event exactly once. A result that breaks the
contract fails the whole invocation (Lambda.MissingRecordId, Lambda.DuplicatedRecordId,
Lambda.InvalidOutput), as does a failed invocation once NumberOfRetries (3 by default) retries
are spent (Lambda.FunctionError); failed records go to the error output, `Ok` records on to
the destination, `Dropped` ones nowhere.

The built-in processors run before the Lambda, in this order (`expand`):
Decompression (GZIP: CloudWatch Logs subscription records), CloudWatchLogProcessing
(DataMessageExtraction: each DATA_MESSAGE's log events' messages become records, CONTROL_MESSAGE
records are dropped), RecordDeAggregation (SubRecordType JSON: one record per JSON object of a
record, or DELIMITED: split at the base64 Delimiter). A record one of them cannot read goes to
the error output (processing-failed). AppendDelimiterToRecord appends a newline to every
record (after the Lambda, as AWS orders them).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
PROCESSORS = (
    "Lambda",
    "MetadataExtraction",
    "AppendDelimiterToRecord",
    "RecordDeAggregation",
    "Decompression",
    "CloudWatchLogProcessing",
)
LAMBDA_RETRIES_DEFAULT = 3
LAMBDA_BUFFER_MIB_DEFAULT = 1
LAMBDA_PAYLOAD_BYTES_MAX = 6 * MIB  # Lambda's synchronous invocation payload limit


@dataclass(frozen=True, slots=True, kw_only=True)
class LambdaProcessor:
    function_arn: str
    retries: int
    buffer_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One record after a Lambda: `result` is Ok, Dropped or ProcessingFailed; `data` the
    transformed data (Ok) or the original (failed); `error_code`/`message` when failed."""

    result: str
    data: bytes
    error_code: str = ""
    message: str = ""
    partition_keys: Mapping[str, str] | None = None  # metadata.partitionKeys of an Ok record
    routing: Mapping[str, str] | None = None  # metadata.otfMetadata (an Iceberg table's route)


def _parameters(processor: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(item["ParameterName"]): str(item["ParameterValue"])
        for item in processor.get("Parameters") or []
    }


def processors(configuration: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    processing = configuration.get("ProcessingConfiguration") or {}
    if not processing.get("Enabled"):
        return []
    return list(processing.get("Processors") or [])


def check(configuration: Mapping[str, Any]) -> str | None:
    """Why this ProcessingConfiguration cannot run (None: it can)."""
    for processor in processors(configuration):
        kind = processor.get("Type")
        if kind not in PROCESSORS:
            return f"Shoal does not support the {kind} processor yet."
        if kind == "Lambda" and "LambdaArn" not in _parameters(processor):
            return "A Lambda processor needs the LambdaArn parameter."
        if kind == "MetadataExtraction":
            parameters = _parameters(processor)
            if "MetadataExtractionQuery" not in parameters:
                return "A MetadataExtraction processor needs the MetadataExtractionQuery parameter."
            if parameters.get("JsonParsingEngine", "JQ-1.6") != "JQ-1.6":
                return "JsonParsingEngine must be JQ-1.6."
        problem = _check_built_in(str(kind), _parameters(processor), configuration)
        if problem is not None:
            return problem
    return None


def _check_built_in(
    kind: str, parameters: Mapping[str, str], configuration: Mapping[str, Any]
) -> str | None:
    if kind == "RecordDeAggregation":
        sub_record_type = parameters.get("SubRecordType", "JSON")
        if sub_record_type not in ("JSON", "DELIMITED"):
            return "SubRecordType must be JSON or DELIMITED."
        if sub_record_type == "DELIMITED":
            try:
                delimiter = base64.b64decode(parameters.get("Delimiter", ""), validate=True)
            except binascii.Error:
                delimiter = b""
            if not delimiter:
                return "A DELIMITED RecordDeAggregation needs a base64 Delimiter parameter."
    if kind == "Decompression" and parameters.get("CompressionFormat", "GZIP") != "GZIP":
        return "The Decompression processor's CompressionFormat must be GZIP."
    if kind == "CloudWatchLogProcessing":
        if parameters.get("DataMessageExtraction", "false").lower() not in ("true", "false"):
            return "DataMessageExtraction must be true or false."
        if not any(p.get("Type") == "Decompression" for p in processors(configuration)):
            return "CloudWatchLogProcessing needs a Decompression processor."
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expanded:
    """Records after the built-in processors: each with the index of the source record it
    came from; `failed` the source records that could not be read (index, code, message)."""

    records: list[bytes]
    sources: list[int]
    failed: list[tuple[int, str, str]]


def expand(configuration: Mapping[str, Any], records: Sequence[bytes]) -> Expanded:
    """Decompression, CloudWatchLogProcessing and RecordDeAggregation, as configured."""
    configured = {str(p.get("Type")): _parameters(p) for p in processors(configuration)}
    out = Expanded(records=[], sources=[], failed=[])
    for index, data in enumerate(records):
        try:
            parts = [data]
            if "Decompression" in configured:
                parts = [_gunzip(data)]
            extraction = configured.get("CloudWatchLogProcessing", {})
            if extraction.get("DataMessageExtraction", "false").lower() == "true":
                parts = _log_messages(parts[0])
            if "RecordDeAggregation" in configured:
                parameters = configured["RecordDeAggregation"]
                parts = [
                    sub_record for part in parts for sub_record in _deaggregated(part, parameters)
                ]
        except _Unreadable as error:
            out.failed.append((index, error.code, str(error)))
            continue
        out.records.extend(parts)
        out.sources.extend([index] * len(parts))
    return out


class _Unreadable(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _gunzip(data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise _Unreadable("Decompression.Failed", f"The record is not GZIP: {error}") from error


def _log_messages(data: bytes) -> list[bytes]:
    """A CloudWatch Logs subscription record's log event messages (none for a control
    message)."""
    try:
        document = json.loads(data)
        if document.get("messageType") == "CONTROL_MESSAGE":
            return []
        return [str(event["message"]).encode() for event in document["logEvents"]]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise _Unreadable(
            "CloudWatchLogProcessing.InvalidRecord",
            f"The record is not a CloudWatch Logs subscription record: {error}",
        ) from error


def _deaggregated(data: bytes, parameters: Mapping[str, str]) -> list[bytes]:
    if parameters.get("SubRecordType", "JSON") == "DELIMITED":
        delimiter = base64.b64decode(parameters["Delimiter"])
        return [part for part in data.split(delimiter) if part]
    text = data.decode("utf-8", errors="strict") if data else ""
    decoder = json.JSONDecoder()
    parts: list[bytes] = []
    position = 0
    try:
        while True:
            while position < len(text) and text[position].isspace():
                position += 1
            if position >= len(text):
                return parts
            _, end = decoder.raw_decode(text, position)
            parts.append(text[position:end].encode())
            position = end
    except ValueError as error:
        raise _Unreadable(
            "RecordDeAggregation.InvalidJson", f"The record is not JSON objects: {error}"
        ) from error


def lambda_processor(configuration: Mapping[str, Any]) -> LambdaProcessor | None:
    for processor in processors(configuration):
        if processor.get("Type") == "Lambda":
            parameters = _parameters(processor)
            size_mib = float(parameters.get("BufferSizeInMBs", LAMBDA_BUFFER_MIB_DEFAULT))
            return LambdaProcessor(
                function_arn=parameters["LambdaArn"],
                retries=int(parameters.get("NumberOfRetries", LAMBDA_RETRIES_DEFAULT)),
                buffer_bytes=min(max(1, int(size_mib * MIB)), LAMBDA_PAYLOAD_BYTES_MAX // 2),
            )
    return None


def metadata_query(configuration: Mapping[str, Any]) -> str | None:
    """The MetadataExtraction processor's JQ query, if one is configured."""
    for processor in processors(configuration):
        if processor.get("Type") == "MetadataExtraction":
            return _parameters(processor)["MetadataExtractionQuery"]
    return None


def appends_delimiter(configuration: Mapping[str, Any]) -> bool:
    return any(p.get("Type") == "AppendDelimiterToRecord" for p in processors(configuration))


def chunks(records: Sequence[bytes], buffer_bytes: int) -> list[range]:
    """Index ranges of consecutive records of at most `buffer_bytes` (base64 counted), one
    record at least each."""
    out: list[range] = []
    start = size = 0
    for index, data in enumerate(records):
        encoded = (len(data) + 2) // 3 * 4
        if index > start and size + encoded > buffer_bytes:
            out.append(range(start, index))
            start, size = index, 0
        size += encoded
    if start < len(records):
        out.append(range(start, len(records)))
    return out


def build_event(
    *,
    invocation_id: str,
    delivery_stream_arn: str,
    region: str,
    record_ids: Sequence[str],
    arrivals_ms: Sequence[int],
    records: Sequence[bytes],
) -> bytes:
    return json.dumps(
        {
            "invocationId": invocation_id,
            "deliveryStreamArn": delivery_stream_arn,
            "region": region,
            "records": [
                {
                    "recordId": record_id,
                    "approximateArrivalTimestamp": arrival_ms,
                    "data": base64.b64encode(data).decode("ascii"),
                }
                for record_id, arrival_ms, data in zip(
                    record_ids, arrivals_ms, records, strict=True
                )
            ],
        },
        separators=(",", ":"),
    ).encode()


class ContractError(ValueError):
    """The function's result breaks the contract; `code` is AWS's error code for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _strings(value: Any) -> dict[str, str] | None:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None


def parse_result(
    payload: bytes, *, record_ids: Sequence[str], records: Sequence[bytes]
) -> list[Outcome]:
    """The outcome of every record of the event, in the event's order."""
    try:
        document = json.loads(payload)
        returned = document["records"]
        assert isinstance(returned, list)
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise ContractError(
            "Lambda.InvalidOutput", "The function's result is not valid."
        ) from error
    by_id: dict[str, Mapping[str, Any]] = {}
    for item in returned:
        if not isinstance(item, dict) or "recordId" not in item:
            raise ContractError("Lambda.InvalidOutput", "A result record has no recordId.")
        if item["recordId"] in by_id:
            raise ContractError(
                "Lambda.DuplicatedRecordId", f"recordId {item['recordId']} is returned twice."
            )
        by_id[str(item["recordId"])] = item
    outcomes: list[Outcome] = []
    for record_id, original in zip(record_ids, records, strict=True):
        item = by_id.pop(record_id, None)
        if item is None:
            raise ContractError("Lambda.MissingRecordId", f"recordId {record_id} is missing.")
        result = item.get("result")
        if result == "Ok":
            try:
                data = base64.b64decode(str(item.get("data", "")), validate=True)
            except ValueError as error:
                raise ContractError(
                    "Lambda.InvalidOutput", f"recordId {record_id}: data is not base64."
                ) from error
            metadata = item.get("metadata") or {}
            keys = metadata.get("partitionKeys") if isinstance(metadata, dict) else None
            routing = metadata.get("otfMetadata") if isinstance(metadata, dict) else None
            outcomes.append(
                Outcome(
                    result="Ok",
                    data=data,
                    partition_keys=_strings(keys),
                    routing=_strings(routing),
                )
            )
        elif result == "Dropped":
            outcomes.append(Outcome(result="Dropped", data=original))
        elif result == "ProcessingFailed":
            outcomes.append(
                Outcome(
                    result="ProcessingFailed",
                    data=original,
                    error_code="Lambda.ProcessingFailed",
                    message="The function marked the record ProcessingFailed.",
                )
            )
        else:
            raise ContractError(
                "Lambda.InvalidOutput", f"recordId {record_id}: unknown result {result!r}."
            )
    if by_id:
        raise ContractError("Lambda.InvalidOutput", "The result names records not sent.")
    return outcomes
