"""AWS Signature Version 4 verification for the AWS-compatible HTTP front door.

Role: `http_service.py` hands every request to `SigV4Verifier.verify` before decoding it. The
verifier either returns the caller's access key id or raises `ShoalError` with the Kinesis error
the real service would send (MissingAuthenticationToken, IncompleteSignature, InvalidSignature,
UnrecognizedClient). The checks run in the order AWS reports them (dynalite/kinesalite recorded
that order from the real service): both auth forms, missing parameters, date format, clock skew,
`host` signed, algorithm, credential shape, credential scope, access key, signature.

Contract:
- Pure: no clock reads, no I/O. The caller passes `now_ms` (wall-clock epoch milliseconds).
- Two forms are accepted: the `Authorization` header, and the presigned query string
  (`X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-SignedHeaders`, `X-Amz-Signature`,
  optional `X-Amz-Expires`).
- The canonical request is rebuilt from the *signed-header list the client sent*, never from a
  fixed set. This is what makes HTTP/2 work: the JS SDK v3 signs `:authority` instead of `host`
  (ECOSYSTEM §5.2), and hypercorn turns `:authority` into a `host` header in the ASGI scope. A
  signed header named `:authority` or `host` therefore takes `HttpRequest.authority`.
- The canonical URI is what botocore computes for non-S3 services: dot segments and empty
  segments removed, then the raw (already percent-encoded) path URI-encoded once more with `/`
  and `~` kept. That second encoding is the "double encoding" of the AWS docs.
- Payload hash: the `x-amz-content-sha256` header when present (the JS SDK sends and signs it),
  else SHA-256 of the body (boto3 sends no such header). A hex value must equal the body's hash,
  so a client-supplied hash can never vouch for a body it does not describe. `UNSIGNED-PAYLOAD`
  is accepted only when that header is itself signed; the body is then protected by TLS alone,
  exactly as with AWS. Streaming (`aws-chunked`) payloads are an S3 feature and are refused.
- Temporary credentials: `x-amz-security-token` (or `X-Amz-Security-Token` in the query) is
  covered by the signature like any other signed header or parameter, but the token itself is
  not validated. Only the access key id selects the secret.

Limits: clock skew ±5 minutes (Kinesis's "Signature expired ... - 5 min."), presigned
`X-Amz-Expires` up to 7 days, at most 64 signed headers, and an LRU of 64 derived signing keys
(one HMAC chain per secret and day, so 64 covers many clients without growing unbounded).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_to_bytes

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.streams import namespaces

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_SKEW_MS = limits.signature_clock_skew_ms_max  # the messages say "5 min."


_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AMZ_DATE_PATTERN = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_HEX_SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
_EXPIRES_PATTERN = re.compile(r"[0-9]{1,10}")
# The Authorization header separates its key=value pairs with commas, spaces, or both.
_AUTH_PAIR_SEPARATOR = re.compile(r"[,\s]+")
_AUTHORITY_HEADER_NAMES = frozenset({"host", ":authority"})
_QUERY_SIGNATURE_PARAM = "X-Amz-Signature"

SIGNATURE_MISMATCH_MESSAGE = error_messages.SIGNATURE_MISMATCH


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    """One HTTP request as the front door received it, before any decoding.

    `headers` holds lower-cased names and the values as received, in order; a name may repeat.
    `authority` is the HTTP/1.1 `Host` header or the HTTP/2 `:authority` pseudo-header.
    """

    method: str
    path: str
    query_string: bytes
    headers: tuple[tuple[str, str], ...]
    authority: str
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class _Claim:
    """What a request says about its own signature, taken from either auth form."""

    algorithm: str
    credential: str
    signed_headers: str
    signature: str
    amz_date: str  # ISO-8601 basic format, e.g. 20250101T000000Z
    expires_s: int | None  # presigned form only
    query_params: tuple[tuple[bytes, bytes], ...]  # the params that go into the canonical query


class SigV4Verifier:
    """Checks AWS SigV4 signatures against a table of access keys: a fixed one, or
    `secret_for` (the node's `broker.iam.directory.KeyDirectory.secret`, which also knows the
    keys kept in the metadata quorum).

    Lifecycle: built once per node from config; `verify` is called per request from the event
    loop. The only state is the signing-key cache, which never changes a result.
    """

    def __init__(
        self,
        *,
        secrets_by_access_key: Mapping[str, str] | None = None,
        region: str,
        service: str = "kinesis",
        secret_for: Callable[[str], str | None] | None = None,
        any_region: bool = False,
    ) -> None:
        """`region`: the node's region. `any_region`: also accept a scope naming any other
        well-formed AWS region (regions are namespaces: `broker/streams/namespaces.py`)."""
        if not region or not service:
            raise ValueError("SigV4Verifier needs a region and a service name")
        fixed = dict(secrets_by_access_key or {})
        self._secret_for = secret_for if secret_for is not None else fixed.get
        self._region = region
        self._any_region = any_region
        self._service = service
        self._signing_keys: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()

    def verify(self, request: HttpRequest, *, now_ms: int) -> str:
        """Returns the access key id on success; raises ShoalError otherwise."""
        return self.verify_scoped(request, now_ms=now_ms)[0]

    def verify_scoped(self, request: HttpRequest, *, now_ms: int) -> tuple[str, str]:
        """Returns (access key id, the region the request is signed for) on success; raises
        ShoalError otherwise."""
        claim = _read_claim(request)
        _check_date(claim, now_ms=now_ms)
        signed_header_names = _check_signed_headers(claim.signed_headers)
        if claim.algorithm != ALGORITHM:
            raise ShoalError(
                ErrorCode.INCOMPLETE_SIGNATURE,
                error_messages.unsupported_signing_algorithm(
                    algorithm=claim.algorithm, supported=ALGORITHM
                ),
            )
        access_key_id, credential_date, region = self._check_credential(claim)
        secret = self._secret_for(access_key_id)
        if secret is None:
            raise ShoalError(ErrorCode.UNRECOGNIZED_CLIENT)

        payload_hash = _payload_hash(request, signed_header_names)
        canonical_request = "\n".join(
            (
                request.method.upper(),
                canonical_uri(request.path),
                canonical_query_string(claim.query_params),
                _canonical_headers(request, signed_header_names),
                claim.signed_headers,
                payload_hash,
            )
        )
        scope = f"{credential_date}/{region}/{self._service}/{TERMINATOR}"
        string_to_sign = "\n".join(
            (
                ALGORITHM,
                claim.amz_date,
                scope,
                hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
            )
        )
        signing_key = self._signing_key(secret, credential_date, region)
        expected = hmac.new(signing_key, string_to_sign.encode("utf-8"), hashlib.sha256)
        # Constant time, so response timing does not reveal how much of a guess was right.
        # surrogateescape keeps any odd byte the client sent comparable instead of crashing.
        provided = claim.signature.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(expected.hexdigest().encode("ascii"), provided):
            raise ShoalError(ErrorCode.INVALID_SIGNATURE, SIGNATURE_MISMATCH_MESSAGE)
        return access_key_id, region

    def _check_credential(self, claim: _Claim) -> tuple[str, str, str]:
        """Splits `keyid/date/region/service/aws4_request` and checks the scope against this
        service. Returns (access key id, credential date, region)."""
        parts = claim.credential.rstrip("/").split("/")
        if len(parts) != 5:
            raise ShoalError(
                ErrorCode.INCOMPLETE_SIGNATURE,
                error_messages.credential_elements(credential=claim.credential),
            )
        access_key_id, date, region, service, terminator = parts
        # AWS reports every scope problem at once, in this order.
        problems: list[str] = []
        if region != self._region and not (self._any_region and namespaces.is_region(region)):
            problems.append(error_messages.credential_region(region=region))
        if service != self._service:
            problems.append(error_messages.credential_service(service=self._service))
        if terminator != TERMINATOR:
            problems.append(
                error_messages.credential_terminator(expected=TERMINATOR, terminator=terminator)
            )
        if date != claim.amz_date[:8]:
            problems.append(error_messages.credential_date(date=date, amz_date=claim.amz_date))
        if problems:
            raise ShoalError(ErrorCode.INVALID_SIGNATURE, " ".join(problems))
        assert len(date) == 8, date  # equal to amz_date[:8], which matched \d{8}
        return access_key_id, date, region

    def _signing_key(self, secret: str, date: str, region: str) -> bytes:
        """The HMAC chain secret → date → region → service → aws4_request, cached (LRU)."""
        cache_key = (secret, date, region)  # the service is fixed per verifier
        cached = self._signing_keys.get(cache_key)
        if cached is not None:
            self._signing_keys.move_to_end(cache_key)
            return cached
        key = f"AWS4{secret}".encode()
        for part in (date, region, self._service, TERMINATOR):
            key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
        self._signing_keys[cache_key] = key
        if len(self._signing_keys) > limits.signing_key_cache_entries_max:
            self._signing_keys.popitem(last=False)
        assert len(self._signing_keys) <= limits.signing_key_cache_entries_max
        return key


def canonical_uri(path: str) -> str:
    """The canonical URI botocore signs for non-S3 services.

    Empty and `.` segments are dropped and `..` pops one (RFC 3986 §5.2.4 plus AWS's collapsing
    of repeated slashes); then the raw path is percent-encoded again, keeping `/` and `~`.
    """
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
        else:
            segments.append(segment)
    leading = "/" if path.startswith("/") else ""
    trailing = "/" if path.endswith("/") and segments else ""
    normalized = leading + "/".join(segments) + trailing
    return quote(normalized or "/", safe="/~")


def canonical_query_string(params: tuple[tuple[bytes, bytes], ...]) -> str:
    """Names and values percent-decoded, re-encoded strictly (only A-Za-z0-9-_.~ left bare),
    sorted by name then value, joined with `&`. Decoding first makes the result the same
    whether the client sent `%2F` or `/`, as AWS does."""
    encoded = sorted(
        (quote(unquote_to_bytes(name), safe="-_.~"), quote(unquote_to_bytes(value), safe="-_.~"))
        for name, value in params
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _parse_query(query_string: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """Raw (still percent-encoded) name/value pairs in order; a pair without `=` has value b""."""
    pairs: list[tuple[bytes, bytes]] = []
    for pair in query_string.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        pairs.append((name, value))
    return tuple(pairs)


def _decoded(raw: bytes) -> str:
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def _header_values(request: HttpRequest, name: str) -> list[str]:
    return [value for header_name, value in request.headers if header_name == name]


def _first_header(request: HttpRequest, name: str) -> str | None:
    values = _header_values(request, name)
    return values[0] if values else None


def _read_claim(request: HttpRequest) -> _Claim:
    """Picks the auth form and checks that it carries every required part."""
    authorization = _first_header(request, "authorization")
    query = _parse_query(request.query_string)
    query_names = {_decoded(name) for name, _ in query}
    has_query_auth = "X-Amz-Algorithm" in query_names
    if authorization is not None and has_query_auth:
        raise ShoalError(ErrorCode.INVALID_SIGNATURE, error_messages.BOTH_AUTHORIZATION_FORMS)
    if has_query_auth:
        return _read_query_claim(query)
    # Any Authorization header is read as a SigV4 one: AWS answers a bare token or another
    # scheme (Bearer, Basic) with IncompleteSignature naming what it lacks, not as no token.
    if authorization is None:
        raise ShoalError(ErrorCode.MISSING_AUTHENTICATION_TOKEN)
    return _read_header_claim(request, authorization, query)


def _read_header_claim(
    request: HttpRequest, authorization: str, query: tuple[tuple[bytes, bytes], ...]
) -> _Claim:
    algorithm, _, rest = authorization.strip().partition(" ")
    params: dict[str, str] = {}
    for pair in _AUTH_PAIR_SEPARATOR.split(rest):
        if not pair:
            continue
        key, equals, value = pair.partition("=")
        if not equals:
            raise ShoalError(
                ErrorCode.INCOMPLETE_SIGNATURE,
                error_messages.authorization_pair(pair=pair, authorization=authorization),
            )
        params[key] = value
    message = ""
    for required in ("Credential", "Signature", "SignedHeaders"):
        if not params.get(required):
            message += error_messages.authorization_needs(parameter=required)
    amz_date = _first_header(request, "x-amz-date")
    http_date = _first_header(request, "date")
    if amz_date is None and http_date is None:
        message += error_messages.AUTHORIZATION_NEEDS_A_DATE
    if message:
        raise ShoalError(
            ErrorCode.INCOMPLETE_SIGNATURE,
            error_messages.incomplete_authorization(problems=message, authorization=authorization),
        )
    return _Claim(
        algorithm=algorithm,
        credential=params["Credential"],
        signed_headers=params["SignedHeaders"],
        signature=params["Signature"],
        amz_date=_amz_date(amz_date, http_date),
        expires_s=None,
        query_params=query,
    )


def _read_query_claim(query: tuple[tuple[bytes, bytes], ...]) -> _Claim:
    params: dict[str, str] = {}
    for name, value in query:
        params.setdefault(_decoded(name), _decoded(value))
    message = ""
    for required in (
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
    ):
        if not params.get(required):
            message += error_messages.query_signature_needs(parameter=required)
    if message:
        raise ShoalError(
            ErrorCode.INCOMPLETE_SIGNATURE, message + error_messages.QUERY_SIGNATURE_REEXAMINE
        )
    return _Claim(
        algorithm=params["X-Amz-Algorithm"],
        credential=params["X-Amz-Credential"],
        signed_headers=params["X-Amz-SignedHeaders"],
        signature=params[_QUERY_SIGNATURE_PARAM],
        amz_date=_amz_date(params["X-Amz-Date"], None),
        expires_s=_expires_s(params.get("X-Amz-Expires")),
        # The signature cannot sign itself; every other parameter is covered.
        query_params=tuple(
            (name, value) for name, value in query if _decoded(name) != _QUERY_SIGNATURE_PARAM
        ),
    )


def _amz_date(amz_date: str | None, http_date: str | None) -> str:
    """The request time in ISO-8601 basic format. `X-Amz-Date` wins over `Date`, as in AWS."""
    if amz_date is not None:
        if _AMZ_DATE_PATTERN.fullmatch(amz_date) is None or _parse_amz_date(amz_date) is None:
            raise _bad_date(amz_date)
        return amz_date
    assert http_date is not None, "the caller checked that one of the two is present"
    try:
        parsed = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        raise _bad_date(http_date) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime(_AMZ_DATE_FORMAT)


def _parse_amz_date(amz_date: str) -> datetime | None:
    try:
        return datetime.strptime(amz_date, _AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _bad_date(value: str) -> ShoalError:
    return ShoalError(ErrorCode.INCOMPLETE_SIGNATURE, error_messages.bad_signing_date(value=value))


def _expires_s(value: str | None) -> int | None:
    if value is None:
        return None
    if _EXPIRES_PATTERN.fullmatch(value) is None:
        raise ShoalError(ErrorCode.INCOMPLETE_SIGNATURE, error_messages.EXPIRES_NOT_A_NUMBER)
    expires_s = int(value)
    if expires_s > limits.presigned_expires_s_max:
        raise ShoalError(
            ErrorCode.INCOMPLETE_SIGNATURE,
            error_messages.expires_too_long(seconds_max=limits.presigned_expires_s_max),
        )
    return expires_s


def _format_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms // 1000, tz=UTC).strftime(_AMZ_DATE_FORMAT)


def _check_date(claim: _Claim, *, now_ms: int) -> None:
    """Refuses requests signed more than 5 minutes away from `now_ms`, with AWS's messages.
    A presigned request stays valid until its own expiry instead (it is meant to be used later)."""
    signed_at = _parse_amz_date(claim.amz_date)
    assert signed_at is not None, "_amz_date only returns well-formed dates"
    signed_ms = int(signed_at.timestamp()) * 1000
    if signed_ms > now_ms + _SKEW_MS:
        raise ShoalError(
            ErrorCode.INVALID_SIGNATURE,
            error_messages.signature_not_yet_current(
                amz_date=claim.amz_date,
                latest=_format_ms(now_ms + _SKEW_MS),
                now=_format_ms(now_ms),
            ),
        )
    if claim.expires_s is not None:
        expires_ms = signed_ms + claim.expires_s * 1000
        if now_ms > expires_ms:
            raise ShoalError(
                ErrorCode.INVALID_SIGNATURE,
                error_messages.signature_expired(
                    amz_date=claim.amz_date,
                    earliest=_format_ms(now_ms - claim.expires_s * 1000),
                    now=_format_ms(now_ms),
                    window=f"{claim.expires_s} sec.",
                ),
            )
        return
    if signed_ms < now_ms - _SKEW_MS:
        raise ShoalError(
            ErrorCode.INVALID_SIGNATURE,
            error_messages.signature_expired(
                amz_date=claim.amz_date,
                earliest=_format_ms(now_ms - _SKEW_MS),
                now=_format_ms(now_ms),
                window="5 min.",
            ),
        )


def _check_signed_headers(signed_headers: str) -> tuple[str, ...]:
    """The signed-header names, lower-cased, in the client's order. `host` or `:authority` must
    be among them: otherwise a signature could be replayed against another endpoint."""
    names = tuple(name.strip().lower() for name in signed_headers.split(";"))
    if len(names) > limits.signed_headers_count_max:
        raise ShoalError(
            ErrorCode.INCOMPLETE_SIGNATURE,
            error_messages.too_many_signed_headers(
                count_max=limits.signed_headers_count_max, count=len(names)
            ),
        )
    if _AUTHORITY_HEADER_NAMES.isdisjoint(names):
        raise ShoalError(ErrorCode.INVALID_SIGNATURE, error_messages.HOST_NOT_SIGNED)
    return names


def _canonical_headers(request: HttpRequest, signed_header_names: tuple[str, ...]) -> str:
    """One `name:value` line per signed header plus the blank line that ends the block.

    Values are trimmed with inner whitespace runs collapsed, and repeated headers are joined
    with `,` in arrival order. A signed header that is absent yields `name:`, which can only
    match if the client signed it that way.
    """
    lines: list[str] = []
    for name in signed_header_names:
        if name in _AUTHORITY_HEADER_NAMES:
            values = [request.authority]
        else:
            values = _header_values(request, name)
        lines.append(f"{name}:" + ",".join(" ".join(value.split()) for value in values))
    return "\n".join(lines) + "\n"


def _payload_hash(request: HttpRequest, signed_header_names: tuple[str, ...]) -> str:
    """The hash that goes last in the canonical request (see the module docstring)."""
    body_hash = hashlib.sha256(request.body).hexdigest()
    declared = _first_header(request, "x-amz-content-sha256")
    if declared is None:
        return body_hash
    if _HEX_SHA256_PATTERN.fullmatch(declared) is not None:
        if not hmac.compare_digest(declared.lower(), body_hash):
            raise ShoalError(ErrorCode.INVALID_SIGNATURE, error_messages.PAYLOAD_HASH_MISMATCH)
        return declared
    if declared == UNSIGNED_PAYLOAD and "x-amz-content-sha256" in signed_header_names:
        return declared
    raise ShoalError(
        ErrorCode.INVALID_SIGNATURE,
        error_messages.unsupported_payload_hash(declared=declared),
    )


_CREDENTIAL_REGION = re.compile(r"Credential=[^/,\s]*/[0-9]{8}/([^/,\s]+)/")
_CREDENTIAL_KEY = re.compile(r"Credential=([A-Za-z0-9]{1,128})/")


def _claimed_credential(request: HttpRequest) -> str | None:
    """The Credential the request's Authorization header or presigned query names, as text
    (`Credential=KEY/DATE/REGION/...`), unverified; None when unsigned."""
    authorization = _first_header(request, "authorization")
    if authorization is not None:
        return authorization
    credential = dict(_parse_query(request.query_string)).get(b"X-Amz-Credential")
    if credential is None:
        return None
    return "Credential=" + _decoded(credential)


def claimed_access_key_id(request: HttpRequest) -> str | None:
    """The access key id a request's credential names, read without verifying it: what the
    audit trail records on nodes that check no signatures. None when unsigned or malformed."""
    text = _claimed_credential(request)
    match = None if text is None else _CREDENTIAL_KEY.search(text)
    return None if match is None else match.group(1)


def claimed_region(request: HttpRequest) -> str | None:
    """The region a request's credential scope names, read without verifying it: for nodes that
    check no signatures (no access keys configured), where the scope still says which region
    the client addresses. None when unsigned or not a well-formed region."""
    text = _claimed_credential(request)
    if text is None:
        return None
    match = _CREDENTIAL_REGION.search(text)
    if match is None or not namespaces.is_region(match.group(1)):
        return None
    return match.group(1)
