"""The operations metrics of enhanced fan-out, the consumer registry, on-demand scaling and TLS.

Goal: each family shows what happened, through the public doors: a subscription through the
native client appears in `kinesis_subscriptions` and its events and MillisBehindLatest, and
both go away when it ends (so the lag alert cannot stay stuck on a consumer that left); a
refused second subscription counts as SubscribeToShard.RateExceeded; registered consumers and
open shards per stream come from the metadata image; the autoscaler counts what it proposed
and shows its ceiling; a node with TLS exports its certificates' expiry, renewed files
included. Method: in-process nodes scraped over HTTP (`tests/test_metrics_wiring.py`), the
autoscaler over an in-memory quorum, and certificates made with `cryptography`.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.client.grpc_client import AsyncShoalClient
from broker.clock import ManualClock
from broker.errors import ErrorCode, ShoalError
from broker.meta.autoscaler import Autoscaler, AutoscalerSettings
from broker.meta.image import MetadataImage, StreamMeta, StreamMode
from broker.meta.quorum import LocalQuorum
from broker.meta.state_machine import apply
from broker.metrics import NodeMetrics
from broker.node import Node
from broker.streams.autoscaling import AutoscalingPolicy, Decision, HotKey, Merge, Split
from broker.tls import CertificateExpiryReader, TlsFiles
from broker.types import ShardIndex, StreamName
from tests.certificates import issue, make_authority
from tests.conftest import connected_client, node_config, running_node
from tests.meta.factories import create_stream, nodes_image
from tests.test_metrics import scrape as scrape_registry
from tests.test_metrics_wiring import Samples, scrape

pytestmark = pytest.mark.integration

SHARD = "shardId-000000000000"
EXPIRY = "kinesis_tls_certificate_expiry_timestamp_seconds"


def series(samples: Samples, name: str, **labels: str) -> list[float]:
    return [v for found, v in samples.get(name, []) if labels.items() <= found.items()]


async def eventually(
    node: Node, check: Callable[[Samples], bool], *, what: str, deadline_s: float = 10
) -> Samples:
    """Scrapes until `check` holds, within a deadline."""
    async with asyncio.timeout(deadline_s):
        while True:
            _, samples = await scrape(node)
            if check(samples):
                return samples
            await asyncio.sleep(0.05)
    raise AssertionError(what)  # pragma: no cover - the timeout raises first


# --- Enhanced fan-out and the consumer registry, through the public API ------------------------


@pytest.fixture
async def fanout_node(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Node]:
    config = node_config(tmp_path / "node", consumer_creating_ms=0, subscription_takeover_ms=5_000)
    async with running_node(config, clock) as node:
        yield node


@pytest.fixture
async def kinesis(fanout_node: Node) -> AsyncIterator[AsyncShoalClient]:
    async with connected_client(fanout_node) as client:
        yield client


async def registered_consumer(client: AsyncShoalClient, stream: str) -> str:
    await client.call("CreateStream", {"StreamName": stream, "ShardCount": 2})
    summary = await client.call("DescribeStreamSummary", {"StreamName": stream})
    registered = await client.call(
        "RegisterStreamConsumer",
        {
            "StreamARN": summary["StreamDescriptionSummary"]["StreamARN"],
            "ConsumerName": "fan",
        },
    )
    arn: str = registered["Consumer"]["ConsumerARN"]
    return arn


async def test_a_subscription_shows_while_open_and_its_lag_goes_with_it(
    fanout_node: Node, kinesis: AsyncShoalClient
) -> None:
    arn = await registered_consumer(kinesis, "fan")
    await kinesis.call("PutRecord", {"StreamName": "fan", "Data": b"x", "PartitionKey": "k"})
    shard_of_k = "shardId-000000000001"  # md5("k") is in the upper half of the hash range
    request = {
        "ConsumerARN": arn,
        "ShardId": shard_of_k,
        "StartingPosition": {"Type": "TRIM_HORIZON"},
    }
    events = kinesis.subscribe_to_shard(request)
    try:
        first = await events.next_event(timeout_s=5)
        assert first is not None and len(first["SubscribeToShardEvent"]["Records"]) == 1
        samples = await eventually(
            fanout_node,
            lambda s: bool(series(s, "kinesis_subscriptions", stream="fan")),
            what="the subscription in kinesis_subscriptions",
        )
        assert series(samples, "kinesis_subscriptions", stream="fan") == [1.0]
        assert series(samples, "kinesis_subscription_events_total", stream="fan")[0] >= 1
        assert series(samples, "kinesis_subscription_behind_latest_seconds", stream="fan")
        assert series(samples, "kinesis_stream_consumers", stream="fan", status="ACTIVE") == [1.0]
        assert series(samples, "kinesis_stream_open_shards", stream="fan", mode="PROVISIONED") == [
            2.0
        ]

        # The same consumer and shard again within the takeover time: RateExceeded.
        second = kinesis.subscribe_to_shard(request)
        with pytest.raises(ShoalError) as refused:
            await second.next_event(timeout_s=5)
        assert refused.value.code is ErrorCode.RESOURCE_IN_USE
        await second.aclose()
        _, samples = await scrape(fanout_node)
        assert series(samples, "kinesis_subscribe_to_shard_rate_exceeded_total", stream="fan") == [
            1.0
        ]
    finally:
        await events.aclose()

    await eventually(
        fanout_node,
        lambda s: (
            not series(s, "kinesis_subscriptions", stream="fan")
            and not series(s, "kinesis_subscription_behind_latest_seconds", stream="fan")
        ),
        what="the closed subscription and its lag to leave /metrics",
    )


async def test_deregistered_consumers_leave_the_registry_gauge(
    fanout_node: Node, kinesis: AsyncShoalClient, clock: ManualClock
) -> None:
    arn = await registered_consumer(kinesis, "gone")
    await eventually(
        fanout_node,
        lambda s: series(s, "kinesis_stream_consumers", stream="gone", status="ACTIVE") == [1.0],
        what="the consumer in kinesis_stream_consumers",
    )
    await kinesis.call("DeregisterStreamConsumer", {"ConsumerARN": arn})
    clock.advance(ms=1_000)  # past DELETING (consumer_deleting_ms)
    await eventually(
        fanout_node,
        lambda s: not series(s, "kinesis_stream_consumers", stream="gone"),
        what="the deregistered consumer to leave kinesis_stream_consumers",
    )


async def test_every_node_shows_the_on_demand_ceiling(fanout_node: Node) -> None:
    _, samples = await scrape(fanout_node)
    assert series(samples, "kinesis_on_demand_max_open_shards") == [
        float(fanout_node.config.knobs.on_demand_max_shards)
    ]


# --- The autoscaler's decisions ------------------------------------------------------------------

POLICY = AutoscalingPolicy(cooldown_ms=0, min_open_shards=1, max_open_shards=4)


class _Decided(Autoscaler):
    """The real autoscaler with its decision fixed, so the test does not depend on how loads
    are reported (the decision rules have their own tests): what is counted is what it
    proposes and what the metadata answers."""

    decision: Decision

    def decisions(self, image: MetadataImage) -> list[tuple[StreamMeta, Decision]]:
        return [(image.streams[StreamName("s1")], self.decision)]


async def _carried_out(decision: Decision, *, account_max: int = 100) -> NodeMetrics:
    clock = ManualClock(wall_ms=1_800_000_000_000)
    created = apply(
        nodes_image(1),
        create_stream("s1", mode=StreamMode.ON_DEMAND, shard_count=2, now_ms=clock.wall_ms()),
    )
    assert created.error is None
    clock.advance(ms=5_000)  # past CREATING
    quorum = LocalQuorum(created.image)
    await quorum.start()
    settings = AutoscalerSettings(policy=POLICY, shard_count_per_account_max=account_max)
    scaler = _Decided(quorum=quorum, clock=clock, settings=settings)
    scaler.decision = decision
    metrics = NodeMetrics(node_id="n1", process_metrics=False)
    scaler.report_to(metrics.autoscaler)
    await scaler.run_pass()
    return metrics


def _split() -> Split:
    return Split(shard_index=ShardIndex(0), new_starting_hash_key=2**126, reason="test")


def _actions(metrics: NodeMetrics) -> dict[str, float]:
    return {
        labels["action"]: value
        for labels, value in scrape_registry(metrics).get("kinesis_autoscaler_actions_total", [])
        if labels["stream"] == "s1"
    }


async def test_the_autoscaler_counts_a_split_and_shows_its_ceiling() -> None:
    metrics = await _carried_out(_split())
    assert _actions(metrics) == {"split": 1.0}
    ceiling = scrape_registry(metrics)["kinesis_on_demand_max_open_shards"]
    assert ceiling == [({}, float(POLICY.max_open_shards))]


async def test_the_autoscaler_counts_merges_refusals_and_hot_keys() -> None:
    merge = Merge(shard_index=ShardIndex(0), adjacent_shard_index=ShardIndex(1), reason="test")
    assert _actions(await _carried_out(merge)) == {"merge": 1.0}
    # The account holds 2 shards already: the metadata refuses the split.
    assert _actions(await _carried_out(_split(), account_max=2)) == {"refused": 1.0}
    notice = HotKey(shard_index=ShardIndex(0), partition_key="whale", reason="test")
    assert _actions(await _carried_out(notice)) == {"hot_key": 1.0}


# --- Certificate expiry --------------------------------------------------------------------------


def _self_signed(path: Path, *, not_after: datetime.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expiry")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - datetime.timedelta(days=90))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_expiry_is_the_first_certificate_to_expire_and_follows_renewals(tmp_path: Path) -> None:
    soon = datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC)
    later = datetime.datetime(2032, 6, 1, tzinfo=datetime.UTC)
    cert, ca = tmp_path / "tls.crt", tmp_path / "ca.crt"
    _self_signed(cert, not_after=later)
    _self_signed(tmp_path / "a.pem", not_after=later)
    _self_signed(tmp_path / "b.pem", not_after=soon)
    ca.write_bytes((tmp_path / "a.pem").read_bytes() + (tmp_path / "b.pem").read_bytes())
    files = TlsFiles(
        cert_file=cert, key_file=tmp_path / "tls.key", ca_file=ca, require_client_auth=True
    )
    reader = CertificateExpiryReader(files)
    assert reader.read() == (
        (cert, "certificate", later.timestamp()),
        (ca, "ca", soon.timestamp()),  # a bundle expires with its first certificate
    )
    renewed = datetime.datetime(2033, 3, 1, tzinfo=datetime.UTC)
    _self_signed(cert, not_after=renewed)
    assert reader.read()[0] == (cert, "certificate", renewed.timestamp())
    cert.write_text("not PEM")  # caught mid-write: left out, the scrape goes on
    assert reader.read() == ((ca, "ca", soon.timestamp()),)


async def test_a_tls_node_exports_its_certificates_expiry(
    tmp_path: Path, clock: ManualClock
) -> None:
    authority = make_authority(tmp_path / "pki", "cluster-ca")
    leaf = issue(authority, tmp_path / "pki", "node")
    config = node_config(
        tmp_path / "node",
        settings={
            "tls_cert_file": leaf.cert_file,
            "tls_key_file": leaf.key_file,
            "tls_ca_file": authority.cert_file,
        },
    )
    leaf_expiry = x509.load_pem_x509_certificate(leaf.cert_file.read_bytes()).not_valid_after_utc
    async with running_node(config, clock) as node:
        _, samples = await scrape(node)
    assert series(samples, EXPIRY, usage="certificate", file=str(leaf.cert_file)) == [
        leaf_expiry.timestamp()
    ]
    assert series(samples, EXPIRY, usage="ca", file=str(authority.cert_file)) == [
        authority.cert.not_valid_after_utc.timestamp()
    ]


async def test_a_plaintext_node_exports_no_certificate_expiry(fanout_node: Node) -> None:
    _, samples = await scrape(fanout_node)
    assert EXPIRY not in samples
