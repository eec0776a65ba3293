"""SigV4 verification (broker/gateway/sigv4.py).

Goal: every request a real client signs verifies, and every kind of tampering or malformed
claim fails with the Kinesis error AWS would send.

Method: requests are signed by botocore's own `SigV4Auth` / `SigV4QueryAuth` (what boto3 and the
AWS CLI run) at a fixed time, by patching botocore's clock function for the duration of the
signing call. HTTP/2 requests are signed here the way the JS SDK v3 does it (`:authority` in
place of `host`, a signed `x-amz-content-sha256`), and one AWS test-suite vector anchors the
HMAC chain independently of both. The verifier always gets `now_ms` explicitly; nothing here
reads the clock.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.gateway.sigv4 import (
    SIGNATURE_MISMATCH_MESSAGE,
    HttpRequest,
    SigV4Verifier,
    canonical_uri,
    claimed_region,
)

ACCESS_KEY = "AKIDSHOALEXAMPLE"
SECRET = "shoal/secret+key=example"
REGION = "us-east-1"
AUTHORITY = "localhost:4567"
URL = f"http://{AUTHORITY}/"
BODY = b'{"StreamName":"orders"}'
SIGNED_AT = datetime(2025, 1, 1, 0, 0, 0)  # naive UTC, as botocore's clock returns it
SIGNED_AT_MS = int(SIGNED_AT.replace(tzinfo=UTC).timestamp()) * 1000
MINUTE_MS = 60_000
KINESIS_HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "Kinesis_20131202.DescribeStream",
}


def _verifier(**secrets: str) -> SigV4Verifier:
    return SigV4Verifier(secrets_by_access_key=secrets or {ACCESS_KEY: SECRET}, region=REGION)


def _botocore_request(
    *,
    url: str = URL,
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    access_key: str = ACCESS_KEY,
    secret: str = SECRET,
    token: str | None = None,
    region: str = REGION,
    service: str = "kinesis",
    signed_at: datetime = SIGNED_AT,
    presign_expires_s: int | None = None,
) -> HttpRequest:
    """A request signed by botocore, as the HTTP front door would hand it to the verifier."""
    request = AWSRequest(
        method="POST", url=url, data=body, headers={**KINESIS_HEADERS, **(headers or {})}
    )
    credentials = Credentials(access_key, secret, token)
    signer: SigV4Auth
    if presign_expires_s is None:
        signer = SigV4Auth(credentials, service, region)
    else:
        signer = SigV4QueryAuth(credentials, service, region, expires=presign_expires_s)
    # botocore reads the time through this module-level function; patching third-party code is
    # the only way to pin the signing time while still running its public add_auth.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.auth, "get_current_datetime", lambda *_a, **_k: signed_at)
        signer.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    header_pairs = [(name.lower(), str(value)) for name, value in prepared.headers.items()]
    # urllib3 adds Host on the wire; botocore signed the same value (host[:port] from the URL).
    header_pairs.append(("host", parts.netloc))
    raw_body = prepared.body or b""
    assert isinstance(raw_body, str | bytes), "botocore serializes JSON bodies eagerly"
    return HttpRequest(
        method=prepared.method,
        path=parts.path or "/",
        query_string=parts.query.encode("ascii"),
        headers=tuple(header_pairs),
        authority=parts.netloc,
        body=raw_body.encode("utf-8") if isinstance(raw_body, str) else raw_body,
    )


def _replace_header(request: HttpRequest, name: str, value: str) -> HttpRequest:
    headers = tuple((n, value if n == name else v) for n, v in request.headers)
    return _with(request, headers=headers)


def _drop_header(request: HttpRequest, name: str) -> HttpRequest:
    return _with(request, headers=tuple((n, v) for n, v in request.headers if n != name))


def _with(request: HttpRequest, **changes: object) -> HttpRequest:
    fields: dict[str, object] = {
        "method": request.method,
        "path": request.path,
        "query_string": request.query_string,
        "headers": request.headers,
        "authority": request.authority,
        "body": request.body,
    }
    fields.update(changes)
    return HttpRequest(**fields)  # type: ignore[arg-type]


def _authorization(request: HttpRequest) -> str:
    return next(value for name, value in request.headers if name == "authorization")


def _error(
    request: HttpRequest, *, now_ms: int = SIGNED_AT_MS, verifier: SigV4Verifier | None = None
) -> ShoalError:
    with pytest.raises(ShoalError) as caught:
        (verifier or _verifier()).verify(request, now_ms=now_ms)
    return caught.value


# --- botocore (boto3, AWS CLI), Authorization header -------------------------------------------


def test_a_botocore_signed_request_verifies_and_names_its_access_key() -> None:
    request = _botocore_request()
    assert _verifier().verify(request, now_ms=SIGNED_AT_MS) == ACCESS_KEY
    assert not any(name == "x-amz-content-sha256" for name, _ in request.headers)


def test_temporary_credentials_verify_with_the_security_token_signed() -> None:
    request = _botocore_request(token="session-token-from-sts")
    assert "x-amz-security-token" in _authorization(request)
    assert _verifier().verify(request, now_ms=SIGNED_AT_MS) == ACCESS_KEY
    forged = _replace_header(request, "x-amz-security-token", "another-token")
    assert _error(forged).code is ErrorCode.INVALID_SIGNATURE


def test_a_path_and_query_are_canonicalized_as_botocore_signs_them() -> None:
    request = _botocore_request(url=f"http://{AUTHORITY}/a/./b//c/../d%20e?b=2&a=%2F&a=0&flag")
    assert _verifier().verify(request, now_ms=SIGNED_AT_MS) == ACCESS_KEY


def test_the_date_header_can_stand_in_for_x_amz_date() -> None:
    request = _botocore_request(headers={"Date": "placeholder; botocore rewrites it"})
    assert not any(name == "x-amz-date" for name, _ in request.headers)
    assert _verifier().verify(request, now_ms=SIGNED_AT_MS) == ACCESS_KEY


def test_headers_that_were_not_signed_may_be_added() -> None:
    request = _botocore_request()
    extra = _with(request, headers=(*request.headers, ("x-forwarded-for", "10.0.0.1")))
    assert _verifier().verify(extra, now_ms=SIGNED_AT_MS) == ACCESS_KEY


def test_a_wrong_secret_is_an_invalid_signature_with_the_aws_message() -> None:
    error = _error(_botocore_request(secret="not-the-secret"))
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message == SIGNATURE_MISMATCH_MESSAGE


def test_an_unknown_access_key_is_an_unrecognized_client() -> None:
    error = _error(_botocore_request(access_key="AKIDNOBODY"))
    assert error.code is ErrorCode.UNRECOGNIZED_CLIENT
    assert error.message == "The security token included in the request is invalid."


def test_an_unsigned_request_is_missing_its_authentication_token() -> None:
    unsigned = _drop_header(_botocore_request(), "authorization")
    assert _error(unsigned).code is ErrorCode.MISSING_AUTHENTICATION_TOKEN
    assert _error(unsigned).message == "Missing Authentication Token"


def test_an_authorization_header_of_another_form_is_an_incomplete_signature() -> None:
    """AWS reads any Authorization header as SigV4 (kinesalite's recording of `Authorization:
    X`; API clients sending a bare JWT or `Bearer <token>` to AWS get the same answers)."""
    bare = _replace_header(_drop_header(_botocore_request(), "x-amz-date"), "authorization", "X")
    error = _error(bare)
    assert error.code is ErrorCode.INCOMPLETE_SIGNATURE
    assert error.message == (
        "Authorization header requires 'Credential' parameter. Authorization header requires "
        "'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. "
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        "Authorization=X"
    )
    basic = _replace_header(_botocore_request(), "authorization", "Basic dXNlcjpwYXNz")
    error = _error(basic)
    assert error.code is ErrorCode.INCOMPLETE_SIGNATURE
    assert error.message == (
        "'dXNlcjpwYXNz' not a valid key=value pair (missing equal-sign) in Authorization header: "
        "'Basic dXNlcjpwYXNz'."
    )


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda r: _with(r, body=r.body + b" "), id="body"),
        pytest.param(
            lambda r: _replace_header(r, "x-amz-target", "Kinesis_20131202.DeleteStream"),
            id="signed-header",
        ),
        pytest.param(lambda r: _with(r, path="/other"), id="path"),
        pytest.param(lambda r: _with(r, method="PUT"), id="method"),
        pytest.param(lambda r: _with(r, query_string=b"extra=1"), id="query"),
        pytest.param(lambda r: _with(r, authority="evil.example:4567"), id="authority"),
        pytest.param(lambda r: _drop_header(r, "content-type"), id="signed-header-removed"),
    ],
)
def test_tampering_with_any_signed_part_is_an_invalid_signature(tamper) -> None:
    error = _error(tamper(_botocore_request()))
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message == SIGNATURE_MISMATCH_MESSAGE


def test_clock_skew_up_to_five_minutes_either_way_is_accepted() -> None:
    request = _botocore_request()
    verifier = _verifier()
    assert verifier.verify(request, now_ms=SIGNED_AT_MS + 5 * MINUTE_MS) == ACCESS_KEY
    assert verifier.verify(request, now_ms=SIGNED_AT_MS - 5 * MINUTE_MS) == ACCESS_KEY


def test_a_signature_older_than_five_minutes_has_expired() -> None:
    error = _error(_botocore_request(), now_ms=SIGNED_AT_MS + 5 * MINUTE_MS + 1_000)
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message == (
        "Signature expired: 20250101T000000Z is now earlier than 20250101T000001Z "
        "(20250101T000501Z - 5 min.)"
    )


def test_a_signature_more_than_five_minutes_ahead_is_not_yet_current() -> None:
    # AWS words the future side differently ("not yet current"); both are InvalidSignature.
    error = _error(_botocore_request(), now_ms=SIGNED_AT_MS - 5 * MINUTE_MS - 1_000)
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message == (
        "Signature not yet current: 20250101T000000Z is still later than 20241231T235959Z "
        "(20241231T235459Z + 5 min.)"
    )


def test_an_authorization_header_missing_its_parts_is_an_incomplete_signature() -> None:
    request = _botocore_request()
    truncated = (
        "AWS4-HMAC-SHA256 Credential=AKIDSHOALEXAMPLE/20250101/us-east-1/kinesis/aws4_request"
    )
    error = _error(_drop_header(_replace_header(request, "authorization", truncated), "x-amz-date"))
    assert error.code is ErrorCode.INCOMPLETE_SIGNATURE
    assert error.message == (
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires 'SignedHeaders' parameter. "
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        f"Authorization={truncated}"
    )


def test_an_authorization_pair_without_an_equal_sign_is_an_incomplete_signature() -> None:
    header = "AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders, Signature=00"
    error = _error(_replace_header(_botocore_request(), "authorization", header))
    assert error.code is ErrorCode.INCOMPLETE_SIGNATURE
    assert error.message.startswith("'SignedHeaders' not a valid key=value pair")


def test_a_malformed_date_is_an_incomplete_signature() -> None:
    error = _error(_replace_header(_botocore_request(), "x-amz-date", "2025-01-01T00:00:00Z"))
    assert error.code is ErrorCode.INCOMPLETE_SIGNATURE
    assert error.message.startswith("Date must be in ISO-8601 'basic format'.")


def test_an_unsupported_algorithm_is_an_incomplete_signature() -> None:
    request = _botocore_request()
    header = _authorization(request).replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")
    error = _error(_replace_header(request, "authorization", header))
    assert error.code is ErrorCode.INCOMPLETE_SIGNATURE
    assert "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'" in error.message


def test_a_credential_without_five_parts_is_an_incomplete_signature() -> None:
    request = _botocore_request()
    header = _authorization(request).replace("/kinesis/aws4_request", "/kinesis")
    error = _error(_replace_header(request, "authorization", header))
    assert error.code is ErrorCode.INCOMPLETE_SIGNATURE
    assert error.message.startswith("Credential must have exactly 5 slash-delimited elements")


def test_a_credential_for_another_region_or_service_is_an_invalid_signature() -> None:
    error = _error(_botocore_request(region="eu-west-1"))
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message == "Credential should be scoped to a valid region, not 'eu-west-1'."
    error = _error(_botocore_request(service="dynamodb"))
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message == "Credential should be scoped to correct service: 'kinesis'."


def test_a_namespaced_verifier_accepts_any_region_and_says_which() -> None:
    # Regions are namespaces for data streams: the scope's region is the caller's region.
    verifier = SigV4Verifier(
        secrets_by_access_key={ACCESS_KEY: SECRET}, region=REGION, any_region=True
    )
    for region in ("eu-west-1", "ap-southeast-2", "us-gov-west-1", REGION):
        request = _botocore_request(region=region)
        assert verifier.verify_scoped(request, now_ms=SIGNED_AT_MS) == (ACCESS_KEY, region)
        assert claimed_region(request) == region
    presigned = _botocore_request(region="eu-central-1", presign_expires_s=300)
    assert verifier.verify_scoped(presigned, now_ms=SIGNED_AT_MS)[1] == "eu-central-1"
    assert claimed_region(presigned) == "eu-central-1"
    # A region that is not one, or a signature made for another region than its scope, fails.
    request = _botocore_request(region="eu-west-1")
    forged = _authorization(request).replace("/eu-west-1/", "/not_a_region/")
    error = _error(_replace_header(request, "authorization", forged), verifier=verifier)
    assert error.message == "Credential should be scoped to a valid region, not 'not_a_region'."
    moved = _authorization(request).replace("/eu-west-1/", "/eu-west-2/")
    error = _error(_replace_header(request, "authorization", moved), verifier=verifier)
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message == SIGNATURE_MISMATCH_MESSAGE
    assert claimed_region(_drop_header(request, "authorization")) is None


def test_a_credential_date_that_differs_from_the_request_date_is_an_invalid_signature() -> None:
    request = _botocore_request()
    header = _authorization(request).replace("/20250101/", "/20241231/")
    error = _error(_replace_header(request, "authorization", header))
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message.startswith("Date in Credential scope does not match")


def test_the_host_must_be_signed() -> None:
    request = _botocore_request()
    header = _authorization(request).replace(
        "SignedHeaders=content-type;host;", "SignedHeaders=content-type;"
    )
    assert header != _authorization(request)
    error = _error(_replace_header(request, "authorization", header))
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert (
        error.message == "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
    )


def test_both_auth_forms_at_once_are_an_invalid_signature() -> None:
    request = _with(_botocore_request(), query_string=b"X-Amz-Algorithm=AWS4-HMAC-SHA256")
    error = _error(request)
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message == (
        "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
    )


# --- botocore presigned query string ------------------------------------------------------------


def test_a_presigned_request_verifies_until_it_expires() -> None:
    request = _botocore_request(presign_expires_s=900)
    assert b"X-Amz-Signature=" in request.query_string
    assert b"StreamName=orders" in request.query_string  # botocore moves the JSON body here
    verifier = _verifier()
    assert verifier.verify(request, now_ms=SIGNED_AT_MS + 900_000) == ACCESS_KEY
    error = _error(request, now_ms=SIGNED_AT_MS + 901_000)
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message.startswith("Signature expired: 20250101T000000Z")


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"StreamName=orders", b"StreamName=payments"), (b"X-Amz-Expires=900", b"X-Amz-Expires=901")],
)
def test_a_tampered_presigned_query_is_an_invalid_signature(old: bytes, new: bytes) -> None:
    request = _botocore_request(presign_expires_s=900)
    assert old in request.query_string
    error = _error(_with(request, query_string=request.query_string.replace(old, new)))
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert error.message == SIGNATURE_MISMATCH_MESSAGE


def test_a_presigned_query_missing_its_parts_is_an_incomplete_signature() -> None:
    error = _error(
        _with(_drop_header(_botocore_request(), "authorization"), query_string=b"X-Amz-Algorithm")
    )
    assert error.code is ErrorCode.INCOMPLETE_SIGNATURE
    assert error.message == (
        "AWS query-string parameters must include 'X-Amz-Algorithm'. "
        "AWS query-string parameters must include 'X-Amz-Credential'. "
        "AWS query-string parameters must include 'X-Amz-Signature'. "
        "AWS query-string parameters must include 'X-Amz-SignedHeaders'. "
        "AWS query-string parameters must include 'X-Amz-Date'. "
        "Re-examine the query-string parameters."
    )


# --- JS SDK v3 over HTTP/2 ----------------------------------------------------------------------


def _hmac_sha256(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def _reference_signature(*, secret: str, amz_date: str, scope: str, canonical_request: str) -> str:
    """The SigV4 HMAC chain written out from the AWS docs, independent of the code under test."""
    string_to_sign = "\n".join(
        (
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        )
    )
    date, region, service, terminator = scope.split("/")
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, terminator):
        key = _hmac_sha256(key, part)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _js_sdk_h2_request(*, body: bytes = BODY, content_sha256: str | None = None) -> HttpRequest:
    """A PutRecord-shaped request signed as @aws-sdk/client-kinesis v3 signs it over HTTP/2.

    The SDK's host-header middleware replaces `host` with `:authority` for h2 handlers, and
    @smithy/signature-v4 signs every header except a fixed unsignable set (user-agent among
    them), adding a signed `x-amz-content-sha256`. hypercorn then presents `:authority` to the
    ASGI app as a `host` header, which is why the verifier must map it back.
    """
    amz_date = "20250101T000000Z"
    payload_hash = content_sha256 or hashlib.sha256(body).hexdigest()
    signed = {
        ":authority": AUTHORITY,
        "amz-sdk-invocation-id": "5c1a3e0e-8f5f-4e0a-9d4e-0f8b0c2d6a11",
        "amz-sdk-request": "attempt=1;  max=3",  # inner runs of spaces are collapsed
        "content-length": str(len(body)),
        "content-type": "application/x-amz-json-1.1",
        "x-amz-content-sha256": payload_hash,
        "x-amz-date": amz_date,
        "x-amz-target": "Kinesis_20131202.PutRecord",
        "x-amz-user-agent": "aws-sdk-js/3.1143.0",
    }
    names = sorted(signed)
    assert names[0] == ":authority"  # ':' sorts before every letter
    canonical_request = "\n".join(
        (
            "POST",
            "/",
            "",
            *(f"{name}:{' '.join(signed[name].split())}" for name in names),
            "",
            ";".join(names),
            payload_hash,
        )
    )
    scope = f"20250101/{REGION}/kinesis/aws4_request"
    signature = _reference_signature(
        secret=SECRET, amz_date=amz_date, scope=scope, canonical_request=canonical_request
    )
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    wire_headers = [("host", AUTHORITY)]  # hypercorn's rendering of :authority
    wire_headers += [(name, value) for name, value in signed.items() if name != ":authority"]
    wire_headers += [("user-agent", "aws-sdk-js/3.1143.0 ua/2.1"), ("authorization", authorization)]
    return HttpRequest(
        method="POST",
        path="/",
        query_string=b"",
        headers=tuple(wire_headers),
        authority=AUTHORITY,
        body=body,
    )


def test_an_http2_request_that_signs_authority_verifies() -> None:
    assert _verifier().verify(_js_sdk_h2_request(), now_ms=SIGNED_AT_MS) == ACCESS_KEY


def test_an_http2_request_is_bound_to_its_authority_and_body() -> None:
    request = _js_sdk_h2_request()
    error = _error(_with(request, authority="elsewhere:4567"))
    assert error.code is ErrorCode.INVALID_SIGNATURE
    error = _error(_with(request, body=b'{"StreamName":"other"}'))
    assert error.code is ErrorCode.INVALID_SIGNATURE
    assert "x-amz-content-sha256" in error.message


def test_an_unsigned_payload_verifies_only_when_the_hash_header_is_signed() -> None:
    request = _js_sdk_h2_request(content_sha256="UNSIGNED-PAYLOAD")
    assert _verifier().verify(request, now_ms=SIGNED_AT_MS) == ACCESS_KEY
    streaming = _js_sdk_h2_request(content_sha256="STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    assert _error(streaming).code is ErrorCode.INVALID_SIGNATURE


# --- Independent anchors ------------------------------------------------------------------------


def test_the_aws_get_vanilla_test_vector_verifies() -> None:
    # From AWS's SigV4 test suite (get-vanilla): independent of botocore and of this module.
    signature = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    request = HttpRequest(
        method="GET",
        path="/",
        query_string=b"",
        headers=(
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                f"SignedHeaders=host;x-amz-date, Signature={signature}",
            ),
        ),
        authority="example.amazonaws.com",
        body=b"",
    )
    verifier = SigV4Verifier(
        secrets_by_access_key={"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
        region="us-east-1",
        service="service",
    )
    now_ms = int(datetime(2015, 8, 30, 12, 36, tzinfo=UTC).timestamp()) * 1000
    assert verifier.verify(request, now_ms=now_ms) == "AKIDEXAMPLE"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "/"),
        ("/", "/"),
        ("/a/./b//c/../d", "/a/b/d"),
        ("/a/b/", "/a/b/"),
        ("/../..", "/"),
        ("/d%20e~f", "/d%2520e~f"),  # the raw path is encoded once more (non-S3 services)
    ],
)
def test_canonical_uri_matches_botocore(path: str, expected: str) -> None:
    assert canonical_uri(path) == expected
    # botocore's canonical request carries the canonical URI on its second line.
    signer = SigV4Auth(Credentials("k", "s"), "kinesis", REGION)
    botocore_canonical = signer.canonical_request(AWSRequest(method="POST", url=URL[:-1] + path))
    assert botocore_canonical.split("\n")[1] == expected


def test_signing_keys_stay_correct_beyond_the_cache_bound() -> None:
    verifier = _verifier()
    for day in range(limits.signing_key_cache_entries_max + 6):
        signed_at = SIGNED_AT + timedelta(days=day)
        now_ms = SIGNED_AT_MS + day * 86_400_000
        assert verifier.verify(_botocore_request(signed_at=signed_at), now_ms=now_ms) == ACCESS_KEY
    # The first day was evicted and must be derived again, identically.
    assert verifier.verify(_botocore_request(), now_ms=SIGNED_AT_MS) == ACCESS_KEY


# --- Property: no single-byte change to a signature survives ------------------------------------

_SIGNED = _botocore_request()
_SIGNATURE = _authorization(_SIGNED).rsplit("Signature=", 1)[1]
_VERIFIER = _verifier()


@given(index=st.integers(0, len(_SIGNATURE) - 1), mask=st.integers(1, 255))
def test_flipping_any_byte_of_the_signature_fails(index: int, mask: int) -> None:
    flipped = chr(ord(_SIGNATURE[index]) ^ mask)
    signature = _SIGNATURE[:index] + flipped + _SIGNATURE[index + 1 :]
    header = _authorization(_SIGNED).replace(_SIGNATURE, signature)
    with pytest.raises(ShoalError) as caught:
        _VERIFIER.verify(_replace_header(_SIGNED, "authorization", header), now_ms=SIGNED_AT_MS)
    # A flip into a separator (',', ' ', '=') can break the header's shape instead.
    if flipped.isalnum():
        assert caught.value.code is ErrorCode.INVALID_SIGNATURE
    else:
        assert caught.value.code in (ErrorCode.INVALID_SIGNATURE, ErrorCode.INCOMPLETE_SIGNATURE)
