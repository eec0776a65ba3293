"""OpenSearch (and Elasticsearch, OpenSearch Serverless), Splunk and Snowflake destinations:
the checks, the requests Shoal sends and how their answers are read. Pure (values in and
out; the POST itself is `http_endpoint.post`).

OpenSearch and Splunk cannot run on Shoal's test machines, so these paths are tested against
servers in the tests that speak the same protocol subset, never against the products: treat
them as untested against the real thing (docs/ARCHITECTURE.md says so).

- OpenSearch: one `POST <ClusterEndpoint or CollectionEndpoint>/_bulk` per buffer, signed
  with SigV4 as Firehose signs it (service `es`, or `aoss` for Serverless; `signing_scope`), an
  `index` action per record (`_index` is IndexName, with `-YYYY-MM-DD-HH` / `-YYYY-MM-DD` /
  `-YYYY-w<WW>` / `-YYYY-MM` for IndexRotationPeriod, as Firehose names rotated indices),
  each record a JSON document. A bulk answer with `errors` fails only its failed items
  (they go to the S3 backup with the item's error); a non-2xx answer or no answer is
  retried. A DomainARN without ClusterEndpoint needs the AWS OpenSearch API to find the
  endpoint: delivery fails with OS.DomainEndpointUnknown into the S3 backup.
- Splunk: `POST <HECEndpoint>/services/collector/raw` (the records as they are) or
  `/services/collector/event` (`{"event": <record>}` per record), `Authorization: Splunk
  <HECToken>` and an `X-Splunk-Request-Channel`; success is a 2xx answer with `code` 0.
- Snowflake: the rows are inserted with Snowflake's driver (`snowflake_tables.py`), tested
  against fakesnow's Snowflake-compatible server; this module checks the configuration.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

OPENSEARCH_KINDS = ("Elasticsearch", "Amazonopensearchservice", "AmazonOpenSearchServerless")
KINDS = (*OPENSEARCH_KINDS, "Splunk", "Snowflake")
# RetryOptions.DurationInSeconds' defaults.
RETRY_DURATION_MS = {
    "Elasticsearch": 300_000,
    "Amazonopensearchservice": 300_000,
    "AmazonOpenSearchServerless": 300_000,
    "Splunk": 3_600_000,
    "Snowflake": 60_000,
}
# The S3BackupMode that backs every record up, and the error output's type name.
ALL_RECORDS_BACKUP = {
    "Elasticsearch": "AllDocuments",
    "Amazonopensearchservice": "AllDocuments",
    "AmazonOpenSearchServerless": "AllDocuments",
    "Splunk": "AllEvents",
    "Snowflake": "AllData",
}
ERROR_OUTPUT_TYPE = {
    "Elasticsearch": "elasticsearch-failed",
    "Amazonopensearchservice": "AmazonOpenSearchService-failed",
    "AmazonOpenSearchServerless": "AmazonOpenSearchServerless-failed",
    "Splunk": "splunk-failed",
    "Snowflake": "snowflake-failed",
}
_AWS_SEARCH_HOST = re.compile(r".+\.([a-z0-9-]+)\.(?:es|aoss)\.amazonaws\.com(?:\.cn)?")
_ROTATION_SUFFIX = {
    "NoRotation": "",
    "OneHour": "-%Y-%m-%d-%H",
    "OneDay": "-%Y-%m-%d",
    "OneWeek": "-%Y-w%V",
    "OneMonth": "-%Y-%m",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """How a destination answered: `retry` (the whole request failed: try again) with its
    reason, or per-record failures (index -> (error code, message)) of an accepted request."""

    retry: str | None = None
    error_code: str = ""
    failed: Mapping[int, tuple[str, str]] | None = None


def check(kind: str, configuration: Mapping[str, Any]) -> str | None:
    """Why this configuration is refused (None: accepted), as Firehose checks it."""
    if kind in OPENSEARCH_KINDS:
        if kind == "AmazonOpenSearchServerless":
            if not configuration.get("CollectionEndpoint"):
                return "CollectionEndpoint is required for an OpenSearch Serverless destination."
        elif bool(configuration.get("DomainARN")) == bool(configuration.get("ClusterEndpoint")):
            return "Exactly one of DomainARN and ClusterEndpoint must be specified."
        return None
    if kind == "Splunk":
        secrets = (configuration.get("SecretsManagerConfiguration") or {}).get("Enabled")
        if secrets:
            return "Shoal does not read credentials from Secrets Manager; set HECToken."
        if not configuration.get("HECToken"):
            return "HECToken is required for a Splunk destination."
        if not str(configuration.get("HECEndpoint", "")).startswith(("https://", "http://")):
            return "HECEndpoint must be an https:// URL."
        return None
    if kind == "Snowflake":
        if (configuration.get("SecretsManagerConfiguration") or {}).get("Enabled"):
            return "Shoal does not read credentials from Secrets Manager; set User and PrivateKey."
        if not (configuration.get("User") and configuration.get("PrivateKey")):
            return "User and PrivateKey are required for a Snowflake destination."
        option = configuration.get("DataLoadingOption") or "JSON_MAPPING"
        if option != "JSON_MAPPING" and not configuration.get("ContentColumnName"):
            return f"ContentColumnName is required with DataLoadingOption {option}."
        if option == "VARIANT_CONTENT_AND_METADATA_MAPPING" and not configuration.get(
            "MetaDataColumnName"
        ):
            return f"MetaDataColumnName is required with DataLoadingOption {option}."
        return None
    return f"Unknown destination {kind}."


def index_name(configuration: Mapping[str, Any], moment: datetime) -> str:
    rotation = str(configuration.get("IndexRotationPeriod") or "OneDay")
    if "CollectionEndpoint" in configuration:
        rotation = "NoRotation"  # Serverless collections do not rotate
    return str(configuration["IndexName"]) + moment.strftime(_ROTATION_SUFFIX[rotation])


def opensearch_request(
    configuration: Mapping[str, Any], records: Sequence[bytes], moment: datetime
) -> Request:
    endpoint = str(configuration.get("ClusterEndpoint") or configuration["CollectionEndpoint"])
    action: dict[str, Any] = {"_index": index_name(configuration, moment)}
    if configuration.get("TypeName"):
        action["_type"] = configuration["TypeName"]
    header = json.dumps({"index": action}, separators=(",", ":")).encode()
    lines = []
    for data in records:
        lines.append(header)
        lines.append(data.rstrip(b"\n"))
    return Request(
        url=endpoint.rstrip("/") + "/_bulk",
        headers={"Content-Type": "application/x-ndjson"},
        body=b"\n".join(lines) + b"\n",
    )


def signing_scope(kind: str, url: str, default_region: str) -> tuple[str, str]:
    """(service, region) of the SigV4 signature of a request to an OpenSearch destination:
    `aoss` for Serverless collections, `es` for OpenSearch Service and Elasticsearch domains;
    the region of an AWS endpoint's host (`<name>.<region>.es.amazonaws.com`,
    `<id>.<region>.aoss.amazonaws.com`), else the delivery stream's."""
    service = "aoss" if kind == "AmazonOpenSearchServerless" else "es"
    host = urllib.parse.urlsplit(url).hostname or ""
    aws_host = _AWS_SEARCH_HOST.fullmatch(host)
    return service, aws_host.group(1) if aws_host else default_region


def opensearch_answer(status: int, body: bytes, records: int) -> Answer:
    if not 200 <= status < 300:
        code = "OS.ServerError" if status >= 500 else "OS.InvalidResponse"
        return Answer(retry=f"The cluster answered HTTP {status}.", error_code=code)
    try:
        answer = json.loads(body)
        items = answer.get("items") or []
    except (ValueError, AttributeError):
        return Answer(retry="The _bulk answer is not JSON.", error_code="OS.InvalidResponse")
    if len(items) != records:
        return Answer(
            retry=f"The _bulk answer has {len(items)} items for {records} documents.",
            error_code="OS.InvalidResponse",
        )
    failed: dict[int, tuple[str, str]] = {}
    if answer.get("errors"):
        for index, item in enumerate(items):
            result: dict[str, Any] = next(iter(item.values()), {}) if isinstance(item, dict) else {}
            if int(result.get("status", 500)) >= 300:
                error = result.get("error") or {}
                reason = error.get("reason", "") if isinstance(error, dict) else str(error)
                kind = error.get("type", "") if isinstance(error, dict) else ""
                failed[index] = (f"OS.{kind or 'DocumentFailed'}", str(reason))
    return Answer(failed=failed)


def splunk_request(
    configuration: Mapping[str, Any], records: Sequence[bytes], channel: str
) -> Request:
    endpoint = str(configuration["HECEndpoint"]).rstrip("/")
    if configuration.get("HECEndpointType") == "Event":
        path = "/services/collector/event"
        events = []
        for data in records:
            try:
                event: Any = json.loads(data)
            except ValueError:
                event = data.decode("utf-8", errors="replace")
            events.append(json.dumps({"event": event}, separators=(",", ":")).encode())
        body = b"\n".join(events)
    else:
        path = "/services/collector/raw"
        body = b"".join(records)
    return Request(
        url=endpoint + path,
        headers={
            "Authorization": f"Splunk {configuration['HECToken']}",
            "X-Splunk-Request-Channel": channel,
            "Content-Type": "application/json",
        },
        body=body,
    )


def splunk_answer(status: int, body: bytes) -> Answer:
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        answer = {}
    code = answer.get("code") if isinstance(answer, dict) else None
    if 200 <= status < 300 and code in (0, None):
        return Answer(failed={})
    if status in (401, 403) or code in (2, 3, 4):
        error_code = "Splunk.InvalidToken"
    elif status >= 500:
        error_code = "Splunk.ServerError"
    else:
        error_code = "Splunk.InvalidEvents"
    text = answer.get("text", "") if isinstance(answer, dict) else ""
    return Answer(retry=f"Splunk answered HTTP {status}: {text}".strip(), error_code=error_code)
