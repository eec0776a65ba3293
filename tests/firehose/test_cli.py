"""`shoal firehose ...` against an in-process node (its gRPC FirehoseService), S3 on moto's
server: create with --wait, list, describe, put, put-batch from a file, delete with --wait,
and a refused request's one-line error and exit code."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from broker.cli import main
from broker.clock import ManualClock
from broker.node import Node
from tests.firehose.conftest import advance_until
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


async def test_the_firehose_commands(
    fh_node: Node,
    s3_server: S3Server,
    clock: ManualClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = ["--endpoint", f"127.0.0.1:{fh_node.grpc_port}"]

    async def shoal(*argv: str) -> tuple[int, str, str]:
        code: int = await asyncio.to_thread(main, [*endpoint, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    s3_server.create_bucket("cli-out")
    code, out, _ = await shoal(
        "firehose", "create", "cli-stream", "--s3-bucket", "cli-out", "--prefix", "cli/",
        "--compression", "GZIP", "--buffer-mib", "1", "--buffer-seconds", "60", "--wait",
    )  # fmt: skip
    assert code == 0
    assert out.strip().endswith(":deliverystream/cli-stream")
    code, out, _ = await shoal("firehose", "list")
    assert code == 0 and "cli-stream" in out.split()  # with the package's other streams
    code, out, _ = await shoal("--json", "firehose", "describe", "cli-stream")
    description = json.loads(out)["DeliveryStreamDescription"]
    assert description["DeliveryStreamStatus"] == "ACTIVE"
    extended = description["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert (extended["Prefix"], extended["CompressionFormat"]) == ("cli/", "GZIP")

    code, out, _ = await shoal("firehose", "put", "cli-stream", "one\n")
    assert code == 0 and out.strip()
    lines = [f"line-{i}\n".encode() for i in range(1200)]  # three PutRecordBatch calls
    (tmp_path / "records").write_bytes(b"".join(lines))
    code, out, _ = await shoal(
        "firehose", "put-batch", "cli-stream", "--file", str(tmp_path / "records")
    )
    assert (code, out.strip()) == (0, "1200 records put")
    got: list[bytes] = []

    async def all_delivered() -> bool:
        nonlocal got
        objects = await asyncio.to_thread(s3_server.objects, "cli-out", "cli/")
        got = [x for body in objects.values() for x in gzip.decompress(body).splitlines(True)]
        return len(got) >= 1201

    await advance_until(clock, all_delivered, interval_ms=60_000)
    assert sorted(got) == sorted([b"one\n", *lines])

    code, _, err = await shoal("firehose", "create", "cli-stream", "--s3-bucket", "cli-out")
    assert code == 1
    assert err.startswith("error: ResourceInUseException")
    code, out, _ = await shoal("firehose", "delete", "cli-stream", "--wait")
    assert (code, out.strip()) == (0, "deleted cli-stream")
    code, _, err = await shoal("firehose", "describe", "cli-stream")
    assert code == 1 and "ResourceNotFoundException" in err


def test_put_batch_splits_at_aws_limits() -> None:
    from broker.cli.firehose import _batches

    sizes = [len(batch) for batch in _batches(iter([b"x\n"] * 1201))]
    assert sizes == [500, 500, 201]
    big = [b"y" * (1024 * 1024)] * 9
    assert [len(batch) for batch in _batches(iter(big))] == [4, 4, 1]
