"""`shoal analytics`: the guide's tumbling-window application set up, run and removed from the
command line (over the gRPC kinesisanalyticsv2 service), its schema discovered from the stream.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from broker.cli import main
from broker.node import Node
from tests.analytics.conftest import MODULE_LOOP
from tests.analytics.test_api import TUMBLING
from tests.analytics.test_running import ticker_record
from tests.compat.conftest import call

pytestmark = [pytest.mark.integration, MODULE_LOOP]


async def test_the_analytics_commands(
    node: Node, kinesis: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = ["--endpoint", f"127.0.0.1:{node.grpc_port}"]

    async def shoal(*argv: str) -> str:
        capsys.readouterr()
        code: int = await asyncio.to_thread(main, [*endpoint, *argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    for stream in ("ticker", "counts"):
        await call(kinesis.create_stream, StreamName=stream, ShardCount=1)
    await call(
        kinesis.put_records,
        StreamName="ticker",
        Records=[ticker_record(("QXZ", "HEALTHCARE", -0.05, 84.51))],
    )
    code_file = tmp_path / "app.sql"
    code_file.write_text(TUMBLING)
    schema = json.loads(await shoal("analytics", "discover", "--stream", "ticker"))
    assert [c["Name"] for c in schema["RecordColumns"]] == [
        "TICKER_SYMBOL",
        "SECTOR",
        "CHANGE",
        "PRICE",
    ]
    assert "READY" in await shoal("analytics", "create", "tickers", "--code-file", str(code_file))
    assert "SOURCE_SQL_STREAM_001" in await shoal(
        "analytics", "add-input", "tickers", "--stream", "ticker"
    )
    await shoal("analytics", "add-output", "tickers", "--stream", "counts")
    assert "version 4" in await shoal(
        "analytics", "update-code", "tickers", "--code-file", str(code_file)
    )
    await shoal("analytics", "start", "tickers", "--from", "TRIM_HORIZON")
    listed = await shoal("analytics", "list")
    assert "tickers" in listed and "RUNNING" in listed and "v4" in listed
    detail = json.loads(await shoal("analytics", "describe", "tickers"))["ApplicationDetail"]
    sql = detail["ApplicationConfigurationDescription"]["SqlApplicationConfigurationDescription"]
    assert sql["InputDescriptions"][0]["InputStartingPositionConfiguration"] == {
        "InputStartingPosition": "TRIM_HORIZON"
    }
    await shoal("analytics", "stop", "tickers")
    await shoal("analytics", "delete", "tickers")
    capsys.readouterr()
    code = await asyncio.to_thread(main, [*endpoint, "analytics", "describe", "tickers"])
    assert code == 1
    assert "ResourceNotFoundException" in capsys.readouterr().err
