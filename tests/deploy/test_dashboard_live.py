"""Issue 7, point 3: a real Prometheus scraping a running 3-node cluster under a small load, and
every panel of deploy/grafana/shoal-dashboard.json returning data.

The nodes are `shoal serve` processes (tests/support.py's ClusterProcesses), each with its own
`SHOAL_METRICS_PORT`, serving mutual TLS (so the certificate-expiry panel has data; clients
use a client certificate, Prometheus scrapes the plaintext metrics port). Per-shard limits are
set low so the throttling panels see throttling; enhanced monitoring is on for the stream so
the shard-level panels have series. A registered consumer holds a subscription (and is refused
a second one, the RateExceeded series), and a small ON_DEMAND stream with short autoscaler
timers is split once under the load, up to a ceiling of 2 shards, for the scaling panels. A SQL
application copies the stream's records to another stream, for the SQL application panels.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
import grpc
import pytest

from broker.api.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from broker.api.firehose.v1 import firehose_pb2, firehose_pb2_grpc
from broker.client.grpc_client import AsyncShoalClient
from broker.client.video_producer import PutMediaTarget, put_media
from broker.errors import ErrorCode, ShoalError
from broker.tls import client_credentials
from broker.video.acks import AckEventType
from broker.wire.codec import dict_to_message
from tests.certificates import issue, make_authority
from tests.deploy.prometheus_harness import PrometheusServer, dashboard_queries, substitute
from tests.deploy.test_dashboard import DASHBOARD_PATH, RULES
from tests.deploy.tools import tool
from tests.s3_server import S3Server
from tests.support import ClusterProcesses, free_port, wait_until
from tests.video.media import h264_mkv

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STREAM = "dashboard"
VIDEO_STREAM = "dashboard-camera"
AUTO_STREAM = "dashboard-auto"  # ON_DEMAND, split once by the autoscaler
CONSUMER = "dashboard-fan"
APPLICATION = "dashboard-copy"  # a SQL application reading STREAM
APP_OUT = "dashboard-copies"
BUCKET = "dashboard"
# Short autoscaler timers: a shard writing over 30 records/s for a second is split; the pair
# is never cold (merging needs under 2% of 1,000 records/s); 2 shards is the ceiling.
AUTOSCALER_KNOBS = {
    "SHOAL_LOAD_WINDOW_MS": "500",
    "SHOAL_LOAD_WINDOW_COUNT": "3",
    "SHOAL_LOAD_REPORT_INTERVAL_MS": "500",
    "SHOAL_LOAD_REPORT_STALE_MS": "2000",
    "SHOAL_AUTOSCALER_PASS_INTERVAL_MS": "200",
    "SHOAL_ON_DEMAND_SPLIT_RECORDS_PER_SECOND": "30",
    "SHOAL_ON_DEMAND_MERGE_PERCENT": "2",
    "SHOAL_ON_DEMAND_HOT_FOR_MS": "1000",
    "SHOAL_ON_DEMAND_COOLDOWN_MS": "1000",
    "SHOAL_ON_DEMAND_MIN_SHARDS": "1",
    "SHOAL_ON_DEMAND_MAX_SHARDS": "2",
    "SHOAL_CONSUMER_CREATING_MS": "0",
}

T = TypeVar("T")

# Panels that cannot have data in this setup, with the reason. None so far: throttling is
# provoked by the low limits below, and errors come with it.
EXPECTED_EMPTY: dict[str, str] = {
    "Firehose delivered records [B]": "records reach the error output only when a destination "
    "or a transformation fails; here every delivery to S3 succeeds",
}
DELIVERY_STREAM = "dashboard-firehose"


class Load:
    """Puts (bursts larger than the shard's write limit) and GetRecords (faster than its read
    call limit) from a thread with its own event loop, until stopped."""

    def __init__(
        self,
        endpoints: list[str],
        credentials: grpc.ChannelCredentials,
        *,
        http_endpoint: str = "",
        ca_file: str = "",
    ) -> None:
        self._endpoints = endpoints
        self._credentials = credentials
        self._http_endpoint = http_endpoint
        self._ca_file = ca_file
        self.video_fragments = 0  # PERSISTED acknowledgements of the video load
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.puts = 0
        self.events = 0  # SubscribeToShard events received
        self.refusals: list[ErrorCode] = []  # the second subscription's error

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _run(self) -> None:
        clients = [
            AsyncShoalClient(endpoint, credentials=self._credentials)
            for endpoint in self._endpoints
        ]
        fan_out: asyncio.Task[None] | None = None
        try:
            await self._setup(clients[0])
            await _retry(lambda: self._create_delivery_stream(self._endpoints[0]))
            fan_out = asyncio.create_task(self._subscribe(clients[1]))
            video = asyncio.create_task(self._video())
            iterators: dict[str, str] = {}
            turn = 0
            while not self._stop.is_set():
                client = clients[turn % len(clients)]
                turn += 1
                try:
                    records = [
                        {"Data": b"d" * 200, "PartitionKey": f"key-{turn}-{i}"} for i in range(300)
                    ]
                    await client.call("PutRecords", {"StreamName": STREAM, "Records": records})
                    self.puts += 1
                    await client.call(
                        "PutRecords", {"StreamName": AUTO_STREAM, "Records": records[:30]}
                    )
                    await self._read(client, iterators)
                    await self._put_firehose(self._endpoints[turn % len(self._endpoints)])
                except Exception:  # throttled or a node busy: the load goes on
                    pass
                await asyncio.sleep(0.1)
        finally:
            if fan_out is not None:
                fan_out.cancel()
                video.cancel()
                await asyncio.gather(fan_out, video, return_exceptions=True)
            for client in clients:
                await client.close()

    async def _video(self) -> None:
        """Media streams: a camera's fragments through PutMedia (and one upload of bytes that
        are not MKV, for the error panel), read back with GetMedia, over HTTPS."""
        kvs = boto3.client(
            "kinesisvideo",
            endpoint_url=self._http_endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            verify=self._ca_file,
        )

        def create() -> None:
            with contextlib.suppress(kvs.exceptions.ResourceInUseException):
                kvs.create_stream(StreamName=VIDEO_STREAM, DataRetentionInHours=1)

        await _retry_any(lambda: asyncio.to_thread(create))
        clip = await asyncio.to_thread(h264_mkv, frames=25)
        media = boto3.client(
            "kinesis-video-media",
            endpoint_url=self._http_endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            verify=self._ca_file,
        )
        target = PutMediaTarget(
            endpoint=self._http_endpoint, stream_name=VIDEO_STREAM, ca_file=self._ca_file
        )
        rounds = 0
        while not self._stop.is_set():
            body = b"not mkv at all" if rounds == 0 else clip
            rounds += 1
            try:
                async for ack in put_media(target, _once(body)):
                    if ack.event_type is AckEventType.PERSISTED:
                        self.video_fragments += 1
                response = await asyncio.to_thread(
                    media.get_media,
                    StreamName=VIDEO_STREAM,
                    StartSelector={"StartSelectorType": "EARLIEST"},
                )
                await asyncio.to_thread(response["Payload"].read)
            except Exception:  # a node busy: the load goes on
                await asyncio.sleep(0.2)

    async def _create_delivery_stream(self, endpoint: str) -> None:
        """A DirectPut delivery stream to moto's S3, delivering every buffer at once."""
        async with grpc.aio.secure_channel(endpoint, self._credentials) as channel:
            stub = firehose_pb2_grpc.FirehoseServiceStub(channel)
            try:
                await stub.CreateDeliveryStream(
                    firehose_pb2.CreateDeliveryStreamInput(
                        delivery_stream_name=DELIVERY_STREAM,
                        extended_s3_destination_configuration=(
                            firehose_pb2.ExtendedS3DestinationConfiguration(
                                role_arn="arn:aws:iam::000000000000:role/firehose",
                                bucket_arn=f"arn:aws:s3:::{BUCKET}",
                                buffering_hints=firehose_pb2.BufferingHints(
                                    size_in_m_bs=1, interval_in_seconds=0
                                ),
                            )
                        ),
                    )
                )
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.FAILED_PRECONDITION:  # exists already
                    raise ShoalError(ErrorCode.UNAVAILABLE, str(error)) from error

    async def _put_firehose(self, endpoint: str) -> None:
        """A batch over the delivery stream's low write limit (throttled records too)."""
        async with grpc.aio.secure_channel(endpoint, self._credentials) as channel:
            stub = firehose_pb2_grpc.FirehoseServiceStub(channel)
            await stub.PutRecordBatch(
                firehose_pb2.PutRecordBatchInput(
                    delivery_stream_name=DELIVERY_STREAM,
                    records=[firehose_pb2.Record(data=b"f" * 100) for _ in range(100)],
                )
            )

    async def _subscribe(self, client: AsyncShoalClient) -> None:
        """Holds a subscription of the consumer to shard 0, counting events; the first time,
        a second subscription of the same consumer and shard on the same node is refused."""
        arn = await _retry(lambda: self._consumer_arn(client))
        request = {
            "ConsumerARN": arn,
            "ShardId": "shardId-000000000000",
            "StartingPosition": {"Type": "LATEST"},
        }
        while not self._stop.is_set():
            events = client.subscribe_to_shard(request)
            try:
                # One event at a time (`next_event`: never mixed with `async for` on a stream).
                while await events.next_event(timeout_s=10) is not None:
                    self.events += 1
                    if not self.refusals:
                        await self._refused_second(client, request)
            except (ShoalError, TimeoutError):  # consumer not ACTIVE yet, a node busy: again
                await asyncio.sleep(0.2)
            finally:
                await events.aclose()

    async def _refused_second(self, client: AsyncShoalClient, request: dict[str, Any]) -> None:
        """A second subscription of the same consumer and shard on the same node, while the
        first is open: refused (SubscribeToShard.RateExceeded), the error kept."""
        second = client.subscribe_to_shard(request)
        try:
            await second.next_event(timeout_s=10)
        except ShoalError as error:
            self.refusals.append(error.code)
        finally:
            await second.aclose()

    async def _consumer_arn(self, client: AsyncShoalClient) -> str:
        summary = await client.call("DescribeStreamSummary", {"StreamName": STREAM})
        stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
        try:
            answer = await client.call(
                "RegisterStreamConsumer", {"StreamARN": stream_arn, "ConsumerName": CONSUMER}
            )
        except ShoalError as error:
            if error.code is not ErrorCode.RESOURCE_IN_USE:  # registered by an earlier try
                raise
            answer = await client.call(
                "DescribeStreamConsumer", {"StreamARN": stream_arn, "ConsumerName": CONSUMER}
            )
            arn: str = answer["ConsumerDescription"]["ConsumerARN"]
            return arn
        arn = answer["Consumer"]["ConsumerARN"]
        return arn

    async def _setup(self, client: AsyncShoalClient) -> None:
        for _ in range(300):  # until the cluster has formed and takes the stream
            try:
                await client.call("CreateStream", {"StreamName": STREAM, "ShardCount": 2})
                break
            except Exception:
                await asyncio.sleep(0.2)
        await _retry(
            lambda: client.call(
                "EnableEnhancedMonitoring", {"StreamName": STREAM, "ShardLevelMetrics": ["ALL"]}
            )
        )
        await _retry(
            lambda: client.call("CreateStream", {"StreamName": AUTO_STREAM, "ShardCount": 1})
        )

        async def on_demand() -> None:
            summary = await client.call("DescribeStreamSummary", {"StreamName": AUTO_STREAM})
            await client.call(
                "UpdateStreamMode",
                {
                    "StreamARN": summary["StreamDescriptionSummary"]["StreamARN"],
                    "StreamModeDetails": {"StreamMode": "ON_DEMAND"},
                },
            )

        await _retry(on_demand)
        await _retry(lambda: client.call("CreateStream", {"StreamName": APP_OUT, "ShardCount": 1}))
        await _retry(self._start_application)

    async def _start_application(self) -> None:
        """A SQL application copying the stream's records (CSV lines) to APP_OUT, through the
        native gRPC KinesisAnalyticsService, for the SQL application panels."""
        arn = "arn:aws:kinesis:us-east-1:000000000000:stream/{}"
        role = "arn:aws:iam::000000000000:role/dashboard"
        create = {
            "ApplicationName": APPLICATION,
            "ApplicationCode": (
                'CREATE OR REPLACE STREAM "COPY" (LINE VARCHAR(256));\n'
                'CREATE OR REPLACE PUMP "P" AS INSERT INTO "COPY"\n'
                'SELECT STREAM LINE FROM "SOURCE_SQL_STREAM_001";'
            ),
            "Inputs": [
                {
                    "NamePrefix": "SOURCE_SQL_STREAM",
                    "KinesisStreamsInput": {"ResourceARN": arn.format(STREAM), "RoleARN": role},
                    "InputSchema": {
                        "RecordFormat": {"RecordFormatType": "CSV"},
                        "RecordColumns": [{"Name": "LINE", "SqlType": "VARCHAR(256)"}],
                    },
                }
            ],
            "Outputs": [
                {
                    "Name": "COPY",
                    "KinesisStreamsOutput": {"ResourceARN": arn.format(APP_OUT), "RoleARN": role},
                    "DestinationSchema": {"RecordFormatType": "CSV"},
                }
            ],
        }
        start = {
            "ApplicationName": APPLICATION,
            "InputConfigurations": [
                {
                    "Id": "1.1",
                    "InputStartingPositionConfiguration": {"InputStartingPosition": "NOW"},
                }
            ],
        }
        async with grpc.aio.secure_channel(self._endpoints[0], self._credentials) as channel:
            stub = analytics_pb2_grpc.KinesisAnalyticsServiceStub(channel)
            with contextlib.suppress(grpc.aio.AioRpcError):  # created by an earlier attempt
                await stub.CreateApplication(
                    dict_to_message(create, analytics_pb2.CreateApplicationRequest)
                )
            try:
                await stub.StartApplication(
                    dict_to_message(start, analytics_pb2.StartApplicationRequest)
                )
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
                    return  # already RUNNING (an earlier attempt's answer was lost)
                raise ShoalError(ErrorCode.UNAVAILABLE, str(error.details())) from error

    async def _read(self, client: AsyncShoalClient, iterators: dict[str, str]) -> None:
        for shard_id in ("shardId-000000000000", "shardId-000000000001"):
            iterator = iterators.get(shard_id)
            if iterator is None:
                answer = await client.call(
                    "GetShardIterator",
                    {
                        "StreamName": STREAM,
                        "ShardId": shard_id,
                        "ShardIteratorType": "TRIM_HORIZON",
                    },
                )
                iterator = answer["ShardIterator"]
            for _ in range(3):  # three calls in a row: over the read call limit of 2/s
                try:
                    got = await client.call("GetRecords", {"ShardIterator": iterator, "Limit": 50})
                except Exception:
                    continue
                iterator = got.get("NextShardIterator", iterator)
            iterators[shard_id] = iterator


async def _retry(call: Callable[[], Awaitable[T]], *, attempts: int = 300) -> T:
    """`call` until it succeeds (the cluster forming, a stream still CREATING), bounded."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except ShoalError:
            await asyncio.sleep(0.2)
    return await call()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _retry_any(call: Callable[[], Awaitable[T]], *, attempts: int = 300) -> T:
    """`call` until it succeeds, whatever it raises meanwhile (the cluster forming), bounded."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except Exception:
            await asyncio.sleep(0.2)
    return await call()


def test_every_panel_returns_data_from_a_live_cluster(tmp_path: Path) -> None:
    prometheus = tool("prometheus")
    s3_server = S3Server.start()
    s3_server.client().create_bucket(Bucket=BUCKET)
    authority = make_authority(tmp_path / "pki", "cluster-ca")
    node_leaf = issue(authority, tmp_path / "pki", "node")
    client_leaf = issue(authority, tmp_path / "pki", "client")
    credentials = client_credentials(
        ca_file=authority.cert_file, cert_file=client_leaf.cert_file, key_file=client_leaf.key_file
    )
    cluster = ClusterProcesses(
        tmp_path,
        extra_env={
            **AUTOSCALER_KNOBS,
            **s3_server.environment(),
            "SHOAL_FIREHOSE_WRITE_RECORDS_PER_SECOND": "200",
            "SHOAL_TLS_CERT_FILE": str(node_leaf.cert_file),
            "SHOAL_TLS_KEY_FILE": str(node_leaf.key_file),
            "SHOAL_TLS_CA_FILE": str(authority.cert_file),
        },
    )
    metrics_ports = []
    for node in cluster.nodes:
        port = free_port()
        metrics_ports.append(port)
        node.extra_env = {
            **node.extra_env,
            "SHOAL_METRICS_PORT": str(port),
            "SHOAL_SHARD_WRITE_RECORDS_PER_SECOND": "200",
            "SHOAL_SHARD_READ_CALLS_PER_SECOND": "2",
        }
    queries = dashboard_queries(json.loads(DASHBOARD_PATH.read_text()))
    cluster.start()
    try:
        targets = [f"127.0.0.1:{port}" for port in metrics_ports]
        with (
            Load(
                cluster.endpoints,
                credentials,
                http_endpoint=f"https://127.0.0.1:{cluster.nodes[0].http_port}",
                ca_file=str(authority.cert_file),
            ) as load,
            PrometheusServer(prometheus, tmp_path, targets, rule_files=[RULES]) as prom,
        ):
            prom.wait_for_targets_up(deadline_s=60)
            wait_until(lambda: load.puts > 0, deadline_s=90, what="the first PutRecords")
            missing: list[str] = []

            def all_have_data() -> bool:
                missing[:] = [
                    query.name
                    for query in queries
                    if query.name not in EXPECTED_EMPTY
                    and not prom.query_range(
                        substitute(query.expr, rate_interval="10s"), seconds=30
                    )
                ]
                return not missing

            try:
                wait_until(all_have_data, deadline_s=90, what="every panel query to return data")
            except AssertionError as error:
                raise AssertionError(
                    f"panels without data: {missing} (fan-out events {load.events}, "
                    f"refusals {load.refusals}, video fragments {load.video_fragments})"
                ) from error
            assert load.refusals == [ErrorCode.RESOURCE_IN_USE]
            assert load.events > 0
            broken = {name: h for name, h in prom.rule_health().items() if h[0] == "err"}
            assert not broken, broken
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
        s3_server.stop()
