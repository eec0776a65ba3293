"""`shoal audit`: the audit trail's CloudTrail events, as JSON lines (ship them anywhere).

    shoal audit                                   the last 1000 events, one JSON object a line
    shoal audit --since 2026-01-01T00:00:00Z --until 2026-01-02T00:00:00Z
    shoal audit --since 15m --principal arn:aws:iam::111122223333:user/alice --errors
    shoal audit --event-name CreateStream --table  a short table instead of JSON lines

Signed like `shoal iam` (`--access-key-id`/`--secret-access-key` or SHOAL_ACCESS_KEY_ID /
SHOAL_SECRET_ACCESS_KEY); with access control on, the action is `shoal:LookupEvents`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from datetime import UTC, datetime
from typing import Any

from broker.cli.common import REGION_HELP
from broker.cli.iam import IamClient, iam_client

_RELATIVE = re.compile(r"([0-9]+)([smhd])")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _moment(text: str) -> int:
    """Epoch ms from ISO 8601, or a span back from now (`15m`, `2h`, `7d`)."""
    relative = _RELATIVE.fullmatch(text)
    if relative is not None:
        now = int(datetime.now(tz=UTC).timestamp() * 1000)
        return now - int(relative.group(1)) * _UNIT_MS[relative.group(2)]
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected ISO 8601 or 15m/2h/7d, got {text!r}") from exc


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("audit", help="the audit trail (CloudTrail events)")
    parser.add_argument("--since", type=_moment, default=0, help="ISO 8601, or 15m/2h/7d ago")
    parser.add_argument("--until", type=_moment, default=0)
    parser.add_argument("--principal", default="", help="only this principal's calls")
    parser.add_argument("--account", default="", help="only this account's calls")
    parser.add_argument("--event-name", default="", help="only this operation")
    parser.add_argument("--errors", action="store_true", help="only refused or failed calls")
    parser.add_argument("--limit", type=int, default=1_000)
    parser.add_argument("--table", action="store_true", help="a short table, not JSON lines")
    parser.add_argument("--access-key-id", default=os.environ.get("SHOAL_ACCESS_KEY_ID"))
    parser.add_argument("--secret-access-key", default=os.environ.get("SHOAL_SECRET_ACCESS_KEY"))
    parser.add_argument("--region", default=argparse.SUPPRESS, help=REGION_HELP)
    parser.set_defaults(connect=iam_client, run=_run, group_help=parser.print_help)


def _run(client: IamClient, args: argparse.Namespace) -> int:
    from broker.api.iam.v1 import iam_pb2

    answer = client.call(
        "LookupEvents",
        iam_pb2.LookupEventsRequest(
            start_ms=args.since,
            end_ms=args.until,
            principal_arn=args.principal,
            event_name=args.event_name,
            account_id=args.account,
            only_errors=args.errors,
            max_results=args.limit,
        ),
    )
    for line in answer.events:
        if not args.table:
            print(line)
            continue
        event = json.loads(line)
        who = event["userIdentity"].get("arn", event["userIdentity"]["type"])
        outcome = event.get("errorCode", "OK")
        source = event["eventSource"].split(".")[0]
        print(
            f"{event['eventTime']}  {event['sourceIPAddress']:<15}  {who:<45}  "
            f"{source}:{event['eventName']:<24}  {outcome}"
        )
    return 0
