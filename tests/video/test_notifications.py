"""SNS notifications of tagged fragments (UpdateNotificationConfiguration; broker/video/
notifications.py): moto's server speaking SNS and SQS on loopback, the node reaching it
through boto3 with AWS_ENDPOINT_URL_SNS, an SQS queue subscribed to the topic to observe
what was sent (as AWS's guide does).

Goal: a fragment the producer tagged with AWS_KINESISVIDEO_NOTIFICATION produces AWS's
message once it is persisted, untagged fragments none; a notification that could not be
sent is sent after the node restarts (the obligation is stored with the fragment), and one
that was sent is not sent again (the progress is a lease in the metadata quorum).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from broker import limits
from broker.client.video_producer import PutMediaTarget, put_media
from broker.clock import ManualClock
from broker.video import ebml, mkv
from broker.video.acks import AckErrorId, AckEventType
from broker.video.notifications import SUBJECT
from tests.cluster.helpers import wait_formed
from tests.conftest import node_config, running_node
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server
from tests.support import LOOPBACK, ClusterProcesses, free_port
from tests.video.media import h264_mkv
from tests.video.test_control_plane import call, video_client
from tests.video.test_media_end_to_end import PRODUCER_START_S, _upload

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0
# The in-process node's delivery passes come this often, so that "a few passes" (what the test
# waits out when it shows that nothing is sent, or that refused publishes stay owed) is short.
PASS_INTERVAL_MS = 100
PASSES_S = 4 * PASS_INTERVAL_MS / 1000


def tags_element(*pairs: tuple[str, str], notify: bool = True) -> bytes:
    """A Tags element as the KVS producer SDKs write a notification request."""
    simple = [(mkv.NOTIFICATION_TAG, "")] if notify else []
    body = b"".join(
        ebml.element(
            mkv.SIMPLE_TAG,
            ebml.string_element(mkv.TAG_NAME, name) + ebml.string_element(mkv.TAG_STRING, value),
        )
        for name, value in [*simple, *pairs]
    )
    return ebml.element(mkv.TAGS, ebml.element(mkv.TAG, body))


def with_tags(data: bytes, tags: dict[int, bytes]) -> bytes:
    """`data` (a sized MKV stream) with `tags[i]` inserted before its i-th Cluster."""
    header = ebml.read_header(data, 0)
    assert header is not None and header.element_id == mkv.EBML_HEADER
    position = header.header_length + header.size
    segment = ebml.read_header(data, position)
    assert segment is not None and segment.element_id == mkv.SEGMENT
    out = bytearray(data[: position + segment.header_length])
    position += segment.header_length
    clusters = 0
    while position < len(data):
        element = ebml.read_header(data, position)
        assert element is not None
        end = position + element.header_length + element.size
        if element.element_id == mkv.CLUSTER:
            out += tags.get(clusters, b"")
            clusters += 1
        out += data[position:end]
        position = end
    return bytes(out)


def test_tags_before_a_cluster_ask_for_its_notification() -> None:
    data = with_tags(
        h264_mkv(frames=75, fps=25),
        {1: tags_element(("CAMERA", "porch"), ("EVENT", "motion")), 2: tags_element(notify=False)},
    )
    splitter = mkv.MkvSplitter()
    fragments = [
        e for e in splitter.feed(data) + splitter.finish() if isinstance(e, mkv.MkvFragment)
    ]
    assert [f.notification for f in fragments] == [
        None,
        (("CAMERA", "porch"), ("EVENT", "motion")),
        None,
    ]


@pytest.mark.parametrize(
    "pairs",
    [
        tuple((f"K{i}", "v") for i in range(limits.video_notification_keys_max + 1)),
        (("K" * 129, "v"),),
        (("K", "v" * 257),),
    ],
)
def test_notification_tags_over_aws_limits_are_error_4009(
    pairs: tuple[tuple[str, str], ...],
) -> None:
    data = with_tags(h264_mkv(frames=25, fps=25), {0: tags_element(*pairs)})
    with pytest.raises(mkv.MkvError) as error:
        mkv.MkvSplitter().feed(data)
    assert error.value.error_id is AckErrorId.FRAGMENT_METADATA_LIMIT_REACHED


def _client(server: S3Server, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def _subscribed_queue(server: S3Server, topic_arn: str, name: str) -> str:
    sqs, sns = _client(server, "sqs"), _client(server, "sns")
    queue_url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return queue_url


def _received(server: S3Server, queue_url: str) -> list[dict[str, Any]]:
    sqs = _client(server, "sqs")
    found: list[dict[str, Any]] = []
    while True:  # bounded: each round deletes what it received; ends at an empty answer
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        messages = answer.get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


async def _wait_for(server: S3Server, queue_url: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(DEADLINE_S):
        while len(found) < count:
            found += await asyncio.to_thread(_received, server, queue_url)
            await asyncio.sleep(0.2)
    return found


async def test_tagged_fragments_are_notified_at_least_once_across_a_restart(
    aws_server: S3Server, tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "video_notification_pass_interval_ms", PASS_INTERVAL_MS)
    for name, value in aws_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", aws_server.endpoint_url)
    sns = _client(aws_server, "sns")
    topic_arn: str = sns.create_topic(Name="doorbell")["TopicArn"]
    sns.delete_topic(TopicArn=topic_arn)  # SNS refuses until it is created again
    config = node_config(tmp_path / "node")
    async with running_node(config, clock) as node:
        kvs = video_client(node)
        await call(kvs.create_stream, StreamName="door", DataRetentionInHours=24)
        stream_arn = (await call(kvs.describe_stream, StreamName="door"))["StreamInfo"]["StreamARN"]
        await call(
            kvs.update_notification_configuration,
            StreamName="door",
            NotificationConfiguration={
                "Status": "ENABLED",
                "DestinationConfig": {"Uri": topic_arn},
            },
        )
        tagged = with_tags(h264_mkv(frames=75, fps=25), {1: tags_element(("EVENT", "ring"))})
        received_ms = clock.wall_ms()
        acks = await _upload(node, "door", tagged)
        persisted = [a.fragment_number for a in acks if a.event_type is AckEventType.PERSISTED]
        assert len(persisted) == 3
        await asyncio.sleep(PASSES_S)  # a few delivery passes, each refused
    # The node stops; a minute later (longer than a new configuration looks back) the topic
    # exists and the node runs again on the same disk: it sends what it owed, once.
    clock.advance(ms=60_000)
    assert sns.create_topic(Name="doorbell")["TopicArn"] == topic_arn
    queue_url = _subscribed_queue(aws_server, topic_arn, "doorbell-events")
    async with running_node(config, clock) as node:
        [envelope] = await _wait_for(aws_server, queue_url, 1)
        assert envelope["Type"] == "Notification"
        assert envelope["TopicArn"] == topic_arn
        assert envelope["Subject"] == SUBJECT
        assert json.loads(envelope["Message"]) == {
            "StreamArn": stream_arn,
            "FragmentNumber": persisted[1],
            "FragmentStartProducerTimestamp": round(PRODUCER_START_S * 1000) + 1000,
            "FragmentStartServerTimestamp": received_ms,
            "NotificationType": "PERSISTED",
            "NotificationPayload": {"EVENT": "ring"},
        }
        later = with_tags(
            h264_mkv(frames=50, fps=25, first_frame=75), {0: tags_element(("EVENT", "knock"))}
        )
        acks = await _upload(node, "door", later)
        knocked = next(a.fragment_number for a in acks if a.event_type is AckEventType.PERSISTED)
        [envelope] = await _wait_for(aws_server, queue_url, 1)
        message = json.loads(envelope["Message"])
        assert (message["FragmentNumber"], message["NotificationPayload"]) == (
            knocked,
            {"EVENT": "knock"},
        )
        await asyncio.sleep(PASSES_S)  # a few more passes: nothing is sent again
        assert await asyncio.to_thread(_received, aws_server, queue_url) == []


@pytest.mark.process
@pytest.mark.slow
async def test_a_persisted_notification_survives_kill_9(
    aws_server: S3Server, tmp_path: Path
) -> None:
    """A node process that acknowledged a tagged fragment PERSISTED but could not reach SNS
    is killed with SIGKILL; restarted (now reaching SNS), it sends the notification."""
    sns = _client(aws_server, "sns")
    topic_arn: str = sns.create_topic(Name="gate")["TopicArn"]
    queue_url = _subscribed_queue(aws_server, topic_arn, "gate-events")
    credentials = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }
    unreachable = f"http://{LOOPBACK}:{free_port()}"  # nothing listens: every publish fails
    processes = ClusterProcesses(
        tmp_path, size=1, extra_env={**credentials, "AWS_ENDPOINT_URL_SNS": unreachable}
    )
    node = processes.nodes[0]
    processes.start()
    try:
        await asyncio.to_thread(wait_formed, processes)
        endpoint = f"http://{LOOPBACK}:{node.http_port}"
        kvs = boto3.client(
            "kinesisvideo",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="x",
            aws_secret_access_key="y",
        )
        kvs.create_stream(StreamName="gate", DataRetentionInHours=24)
        kvs.update_notification_configuration(
            StreamName="gate",
            NotificationConfiguration={
                "Status": "ENABLED",
                "DestinationConfig": {"Uri": topic_arn},
            },
        )
        data = with_tags(h264_mkv(frames=50, fps=25), {0: tags_element(("EVENT", "open"))})
        target = PutMediaTarget(
            endpoint=endpoint, stream_name="gate", producer_start_timestamp_s=PRODUCER_START_S
        )
        acks = [ack async for ack in put_media(target, _one_piece(data))]
        owed = next(a.fragment_number for a in acks if a.event_type is AckEventType.PERSISTED)
        await asyncio.sleep(1.5)  # a delivery pass or two, refused
        node.kill()
        node.extra_env["AWS_ENDPOINT_URL_SNS"] = aws_server.endpoint_url
        node.start()
        await asyncio.to_thread(wait_formed, processes)
        [envelope] = await _wait_for(aws_server, queue_url, 1)
        assert json.loads(envelope["Message"])["FragmentNumber"] == owed
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop()


async def _one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data
