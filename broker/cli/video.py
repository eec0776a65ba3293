"""`shoal video ...`: Kinesis Video Streams from the command line.

    shoal video put STREAM [--file clip.mkv]     upload MKV (a file, or stdin with `-`)
    ffmpeg -i camera ... -f matroska - | shoal video put STREAM
    shoal video get STREAM [--start EARLIEST|NOW] > clip.mkv    GetMedia to stdout
    shoal video get STREAM | ffplay -

`put` speaks PutMedia as the KVS producer SDKs do (boto3 and the AWS CLI have no PutMedia):
GetDataEndpoint on the node's AWS door (`--http-endpoint`, env SHOAL_HTTP_ENDPOINT), then a
chunked `POST /putMedia` of the MKV as it is read, printing each fragment's acknowledgement as
it arrives. Every fragment is kept until PERSISTED; if the node fails, the upload resumes on
the next node of `--http-endpoint` (a comma-separated list) from the first fragment not
acknowledged (`client/video_producer.produce`). It exits 0 when every fragment was PERSISTED
(or RECEIVED, with `--no-retention`), 1 on an ERROR acknowledgement or a refused request.
Requests are SigV4-signed when AWS credentials are found the usual way (environment, profile).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import IO, Any

import botocore.config
import botocore.exceptions
import botocore.session

from broker.cli.common import REGION_HELP, add_group
from broker.client.video_producer import PutMediaRefused, PutMediaTarget, produce
from broker.clock import SystemClock
from broker.video.acks import Ack, AckEventType
from broker.video.mkv import MkvError

DEFAULT_HTTP_ENDPOINT = "http://127.0.0.1:4567"
_READ_BYTES = 64 * 1024


def add_commands(commands: Any) -> None:
    group = add_group(commands, "video", help_text="Kinesis Video Streams: upload and read media")
    put = group.add_parser("put", help="upload MKV (from a file or stdin) with PutMedia")
    put.add_argument("stream", help="the video stream's name")
    put.add_argument("--file", default="-", help="MKV file to send ('-' for stdin, the default)")
    _add_endpoint_options(put)
    put.add_argument(
        "--timecode-type",
        choices=("RELATIVE", "ABSOLUTE"),
        default="RELATIVE",
        help="Cluster timecodes relative to the producer start (default) or absolute",
    )
    put.add_argument(
        "--producer-start-timestamp",
        type=float,
        default=None,
        help="seconds since the epoch when recording started (default: now)",
    )
    put.add_argument(
        "--no-retention",
        action="store_true",
        help="the stream keeps no data: a fragment is done once RECEIVED (never PERSISTED)",
    )
    put.set_defaults(connect=None, run=_put)
    get = group.add_parser("get", help="GetMedia: the stream's fragments as MKV on stdout")
    get.add_argument("stream", help="the video stream's name")
    get.add_argument(
        "--start",
        choices=("EARLIEST", "NOW"),
        default="EARLIEST",
        help="from the oldest fragment kept (default) or from the next one to arrive",
    )
    _add_endpoint_options(get)
    get.set_defaults(connect=None, run=_get)


def _add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http-endpoint",
        default=os.environ.get("SHOAL_HTTP_ENDPOINT", DEFAULT_HTTP_ENDPOINT),
        help="the node's AWS door, http(s)://host:port, or several comma-separated to fail "
        "over between (env SHOAL_HTTP_ENDPOINT)",
    )
    parser.add_argument("--region", default=argparse.SUPPRESS, help=REGION_HELP)


def _region(args: argparse.Namespace) -> str:
    """The region the AWS door's calls are signed for (video acts in the node's region; a
    signature needs one: us-east-1 when no rule names one)."""
    return str(args.region or "us-east-1")


async def _read(source: IO[bytes]) -> AsyncIterator[bytes]:
    while True:  # ends at the end of the file or pipe
        chunk = await asyncio.to_thread(
            source.read1 if hasattr(source, "read1") else source.read, _READ_BYTES
        )
        if not chunk:
            return
        yield chunk


def _data_endpoint(
    args: argparse.Namespace, session: Any, *, api: str = "PUT_MEDIA", endpoint: str | None = None
) -> str:
    client = session.create_client(
        "kinesisvideo",
        endpoint_url=endpoint or args.http_endpoint.split(",")[0].strip(),
        region_name=_region(args),
        config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 3}),
    )
    answer = client.get_data_endpoint(StreamName=args.stream, APIName=api)
    data_endpoint: str = answer["DataEndpoint"]
    return data_endpoint


def _put(_client: None, args: argparse.Namespace) -> int:
    session = botocore.session.get_session()
    credentials = session.get_credentials()
    if credentials is None:  # no keys: an unsigned request, which a node without keys takes
        session.set_credentials("anonymous", "anonymous")
    nodes = [url.strip() for url in args.http_endpoint.split(",") if url.strip()]
    try:
        first = _data_endpoint(args, session, endpoint=nodes[0])
    except botocore.exceptions.ClientError as error:
        details = error.response["Error"]
        print(f"error: {details['Code']}: {details.get('Message', '')}", file=sys.stderr)
        return 1
    except botocore.exceptions.EndpointConnectionError:
        print(f"error: cannot reach Shoal at {nodes[0]}", file=sys.stderr)
        return 2
    start_s = (
        args.producer_start_timestamp
        if args.producer_start_timestamp is not None
        else SystemClock().wall_ms() / 1000
    )
    targets = [
        PutMediaTarget(
            endpoint=endpoint,
            stream_name=args.stream,
            timecode_type=args.timecode_type,
            producer_start_timestamp_s=start_s,
            region=_region(args),
            credentials=credentials,
        )
        for endpoint in [first, *(n for n in nodes[1:] if n != first)]
    ]
    if args.file == "-":
        return asyncio.run(_upload(targets, sys.stdin.buffer, args))
    with open(args.file, "rb") as source:
        return asyncio.run(_upload(targets, source, args))


async def _upload(
    targets: list[PutMediaTarget], source: IO[bytes], args: argparse.Namespace
) -> int:
    def show(ack: Ack) -> None:
        if args.json:
            print(ack.encode().decode().strip(), flush=True)
        elif ack.event_type is AckEventType.PERSISTED:
            print(f"PERSISTED {ack.timecode_ms} {ack.fragment_number}", flush=True)

    try:
        report = await produce(
            targets, _read(source), on_ack=show, keep_persisted=not args.no_retention
        )
    except PutMediaRefused as refused:
        message = refused.message
        with contextlib.suppress(ValueError):
            message = json.loads(message).get("message", message)
        print(f"error: {refused.error_type or refused.status}: {message}", file=sys.stderr)
        return 1
    except MkvError as error:
        print(f"error: the input is not MKV as PutMedia takes it: {error.message}", file=sys.stderr)
        return 1
    if report.error is not None:
        ack = report.error
        assert ack.error_id is not None
        print(
            f"error: fragment {ack.timecode_ms}: {ack.error_id.value} "
            f"{ack.error_id.name}: {ack.error_message or ''}",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print(
            f"{report.received} fragments received, {report.persisted} persisted"
            + (f" ({report.sessions} sessions)" if report.sessions > 1 else ""),
            flush=True,
        )
    return 0


def _get(_client: None, args: argparse.Namespace) -> int:
    """GetMedia from the stream's data endpoint, written to stdout as it arrives (it ends
    a few seconds after the newest fragment, as AWS's GetMedia does)."""
    session = botocore.session.get_session()
    if session.get_credentials() is None:
        session.set_credentials("anonymous", "anonymous")
    try:
        endpoint = _data_endpoint(args, session, api="GET_MEDIA")
        media: Any = session.create_client(
            "kinesis-video-media", endpoint_url=endpoint, region_name=_region(args)
        )
        response = media.get_media(
            StreamName=args.stream, StartSelector={"StartSelectorType": args.start}
        )
    except botocore.exceptions.ClientError as error:
        details = error.response["Error"]
        print(f"error: {details['Code']}: {details.get('Message', '')}", file=sys.stderr)
        return 1
    except botocore.exceptions.EndpointConnectionError:
        print(f"error: cannot reach Shoal at {args.http_endpoint}", file=sys.stderr)
        return 2
    body = response["Payload"]
    try:
        for chunk in body.iter_chunks(_READ_BYTES):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    finally:
        body.close()
    return 0
