"""The console over HTTP against an in-process node: pages, actions through the same checks as
the API (verified with boto3), CSRF, escaping, internal streams hidden, sign-in, off-switch."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig

from broker.clock import ManualClock
from broker.console import sessions
from broker.console.peers import NodeStats
from broker.consumers.leases import Checkpoint, CreateLeases, NewLease
from broker.node import Node
from broker.service.account import describe_stream_limits
from broker.service.in_process import LocalLeaseClient
from tests.conftest import node_config, running_node

pytestmark = pytest.mark.integration

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@pytest.fixture
def api(node: Node) -> Iterator[Any]:
    """boto3 against the node's AWS door (closed afterwards: no socket left to the GC)."""
    client = boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=BotoConfig(retries={"max_attempts": 1}),
    )
    yield client
    client.close()


@pytest.fixture
async def web(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{node.http_port}", timeout=30
    ) as client:
        yield client


async def csrf_of(web: httpx.AsyncClient, path: str) -> str:
    page = await web.get(path)
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def test_pages_render_and_hide_internal_streams(
    node: Node, web: httpx.AsyncClient, api: Any
) -> None:
    await asyncio.to_thread(api.create_stream, StreamName="orders", ShardCount=2)
    overview = await web.get("/console")
    assert overview.status_code == 200
    assert "test-0" in overview.text and "Metadata quorum leader" in overview.text
    assert "content-security-policy" in overview.headers
    listing = await web.get("/console/streams")
    assert "orders" in listing.text
    assert "__shoal." not in listing.text  # the lease table and other internal streams
    stream = await web.get("/console/streams/orders")
    assert stream.status_code == 200
    assert "shardId-000000000001" in stream.text
    assert "340282366920938463463374607431768211455" in stream.text  # the last hash key
    described = await asyncio.to_thread(api.describe_stream_summary, StreamName="orders")
    await asyncio.to_thread(
        api.register_stream_consumer,
        StreamARN=described["StreamDescriptionSummary"]["StreamARN"],
        ConsumerName="fan-out-app",
    )
    with_consumer = await web.get("/console/streams/orders")
    assert "fan-out-app" in with_consumer.text
    hidden = await web.get("/console/streams/__shoal.leases")
    assert hidden.status_code == 400 and "ResourceNotFoundException" in hidden.text
    missing = await web.get("/console/nowhere")
    assert missing.status_code == 404
    script = await web.get("/console/static/htmx.min.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )

    await _region_selector_shows_one_region_at_a_time(node, web, api)


async def _region_selector_shows_one_region_at_a_time(
    node: Node, web: httpx.AsyncClient, api: Any
) -> None:
    """Two regions hold a stream of one name ("orders", made above in the node's region): the
    console shows and acts in the region the selector chose (remembered in a cookie), as the
    AWS console does. (Part of the first test, to share its node.)"""
    west = boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=BotoConfig(retries={"max_attempts": 1}),
    )
    try:
        await asyncio.to_thread(west.create_stream, StreamName="orders", ShardCount=1)
        await asyncio.to_thread(west.create_stream, StreamName="west-only", ShardCount=1)
        home = await web.get("/console/streams")
        assert "west-only" not in home.text  # the node's region first
        assert '<option value="eu-west-1">' in home.text
        assert '<option value="us-east-1" selected>' in home.text
        chosen = await web.get("/console/streams", params={"region": "eu-west-1"})
        assert "west-only" in chosen.text and '<option value="eu-west-1" selected>' in chosen.text
        # The choice is remembered: the stream page is the west stream's.
        page = await web.get("/console/streams/orders")
        assert "arn:aws:kinesis:eu-west-1:" in page.text
        assert "shardId-000000000000" in page.text and "shardId-000000000001" not in page.text
        # Actions run in the chosen region.
        token = await csrf_of(web, "/console/streams/new")
        form = {"csrf": token, "name": "made-west", "mode": "PROVISIONED", "shard_count": "1"}
        done = await web.post("/console/streams", data={**form, "confirmed": "yes"})
        assert done.status_code == 303
        west_names = (await asyncio.to_thread(west.list_streams))["StreamNames"]
        east_names = (await asyncio.to_thread(api.list_streams))["StreamNames"]
        assert "made-west" in west_names and "made-west" not in east_names
        # A name that is not a region is ignored; switching back shows the east stream.
        ignored = await web.get("/console/streams", params={"region": "<b>mars</b>"})
        assert '<option value="eu-west-1" selected>' in ignored.text
        back = await web.get("/console/streams/orders", params={"region": "us-east-1"})
        assert "arn:aws:kinesis:us-east-1:" in back.text and "shardId-000000000001" in back.text
    finally:
        west.close()


async def test_search_and_paging(node: Node, web: httpx.AsyncClient, api: Any) -> None:
    for index in range(7):
        await asyncio.to_thread(api.create_stream, StreamName=f"page-{index}", ShardCount=1)
    await asyncio.to_thread(api.create_stream, StreamName="other", ShardCount=1)
    first = await web.get("/console/streams", params={"q": "PAGE", "size": "3"})
    assert "7 streams" in first.text and "page 1 of 3" in first.text
    assert "page-0" in first.text and "page-3" not in first.text and "other" not in first.text
    last = await web.get("/console/streams", params={"q": "page", "size": "3", "page": "3"})
    assert "page-6" in last.text and "page-5" not in last.text
    fragment = await web.get(
        "/console/streams", params={"q": "other"}, headers={"HX-Request": "true"}
    )
    assert fragment.text.lstrip().startswith('<section id="streams-table"')
    assert "other" in fragment.text

    await asyncio.to_thread(api.create_stream, StreamName="wide", ShardCount=120)
    first_shards = await web.get("/console/streams/wide")
    assert "Shards page 1 of 2" in first_shards.text
    assert ">shardId-000000000099</a>" in first_shards.text
    assert ">shardId-000000000100</a>" not in first_shards.text
    second_shards = await web.get("/console/streams/wide", params={"shards_page": "2"})
    assert ">shardId-000000000119</a>" in second_shards.text
    assert ">shardId-000000000099</a>" not in second_shards.text


async def test_actions_confirm_then_run_as_the_api_does(
    node: Node, web: httpx.AsyncClient, api: Any
) -> None:
    token = await csrf_of(web, "/console/streams/new")
    form = {"csrf": token, "name": "made-here", "mode": "PROVISIONED", "shard_count": "2"}
    review = await web.post("/console/streams", data=form)
    assert review.status_code == 200 and "Confirm CreateStream" in review.text
    names = (await asyncio.to_thread(api.list_streams))["StreamNames"]
    assert "made-here" not in names  # nothing happens before the confirmation
    done = await web.post("/console/streams", data={**form, "confirmed": "yes"})
    assert done.status_code == 303
    summary = await asyncio.to_thread(api.describe_stream_summary, StreamName="made-here")
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 2

    token = await csrf_of(web, "/console/streams/made-here")
    for path, fields in (
        ("shard-count", {"target_shard_count": "4"}),
        ("retention", {"retention_hours": "48"}),
        ("tag", {"tag_key": "team", "tag_value": "payments"}),
    ):
        answer = await web.post(
            f"/console/streams/made-here/{path}",
            data={"csrf": token, "confirmed": "yes", **fields},
        )
        assert answer.status_code == 303, answer.text
    summary = await asyncio.to_thread(api.describe_stream_summary, StreamName="made-here")
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 4
    assert summary["StreamDescriptionSummary"]["RetentionPeriodHours"] == 48
    tags = await asyncio.to_thread(api.list_tags_for_stream, StreamName="made-here")
    assert tags["Tags"] == [{"Key": "team", "Value": "payments"}]

    # Per-shard limits (the native LimitsService): one rate set, the others cluster defaults.
    limits = await web.post(
        "/console/streams/made-here/limits",
        data={"csrf": token, "confirmed": "yes", "write_records_per_second": "500"},
    )
    assert limits.status_code == 303, limits.text
    assert node.service is not None
    view = await describe_stream_limits(node.service.ctx, "made-here")
    assert view.overrides.write_records_per_second == 500
    assert view.overrides.read_calls_per_second is None
    too_high = await web.post(
        "/console/streams/made-here/limits",
        data={"csrf": token, "confirmed": "yes", "read_calls_per_second": "-1"},
    )
    assert too_high.status_code == 400 and "InvalidArgumentException" in too_high.text

    # The API's checks, with the API's error: a shard count of 0 breaks the model's min 1.
    refused = await web.post(
        "/console/streams/made-here/shard-count",
        data={"csrf": token, "confirmed": "yes", "target_shard_count": "0"},
    )
    assert refused.status_code == 400 and "ValidationException" in refused.text
    # A reserved name is refused as the API refuses it.
    reserved = await web.post(
        "/console/streams",
        data={"csrf": token, "confirmed": "yes", "name": "__shoal.mine", "shard_count": "1"},
    )
    assert reserved.status_code == 400 and "InvalidArgumentException" in reserved.text

    # Split, merge, untag and mode, each checked through the API afterwards.
    split = await web.post(
        "/console/streams/made-here/split",
        data={
            "csrf": token,
            "confirmed": "yes",
            "shard_id": "shardId-000000000002",
            "new_starting_hash_key": str(2**125),
        },
    )
    assert split.status_code == 303, split.text
    shards = (await asyncio.to_thread(api.list_shards, StreamName="made-here"))["Shards"]
    children = [s for s in shards if s.get("ParentShardId") == "shardId-000000000002"]
    assert [c["HashKeyRange"]["StartingHashKey"] for c in children] == ["0", str(2**125)]
    merge = await web.post(
        "/console/streams/made-here/merge",
        data={
            "csrf": token,
            "confirmed": "yes",
            "shard_id": children[0]["ShardId"],
            "adjacent_shard_id": children[1]["ShardId"],
        },
    )
    assert merge.status_code == 303, merge.text
    shards = (await asyncio.to_thread(api.list_shards, StreamName="made-here"))["Shards"]
    assert any(s.get("AdjacentParentShardId") == children[1]["ShardId"] for s in shards)
    untag = await web.post(
        "/console/streams/made-here/untag", data={"csrf": token, "tag_key": "team"}
    )
    assert untag.status_code == 200 and "Confirm RemoveTagsFromStream" in untag.text
    untag = await web.post(
        "/console/streams/made-here/untag",
        data={"csrf": token, "confirmed": "yes", "tag_key": "team"},
    )
    assert untag.status_code == 303
    tags = await asyncio.to_thread(api.list_tags_for_stream, StreamName="made-here")
    assert tags["Tags"] == []
    mode = await web.post(
        "/console/streams/made-here/mode",
        data={"csrf": token, "confirmed": "yes", "mode": "ON_DEMAND"},
    )
    assert mode.status_code == 303, mode.text
    summary = await asyncio.to_thread(api.describe_stream_summary, StreamName="made-here")
    assert summary["StreamDescriptionSummary"]["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"

    deleted = await web.post(
        "/console/streams/made-here/delete", data={"csrf": token, "confirmed": "yes"}
    )
    assert deleted.status_code == 303
    names = (await asyncio.to_thread(api.list_streams))["StreamNames"]
    assert "made-here" not in names


async def test_posts_need_the_csrf_token(node: Node, web: httpx.AsyncClient, api: Any) -> None:
    await asyncio.to_thread(api.create_stream, StreamName="kept", ShardCount=1)
    await web.get("/console/streams/kept")  # the browser has its CSRF cookie
    forged = await web.post(
        "/console/streams/kept/delete", data={"csrf": "0" * 64, "confirmed": "yes"}
    )
    assert forged.status_code == 403
    missing = await web.post("/console/streams/kept/delete", data={"confirmed": "yes"})
    assert missing.status_code == 403
    names = (await asyncio.to_thread(api.list_streams))["StreamNames"]
    assert "kept" in names


async def test_records_are_escaped_and_paged(node: Node, web: httpx.AsyncClient, api: Any) -> None:
    await asyncio.to_thread(api.create_stream, StreamName="markup", ShardCount=1)
    hostile = '<script>alert("x")</script><img src=x onerror="alert(1)">'
    await asyncio.to_thread(
        api.put_record, StreamName="markup", PartitionKey="<b>k</b>", Data=hostile.encode()
    )
    for index in range(4):
        await asyncio.to_thread(
            api.put_record, StreamName="markup", PartitionKey="k", Data=b'{"n": %d}' % index
        )
    page = await web.get(
        "/console/streams/markup/records",
        params={"go": "1", "from": "TRIM_HORIZON", "limit": "2", "view": "text"},
    )
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;k&lt;/b&gt;" in page.text
    assert page.text.count('class="record"') == 2  # one page, never more
    next_link = re.search(r'id="next-page" href="([^"]+)"', page.text)
    assert next_link is not None
    second = await web.get(next_link.group(1).replace("&amp;", "&"))
    assert second.text.count('class="record"') == 2
    assert "{&#34;n&#34;: 1}" in second.text and "{&#34;n&#34;: 0}" not in second.text
    as_json = await web.get(
        "/console/streams/markup/records",
        params={"go": "1", "from": "TRIM_HORIZON", "limit": "5", "view": "json"},
    )
    assert "not JSON; shown as text" in as_json.text  # the hostile record
    assert "&#34;n&#34;: 3" in as_json.text  # pretty-printed JSON
    as_hex = await web.get(
        "/console/streams/markup/records",
        params={"go": "1", "from": "TRIM_HORIZON", "limit": "1", "view": "hex"},
    )
    assert "3c 73 63 72 69 70 74 3e" in as_hex.text  # "<script>" as bytes

    # The node's own counters for the stream: 5 records written, reads served by GetRecords.
    counted = await web.get("/console/streams/markup/series", headers={"HX-Request": "true"})
    row = re.search(
        r"kinesis_incoming_records_total</code></th><td></td><td>([0-9.]+)<", counted.text
    )
    assert row is not None and row.group(1) == "5"
    assert "api=GetRecords" in counted.text


async def test_records_from_a_sequence_number_or_a_timestamp(
    node: Node, web: httpx.AsyncClient, clock: ManualClock, api: Any
) -> None:
    await asyncio.to_thread(api.create_stream, StreamName="positions", ShardCount=1)
    written = []
    for n in range(3):
        clock.advance(ms=60_000)
        written.append(
            await asyncio.to_thread(
                api.put_record, StreamName="positions", PartitionKey="k", Data=b"record-%d" % n
            )
        )

    async def bodies(**params: str) -> list[str]:
        page = await web.get("/console/streams/positions/records", params={"go": "1", **params})
        assert page.status_code == 200, page.text
        return re.findall(
            r'<pre class="payload payload-text" tabindex="0">([^<]*)</pre>', page.text
        )

    second = written[1]["SequenceNumber"]
    assert await bodies(**{"from": "AT_SEQUENCE_NUMBER", "seq": second}) == ["record-1", "record-2"]
    assert await bodies(**{"from": "AFTER_SEQUENCE_NUMBER", "seq": second}) == ["record-2"]
    assert await bodies(**{"from": "LATEST"}) == []
    at = (clock.wall_ms() - 30_000) / 1000  # between the second and the third record
    assert await bodies(**{"from": "AT_TIMESTAMP", "at": f"{at:.3f}"}) == ["record-2"]
    bad = await web.get(
        "/console/streams/positions/records",
        params={"go": "1", "from": "AT_TIMESTAMP", "at": "yesterday"},
    )
    assert bad.status_code == 400 and "InvalidArgumentException" in bad.text


async def test_records_of_every_shard(node: Node, web: httpx.AsyncClient, api: Any) -> None:
    await asyncio.to_thread(api.create_stream, StreamName="spread", ShardCount=3)
    third = 2**128 // 3
    for shard in range(3):
        for n in range(3):
            await asyncio.to_thread(
                api.put_record,
                StreamName="spread",
                PartitionKey=f"s{shard}",
                Data=b"shard %d record %d" % (shard, n),
                ExplicitHashKey=str(shard * third + 1),
            )
    seen: list[str] = []
    page = await web.get(
        "/console/streams/spread/records",
        params={"go": "1", "shard": "all", "from": "TRIM_HORIZON", "limit": "3"},
    )
    for _ in range(4):
        assert page.status_code == 200, page.text
        bodies = re.findall(
            r'<pre class="payload payload-text" tabindex="0">([^<]*)</pre>', page.text
        )
        assert len(bodies) <= 3  # one page, never more
        seen += bodies
        next_link = re.search(r'id="next-page" href="([^"]+)"', page.text)
        assert next_link is not None
        page = await web.get(next_link.group(1).replace("&amp;", "&"))
    assert sorted(seen) == sorted(f"shard {s} record {n}" for s in range(3) for n in range(3))


async def test_kcl_leases_and_their_lag(
    node: Node, web: httpx.AsyncClient, clock: ManualClock, api: Any
) -> None:
    await asyncio.to_thread(api.create_stream, StreamName="leased", ShardCount=2)
    first = await asyncio.to_thread(
        api.put_record, StreamName="leased", PartitionKey="a", Data=b"1", ExplicitHashKey="0"
    )
    for data in (b"2", b"3"):
        await asyncio.to_thread(
            api.put_record, StreamName="leased", PartitionKey="a", Data=data, ExplicitHashKey="0"
        )
    assert node.service is not None
    leases = LocalLeaseClient(node.service.ctx.metadata, clock)
    created = await leases.create_leases(
        CreateLeases(
            application="billing",
            stream_name="leased",
            leases=(
                NewLease(
                    shard_id="shardId-000000000000",
                    checkpoint=Checkpoint(first["SequenceNumber"]),
                ),
                NewLease(shard_id="shardId-000000000001"),
            ),
        )
    )
    assert isinstance(created, tuple)
    page = await web.get("/console/streams/leased")
    assert "billing" in page.text and first["SequenceNumber"] in page.text
    lag = await web.get("/console/streams/leased/lag", headers={"HX-Request": "true"})
    cells = re.findall(r'<td class="lag">([^<]*)</td>', lag.text)
    assert len(cells) == 2
    assert "behind the latest record" in cells[0]  # two records after its checkpoint
    assert cells[1] == "caught up"  # TRIM_HORIZON of an empty shard


async def test_put_record_form(node: Node, web: httpx.AsyncClient, api: Any) -> None:
    await asyncio.to_thread(api.create_stream, StreamName="typed", ShardCount=1)
    token = await csrf_of(web, "/console/streams/typed")
    answer = await web.post(
        "/console/streams/typed/records",
        data={"csrf": token, "partition_key": "pk", "data": "héllo"},
    )
    assert answer.status_code == 303
    records = await asyncio.to_thread(
        lambda: api.get_records(
            ShardIterator=api.get_shard_iterator(
                StreamName="typed", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
        )["Records"]
    )
    assert [(r["PartitionKey"], r["Data"]) for r in records] == [("pk", "héllo".encode())]


async def test_console_can_be_turned_off(tmp_path: Path, clock: ManualClock) -> None:
    config = node_config(tmp_path / "off", settings={"console_enabled": False})
    async with (
        running_node(config, clock) as node,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}") as web,
    ):
        answer = await web.get("/console")
        assert answer.status_code == 403  # the AWS door's answer to a GET: no console here
        assert node.console is None


async def test_sign_in_when_access_keys_are_configured(tmp_path: Path, clock: ManualClock) -> None:
    config = node_config(tmp_path / "keys", settings={"aws_credentials": ("AKIDCONSOLE:s3cret",)})
    async with (
        running_node(config, clock) as node,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}") as web,
    ):
        first = await web.get("/console/streams")
        assert first.status_code == 303
        assert first.headers["location"].startswith("/console/sign-in")
        token = await csrf_of(web, "/console/sign-in")
        wrong = await web.post(
            "/console/sign-in",
            data={"csrf": token, "access_key_id": "AKIDCONSOLE", "secret_access_key": "no"},
        )
        assert wrong.status_code == 401
        refused = await web.post("/console/streams", data={"csrf": token, "name": "x"})
        assert refused.status_code == 403
        signed = await web.post(
            "/console/sign-in",
            data={
                "csrf": token,
                "access_key_id": "AKIDCONSOLE",
                "secret_access_key": "s3cret",
                "next": "/console/streams",
            },
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/console/streams"
        page = await web.get("/console/streams")
        assert page.status_code == 200 and "AKIDCONSOLE" in page.text
        session_csrf = CSRF.search(page.text)
        assert session_csrf is not None and session_csrf.group(1) != token  # bound to the session
        out = await web.post("/console/sign-out", data={"csrf": session_csrf.group(1)})
        assert out.status_code == 303
        again = await web.get("/console/streams")
        assert again.status_code == 303 and again.headers["location"].startswith("/console/sign-in")


async def test_node_statistics_are_for_the_cluster_only(
    node: Node, web: httpx.AsyncClient, api: Any, clock: ManualClock
) -> None:
    """A node's statistics (disk use, consumers' read rates) answer a peer token made with the
    cluster's secret and nothing else; the stream page shows the reads summed over the nodes."""
    refused = await web.get("/console/peer/node.json")
    assert refused.status_code == 403
    forged = await web.get(
        "/console/peer/node.json",
        headers={sessions.PEER_HEADER: sessions.peer_token(cluster_secret=b"x" * 32, now_ms=0)},
    )
    assert forged.status_code == 403
    assert node.console is not None
    secret = node.console._cluster_secret()
    token = sessions.peer_token(cluster_secret=secret, now_ms=clock.wall_ms())
    answer = await web.get("/console/peer/node.json", headers={sessions.PEER_HEADER: token})
    assert answer.status_code == 200
    stats = NodeStats.from_json(answer.content)
    assert stats.node_id == node.node_id and stats.disk is not None and stats.disk.total_bytes > 0

    await asyncio.to_thread(api.create_stream, StreamName="read-me", ShardCount=1)
    page = await web.get("/console/streams/read-me")
    assert "need enhanced monitoring" in page.text
    await asyncio.to_thread(
        api.enable_enhanced_monitoring, StreamName="read-me", ShardLevelMetrics=["ALL"]
    )
    iterator = (
        await asyncio.to_thread(
            api.get_shard_iterator,
            StreamName="read-me",
            ShardId="shardId-000000000000",
            ShardIteratorType="TRIM_HORIZON",
        )
    )["ShardIterator"]
    for round_number in range(2):  # one record read before each sample, five seconds apart
        await asyncio.to_thread(api.put_record, StreamName="read-me", PartitionKey="k", Data=b"x")
        got = await asyncio.to_thread(api.get_records, ShardIterator=iterator)
        assert len(got["Records"]) == 1
        iterator = got["NextShardIterator"]
        if round_number:
            clock.advance(ms=5_000)
        node.console.sample_reads()
    page = await web.get("/console/streams/read-me")
    assert "0.2 records/s" in page.text  # one record over five seconds
    assert "<td>0.2</td>" in page.text  # and its shard's reads (enhanced monitoring is on)
    assert "need enhanced monitoring" not in page.text
