"""One call as a CloudTrail event (pure): the record `shoal audit` returns and ships.

The shape is CloudTrail's (eventVersion 1.09): `userIdentity` (type Root, IAMUser,
AssumedRole or Unknown, with arn, accountId, accessKeyId, userName), `eventTime`,
`eventSource` (`kinesis.amazonaws.com`, ...), `eventName`, `awsRegion`, `sourceIPAddress`,
`requestParameters`, `errorCode`/`errorMessage` for a refused or failed call, `requestID`,
`eventID`, `readOnly`, `resources`, `eventType`, `managementEvent`, `eventCategory`
(Management or Data) and `recipientAccountId`.

`requestParameters` never holds record payloads: a `Data` blob is left out, `Records` becomes
their count (CloudTrail does the same for Kinesis data events), and anything bytes is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

EVENT_VERSION = "1.09"
# CloudTrail's data events per service (the rest are management events).
DATA_EVENTS: dict[str, frozenset[str]] = {
    "kinesis": frozenset(
        {"PutRecord", "PutRecords", "GetRecords", "GetShardIterator", "SubscribeToShard"}
    ),
    "firehose": frozenset({"PutRecord", "PutRecordBatch"}),
    "kinesisvideo": frozenset(
        {
            "PutMedia",
            "GetMedia",
            "GetMediaForFragmentList",
            "ListFragments",
            "GetClip",
            "GetImages",
            "GetHLSStreamingSessionURL",
            "GetDASHStreamingSessionURL",
        }
    ),
}
_READ_ONLY_PREFIXES = ("Describe", "List", "Get", "Simulate", "Lookup")
_EVENT_SOURCES = {"shoal": "shoal.internal", "iam": "iam.amazonaws.com"}
_RESOURCE_TYPES = {
    ":stream/": "AWS::Kinesis::Stream",
    ":deliverystream/": "AWS::KinesisFirehose::DeliveryStream",
    ":application/": "AWS::KinesisAnalytics::Application",
}
PARAMETER_CHARS_MAX = 1_024  # a long string member is cut, so one event stays small


def is_data_event(signing_name: str, operation: str) -> bool:
    return operation in DATA_EVENTS.get(signing_name, frozenset())


def _parameters(request: Mapping[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name, value in request.items():
        if name == "Data" or isinstance(value, bytes | bytearray | memoryview):
            continue
        if name == "Records" and isinstance(value, list):
            kept["recordCount"] = len(value)
            continue
        if isinstance(value, str) and len(value) > PARAMETER_CHARS_MAX:
            value = value[:PARAMETER_CHARS_MAX] + "..."
        if isinstance(value, str | int | float | bool) or value is None:
            kept[name] = value
        elif isinstance(value, list | dict):
            kept[name] = _jsonable(value)
    return kept


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not isinstance(v, bytes)}
    if isinstance(value, list):
        return [_jsonable(v) for v in value if not isinstance(v, bytes)]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def user_identity(
    principal_arn: str | None, account_id: str, access_key_id: str | None
) -> dict[str, Any]:
    if principal_arn is None:  # not identified: access control off, or refused before
        unknown: dict[str, Any] = {"type": "Unknown", "accountId": account_id}
        if access_key_id:
            unknown["accessKeyId"] = access_key_id
        return unknown
    if principal_arn.endswith(":root"):
        kind = "Root"
    elif ":role/" in principal_arn:
        kind = "AssumedRole"
    else:
        kind = "IAMUser"
    identity: dict[str, Any] = {
        "type": kind,
        "principalId": access_key_id or principal_arn,
        "arn": principal_arn,
        "accountId": account_id,
    }
    if access_key_id:
        identity["accessKeyId"] = access_key_id
    if kind == "IAMUser":
        identity["userName"] = principal_arn.rsplit("/", 1)[1]
    return identity


def cloudtrail_event(
    *,
    signing_name: str,
    operation: str,
    request: Mapping[str, Any],
    principal_arn: str | None,
    account_id: str,
    access_key_id: str | None,
    source_address: str | None,
    region: str,
    resource: str,
    error_code: str | None,
    error_message: str | None,
    now_ms: int,
    event_id: str,
) -> dict[str, Any]:
    data = is_data_event(signing_name, operation)
    event: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": user_identity(principal_arn, account_id, access_key_id),
        "eventTime": datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": _EVENT_SOURCES.get(signing_name, f"{signing_name}.amazonaws.com"),
        "eventName": operation,
        "awsRegion": region,
        "sourceIPAddress": source_address or "unknown",
        "requestParameters": _parameters(request),
        "responseElements": None,
        "requestID": event_id,
        "eventID": event_id,
        "readOnly": operation.startswith(_READ_ONLY_PREFIXES),
        "eventType": "AwsApiCall",
        "managementEvent": not data,
        "eventCategory": "Data" if data else "Management",
        "recipientAccountId": account_id,
    }
    if resource != "*":
        kind = next((t for marker, t in _RESOURCE_TYPES.items() if marker in resource), "")
        parts = resource.split(":", 5)
        owner = parts[4] if len(parts) == 6 else ""
        event["resources"] = [{"ARN": resource, "accountId": owner, "type": kind}]
    if error_code is not None:
        event["errorCode"] = error_code
        event["errorMessage"] = error_message or ""
    return event
