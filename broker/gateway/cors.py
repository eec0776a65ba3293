"""CORS and the response headers AWS adds to every answer, as the AWS door serves them.

AWS (as kinesalite recorded it) answers any request carrying `Origin` with
`Access-Control-Allow-Origin: *` and exposes its own headers to the page; an `OPTIONS`
preflight with `Origin` gets 200, an empty body, the requested headers and method echoed back
and a two-day max age. So the AWS SDK for JavaScript works from a web page. Every answer but a
preflight also carries `x-amz-id-2` (72 random bytes, base64) next to `x-amzn-RequestId`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence

PREFLIGHT_MAX_AGE_S = 172_800
EXPOSED_HEADERS = (
    "x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,x-amzn-ErrorMessage,Date"
)
# What AWS's front end exposes on the errors it answers itself (the XML 403s).
FRONT_END_EXPOSED_HEADERS = "x-amz-request-id, x-amz-id-2"
_ID_2_BYTES = 72

Headers = list[tuple[str, str]]
HeaderPairs = Sequence[tuple[str, str]]


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    return method == "OPTIONS" and bool(headers.get("origin"))


def preflight_headers(headers: Mapping[str, str]) -> Headers:
    """The answer to an OPTIONS preflight (status 200, empty body)."""
    answer: Headers = [("access-control-allow-origin", "*")]
    requested_headers = headers.get("access-control-request-headers")
    if requested_headers:
        answer.append(("access-control-allow-headers", requested_headers))
    requested_method = headers.get("access-control-request-method")
    if requested_method:
        answer.append(("access-control-allow-methods", requested_method))
    answer.append(("access-control-max-age", str(PREFLIGHT_MAX_AGE_S)))
    return answer


def answer_headers(headers: Mapping[str, str], *, front_end: bool = False) -> Headers:
    """What every other answer carries besides its own headers; `front_end` for the errors
    AWS's front end answers itself, which expose only its request ids."""
    answer: Headers = [("x-amz-id-2", base64.b64encode(os.urandom(_ID_2_BYTES)).decode("ascii"))]
    if headers.get("origin"):
        answer.append(("access-control-allow-origin", "*"))
        exposed = FRONT_END_EXPOSED_HEADERS if front_end else EXPOSED_HEADERS
        answer.append(("access-control-expose-headers", exposed))
    return answer
