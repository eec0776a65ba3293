"""The SNS client video notifications publish through: boto3's, built on first use, so
`AWS_ENDPOINT_URL_SNS` (or `AWS_ENDPOINT_URL`) points it at an SNS-compatible server as it
would any AWS SDK user's. Blocking: callers run it in a worker thread."""

from __future__ import annotations

import threading
from typing import Any

import boto3
import botocore.config
import botocore.exceptions


class PublishError(Exception):
    """SNS refused or could not be reached; the notification is sent again later."""


class SnsPublisher:
    """One client per region: a topic is published to in its own ARN's region."""

    def __init__(self, *, region: str) -> None:
        self._default_region = region
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _sns(self, region: str) -> Any:  # boto3 builds its clients' classes at run time
        with self._lock:
            if region not in self._clients:
                self._clients[region] = boto3.session.Session().client(
                    "sns",
                    region_name=region,
                    config=botocore.config.Config(
                        retries={"mode": "standard", "max_attempts": 2},
                        connect_timeout=5,
                        read_timeout=30,
                    ),
                )
            return self._clients[region]

    def publish(self, *, topic_arn: str, subject: str, message: str) -> None:
        parts = topic_arn.split(":")  # arn:aws:sns:<region>:<account>:<name>
        region = parts[3] if len(parts) > 3 and parts[3] else self._default_region
        try:
            self._sns(region).publish(TopicArn=topic_arn, Subject=subject, Message=message)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise PublishError(f"SNS Publish to {topic_arn}: {error}") from error
