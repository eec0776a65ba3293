"""The pure rules of WebRTC signaling channels: where a channel is served, the messages of the
KVS WebSocket signaling protocol, and TURN credentials.

- A channel's sessions (its master and viewers) live on one node, its *home*: the ACTIVE node
  that ranks first for the channel's ARN by rendezvous hashing. Every node computes the same
  home from the metadata image, so GetSignalingChannelEndpoint on any node names it, and a
  master and a viewer that asked different nodes meet there. When the home leaves, every node
  agrees on the next one; clients reconnect through GetSignalingChannelEndpoint, as the KVS
  SDKs do when their WebSocket closes.
- Messages are AWS's: a client sends `{"action": "SDP_OFFER" | "SDP_ANSWER" | "ICE_CANDIDATE",
  "recipientClientId"?: ..., "messagePayload": <base64 JSON>, "correlationId"?: ...}`; the
  recipient gets `{"messageType": ..., "messagePayload": ..., "senderClientId": ...}` (empty
  sender id for the master). A refused message with a correlation id is answered
  `{"messageType": "STATUS_RESPONSE", "statusResponse": {...}}`.
- TURN credentials follow the "TURN REST API" convention coturn checks with
  `use-auth-secret`: username `<expiry seconds>:<client>`, password base64(HMAC-SHA1(secret,
  username)).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from broker.video import messages

ACTIONS = frozenset({"SDP_OFFER", "SDP_ANSWER", "ICE_CANDIDATE"})
MESSAGE_BYTES_MAX = 10_000  # the model's MessagePayload length limit (base64 text)
CLIENT_ID_PATTERN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
)
CLIENT_ID_LENGTH_MAX = 256
TURN_TTL_SECONDS = 300  # how long a GetIceServerConfig credential is good for (AWS: 300)


class SignalingMessageError(ValueError):
    """A client message Shoal refuses (AWS's InvalidArgumentException status), answered with
    a STATUS_RESPONSE when it carried a correlation id."""

    def __init__(self, description: str, correlation_id: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.correlation_id = correlation_id


@dataclass(frozen=True, slots=True)
class ClientMessage:
    action: str
    payload: str  # base64, relayed as it came
    recipient_client_id: str | None
    correlation_id: str | None


def home_node(channel_arn: str, node_ids: Iterable[str]) -> str | None:
    """The node serving `channel_arn` among `node_ids` (rendezvous hashing), None if none."""

    def rank(node_id: str) -> bytes:
        return hashlib.sha256(f"{channel_arn}\n{node_id}".encode()).digest()

    return max(node_ids, key=rank, default=None)


def valid_client_id(client_id: str) -> bool:
    return 0 < len(client_id) <= CLIENT_ID_LENGTH_MAX and set(client_id) <= CLIENT_ID_PATTERN_CHARS


def parse_client_message(text: str) -> ClientMessage:
    """One message a client sent over the WebSocket."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise SignalingMessageError(messages.SIGNALING_NOT_JSON) from error
    if not isinstance(document, dict):
        raise SignalingMessageError(messages.SIGNALING_NOT_AN_OBJECT)
    correlation = document.get("correlationId")
    correlation_id = correlation if isinstance(correlation, str) else None
    action = document.get("action")
    if action not in ACTIONS:
        raise _refused(correlation_id, f"Unknown action {action!r}.")
    payload = document.get("messagePayload")
    if not isinstance(payload, str) or not payload or len(payload) > MESSAGE_BYTES_MAX:
        raise _refused(
            correlation_id, f"messagePayload must be 1 to {MESSAGE_BYTES_MAX} base64 characters."
        )
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise _refused(correlation_id, "messagePayload is not base64.") from error
    recipient = document.get("recipientClientId")
    if recipient is not None and not (isinstance(recipient, str) and valid_client_id(recipient)):
        raise _refused(correlation_id, "recipientClientId is not a valid client id.")
    return ClientMessage(
        action=str(action),
        payload=payload,
        recipient_client_id=recipient,
        correlation_id=correlation_id,
    )


def _refused(correlation_id: str | None, description: str) -> SignalingMessageError:
    return SignalingMessageError(description, correlation_id)


def delivered_message(action: str, payload: str, sender_client_id: str) -> str:
    """What the recipient of a relayed message receives."""
    return json.dumps(
        {"messageType": action, "messagePayload": payload, "senderClientId": sender_client_id},
        separators=(",", ":"),
    )


def status_response(
    correlation_id: str, *, error_type: str, status_code: str, description: str
) -> str:
    """AWS's answer to a message (with a correlation id) that could not be delivered."""
    document: dict[str, Any] = {
        "senderClientId": "",
        "messageType": "STATUS_RESPONSE",
        "messagePayload": "",
        "statusResponse": {
            "correlationId": correlation_id,
            "errorType": error_type,
            "statusCode": status_code,
            "description": description,
        },
    }
    return json.dumps(document, separators=(",", ":"))


def turn_credentials(secret: str, client: str, *, now_seconds: int) -> tuple[str, str]:
    """A TURN REST API username and password valid for TURN_TTL_SECONDS."""
    username = f"{now_seconds + TURN_TTL_SECONDS}:{client}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")
