"""The console's pages for the rest of the family against an in-process node: delivery
streams (status, destination, deliverers, counters, a test record delivered to S3, deletion
with confirmation) and SQL applications (SQL shown as text, inputs, outputs, where it runs, the
output preview's live tail, Start and Stop with confirmation), each change checked through
boto3."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from broker.clock import ManualClock
from broker.node import Node
from tests.analytics.conftest import analytics_client
from tests.analytics.test_api import ROLE, SCHEMA, STREAM_ARN
from tests.compat.conftest import boto_client
from tests.firehose.conftest import (
    call,
    firehose_client,
    s3_destination,
    wait_gone,
    wait_status,
)
from tests.s3_server import S3Server, running_s3_node, running_s3_server

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
FILTER_SQL = """CREATE OR REPLACE STREAM "TECH_STREAM" (ticker_symbol VARCHAR(4), price REAL);
CREATE OR REPLACE PUMP "TECH_PUMP" AS INSERT INTO "TECH_STREAM"
    SELECT STREAM ticker_symbol, price FROM "SOURCE_SQL_STREAM_001"
    WHERE sector = '<b>TECH</b>';
"""


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fh_node(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> AsyncIterator[Node]:
    """One node with an S3 store for both pages' tests (on the module's event loop)."""
    clock = ManualClock(wall_ms=1_790_000_000_000)
    data_dir = tmp_path_factory.mktemp("console-family") / "node"
    async with running_s3_node(data_dir, clock, s3_server) as node:
        yield node


@pytest.fixture(scope="module")
def firehose(fh_node: Node) -> Iterator[Any]:
    client = firehose_client(f"http://127.0.0.1:{fh_node.http_port}")
    try:
        yield client
    finally:
        client.close()


@pytest_asyncio.fixture(loop_scope="module")
async def web(fh_node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{fh_node.http_port}", timeout=30
    ) as client:
        yield client


async def _until(read: Callable[[], Awaitable[str]], wanted: str) -> None:
    """Returns once `wanted` is in what `read` answers (bounded)."""
    async with asyncio.timeout(30):
        while True:
            if wanted in await read():
                return
            await asyncio.sleep(0.05)


def _csrf(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


async def test_delivery_stream_pages(
    fh_node: Node,
    firehose: Any,
    web: httpx.AsyncClient,
    s3_server: S3Server,
) -> None:
    s3_server.create_bucket("console-bucket")
    destination = s3_destination(
        "console-bucket",
        Prefix="from-console/",
        BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 0},
    )
    await call(
        firehose.create_delivery_stream,
        DeliveryStreamName="clickstream",
        ExtendedS3DestinationConfiguration=destination,
    )
    await wait_status(firehose, "clickstream", "ACTIVE")

    listing = await web.get("/console/delivery-streams")
    assert listing.status_code == 200
    assert "clickstream" in listing.text and "Extended S3" in listing.text
    assert "arn:aws:s3:::console-bucket" in listing.text
    assert "__shoal." not in listing.text  # the internal stream stays hidden

    page = await web.get("/console/delivery-streams/clickstream")
    assert page.status_code == 200
    assert "ACTIVE" in page.text and "from-console/" in page.text
    assert "1 MiB or 0 s" in page.text

    put = await web.post(
        "/console/delivery-streams/clickstream/records",
        data={"csrf": _csrf(page), "data": "<script>alert(1)</script>", "newline": "yes"},
    )
    assert put.status_code == 303 and "PutRecord%20accepted" in put.headers["location"]

    objects: dict[str, bytes] = {}
    async with asyncio.timeout(30):
        while not objects:
            objects = await asyncio.to_thread(s3_server.objects, "console-bucket", "from-console/")
            await asyncio.sleep(0.1)
    assert list(objects.values()) == [b"<script>alert(1)</script>\n"]

    async def counted() -> str:
        return (await web.get("/console/delivery-streams/clickstream")).text

    page_text = ""
    async with asyncio.timeout(20):
        while "kinesis_firehose_delivery_records_total" not in page_text:
            page_text = await counted()
            await asyncio.sleep(0.05)
    assert re.search(r"<td><code>[0-9]+", page_text), "no deliverer lease with a checkpoint"

    confirm = await web.post(
        "/console/delivery-streams/clickstream/delete", data={"csrf": _csrf(page)}
    )
    assert confirm.status_code == 200 and "Confirm DeleteDeliveryStream" in confirm.text
    described = await call(firehose.describe_delivery_stream, DeliveryStreamName="clickstream")
    assert described["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"
    deleted = await web.post(
        "/console/delivery-streams/clickstream/delete",
        data={"csrf": _csrf(page), "confirmed": "yes"},
    )
    assert deleted.status_code == 303
    await wait_gone(firehose, "clickstream")

    missing = await web.get("/console/delivery-streams/nowhere")
    assert missing.status_code == 400 and "ResourceNotFoundException" in missing.text


async def test_sql_application_pages(fh_node: Node, web: httpx.AsyncClient) -> None:
    kinesis = boto_client(f"http://127.0.0.1:{fh_node.http_port}")
    analytics = analytics_client(fh_node)
    for name in ("tickers", "tech"):
        await call(kinesis.create_stream, StreamName=name, ShardCount=1)
    await call(
        analytics.create_application,
        ApplicationName="tech-filter",
        ApplicationCode=FILTER_SQL,
        Inputs=[
            {
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {
                    "ResourceARN": STREAM_ARN.format("tickers"),
                    "RoleARN": ROLE,
                },
                "InputSchema": SCHEMA,
            }
        ],
        Outputs=[
            {
                "Name": "TECH_STREAM",
                "KinesisStreamsOutput": {"ResourceARN": STREAM_ARN.format("tech"), "RoleARN": ROLE},
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }
        ],
    )

    listing = await web.get("/console/applications")
    assert listing.status_code == 200 and "tech-filter" in listing.text and "READY" in listing.text
    page = await web.get("/console/applications/tech-filter")
    assert page.status_code == 200
    assert "&lt;b&gt;TECH&lt;/b&gt;" in page.text and "<b>TECH</b>" not in page.text
    assert "SOURCE_SQL_STREAM_001" in page.text and STREAM_ARN.format("tickers") in page.text
    assert "/console/streams/tech/tail" in page.text  # the output preview polls the output
    assert "no node" in page.text

    confirm = await web.post(
        "/console/applications/tech-filter/start",
        data={"csrf": _csrf(page), "position": "TRIM_HORIZON"},
    )
    assert confirm.status_code == 200 and "TRIM_HORIZON" in html.unescape(confirm.text)
    started = await web.post(
        "/console/applications/tech-filter/start",
        data={"csrf": _csrf(page), "position": "TRIM_HORIZON", "confirmed": "yes"},
    )
    assert started.status_code == 303

    async def status() -> str:
        answer = await call(analytics.describe_application, ApplicationName="tech-filter")
        return str(answer["ApplicationDetail"]["ApplicationStatus"])

    async def running_page() -> str:
        return (await web.get("/console/applications/tech-filter")).text

    await _until(lambda: status(), "RUNNING")
    await _until(lambda: running_page(), fh_node.node_id)  # the placement lease's owner

    stopped = await web.post(
        "/console/applications/tech-filter/stop",
        data={"csrf": _csrf(page), "confirmed": "yes"},
    )
    assert stopped.status_code == 303
    await _until(lambda: status(), "READY")
    kinesis.close()
    analytics.close()
