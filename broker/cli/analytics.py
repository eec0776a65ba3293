"""`shoal analytics ...`: SQL applications (kinesisanalyticsv2 over gRPC, `AnalyticsClient`).

    shoal analytics list
    shoal analytics discover --stream ticker            the schema of a stream's records
    shoal analytics create tickers --code-file app.sql
    shoal analytics add-input tickers --stream ticker   (schema discovered, or --schema-file)
    shoal analytics add-output tickers --stream counts --in-app-stream DESTINATION_SQL_STREAM
    shoal analytics update-code tickers --code-file app.sql
    shoal analytics start tickers --from TRIM_HORIZON
    shoal analytics describe tickers
    shoal analytics stop tickers
    shoal analytics delete tickers

Changes name the application's current version (read just before), as the AWS CLI user
would pass --current-application-version-id. Streams are named in the node's account and
region.
"""

from __future__ import annotations

import argparse
import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from broker import arns
from broker.cli.common import add_group, print_response
from broker.tls import credentials_from_arguments

_POSITIONS = ("NOW", "TRIM_HORIZON", "LAST_STOPPED_POINT")


def add_commands(commands: Any) -> None:
    group = add_group(commands, "analytics", help_text="SQL applications (Kinesis Data Analytics)")
    listing = group.add_parser("list", help="the applications, with status and version")
    listing.set_defaults(connect=_client, run=_list)
    describe = group.add_parser("describe", help="an application's full description")
    describe.add_argument("name")
    describe.set_defaults(connect=_client, run=_describe)
    discover = group.add_parser("discover", help="infer an input schema from a stream's records")
    discover.add_argument("--stream", required=True)
    discover.set_defaults(connect=_client, run=_discover)
    create = group.add_parser("create", help="create a SQL-1_0 application from a .sql file")
    create.add_argument("name")
    create.add_argument("--code-file", type=Path, required=True)
    create.add_argument("--description", default="")
    create.add_argument("--role", default="arn:aws:iam::000000000000:role/shoal-analytics")
    create.set_defaults(connect=_client, run=_create)
    add_input = group.add_parser("add-input", help="read a stream (schema discovered or given)")
    add_input.add_argument("name")
    add_input.add_argument("--stream", required=True)
    add_input.add_argument("--schema-file", type=Path, help="an InputSchema as JSON")
    add_input.add_argument("--prefix", default="SOURCE_SQL_STREAM")
    add_input.add_argument("--parallelism", type=int, default=1)
    add_input.set_defaults(connect=_client, run=_add_input)
    add_output = group.add_parser("add-output", help="write an in-application stream out")
    add_output.add_argument("name")
    add_output.add_argument("--stream", required=True, help="a data stream")
    add_output.add_argument("--in-app-stream", default="DESTINATION_SQL_STREAM")
    add_output.add_argument("--format", choices=("JSON", "CSV"), default="JSON")
    add_output.set_defaults(connect=_client, run=_add_output)
    update = group.add_parser("update-code", help="replace the application's SQL")
    update.add_argument("name")
    update.add_argument("--code-file", type=Path, required=True)
    update.set_defaults(connect=_client, run=_update_code)
    start = group.add_parser("start", help="run the application")
    start.add_argument("name")
    start.add_argument("--from", dest="position", choices=_POSITIONS, default="NOW")
    start.set_defaults(connect=_client, run=_start)
    for verb, run in (("stop", _stop), ("delete", _delete)):
        parser = group.add_parser(verb, help=f"{verb} the application")
        parser.add_argument("name")
        parser.set_defaults(connect=_client, run=run)


def _client(args: argparse.Namespace) -> AbstractContextManager[Any]:
    from broker.client.analytics import AnalyticsClient  # the gRPC stubs: only for this group

    return AnalyticsClient(args.endpoint, credentials=credentials_from_arguments(args))


def _detail(client: Any, name: str) -> dict[str, Any]:
    answer = client.call("DescribeApplication", {"ApplicationName": name})
    detail: dict[str, Any] = answer["ApplicationDetail"]
    return detail


def _stream_arn(detail_or_region: dict[str, Any], stream: str) -> str:
    _, _, _, region, account, _ = str(detail_or_region["ApplicationARN"]).split(":", 5)
    return arns.regional("kinesis", region, account, f"stream/{stream}")


def _list(client: Any, args: argparse.Namespace) -> int:
    answer = client.call("ListApplications", {})
    lines = [
        f"{s['ApplicationName']:<32} {s['ApplicationStatus']:<10} v{s['ApplicationVersionId']}"
        f"  {s['RuntimeEnvironment']}"
        for s in answer.get("ApplicationSummaries", [])
    ]
    return print_response(args, answer, "\n".join(lines) or "(no applications)")


def _describe(client: Any, args: argparse.Namespace) -> int:
    return print_response(args, {"ApplicationDetail": _detail(client, args.name)}, None)


def _discover(client: Any, args: argparse.Namespace) -> int:
    arn = f"arn:aws:kinesis:::stream/{args.stream}"  # a stream of the node's account
    answer = client.call("DiscoverInputSchema", _discover_request(arn))
    return print_response(args, answer, json.dumps(answer["InputSchema"], indent=2))


def _discover_request(stream_arn: str) -> dict[str, Any]:
    return {
        "ResourceARN": stream_arn,
        "ServiceExecutionRole": "arn:aws:iam::000000000000:role/shoal-analytics",
        "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
    }


def _create(client: Any, args: argparse.Namespace) -> int:
    code = args.code_file.read_text()
    answer = client.call(
        "CreateApplication",
        {
            "ApplicationName": args.name,
            "ApplicationDescription": args.description,
            "RuntimeEnvironment": "SQL-1_0",
            "ServiceExecutionRole": args.role,
            "ApplicationConfiguration": {
                "ApplicationCodeConfiguration": {
                    "CodeContentType": "PLAINTEXT",
                    "CodeContent": {"TextContent": code},
                }
            },
        },
    )
    detail = answer["ApplicationDetail"]
    return print_response(args, answer, f"{detail['ApplicationARN']} {detail['ApplicationStatus']}")


def _add_input(client: Any, args: argparse.Namespace) -> int:
    detail = _detail(client, args.name)
    arn = _stream_arn(detail, args.stream)
    if args.schema_file is not None:
        schema = json.loads(args.schema_file.read_text())
    else:
        schema = client.call("DiscoverInputSchema", _discover_request(arn))["InputSchema"]
    answer = client.call(
        "AddApplicationInput",
        {
            "ApplicationName": args.name,
            "CurrentApplicationVersionId": detail["ApplicationVersionId"],
            "Input": {
                "NamePrefix": args.prefix,
                "KinesisStreamsInput": {"ResourceARN": arn},
                "InputParallelism": {"Count": args.parallelism},
                "InputSchema": schema,
            },
        },
    )
    (described,) = answer["InputDescriptions"][-1:]
    text = f"input {described['InputId']}: {', '.join(described['InAppStreamNames'])} <- {arn}"
    return print_response(args, answer, text)


def _add_output(client: Any, args: argparse.Namespace) -> int:
    detail = _detail(client, args.name)
    arn = _stream_arn(detail, args.stream)
    answer = client.call(
        "AddApplicationOutput",
        {
            "ApplicationName": args.name,
            "CurrentApplicationVersionId": detail["ApplicationVersionId"],
            "Output": {
                "Name": args.in_app_stream,
                "KinesisStreamsOutput": {"ResourceARN": arn},
                "DestinationSchema": {"RecordFormatType": args.format},
            },
        },
    )
    described = answer["OutputDescriptions"][-1]
    return print_response(
        args, answer, f"output {described['OutputId']}: {args.in_app_stream} -> {arn}"
    )


def _update_code(client: Any, args: argparse.Namespace) -> int:
    detail = _detail(client, args.name)
    answer = client.call(
        "UpdateApplication",
        {
            "ApplicationName": args.name,
            "CurrentApplicationVersionId": detail["ApplicationVersionId"],
            "ApplicationConfigurationUpdate": {
                "ApplicationCodeConfigurationUpdate": {
                    "CodeContentUpdate": {"TextContentUpdate": args.code_file.read_text()}
                }
            },
        },
    )
    version = answer["ApplicationDetail"]["ApplicationVersionId"]
    return print_response(args, answer, f"{args.name} now at version {version}")


def _start(client: Any, args: argparse.Namespace) -> int:
    detail = _detail(client, args.name)
    inputs = detail["ApplicationConfigurationDescription"]["SqlApplicationConfigurationDescription"]
    configurations = [
        {
            "InputId": described["InputId"],
            "InputStartingPositionConfiguration": {"InputStartingPosition": args.position},
        }
        for described in inputs.get("InputDescriptions", [])
    ]
    answer = client.call(
        "StartApplication",
        {
            "ApplicationName": args.name,
            "RunConfiguration": {"SqlRunConfigurations": configurations},
        },
    )
    return print_response(args, answer, f"{args.name} starting (input from {args.position})")


def _stop(client: Any, args: argparse.Namespace) -> int:
    answer = client.call("StopApplication", {"ApplicationName": args.name})
    return print_response(args, answer, f"{args.name} stopping")


def _delete(client: Any, args: argparse.Namespace) -> int:
    detail = _detail(client, args.name)
    answer = client.call(
        "DeleteApplication",
        {"ApplicationName": args.name, "CreateTimestamp": detail["CreateTimestamp"]},
    )
    return print_response(args, answer, f"{args.name} deleting")
