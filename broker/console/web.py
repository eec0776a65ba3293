"""The console's HTTP plumbing over ASGI: a parsed request, an answer, the headers every page
carries. Small on purpose: the pages are plain GETs and urlencoded form POSTs."""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, quote

from broker.gateway.services import Receive, Scope, Send

FORM_BYTES_MAX = 2 * 1024 * 1024  # a put-record form carries at most a 1 MiB record as text

# Scripts, styles and fonts come from the node only; nothing may frame the console.
SECURITY_HEADERS = (
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    method: str
    path: str  # below /console, "/" for the console itself
    query: dict[str, str]
    form: dict[str, str]
    cookies: dict[str, str]
    headers: dict[str, str]
    client: str | None

    def arg(self, name: str, default: str = "") -> str:
        """A form field (POST) or a query parameter."""
        return self.form.get(name, self.query.get(name, default))

    @property
    def is_fragment(self) -> bool:
        """htmx asks for a part of the page (`HX-Request`), not a whole page."""
        return self.headers.get("hx-request") == "true"


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    cookies: tuple[str, ...] = field(default=())  # Set-Cookie values

    @staticmethod
    def redirect(location: str) -> Response:
        return Response(status=303, headers=(("location", location),))


class BodyTooLarge(Exception):
    pass


async def read_request(scope: Scope, receive: Receive, prefix: str) -> Request:
    """The request below `prefix`; a form body is read (bounded) when it is urlencoded."""
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", ())
    }
    body = await _read_body(receive)
    form: dict[str, str] = {}
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = _first_values(body.decode("utf-8", errors="replace"))
    client = scope.get("client")
    path = scope.get("path", "/")[len(prefix) :] or "/"
    return Request(
        method=scope["method"],
        path=path,
        query=_first_values(scope.get("query_string", b"").decode("latin-1")),
        form=form,
        cookies=_cookies(headers.get("cookie", "")),
        headers=headers,
        client=client[0] if client else None,
    )


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > FORM_BYTES_MAX:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _first_values(encoded: str) -> dict[str, str]:
    return {
        name: values[0]
        for name, values in parse_qs(encoded, keep_blank_values=True, max_num_fields=200).items()
    }


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


async def send_response(send: Send, response: Response) -> None:
    headers = [
        (b"content-type", response.content_type.encode("latin-1")),
        (b"content-length", str(len(response.body)).encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    headers += [(n.encode("latin-1"), v.encode("latin-1")) for n, v in SECURITY_HEADERS]
    headers += [(n.encode("latin-1"), v.encode("latin-1")) for n, v in response.headers]
    headers += [(b"set-cookie", cookie.encode("latin-1")) for cookie in response.cookies]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def url(path: str, **query: str | int | None) -> str:
    """A console URL below /console with its query (None values left out)."""
    parts = [
        f"{name}={quote(str(value), safe='')}" for name, value in query.items() if value is not None
    ]
    return "/console" + path + ("?" + "&".join(parts) if parts else "")


def segment(name: str) -> str:
    """A stream name as one path segment."""
    return quote(name, safe="")
