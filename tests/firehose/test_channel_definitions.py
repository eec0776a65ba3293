"""A Kinesis channel's definition as the delivery stream it becomes (broker/firehose/channels.py),
without a node."""

from __future__ import annotations

from broker.firehose import destinations
from broker.firehose.channels import destination_document

ROLE = "arn:aws:iam::000000000000:role/channels"


def test_an_s3_tables_channel_is_an_iceberg_delivery() -> None:
    definition = {
        "ServiceExecutionRoleARN": ROLE,
        "S3TablesDestinationConfiguration": {
            "DataFreshnessInSeconds": 30,
            "DeadLetterQueueS3Configuration": {
                "BucketARN": "arn:aws:s3:::dead-letters",
                "ExpectedBucketOwner": "000000000000",
                "ErrorOutputPrefix": "failed/",
            },
            "S3TablesConfigurationList": [
                {
                    "TableBucketARN": "arn:aws:s3tables:us-east-1:000000000000:bucket/tables",
                    "Namespace": "web",
                    "TableName": "clicks",
                    "CompressionType": "ZSTD",
                }
            ],
        },
    }
    ((kind, configuration),) = destination_document(definition).items()
    assert kind == "IcebergDestinationConfiguration"
    assert configuration["CatalogConfiguration"] == {"WarehouseLocation": "s3://tables"}
    assert configuration["DestinationTableConfigurationList"] == [
        {"DestinationDatabaseName": "web", "DestinationTableName": "clicks"}
    ]
    assert configuration["BufferingHints"]["IntervalInSeconds"] == 30
    assert configuration["S3Configuration"]["BucketARN"] == "arn:aws:s3:::dead-letters"
    assert configuration["S3Configuration"]["ErrorOutputPrefix"] == "failed/"
    destinations.check("Iceberg", configuration)  # what Firehose's Iceberg writer accepts
