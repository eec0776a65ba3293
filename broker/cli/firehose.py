"""`shoal firehose ...`: delivery streams (Data Firehose) over a node's gRPC FirehoseService.

    shoal firehose create NAME --s3-bucket B [--prefix P] [--compression GZIP]
                                [--buffer-mib 5 --buffer-seconds 300] [--wait]
    shoal firehose create NAME --http-url https://... --s3-bucket BACKUP [--wait]
    shoal firehose create NAME --request create.json [--wait]   any CreateDeliveryStream request
    shoal firehose list
    shoal firehose describe NAME
    shoal firehose delete NAME [--wait]
    shoal firehose put NAME [DATA]                 one record (DATA, or stdin)
    shoal firehose put-batch NAME [--file F]       one record per line (newline kept), 500 a call

Requests and answers have the AWS shapes (`--json` prints the answer as AWS returns it).
`put-batch` retries the records a PutRecordBatch did not take (FailedPutCount) with backoff, so
it exits 0 only when every line was acknowledged. RoleARN is required by the API and not used
by Shoal: `--role-arn` defaults to a placeholder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import symbol_database
from google.protobuf.message import Message

from broker import error_messages, limits
from broker.api.firehose.v1 import firehose_pb2
from broker.cli.common import add_group, print_response
from broker.cli.wait import add_wait_arguments, wait_until
from broker.errors import ErrorCode, ShoalError
from broker.tls import credentials_from_arguments, open_channel
from broker.wire.codec import dict_to_message, message_to_dict
from broker.wire.error_mapping import error_from_rpc_error

_SERVICE = firehose_pb2.DESCRIPTOR.services_by_name["FirehoseService"]
_TIMEOUT_S = 30.0
_BATCH_RECORDS_MAX = 500  # PutRecordBatch's limit
_BATCH_BYTES_MAX = 4 * 1024 * 1024
_RETRIES_MAX = 10
PLACEHOLDER_ROLE = "arn:aws:iam::000000000000:role/firehose"


class FirehoseClient:
    """A blocking client of the native FirehoseService taking and returning AWS-shaped dicts."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None) -> None:
        options = [
            ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
            ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
        ]
        self._channel = open_channel(target, credentials, options)

    def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        method = _SERVICE.methods_by_name[operation]
        database = symbol_database.Default()
        input_class: type[Message] = database.GetSymbol(method.input_type.full_name)
        output_class: type[Message] = database.GetSymbol(method.output_type.full_name)
        stub = self._channel.unary_unary(
            f"/{_SERVICE.full_name}/{operation}",
            request_serializer=input_class.SerializeToString,
            response_deserializer=output_class.FromString,
        )
        try:
            response = stub(dict_to_message(request, input_class), timeout=_TIMEOUT_S)
        except grpc.RpcError as error:
            raise error_from_rpc_error(error) from error
        return message_to_dict(response, empty_lists=True)

    def close(self) -> None:
        self._channel.close()


@contextlib.contextmanager
def firehose_client(args: argparse.Namespace) -> Iterator[FirehoseClient]:
    client = FirehoseClient(args.endpoint, credentials_from_arguments(args))
    try:
        yield client
    finally:
        client.close()


def add_commands(commands: Any) -> None:
    group = add_group(commands, "firehose", help_text="Data Firehose delivery streams")
    create = group.add_parser("create", help="create a delivery stream")
    create.add_argument("name")
    target = create.add_mutually_exclusive_group(required=True)
    target.add_argument("--s3-bucket", help="deliver to this bucket (or back an endpoint up)")
    target.add_argument("--request", help="a JSON file holding a CreateDeliveryStream request")
    create.add_argument("--http-url", help="deliver to this HTTP endpoint (https://...)")
    create.add_argument("--prefix", default="", help="object key prefix")
    create.add_argument(
        "--compression",
        choices=("UNCOMPRESSED", "GZIP", "ZIP", "Snappy", "HADOOP_SNAPPY"),
        default="UNCOMPRESSED",
    )
    create.add_argument("--buffer-mib", type=int, default=5, help="BufferingHints.SizeInMBs")
    create.add_argument(
        "--buffer-seconds", type=int, default=300, help="BufferingHints.IntervalInSeconds"
    )
    create.add_argument("--role-arn", default=PLACEHOLDER_ROLE)
    add_wait_arguments(create, what="the delivery stream is ACTIVE")
    create.set_defaults(run=_create)

    listing = group.add_parser("list", help="list delivery streams")
    listing.set_defaults(run=_list)

    describe = group.add_parser("describe", help="describe a delivery stream")
    describe.add_argument("name")
    describe.set_defaults(run=_describe)

    delete = group.add_parser("delete", help="delete a delivery stream")
    delete.add_argument("name")
    add_wait_arguments(delete, what="the delivery stream is gone")
    delete.set_defaults(run=_delete)

    put = group.add_parser("put", help="put one record (PutRecord)")
    put.add_argument("name")
    put.add_argument("data", nargs="?", help="the record's data (default: read stdin)")
    put.set_defaults(run=_put)

    batch = group.add_parser("put-batch", help="put each line as a record (PutRecordBatch)")
    batch.add_argument("name")
    batch.add_argument("--file", default="-", help="input file ('-' for stdin, the default)")
    batch.set_defaults(run=_put_batch)

    for parser in (create, listing, describe, delete, put, batch):
        parser.set_defaults(connect=firehose_client)


def _create_request(args: argparse.Namespace) -> dict[str, Any]:
    if args.request:
        with open(args.request, encoding="utf-8") as source:
            request: dict[str, Any] = json.load(source)
        request["DeliveryStreamName"] = args.name
        return request
    hints = {"SizeInMBs": args.buffer_mib, "IntervalInSeconds": args.buffer_seconds}
    s3 = {
        "RoleARN": args.role_arn,
        "BucketARN": f"arn:aws:s3:::{args.s3_bucket}",
        "Prefix": args.prefix,
        "BufferingHints": hints,
        "CompressionFormat": args.compression,
    }
    if args.http_url:
        return {
            "DeliveryStreamName": args.name,
            "HttpEndpointDestinationConfiguration": {
                "EndpointConfiguration": {"Url": args.http_url},
                "BufferingHints": hints,
                "S3Configuration": {**s3, "CompressionFormat": "UNCOMPRESSED"},
            },
        }
    return {"DeliveryStreamName": args.name, "ExtendedS3DestinationConfiguration": s3}


def _status(client: FirehoseClient, name: str) -> str:
    described = client.call("DescribeDeliveryStream", {"DeliveryStreamName": name})
    description = described["DeliveryStreamDescription"]
    status = str(description["DeliveryStreamStatus"])
    if status == "CREATING_FAILED":
        failure = description.get("FailureDescription") or {}
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.delivery_stream_creating_failed(
                name=name, failure_type=failure.get("Type"), details=failure.get("Details")
            ),
        )
    return status


def _create(client: FirehoseClient, args: argparse.Namespace) -> int:
    response = client.call("CreateDeliveryStream", _create_request(args))
    if args.wait:

        def active() -> tuple[bool, str]:
            status = _status(client, args.name)
            return status == "ACTIVE", status

        wait_until(active, timeout_s=args.timeout, what=f"{args.name} ACTIVE")
    return print_response(args, response, response["DeliveryStreamARN"])


def _list(client: FirehoseClient, args: argparse.Namespace) -> int:
    names: list[str] = []
    request: dict[str, Any] = {"Limit": 10000}
    while True:
        response = client.call("ListDeliveryStreams", request)
        names.extend(response["DeliveryStreamNames"])
        if not response.get("HasMoreDeliveryStreams") or not response["DeliveryStreamNames"]:
            break
        request["ExclusiveStartDeliveryStreamName"] = names[-1]
    return print_response(args, {"DeliveryStreamNames": names}, "\n".join(names))


def _describe(client: FirehoseClient, args: argparse.Namespace) -> int:
    response = client.call("DescribeDeliveryStream", {"DeliveryStreamName": args.name})
    return print_response(args, response)


def _delete(client: FirehoseClient, args: argparse.Namespace) -> int:
    response = client.call("DeleteDeliveryStream", {"DeliveryStreamName": args.name})
    if args.wait:

        def gone() -> tuple[bool, str]:
            try:
                return False, _status(client, args.name)
            except ShoalError as error:
                if error.code is ErrorCode.RESOURCE_NOT_FOUND:
                    return True, "gone"
                raise

        wait_until(gone, timeout_s=args.timeout, what=f"{args.name} deleted")
    return print_response(args, response, f"deleted {args.name}")


def _put(client: FirehoseClient, args: argparse.Namespace) -> int:
    data = args.data.encode() if args.data is not None else sys.stdin.buffer.read()
    response = client.call("PutRecord", {"DeliveryStreamName": args.name, "Record": {"Data": data}})
    return print_response(args, response, response["RecordId"])


def _batches(lines: Iterator[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for line in lines:
        if batch and (len(batch) == _BATCH_RECORDS_MAX or size + len(line) > _BATCH_BYTES_MAX):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line)
    if batch:
        yield batch


def _put_batch(client: FirehoseClient, args: argparse.Namespace) -> int:
    source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    acknowledged = 0
    with source:
        for batch in _batches(iter(source)):
            pending = batch
            for attempt in range(_RETRIES_MAX + 1):
                response = client.call(
                    "PutRecordBatch",
                    {"DeliveryStreamName": args.name, "Records": [{"Data": d} for d in pending]},
                )
                answers = response["RequestResponses"]
                acknowledged += sum(1 for answer in answers if answer.get("RecordId"))
                pending = [
                    data
                    for data, answer in zip(pending, answers, strict=True)
                    if answer.get("ErrorCode")
                ]
                if not pending:
                    break
                if attempt == _RETRIES_MAX:
                    print(
                        f"error: {len(pending)} records not acknowledged after "
                        f"{_RETRIES_MAX} retries",
                        file=sys.stderr,
                    )
                    return 1
                time.sleep(min(2.0, 0.1 * 2**attempt))  # backoff before the retry
    return print_response(args, {"Acknowledged": acknowledged}, f"{acknowledged} records put")
