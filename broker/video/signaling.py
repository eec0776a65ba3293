"""The WebRTC signaling relay of the channels this node is home to (`signaling_rules`).

A `SignalingHub` holds, per channel, the connected master, up to ten viewers by client id,
and the messages waiting for a recipient that is not connected yet (kept for the channel's
MessageTtlSeconds, as AWS keeps them). Each connected client is a `Peer` with an outbox the
WebSocket door drains; a newer connection of the same master or client id replaces the older
one, whose outbox is closed. Nothing here is durable: sessions are as live as their sockets,
and a node restart ends them (the clients reconnect). Loop-bound; one instance per node.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from broker import limits
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.video import messages
from broker.video.signaling_rules import (
    ClientMessage,
    SignalingMessageError,
    delivered_message,
)

MASTER = ""  # the master's key among a channel's peers (viewers are keyed by client id)
_OUTBOX_MAX = 256  # messages queued for one slow client before it is dropped


@dataclass(eq=False)
class Peer:
    channel_arn: str
    client_id: str  # MASTER for the master
    outbox: asyncio.Queue[str | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_OUTBOX_MAX)
    )

    @property
    def is_master(self) -> bool:
        return self.client_id == MASTER

    def deliver(self, text: str) -> bool:
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    def close(self) -> None:
        """Ends the peer's connection: its door sees None after what is queued."""
        while True:
            try:
                self.outbox.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.outbox.get_nowait()


@dataclass
class _Channel:
    peers: dict[str, Peer] = field(default_factory=dict)
    # Messages for recipients not connected: recipient -> (expiry ms, delivered text).
    pending: dict[str, collections.deque[tuple[int, str]]] = field(default_factory=dict)


class SignalingHub:
    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._channels: dict[str, _Channel] = {}

    def connect(self, channel_arn: str, client_id: str) -> Peer:
        """A new master (client_id MASTER) or viewer session; delivers what waited for it."""
        channel = self._channels.setdefault(channel_arn, _Channel())
        viewers = sum(1 for key in channel.peers if key != MASTER)
        joining = client_id != MASTER and client_id not in channel.peers
        if joining and viewers >= limits.video_channel_viewers_max:
            raise ShoalError(
                ErrorCode.CLIENT_LIMIT_EXCEEDED,
                messages.viewers_at_limit(viewers=viewers),
            )
        old = channel.peers.get(client_id)
        if old is not None:
            old.close()
        peer = Peer(channel_arn=channel_arn, client_id=client_id)
        channel.peers[client_id] = peer
        now_ms = self._clock.wall_ms()
        for expires_ms, text in channel.pending.pop(client_id, ()):
            if expires_ms > now_ms:
                peer.deliver(text)
        return peer

    def disconnect(self, peer: Peer) -> None:
        channel = self._channels.get(peer.channel_arn)
        if channel is None or channel.peers.get(peer.client_id) is not peer:
            return  # already replaced by a newer connection
        del channel.peers[peer.client_id]
        self._forget_if_idle(peer.channel_arn)

    def close_channel(self, channel_arn: str) -> None:
        """The channel was deleted: every session ends."""
        channel = self._channels.pop(channel_arn, None)
        for peer in channel.peers.values() if channel else ():
            peer.close()

    def relay(self, sender: Peer, message: ClientMessage, *, ttl_seconds: int) -> None:
        """Delivers `message` from `sender`: a viewer's to the master, the master's to the
        viewer it names. A recipient not connected gets it when it connects within the TTL."""
        if sender.is_master:
            if message.recipient_client_id is None:
                raise SignalingMessageError(
                    messages.SIGNALING_MASTER_NEEDS_RECIPIENT,
                    message.correlation_id,
                )
            recipient = message.recipient_client_id
        else:
            recipient = MASTER
        text = delivered_message(message.action, message.payload, sender.client_id)
        channel = self._channels.setdefault(sender.channel_arn, _Channel())
        peer = channel.peers.get(recipient)
        if peer is not None:
            if not peer.deliver(text):
                peer.close()  # too slow to keep up: it reconnects and starts over
            return
        now_ms = self._clock.wall_ms()
        if recipient not in channel.pending:
            self._prune(channel, now_ms)
        waiting = channel.pending.setdefault(
            recipient, collections.deque(maxlen=limits.video_channel_pending_messages_max)
        )
        while waiting and waiting[0][0] <= now_ms:
            waiting.popleft()
        waiting.append((now_ms + ttl_seconds * 1000, text))

    @staticmethod
    def _prune(channel: _Channel, now_ms: int) -> None:
        """Bounds the recipients with waiting messages: expired ones go, then the oldest."""
        for key in [k for k, queue in channel.pending.items() if queue[-1][0] <= now_ms]:
            del channel.pending[key]
        while len(channel.pending) >= limits.video_channel_pending_recipients_max:
            oldest = min(channel.pending, key=lambda k: channel.pending[k][-1][0])
            del channel.pending[oldest]

    def connected(self, channel_arn: str) -> list[str]:
        """The connected client ids of a channel (MASTER for the master), for tests and the
        console."""
        channel = self._channels.get(channel_arn)
        return sorted(channel.peers) if channel else []

    def _forget_if_idle(self, channel_arn: str) -> None:
        channel = self._channels.get(channel_arn)
        if channel is None or channel.peers:
            return
        now_ms = self._clock.wall_ms()
        for key in list(channel.pending):
            live = [item for item in channel.pending[key] if item[0] > now_ms]
            if not live:
                del channel.pending[key]
        if not channel.pending:
            del self._channels[channel_arn]
