"""ConsoleService: the web console at /console on the node's AWS HTTP port (a `RestService`).

Every page is rendered here from the node's own metadata image (`views`) and every action and
record read is a Kinesis operation run through the same `validate_request` and
`KinesisService.call` as the API doors, with a `Caller` of door "http": the console can do
nothing the API would refuse, and it never shows or names an internal stream. Pages are
Jinja2 templates with autoescape on; htmx (search as you type, paging, the live tail) and
uPlot (sparklines) are served from `static/`, never from a CDN.

Safety: every POST carries a CSRF token bound to the browser (double-submit, `sessions`); with
access keys configured, every page but the sign-in asks for a session made from an access key
id and its secret (a configured key or a principal's key of the metadata quorum). Record
pages read one page (`RECORD_PAGE_MAX`) per request at most.

Access control (issue 15, `broker/gateway/access.py`): the visitor acts as the principal of
its key, in its account's namespace, and every call the console makes goes through the same
`AuthorizedService` as the API doors; a page that reads the metadata image itself is
authorized first with the actions the AWS console calls for it (`PAGE_ACTIONS`), so a
principal sees exactly what its policies would let it read through the API, and a refusal is
a page naming the action, with AWS's message (HTTP 403). Sign-in failures count toward the
same brute-force throttle as bad signatures.

Lifecycle: one per node, built by `node.py`; `run_sampler` samples write rates for the
sparklines until cancelled. Loop-bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import secrets
import shutil
import ssl
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from prometheus_client import CollectorRegistry

from broker import error_messages
from broker.caller import Caller
from broker.clock import Clock
from broker.console import actions, payloads, sessions, views
from broker.console.analytics_pages import AnalyticsCalls, AnalyticsPages
from broker.console.delivery_pages import DeliveryPages, FirehoseCalls
from broker.console.peers import (
    PEER_PATH,
    DiskUse,
    NodeStats,
    cluster_read_rates,
    cluster_shard_rates,
    fetch,
    shard_key,
)
from broker.console.rates import SAMPLE_INTERVAL_MS, CounterRates, RateHistory
from broker.console.series import stream_series
from broker.console.video_pages import VideoCalls, VideoPages, parse_timestamp
from broker.console.visitor import FamilyPages, Visitor
from broker.console.web import (
    BodyTooLarge,
    Request,
    Response,
    read_request,
    segment,
    send_response,
    url,
)
from broker.error_messages import stream_not_found
from broker.errors import ErrorCode, ShoalError
from broker.gateway.access import AccessControl
from broker.gateway.services import Receive, Scope, Send
from broker.gateway.validation import validate_request
from broker.iam.enforcer import CallableService
from broker.meta.image import MetadataImage, NodeState, ShardMeta, StreamMeta
from broker.rpc.node_service import ClusterView
from broker.service.account import stream_limits_view, update_stream_limits
from broker.service.context import CURRENT_CALLER
from broker.service.kinesis import KinesisService
from broker.service.records import shaped_answer
from broker.streams import namespaces
from broker.streams.internal_names import is_internal
from broker.types import StreamName

log = logging.getLogger(__name__)

PREFIX = "/console"
REGION_COOKIE = "shoal_console_region"  # the region the visitor last chose (not a secret)
RECORD_PAGE_DEFAULT = 25
RECORD_PAGE_MAX = 100
SHARD_PAGE_SIZE = 100  # shard rows on a stream's page (the drawing shows them all)
ALL_SHARDS = "all"
ALL_SHARDS_MAX = 20  # "every shard" pages carry one iterator per shard in their next link
TAIL_RECORDS_MAX = 50  # per poll, over all of a stream's open shards
LAG_LEASES_MAX = 50  # leases whose lag one request reads (two API calls each)
ITERATOR_TYPES = (
    "TRIM_HORIZON",
    "LATEST",
    "AT_TIMESTAMP",
    "AT_SEQUENCE_NUMBER",
    "AFTER_SEQUENCE_NUMBER",
)
# Operations of Shoal's native gRPC services, run as those services run them (not Kinesis).
NATIVE_OPERATIONS = frozenset({"UpdateStreamLimits"})
NATIVE_SIGNING_NAME = "shoal"  # their actions: `shoal:<Rpc>`, as on the gRPC door
# With access control on, what a page that reads the metadata image needs, as (signing name,
# operation) pairs: the API calls the AWS console makes for the same view, or the native RPC
# that returns the same facts. Sections a visitor may not read are left out and say why.
PAGE_ACTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "overview": ((NATIVE_SIGNING_NAME, "ClusterStatus"),),
    "streams": (("kinesis", "ListStreams"),),
    "stream": (("kinesis", "DescribeStreamSummary"), ("kinesis", "ListShards")),
    "series": (("cloudwatch", "GetMetricData"),),
    "lag": ((NATIVE_SIGNING_NAME, "ListLeases"),),
}
STREAM_SECTIONS: dict[str, tuple[str, str]] = {
    "consumers": ("kinesis", "ListStreamConsumers"),
    "tags": ("kinesis", "ListTagsForStream"),
    "leases": (NATIVE_SIGNING_NAME, "ListLeases"),
    "limits": (NATIVE_SIGNING_NAME, "DescribeStreamLimits"),
    "metrics": ("cloudwatch", "GetMetricData"),
}
# The node's cumulative counters the pages show as rates: sample name -> (per shard, column).
# Per stream: records and bytes read. Per shard (enhanced monitoring): records and bytes read,
# reads and writes throttled.
_READ_COUNTERS = {
    "kinesis_outgoing_records_total": (False, 0),
    "kinesis_outgoing_bytes_total": (False, 1),
    "kinesis_shard_outgoing_records_total": (True, 0),
    "kinesis_shard_outgoing_bytes_total": (True, 1),
    "kinesis_shard_read_throughput_exceeded_total": (True, 2),
    "kinesis_shard_write_throughput_exceeded_total": (True, 3),
}
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def _static_files() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("broker.console") / "static"
    files: dict[str, tuple[bytes, str]] = {}
    for entry in folder.iterdir():
        suffix = Path(entry.name).suffix
        if suffix in _STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), _STATIC_TYPES[suffix])
    return files


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("broker.console", "templates"),
        autoescape=True,  # every value is escaped: a record holding markup shows as text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["url"] = url
    env.globals["segment"] = segment
    env.filters["when"] = _when
    env.filters["bytes"] = _bytes
    env.filters["rate"] = _rate
    return env


def _when(ms: int | None) -> str:
    if not ms:
        return ""
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


class ConsoleService:
    """The console as a `RestService` of the AWS door (module docstring)."""

    def __init__(
        self,
        kinesis: KinesisService,
        *,
        node_id: str,
        cluster_view: Callable[[], ClusterView],
        clock: Clock,
        region: str,
        account_id: str,
        data_dir: Path,
        secrets_by_access_key: Mapping[str, str],
        metrics: CollectorRegistry | None = None,
        video: VideoCalls | None = None,
        firehose: FirehoseCalls | None = None,
        analytics: AnalyticsCalls | None = None,
        peer_tls: ssl.SSLContext | None = None,
        access: AccessControl | None = None,
    ) -> None:
        self._kinesis = kinesis
        self._access = access
        # Every call the console makes, as the API doors make it: authorized with access
        # control on (`AuthorizedService`), straight to the service otherwise.
        self._kinesis_calls: CallableService = (
            kinesis if access is None else access.guard(kinesis, "kinesis")
        )
        self._node = node_id
        self._cluster_view = cluster_view
        self._clock = clock
        self._region = region
        self._account_id = account_id
        self._data_dir = data_dir
        self._access_keys = dict(secrets_by_access_key)
        self._metrics = metrics
        self._env = _environment()
        # The other services' pages, by path prefix (each routes what is below it).
        self._family: dict[str, FamilyPages] = {}
        if video is not None:
            video_calls = video if access is None else access.guard(video, "kinesisvideo")
            self._family["/video"] = VideoPages(video_calls, self._page)
        if firehose is not None:
            firehose_calls = firehose if access is None else access.guard(firehose, "firehose")
            self._family["/delivery-streams"] = DeliveryPages(
                firehose_calls, self._page, image=self._image, metrics=metrics
            )
        if analytics is not None:
            analytics_calls = (
                analytics if access is None else access.guard(analytics, "kinesisanalytics")
            )
            self._family["/applications"] = AnalyticsPages(
                analytics_calls, self._page, image=self._image, clock=clock
            )
        self._static = _static_files()
        self.rates = RateHistory()
        self.reads = CounterRates()
        self.shard_reads = CounterRates()
        self._peer_tls = peer_tls

    # --- RestService ------------------------------------------------------------------------

    def handles(self, method: str, path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            request = await read_request(scope, receive, PREFIX)
        except BodyTooLarge:
            await send_response(send, Response(status=413, body=b"Request body too large."))
            return
        try:
            response = await self._respond(request, secure=scope.get("scheme") == "https")
        except Exception:
            log.exception("console_failed", extra={"path": request.path})
            response = Response(status=500, body=b"The console failed; see the node's log.")
        await send_response(send, response)

    async def run_sampler(self) -> None:
        """Samples every stream's write rate for the sparklines, and the rates consumers read
        from this node, until cancelled."""
        while True:
            self.sample_rates()
            self.sample_reads()
            await asyncio.sleep(SAMPLE_INTERVAL_MS / 1000)

    def sample_reads(self) -> None:
        """One reading of this node's outgoing and throttling counters (`_READ_COUNTERS`)."""
        if self._metrics is None:
            return
        by_stream: dict[str, list[float]] = {}
        by_shard: dict[str, list[float]] = {}
        wanted = self._metrics.restricted_registry(list(_READ_COUNTERS))
        for family in wanted.collect():
            for sample in family.samples:
                placed = _READ_COUNTERS.get(sample.name)
                stream = sample.labels.get("stream")
                if placed is None or not stream:
                    continue
                per_shard, column = placed
                if per_shard:
                    key = shard_key(stream, sample.labels.get("shard", ""))
                    by_shard.setdefault(key, [0.0] * 4)[column] += sample.value
                else:
                    by_stream.setdefault(stream, [0.0] * 2)[column] += sample.value
        now_ms = self._clock.wall_ms()
        self.reads.sample(now_ms, {key: tuple(values) for key, values in by_stream.items()})
        self.shard_reads.sample(now_ms, {key: tuple(values) for key, values in by_shard.items()})

    def sample_rates(self) -> None:
        image = self._image()
        now_ms = self._clock.wall_ms()
        by_uid = views.stream_rates(image)
        self.rates.sample(
            now_ms,
            {
                stream.name: by_uid.get(stream.uid, (0.0, 0.0))
                for stream in views.visible_streams(image, now_ms=now_ms)
            },
        )

    # --- Dispatch ---------------------------------------------------------------------------

    async def _respond(self, request: Request, *, secure: bool) -> Response:
        path = request.path
        if path.startswith("/static/"):
            return self._static_file(path.removeprefix("/static/"))
        if path == PEER_PATH:
            return self._peer_stats(request)
        if request.method not in ("GET", "HEAD", "POST"):
            return Response(
                status=405, body=b"Method not allowed.", headers=(("allow", "GET, POST"),)
            )
        visitor = self._visitor(request, secure=secure)
        if visitor is None:  # access control on, not signed in
            if path == "/sign-in":
                return await self._sign_in(request, secure=secure)
            if request.method == "POST":
                return Response(status=403, body=b"Sign in first.")
            return Response.redirect(url("/sign-in", next=url(path)))
        if request.method == "POST":
            token = request.form.get("csrf", "")
            if not secrets.compare_digest(token.encode(), visitor.csrf.encode()):
                return self._page(
                    "error.html",
                    visitor,
                    status=403,
                    title="Forbidden",
                    error="The form's CSRF token is missing or stale: reload the page and retry.",
                    error_name="AccessDeniedException",
                )
        try:
            response = await self._route(request, visitor)
        except ShoalError as error:
            denied = error.code is ErrorCode.ACCESS_DENIED
            response = self._page(
                "error.html",
                visitor,
                status=403 if denied else error.code.spec.http_status,
                title="Access denied" if denied else error.code.kinesis_name,
                error=error.message,
                error_name=error.code.kinesis_name,
            )
        if visitor.cookies:
            response = Response(
                status=response.status,
                body=response.body,
                content_type=response.content_type,
                headers=response.headers,
                cookies=response.cookies + visitor.cookies,
            )
        return response

    async def _route(self, request: Request, visitor: Visitor) -> Response:
        path, method = request.path, request.method
        if path in ("/", ""):
            self._authorize_page(visitor, "overview", {})
            return await self._overview(visitor)
        if path == "/sign-out" and method == "POST":
            return Response(
                status=303,
                headers=(("location", url("/")),),
                cookies=(f"{sessions.SESSION_COOKIE}=; Path={PREFIX}; Max-Age=0",),
            )
        if path == "/sign-in":
            return Response.redirect(url("/"))
        if path in ("/streams", "/streams/"):
            if method == "POST":
                return await self._action(request, visitor, None, "create")
            self._authorize_page(visitor, "streams", {})
            return self._streams(request, visitor)
        for prefix, pages in self._family.items():
            if path == prefix or path.startswith(prefix + "/"):
                found = await pages.route(request, visitor, path.removeprefix(prefix))
                return found if found is not None else self._not_found(visitor)
        if path == "/streams/new":
            return self._page("create.html", visitor, title="Create a stream")
        parts = path.removeprefix("/streams/").split("/")
        if not path.startswith("/streams/") or not parts[0] or len(parts) > 2:
            return self._not_found(visitor)
        if len(parts) == 1:  # authorized before it is looked up, as the API does
            self._authorize_page(visitor, "stream", {"StreamName": parts[0]})
        stream = self._stream(parts[0], visitor)  # ASGI paths arrive percent-decoded
        if len(parts) == 1:
            return await self._stream_page(request, visitor, stream)
        sub = parts[1]
        if sub == "records":
            if method == "POST":
                return await self._put_record(request, visitor, stream)
            return await self._records(request, visitor, stream)
        if sub == "series" and self._metrics is not None:
            self._authorize_page(visitor, "series", {})
            template = "_series.html" if request.is_fragment else "series.html"
            return self._page(
                template,
                visitor,
                title=f"{stream.name} on node {self._node}",
                stream_name=stream.name,
                series=stream_series(self._metrics, stream.name),
            )
        if sub == "lag":
            self._authorize_page(visitor, "lag", {})
            return await self._lag(request, visitor, stream)
        if sub == "tail":
            return await self._tail(request, visitor, stream)
        if sub in actions.STREAM_ACTIONS and method == "POST":
            return await self._action(request, visitor, stream, sub)
        return self._not_found(visitor)

    # --- Identity ---------------------------------------------------------------------------

    def _cluster_secret(self) -> bytes:
        return self._image().iterator_secret or b"shoal-console-uninitialised"

    def _region_for(self, request: Request, *, secure: bool) -> tuple[str, tuple[str, ...]]:
        """The region the visitor's pages act in, and the cookies that remember it: the
        `region` query parameter (the selector's), else the region cookie, else the node's
        region. Like the AWS console's, the choice is one region at a time; a name that is not
        a region is ignored."""
        chosen = request.query.get("region", "")
        if namespaces.is_region(chosen):
            return chosen, (_cookie(REGION_COOKIE, chosen, secure=secure),)
        remembered = request.cookies.get(REGION_COOKIE, "")
        if namespaces.is_region(remembered):
            return remembered, ()
        return self._region, ()

    def _regions(self, caller: Caller) -> tuple[str, ...]:
        """The selector's regions: the node's, the visitor's, and every region in which the
        visitor's account has a stream."""
        now_ms = self._clock.wall_ms()
        found = {self._region, caller.region}
        for stream in views.visible_streams(self._image(), now_ms=now_ms):
            region, account = namespaces.namespace_of_arn(stream.arn)
            if account == caller.account_id and namespaces.is_region(region):
                found.add(region)
        return tuple(sorted(found))

    def _visitor(self, request: Request, *, secure: bool) -> Visitor | None:
        visitor = self._identified(request, secure=secure)
        if visitor is None:
            return None
        return dataclasses.replace(visitor, regions=self._regions(visitor.caller))

    def _identified(self, request: Request, *, secure: bool) -> Visitor | None:
        secret = self._cluster_secret()
        region, region_cookies = self._region_for(request, secure=secure)
        caller = Caller(
            region=region,
            account_id=self._account_id,
            source_address=request.client,
            door="http",
        )
        cookies: list[str] = list(region_cookies)
        binding = request.cookies.get(sessions.CSRF_COOKIE, "")
        if not binding:
            binding = secrets.token_urlsafe(24)
            cookies.append(_cookie(sessions.CSRF_COOKIE, binding, secure=secure))
        if not self._access_keys:
            return Visitor(
                access_key_id=None,
                csrf=sessions.csrf_token(binding, cluster_secret=secret),
                cookies=tuple(cookies),
                caller=caller,
            )
        token = request.cookies.get(sessions.SESSION_COOKIE, "")
        key = sessions.session_key(
            token, self._secret_for, cluster_secret=secret, now_ms=self._clock.wall_ms()
        )
        if key is None:
            return None
        signed_in = Caller(
            region=region,
            account_id=self._account_id,
            access_key_id=key,
            source_address=request.client,
            door="http",
        )
        if self._access is not None:
            try:  # the key's principal and account (the key may be gone since the check)
                signed_in = self._access.authenticator.caller(signed_in, key)
            except ShoalError:
                return None
        return Visitor(
            access_key_id=key,
            csrf=sessions.csrf_token(token, cluster_secret=secret),
            cookies=tuple(cookies),
            caller=signed_in,
        )

    def _secret_for(self, access_key_id: str) -> str | None:
        """The secret of a key the console accepts: the node's key directory (configured keys
        and active keys of the metadata quorum) with access control wired, else the
        configured keys."""
        if self._access is not None:
            return self._access.directory.secret(access_key_id)
        return self._access_keys.get(access_key_id)

    def _check_sign_in(self, request: Request, *, cluster_secret: bytes) -> str:
        """A session token for the form's key pair; ShoalError (counted by the brute-force
        throttle and audited, with access control wired) for a wrong one."""

        def check() -> str:
            token = sessions.sign_in(
                self._secret_for,
                request.form.get("access_key_id", ""),
                request.form.get("secret_access_key", ""),
                cluster_secret=cluster_secret,
                now_ms=self._clock.wall_ms(),
            )
            if token is None:
                raise ShoalError(ErrorCode.INVALID_SIGNATURE, error_messages.CONSOLE_KEY_UNKNOWN)
            return token

        if self._access is None:
            return check()
        return self._access.authenticator.verify(
            check, request.client, signing_name="console", operation="ConsoleLogin"
        )

    def _authorize(
        self, visitor: Visitor, signing_name: str, operation: str, request: Mapping[str, Any]
    ) -> None:
        """AccessDeniedException (with AWS's message) unless the visitor's policies allow the
        action; audited like an API call. Nothing to check with access control off."""
        if self._access is None or not self._access.authorizer.enabled:
            return
        guard = self._access.guard(self._kinesis, signing_name)
        guard.authorize(operation, request, visitor.caller)

    def _allowed(
        self, visitor: Visitor, signing_name: str, operation: str, request: Mapping[str, Any]
    ) -> bool:
        """Whether the visitor may (for an optional section of a page: not audited)."""
        if self._access is None or not self._access.authorizer.enabled:
            return True
        authorizer = self._access.authorizer
        try:
            authorizer.authorize(signing_name, operation, request, visitor.caller)
        except ShoalError:
            return False
        return True

    def _authorize_page(self, visitor: Visitor, page: str, request: Mapping[str, Any]) -> None:
        for signing_name, operation in PAGE_ACTIONS[page]:
            self._authorize(visitor, signing_name, operation, request)

    async def _sign_in(self, request: Request, *, secure: bool) -> Response:
        secret = self._cluster_secret()
        binding = request.cookies.get(sessions.CSRF_COOKIE, "")
        cookies: tuple[str, ...] = ()
        if not binding:
            binding = secrets.token_urlsafe(24)
            cookies = (_cookie(sessions.CSRF_COOKIE, binding, secure=secure),)
        csrf = sessions.csrf_token(binding, cluster_secret=secret)
        target = request.arg("next", url("/"))
        if not target.startswith(PREFIX):
            target = url("/")
        error: str | None = None
        status = 200
        if request.method == "POST":
            if not sessions.csrf_valid(
                request.form.get("csrf", ""), binding, cluster_secret=secret
            ):
                error, status = "The form expired: try again.", 403
            else:
                try:
                    token = self._check_sign_in(request, cluster_secret=secret)
                except ShoalError as refused:
                    throttled = refused.code is ErrorCode.LIMIT_EXCEEDED
                    error, status = refused.message, 429 if throttled else 401
                else:
                    return Response(
                        status=303,
                        headers=(("location", target),),
                        cookies=(_cookie(sessions.SESSION_COOKIE, token, secure=secure),),
                    )
        body = self._env.get_template("sign_in.html").render(
            title="Sign in", csrf=csrf, next=target, error=error, visitor=None, node=self._node_id()
        )
        return Response(status=status, body=body.encode(), cookies=cookies)

    # --- Pages ------------------------------------------------------------------------------

    def _page(
        self, template: str, visitor: Visitor, *, status: int = 200, **context: Any
    ) -> Response:
        body = self._env.get_template(template).render(
            visitor=visitor, csrf=visitor.csrf, node=self._node_id(), **context
        )
        return Response(status=status, body=body.encode())

    def _not_found(self, visitor: Visitor) -> Response:
        return self._page(
            "error.html",
            visitor,
            status=404,
            title="Not found",
            error="There is no console page here.",
            error_name="NotFound",
        )

    def _static_file(self, name: str) -> Response:
        found = self._static.get(name)
        if found is None:
            return Response(status=404, body=b"Not found.", content_type="text/plain")
        body, content_type = found
        return Response(body=body, content_type=content_type)

    async def _overview(self, visitor: Visitor) -> Response:
        view = self._cluster_view()
        summary = views.overview(
            view.image,
            this_node=view.node_id,
            quorum=view.quorum,
            controller=view.controller,
            now_ms=self._clock.wall_ms(),
        )
        stats = await self._cluster_stats()
        return self._page(
            "overview.html", visitor, title="Cluster", view=summary, disk=self._disk(), stats=stats
        )

    def _streams(self, request: Request, visitor: Visitor) -> Response:
        namespace = self._namespace(visitor)
        default = self._kinesis.ctx.default_namespace()
        page = views.stream_page(
            self._image(),
            query=request.arg("q"),
            page=_int_arg(request, "page", 1),
            page_size=_int_arg(request, "size", views.PAGE_SIZE_DEFAULT),
            now_ms=self._clock.wall_ms(),
            shown=lambda key: namespaces.namespace_of(key, default=default) == namespace,
        )
        series = {
            row.name: (
                ",".join(f"{s.records_per_second:.2f}" for s in self.rates.series(row.name)),
                ",".join(f"{s.bytes_per_second:.0f}" for s in self.rates.series(row.name)),
            )
            for row in page.rows
        }
        template = "_streams_table.html" if request.is_fragment else "streams.html"
        notice = request.arg("notice") or None
        return self._page(
            template, visitor, title="Streams", page=page, series=series, notice=notice
        )

    async def _stream_page(
        self, request: Request, visitor: Visitor, stream: StreamMeta
    ) -> Response:
        image = self._image()
        now_ms = self._clock.wall_ms()
        view = views.stream_view(image, stream, now_ms=now_ms, key=self._key(stream, visitor))
        consumers = image.consumers.for_stream(stream.uid, now_ms=now_ms)
        on_stream = {"StreamName": stream.name}
        hidden = {
            section: f"{signing_name}:{operation}"
            for section, (signing_name, operation) in STREAM_SECTIONS.items()
            if not self._allowed(visitor, signing_name, operation, on_stream)
        }
        subscribed: dict[str, list[str]] = {}
        for open_one in self._kinesis.subscriptions.statistics():
            subscribed.setdefault(open_one.consumer_arn, []).append(
                f"{open_one.shard_id} ({open_one.records_sent} records sent)"
            )
        limits = None if "limits" in hidden else stream_limits_view(self._kinesis.ctx, stream)
        every_shard = view.open_shards + view.closed_shards
        page_count = max(1, -(-len(every_shard) // SHARD_PAGE_SIZE))
        shard_page = max(1, min(_int_arg(request, "shards_page", 1), page_count))
        at = (shard_page - 1) * SHARD_PAGE_SIZE
        stats = await self._cluster_stats()
        answered = [node for node in stats.values() if node is not None]
        return self._page(
            "stream.html",
            visitor,
            reads=cluster_read_rates(answered, stream.name) if answered else None,
            shard_reads=cluster_shard_rates(answered, stream.name),
            reads_partial=len(stats) - len(answered),
            title=stream.name,
            stream=view,
            shard_rows=every_shard[at : at + SHARD_PAGE_SIZE],
            shard_page=shard_page,
            shard_page_count=page_count,
            series_offered=self._metrics is not None,
            consumers=[
                (c, c.status(now_ms=now_ms).value, sorted(subscribed.get(c.arn, ())))
                for c in consumers
            ],
            limits=limits,
            hidden=hidden,
            notice=request.arg("notice") or None,
        )

    async def _records(self, request: Request, visitor: Visitor, stream: StreamMeta) -> Response:
        shards = [shard.shard_id for shard in _listed_shards(stream, self._clock.wall_ms())]
        shard_id = request.arg("shard") or (
            stream.open_shards()[0].shard_id if stream.open_shards() else shards[0]
        )
        view = request.arg("view", "text")
        if view not in payloads.VIEWS:
            view = "text"
        kind = request.arg("from", "TRIM_HORIZON")
        limit = max(1, min(_int_arg(request, "limit", RECORD_PAGE_DEFAULT), RECORD_PAGE_MAX))
        iterator = request.arg("iterator")
        context: dict[str, Any] = {
            "stream_name": stream.name,
            "shards": shards,
            "all_shards_allowed": len(shards) <= ALL_SHARDS_MAX,
            "shard_id": shard_id,
            "view": view,
            "views": payloads.VIEWS,
            "kinds": ITERATOR_TYPES,
            "kind": kind,
            "at": request.arg("at"),
            "seq": request.arg("seq"),
            "limit": limit,
            "records": None,
            "next_iterator": None,
            "next_iterators": None,
            "behind_ms": None,
        }
        if shard_id == ALL_SHARDS and (request.arg("go") or request.arg("iterators")):
            if len(shards) > ALL_SHARDS_MAX:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT,
                    error_messages.console_too_many_shards(
                        maximum=ALL_SHARDS_MAX, name=stream.name, shards=len(shards)
                    ),
                )
            shown, positions, behind = await self._read_all_shards(
                stream, kind, request, limit, visitor
            )
            context.update(
                records=shown,
                next_iterators=json.dumps(positions, separators=(",", ":")) if positions else None,
                behind_ms=behind,
            )
        elif request.arg("go") or iterator:
            if not iterator:
                iterator = await self._iterator(stream, shard_id, kind, request, visitor)
            records, next_iterator, behind = await self._read_page(iterator, limit, visitor)
            context.update(
                records=payloads.shown_records(records, view),
                next_iterator=next_iterator,
                behind_ms=behind,
            )
        return self._page("records.html", visitor, title=f"Records of {stream.name}", **context)

    async def _read_all_shards(
        self, stream: StreamMeta, kind: str, request: Request, limit: int, visitor: Visitor
    ) -> tuple[list[payloads.ShownRecord], dict[str, str], int | None]:
        """One page over every shard: at most `limit` records in all (an equal share per shard),
        ordered by arrival; the iterators to go on with (a shard read to its end drops out)."""
        view = request.arg("view", "text")
        held = _decode_iterators(request.arg("iterators"))
        if not held:
            for shard in _listed_shards(stream, self._clock.wall_ms()):
                held[shard.shard_id] = await self._iterator(
                    stream, shard.shard_id, kind, request, visitor
                )
        share = max(1, limit // max(1, len(held)))
        shown: list[payloads.ShownRecord] = []
        positions: dict[str, str] = {}
        behind: int | None = None
        for index, (shard_id, iterator) in enumerate(sorted(held.items())):
            if index >= limit:  # more shards than records on a page: read on the next one
                positions[shard_id] = iterator
                continue
            answer = await self._call(
                "GetRecords", {"ShardIterator": iterator, "Limit": share}, visitor
            )
            shown.extend(payloads.shown_records(answer["Records"], view, shard_id=shard_id))
            if answer.get("NextShardIterator"):
                positions[shard_id] = str(answer["NextShardIterator"])
            lag = answer.get("MillisBehindLatest")
            if lag is not None:
                behind = max(behind or 0, int(lag))
        shown.sort(key=lambda record: (record.arrival, record.shard_id, record.sequence_number))
        return shown, positions, behind

    async def _iterator(
        self, stream: StreamMeta, shard_id: str, kind: str, request: Request, visitor: Visitor
    ) -> str:
        call: dict[str, Any] = {
            "StreamName": stream.name,
            "ShardId": shard_id,
            "ShardIteratorType": kind,
        }
        if kind == "AT_TIMESTAMP":
            call["Timestamp"] = parse_timestamp(request.arg("at"))
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            call["StartingSequenceNumber"] = request.arg("seq").strip()
        answer = await self._call("GetShardIterator", call, visitor)
        return str(answer["ShardIterator"])

    async def _read_page(
        self, iterator: str, limit: int, visitor: Visitor
    ) -> tuple[list[dict[str, Any]], str | None, int | None]:
        """One GetRecords (a second one when the first came back empty but behind, as a
        reader past a gap would): never more than `limit` records."""
        answer: dict[str, Any] = {}
        for _ in range(2):
            answer = await self._call(
                "GetRecords", {"ShardIterator": iterator, "Limit": limit}, visitor
            )
            next_iterator = answer.get("NextShardIterator")
            if answer["Records"] or not answer.get("MillisBehindLatest") or next_iterator is None:
                break
            iterator = next_iterator
        return (
            list(answer["Records"]),
            answer.get("NextShardIterator"),
            answer.get("MillisBehindLatest"),
        )

    async def _lag(self, request: Request, visitor: Visitor, stream: StreamMeta) -> Response:
        """How far each lease's checkpoint is behind the shard's tip, read on request: one
        GetRecords of one record after the checkpoint per lease (at most LAG_LEASES_MAX)."""
        view = views.stream_view(
            self._image(), stream, now_ms=self._clock.wall_ms(), key=self._key(stream, visitor)
        )
        application = request.arg("application")
        leases = [
            lease for lease in view.leases if not application or lease.application == application
        ]
        rows = [
            (lease, await self._lease_lag(stream, lease, visitor))
            for lease in leases[:LAG_LEASES_MAX]
        ]
        template = "_lag.html" if request.is_fragment else "lag.html"
        return self._page(
            template,
            visitor,
            title=f"Consumer lag on {stream.name}",
            stream_name=stream.name,
            rows=rows,
            left_out=max(0, len(leases) - LAG_LEASES_MAX),
        )

    async def _lease_lag(self, stream: StreamMeta, lease: views.LeaseView, visitor: Visitor) -> str:
        checkpoint = lease.checkpoint_sequence
        if checkpoint == "SHARD_END":
            return "finished (the shard is closed and fully processed)"
        if checkpoint in ("LATEST", "AT_TIMESTAMP"):
            return f"not started (begins at {checkpoint})"
        call: dict[str, Any] = {"StreamName": stream.name, "ShardId": lease.shard_id}
        if checkpoint == "TRIM_HORIZON":
            call["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            call["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            call["StartingSequenceNumber"] = checkpoint
        try:
            iterator = (await self._call("GetShardIterator", call, visitor))["ShardIterator"]
            answer = await self._call(
                "GetRecords", {"ShardIterator": iterator, "Limit": 1}, visitor
            )
        except ShoalError as error:
            return f"unknown ({error.code.kinesis_name}: {error.message})"
        if not answer["Records"]:
            return "caught up"
        return f"{answer.get('MillisBehindLatest', 0)} ms behind the latest record"

    async def _tail(self, request: Request, visitor: Visitor, stream: StreamMeta) -> Response:
        """The live tail's poll: new records on every open shard since the iterators the page
        holds (LATEST on the first poll), as a fragment that replaces the poller."""
        view = request.arg("view", "text")
        if view not in payloads.VIEWS:
            view = "text"
        held = _decode_iterators(request.arg("iterators"))
        positions: dict[str, str] = {}
        shown: list[payloads.ShownRecord] = []
        budget = TAIL_RECORDS_MAX
        for shard in stream.open_shards():
            iterator = held.get(shard.shard_id)
            if iterator is None:
                answer = await self._call(
                    "GetShardIterator",
                    {
                        "StreamName": stream.name,
                        "ShardId": shard.shard_id,
                        "ShardIteratorType": "LATEST",
                    },
                    visitor,
                )
                positions[shard.shard_id] = str(answer["ShardIterator"])
                continue
            if budget <= 0:
                positions[shard.shard_id] = iterator
                continue
            answer = await self._call(
                "GetRecords", {"ShardIterator": iterator, "Limit": budget}, visitor
            )
            budget -= len(answer["Records"])
            shown.extend(payloads.shown_records(answer["Records"], view, shard_id=shard.shard_id))
            if answer.get("NextShardIterator"):
                positions[shard.shard_id] = str(answer["NextShardIterator"])
        return self._page(
            "_tail.html",
            visitor,
            stream_name=stream.name,
            records=shown,
            iterators=json.dumps(positions, separators=(",", ":")),
            view=view,
        )

    # --- Actions ----------------------------------------------------------------------------

    async def _put_record(self, request: Request, visitor: Visitor, stream: StreamMeta) -> Response:
        call: dict[str, Any] = {
            "StreamName": stream.name,
            "PartitionKey": request.form.get("partition_key", ""),
            "Data": request.form.get("data", "").encode("utf-8"),
        }
        explicit = request.form.get("explicit_hash_key", "").strip()
        if explicit:
            call["ExplicitHashKey"] = explicit
        answer = await self._call("PutRecord", call, visitor)
        notice = (
            f"Put a record on {answer['ShardId']} at sequence number {answer['SequenceNumber']}."
        )
        return Response.redirect(url(f"/streams/{segment(stream.name)}", notice=notice))

    async def _action(
        self, request: Request, visitor: Visitor, stream: StreamMeta | None, name: str
    ) -> Response:
        plan_action = actions.create if stream is None else actions.STREAM_ACTIONS[name]
        plan = plan_action(stream, request.form)
        native = plan.operation in NATIVE_OPERATIONS
        if not native:
            validate_request(plan.operation, plan.request)
        if request.form.get("confirmed") != "yes":
            fields = {
                key: request.form[key] for key in actions.ACTION_FIELDS if key in request.form
            }
            target = (
                url("/streams")
                if stream is None
                else url(f"/streams/{segment(stream.name)}/{name}")
            )
            back = (
                url("/streams/new") if stream is None else url(f"/streams/{segment(stream.name)}")
            )
            return self._page(
                "confirm.html",
                visitor,
                title="Confirm",
                plan=plan,
                request_json=json.dumps(plan.request, indent=2, ensure_ascii=False),
                fields=fields,
                target=target,
                back=back,
            )
        if native:
            self._authorize(visitor, NATIVE_SIGNING_NAME, plan.operation, plan.request)
            await self._call_native(plan.operation, plan.request, visitor)
        else:
            await self._call(plan.operation, plan.request, visitor, validated=True)
        notice = f"{plan.operation} accepted: {plan.summary}"
        if plan.operation == "DeleteStream":
            return Response.redirect(url("/streams", notice=notice))
        name_after = plan.request.get("StreamName") or (stream.name if stream else "")
        return Response.redirect(url(f"/streams/{segment(name_after)}", notice=notice))

    async def _call(
        self,
        operation: str,
        request: dict[str, Any],
        visitor: Visitor,
        *,
        validated: bool = False,
    ) -> dict[str, Any]:
        """One Kinesis operation exactly as the API doors run it."""
        if not validated:
            validate_request(operation, request)
        answer = await self._kinesis_calls.call(operation, request, visitor.caller)
        # The console's caller is of the AWS door ("http"), whose GetRecords answers a
        # ShardPage that the door writes itself: the console reads record dicts.
        return shaped_answer(answer)

    async def _call_native(self, operation: str, request: dict[str, Any], visitor: Visitor) -> None:
        """One operation of the native LimitsService, as its gRPC door runs it, in the
        visitor's namespace."""
        assert operation == "UpdateStreamLimits"
        token = CURRENT_CALLER.set(visitor.caller)
        try:
            await update_stream_limits(
                self._kinesis.ctx, request["StreamName"], request["Rates"], request["Reset"]
            )
        finally:
            CURRENT_CALLER.reset(token)

    # --- Helpers ----------------------------------------------------------------------------

    def _image(self) -> MetadataImage:
        return self._kinesis.ctx.image()

    def _node_id(self) -> str:
        return self._node

    def _namespace(self, visitor: Visitor) -> namespaces.Namespace:
        """The account and region the visitor acts in (its principal's account)."""
        caller = visitor.caller
        return namespaces.Namespace(account_id=caller.account_id, region=caller.region)

    def _key(self, stream: StreamMeta, visitor: Visitor) -> str:
        """The image key of a stream `_stream` returned (by the name it carries)."""
        default = self._kinesis.ctx.default_namespace()
        return namespaces.stream_key(stream.name, self._namespace(visitor), default=default)

    def _stream(self, name: str, visitor: Visitor) -> StreamMeta:
        """The stream `name` of the visitor's namespace, as the API would find it, or
        ResourceNotFoundException as the API says. The copy carries the name clients see, so
        every call the page makes names it as a client would."""
        ctx = self._kinesis.ctx
        namespace = self._namespace(visitor)
        key = namespaces.stream_key(name, namespace, default=ctx.default_namespace())
        stream = self._image().stream(key, now_ms=self._clock.wall_ms())
        if stream is None or is_internal(name):
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, stream_not_found(name, namespace.account_id)
            )
        if key == name:
            return stream
        return dataclasses.replace(stream, name=StreamName(name))

    def _peer_stats(self, request: Request) -> Response:
        """This node's statistics for another node's console (peer token required)."""
        token = request.headers.get(sessions.PEER_HEADER, "")
        if not sessions.peer_token_valid(
            token, cluster_secret=self._cluster_secret(), now_ms=self._clock.wall_ms()
        ):
            return Response(status=403, body=b"Only the cluster's nodes may ask.")
        return Response(body=self._own_stats().to_json(), content_type="application/json")

    def _own_stats(self) -> NodeStats:
        reads = {name: (rates[0], rates[1]) for name, rates in self.reads.rates().items()}
        shards = {
            key: (rates[0], rates[1], rates[2], rates[3])
            for key, rates in self.shard_reads.rates().items()
        }
        return NodeStats(node_id=self._node_id(), disk=self._disk(), reads=reads, shards=shards)

    async def _cluster_stats(self) -> dict[str, NodeStats | None]:
        """Every node's statistics by node id: this node's own, the others' asked at once
        (None for a node that did not answer within the fetch timeout)."""
        me = self._node_id()
        token = sessions.peer_token(
            cluster_secret=self._cluster_secret(), now_ms=self._clock.wall_ms()
        )
        others = [
            node
            for node in self._image().nodes.values()
            if node.node_id != me and node.http_address and node.state is not NodeState.REMOVED
        ]
        answers = await asyncio.gather(
            *(
                fetch(
                    node.http_address,
                    token=token,
                    header=sessions.PEER_HEADER,
                    tls=self._peer_tls,
                )
                for node in others
            )
        )
        stats: dict[str, NodeStats | None] = {me: self._own_stats()}
        stats.update(zip((node.node_id for node in others), answers, strict=True))
        return stats

    def _disk(self) -> DiskUse | None:
        try:
            usage = shutil.disk_usage(self._data_dir)
        except OSError:
            return None
        return DiskUse(str(self._data_dir), usage.used, usage.total)


def _listed_shards(stream: StreamMeta, now_ms: int) -> list[ShardMeta]:
    """The shards ListShards shows: not the closed ones past retention."""
    return [
        shard
        for shard in stream.shards
        if not shard.is_expired(now_ms=now_ms, retention_hours=stream.retention_hours)
    ]


def _cookie(name: str, value: str, *, secure: bool) -> str:
    cookie = f"{name}={value}; Path={PREFIX}; HttpOnly; SameSite=Strict"
    return cookie + "; Secure" if secure else cookie


def _int_arg(request: Request, name: str, default: int) -> int:
    try:
        return int(request.arg(name, str(default)))
    except ValueError:
        return default


def _decode_iterators(text: str) -> dict[str, str]:
    if not text:
        return {}
    try:
        decoded = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {str(k): str(v) for k, v in decoded.items() if isinstance(v, str)}
