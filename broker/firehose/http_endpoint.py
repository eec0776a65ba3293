"""HTTP endpoint delivery in AWS's request and response format.

Request (one POST per buffer, to the configured HTTPS Url):

    headers  Content-Type: application/json
             X-Amz-Firehose-Protocol-Version: 1.0
             X-Amz-Firehose-Request-Id: <uuid>           (the same in the body)
             X-Amz-Firehose-Source-Arn: <delivery stream ARN>
             X-Amz-Firehose-Access-Key: <AccessKey>       (when configured)
             X-Amz-Firehose-Common-Attributes: {"commonAttributes": {...}}  (when configured)
             Content-Encoding: gzip                       (RequestConfiguration GZIP)
    body     {"requestId": "<uuid>", "timestamp": <ms>, "records": [{"data": "<base64>"}, ...]}

Response: the endpoint took the records only when it answers 200 with a JSON body whose
`requestId` is the request's (AWS's check); anything else (another status, a body that does
not parse or names another request, no answer within the timeout) is a failure to retry.

`build_request` and `check_response` are pure; `post` does the I/O with the standard library
(TLS verified against the system's trust store, `SSL_CERT_FILE` included).
"""

from __future__ import annotations

import base64
import gzip
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

REQUEST_TIMEOUT_S = 30.0
_RESPONSE_BYTES_MAX = 1024 * 1024


def build_request(
    *,
    records: Sequence[bytes],
    request_id: str,
    timestamp_ms: int,
    source_arn: str,
    configuration: Mapping[str, Any],
) -> tuple[dict[str, str], bytes]:
    """(headers, body) of the delivery request for `records`."""
    endpoint = configuration["EndpointConfiguration"]
    request_configuration = configuration.get("RequestConfiguration") or {}
    document = {
        "requestId": request_id,
        "timestamp": timestamp_ms,
        "records": [{"data": base64.b64encode(data).decode("ascii")} for data in records],
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Amz-Firehose-Protocol-Version": "1.0",
        "X-Amz-Firehose-Request-Id": request_id,
        "X-Amz-Firehose-Source-Arn": source_arn,
    }
    if endpoint.get("AccessKey"):
        headers["X-Amz-Firehose-Access-Key"] = str(endpoint["AccessKey"])
    attributes = request_configuration.get("CommonAttributes") or []
    if attributes:
        headers["X-Amz-Firehose-Common-Attributes"] = json.dumps(
            {
                "commonAttributes": {
                    str(item["AttributeName"]): str(item["AttributeValue"]) for item in attributes
                }
            },
            separators=(",", ":"),
        )
    if request_configuration.get("ContentEncoding") == "GZIP":
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body, mtime=0)
    return headers, body


def check_response(status: int, body: bytes, *, request_id: str) -> str | None:
    """None when the endpoint took the request; otherwise why not (AWS's checks)."""
    if status != 200:
        return f"The endpoint answered HTTP {status}."
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "The endpoint's response is not JSON."
    if not isinstance(document, dict) or document.get("requestId") != request_id:
        return "The endpoint's response does not carry the request's requestId."
    return None


def post(
    url: str, headers: Mapping[str, str], body: bytes, limit: int = _RESPONSE_BYTES_MAX
) -> tuple[int, bytes]:
    """POST; (status, body) of any answer (its first `limit` bytes), or OSError when there is
    none. Blocking."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    context = ssl.create_default_context()
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S, context=context) as answer:
            return int(answer.status), answer.read(limit)
    except urllib.error.HTTPError as error:
        return int(error.code), error.read(limit)
