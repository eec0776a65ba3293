"""Iceberg routing rules (pure): which table and operation a record's routing information
names, AWS's single-table default, the checks, and the Lambda's otfMetadata."""

from __future__ import annotations

import base64
import json

import pytest

from broker.firehose import iceberg_routing, processing
from broker.firehose.iceberg_routing import Route, RoutingError

CONFIGURATION = {
    "DestinationTableConfigurationList": [
        {"DestinationDatabaseName": "shop", "DestinationTableName": "orders", "UniqueKeys": ["id"]},
        {"DestinationDatabaseName": "shop", "DestinationTableName": "refunds"},
    ]
}
TABLES = iceberg_routing.table_configs(CONFIGURATION)
ONE_TABLE = iceberg_routing.table_configs(
    {"DestinationTableConfigurationList": CONFIGURATION["DestinationTableConfigurationList"][1:]}
)


def test_a_route_names_the_table_and_the_operation() -> None:
    named = {"destinationDatabaseName": "shop", "destinationTableName": "orders"}
    assert iceberg_routing.route(named, TABLES) == Route(
        table=("shop", "orders"), operation="insert"
    )
    update = {**named, "operation": "UPDATE"}
    assert iceberg_routing.route(update, TABLES).operation == "update"
    # A single listed table is the default; routing information takes precedence over it.
    assert iceberg_routing.route(None, ONE_TABLE).table == ("shop", "refunds")
    assert iceberg_routing.route(named, ONE_TABLE).table == ("shop", "orders")


@pytest.mark.parametrize(
    ("information", "code"),
    [
        (None, "Iceberg.MissingRoutingInformation"),  # several tables, no route
        (
            {"destinationDatabaseName": "shop", "destinationTableName": "orders", "operation": "x"},
            "Iceberg.InvalidOperation",
        ),
        (
            {
                "destinationDatabaseName": "shop",
                "destinationTableName": "refunds",
                "operation": "delete",
            },
            "Iceberg.MissingUniqueKeys",
        ),
    ],
)
def test_records_that_cannot_be_routed(information: dict[str, str] | None, code: str) -> None:
    with pytest.raises(RoutingError) as raised:
        iceberg_routing.route(information, TABLES)
    assert raised.value.code == code


def test_operations_run_in_order_as_consecutive_steps() -> None:
    assert iceberg_routing.steps(["insert", "insert", "update", "insert", "delete"]) == [
        ("insert", [0, 1]),
        ("update", [2]),
        ("insert", [3]),
        ("delete", [4]),
    ]


def test_the_table_list_is_checked() -> None:
    assert iceberg_routing.check(CONFIGURATION) is None
    assert "at least one" in str(iceberg_routing.check({}))
    twice = {
        "DestinationTableConfigurationList": CONFIGURATION["DestinationTableConfigurationList"] * 2
    }
    assert "twice" in str(iceberg_routing.check(twice))


def test_the_lambdas_otf_metadata_is_the_records_route() -> None:
    route = {
        "destinationDatabaseName": "shop",
        "destinationTableName": "orders",
        "operation": "update",
    }
    payload = json.dumps(
        {
            "records": [
                {
                    "recordId": "0",
                    "result": "Ok",
                    "data": base64.b64encode(b"{}").decode(),
                    "metadata": {"otfMetadata": route},
                }
            ]
        }
    ).encode()
    (outcome,) = processing.parse_result(payload, record_ids=["0"], records=[b"{}"])
    assert outcome.routing == route
    assert iceberg_routing.route(outcome.routing, TABLES).operation == "update"
