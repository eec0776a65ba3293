"""The framed replication transport: Append/AppendAck over one persistent TCP (or TLS)
connection per peer, in length-prefixed frames (`rpc/frames.py`), beside the gRPC `Replicate`
stream (`rpc/transport.py`) it can replace.

Why: each message on a gRPC aio stream crosses three threads (gRPC's poller, the aio
completion queue, the asyncio loop); here the bytes reach the loop's `Protocol` directly and
the message is decoded and handed to the driver in the same callback, and a send is written
to the socket inside `send`. Everything else is what the gRPC stream gives, kept as strict:

- the same messages (a `ReplicationEnvelope` protobuf per frame) and the same checks on
  receipt (`envelope_from_proto`: the CRC of every stored batch; the addressee);
- mutual TLS with the node's certificates (`tls.SslContexts`, the files and rule of the gRPC
  port), and the node signature of the internal calls, over a fresh challenge per connection
  (`frames.py`): an unsigned or wrongly signed dialler gets no message in;
- a bounded send queue per peer that drops rather than blocks (the replica core resends what
  is not acknowledged), also while the socket's buffers are full (asyncio's write flow
  control: `pause_writing`), a frame size limit checked from the header, and a reconnect with
  exponential backoff (`replication_reconnect_ms_min` .. `_max`);
- pings: the dialler pings every `rpc_keepalive_ms` and drops a connection whose listener has
  said nothing for `rpc_keepalive_ms + rpc_keepalive_timeout_ms` (a SIGSTOPped or vanished
  host), and the listener drops a connection silent for twice that;
- `FramedListener.close()` at node stop ends every inbound connection at once.

Forwarded appends (a ShardAppend for a shard the peer leads: `forwarder.py`) ride the same
connection when the listener's ACCEPT says it serves them (`frames.py`, step 5): one APPEND
frame out, one ANSWER frame back with the same call id, no gRPC call (each crosses gRPC's
threads and costs ~1 ms of CPU on the two nodes; a 4-shard put forwards most of its parts).
The listener serves it with the gRPC handler's code (`node_service.answer_shard_append`) and
answers with its response or the status the gRPC call would have ended with, so the caller
decodes both ways alike. The dialler falls back to gRPC, sending nothing here, whenever the
connection is not up, not writable or from an older listener; an APPEND written but not
answered (the connection lost, the deadline passed) has an unknown outcome, as a gRPC call's.

Nothing resynchronises on a reconnect because nothing needs to, as on the gRPC stream: the
transport may lose messages, and the replica core resends from what it knows was acknowledged
(`replication_resend_ms`).

Loop-bound; not thread-safe.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from broker import limits
from broker.api.internal.v1 import internal_pb2 as pb
from broker.clock import Clock
from broker.replication.messages import Envelope, ReplicationMessage
from broker.rpc import frames, protowire
from broker.rpc.frames import (
    FrameError,
    FrameKind,
    FrameReader,
    encode_frame,
    encode_frame_pieces,
)
from broker.rpc.refusals import status_to_wire
from broker.rpc.replication_codec import (
    AppendBatchesCache,
    CorruptBatchError,
    envelope_from_proto,
    envelope_pieces,
)
from broker.rpc.transport import TransportStatistics
from broker.types import NodeId

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class FramedSettings:
    raft_password: str  # the key of the node signature (frames.make_hello)
    frame_bytes_max: int = limits.replication_frame_bytes_max
    ping_ms: int = limits.rpc_keepalive_ms
    ping_timeout_ms: int = limits.rpc_keepalive_timeout_ms
    hello_timeout_ms: int = limits.replication_hello_timeout_ms

    @property
    def silence_ms(self) -> int:
        """A dialler drops a connection whose listener said nothing for this long."""
        return self.ping_ms + self.ping_timeout_ms


# Fields of internal.proto's FramedAppend that `framed_append` writes by hand.
_FRAMED_APPEND_CALL_ID_FIELD = 1
_FRAMED_APPEND_REQUEST_FIELD = 2

PING = encode_frame(FrameKind.PING)
PONG = encode_frame(FrameKind.PONG)

# What the listener serves a forwarded append with (`node_service.answer_shard_append`).
AppendServer = Callable[[pb.ShardAppendRequest], Awaitable[pb.ShardAppendResponse | grpc.Status]]


# --- The listening side ----------------------------------------------------------------------


class Inbox(Protocol):
    """What the listener needs of the node's replication driver."""

    @property
    def node_id(self) -> NodeId: ...

    def deliver(self, message: ReplicationMessage) -> None:
        """Queue an inbound Append/AppendAck (bounded; dropped when full)."""
        ...


class _Inbound(asyncio.Protocol):
    """One connection from a peer: challenge, HELLO, then envelopes to the endpoint."""

    def __init__(self, listener: FramedListener) -> None:
        self._listener = listener
        # Until its HELLO is admitted a dialler may send only small frames: an unknown peer
        # cannot make the listener buffer an envelope's worth of bytes.
        self._reader = FrameReader(frame_bytes_max=limits.replication_frame_control_bytes_max)
        self._challenge = os.urandom(frames.CHALLENGE_BYTES)
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None  # the authenticated sender, once its HELLO is admitted
        self._heard_s = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.serving: set[asyncio.Task[None]] = set()  # forwarded appends being served

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._listener.closed or (
            self._listener.unadmitted() >= limits.replication_unadmitted_connections_max
        ):
            transport.abort()
            return
        self._listener.connections.add(self)
        loop = asyncio.get_running_loop()
        self._heard_s = loop.time()
        transport.write(encode_frame(FrameKind.CHALLENGE, self._challenge))
        settings = self._listener.settings
        self._timer = loop.call_later(settings.hello_timeout_ms / 1000, self._check_silence)

    @property
    def admitted(self) -> bool:
        return self._peer is not None

    def _check_silence(self) -> None:
        settings = self._listener.settings
        loop = asyncio.get_running_loop()
        if self._peer is None:
            self._refuse("no HELLO in time")
            return
        allowed_s = 2 * settings.silence_ms / 1000
        if loop.time() - self._heard_s > allowed_s:
            log.info("replication_frames_silent", extra={"peer": self._peer})
            self.abort()
            return
        self._timer = loop.call_later(settings.ping_ms / 1000, self._check_silence)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        try:
            received = self._reader.feed(data)
        except FrameError as error:
            self._refuse(str(error))
            return
        if not received:
            return
        self._heard_s = asyncio.get_running_loop().time()
        for kind, payload in received:
            if transport.is_closing():
                return
            if kind is FrameKind.ENVELOPE and self._peer is not None:
                self._envelope(payload)
            elif kind is FrameKind.PING and self._peer is not None:
                transport.write(PONG)
            elif (
                kind is FrameKind.APPEND
                and self._peer is not None
                and self._listener.appends is not None
            ):
                self._append(payload)
            elif kind is FrameKind.HELLO and self._peer is None:
                self._hello(payload)
            else:
                self._refuse(f"a {kind.name} frame out of turn")

    def _hello(self, payload: bytes) -> None:
        listener = self._listener
        try:
            hello = frames.decode_hello(payload)
        except FrameError as error:
            self._refuse(str(error))
            return
        refusal = frames.hello_refusal(
            hello,
            challenge=self._challenge,
            node_id=listener.endpoint.node_id,
            raft_password=listener.settings.raft_password,
            now_ms=listener.clock.wall_ms(),
        )
        if refusal is not None:
            listener.refused += 1
            self._refuse(f"HELLO from {hello.sender!r}: {refusal}")
            return
        self._peer = hello.sender
        self._reader.frame_bytes_max = listener.settings.frame_bytes_max
        assert self._transport is not None
        accept = frames.accept_payload(serves_appends=listener.appends is not None)
        self._transport.write(encode_frame(FrameKind.ACCEPT, accept))

    def _envelope(self, payload: bytes) -> None:
        listener = self._listener
        try:
            envelope = pb.ReplicationEnvelope.FromString(payload)
        except Exception as error:  # protobuf's DecodeError, whatever the implementation
            self._refuse(f"an envelope that does not parse: {error}")
            return
        if envelope.to_node != listener.endpoint.node_id or envelope.from_node != self._peer:
            return  # a stale address (its sender re-resolves), or not the authenticated peer
        try:
            message = envelope_from_proto(envelope)
        except CorruptBatchError as error:
            # Damaged on the way: dropped like a lost message (the leader resends).
            log.error("replication_batch_corrupt", extra={"error": str(error)})
            return
        if message is not None:
            listener.received += 1
            if listener.on_received is not None:
                listener.on_received()
            listener.endpoint.deliver(message)

    def _append(self, payload: bytes) -> None:
        try:
            call = pb.FramedAppend.FromString(payload)
            request = pb.ShardAppendRequest.FromString(call.request)
        except Exception as error:  # protobuf's DecodeError, whatever the implementation
            self._refuse(f"an append that does not parse: {error}")
            return
        task = asyncio.ensure_future(self._serve(call.call_id, request))
        self.serving.add(task)
        task.add_done_callback(self.serving.discard)

    async def _serve(self, call_id: int, request: pb.ShardAppendRequest) -> None:
        appends = self._listener.appends
        assert appends is not None
        outcome = await appends(request)
        answer = pb.FramedAppendAnswer(call_id=call_id)
        if isinstance(outcome, grpc.Status):
            answer.status = status_to_wire(outcome)
        else:
            answer.response.CopyFrom(outcome)
        transport = self._transport
        if transport is not None and not transport.is_closing():
            # Lost with the connection otherwise: the caller's outcome is unknown, as when a
            # gRPC call's answer is lost.
            transport.write(encode_frame(FrameKind.ANSWER, answer.SerializeToString()))

    def _refuse(self, why: str) -> None:
        log.warning("replication_frames_refused", extra={"peer": self._peer, "reason": why})
        self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._listener.connections.discard(self)


class FramedListener:
    """The framed replication port of this node: envelopes from peers to `endpoint`."""

    def __init__(
        self,
        endpoint: Inbox,
        *,
        settings: FramedSettings,
        clock: Clock,
        ssl_context: ssl.SSLContext | None = None,
        on_received: Callable[[], None] | None = None,
        appends: AppendServer | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.clock = clock
        self.on_received = on_received
        self.appends = appends  # None: APPEND frames are not served (the ACCEPT says so)
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self.connections: set[_Inbound] = set()
        self.closed = False
        self.port = 0  # once listening
        self.received = 0
        self.refused = 0

    def unadmitted(self) -> int:
        """Open connections whose HELLO is not admitted yet."""
        return sum(1 for connection in self.connections if not connection.admitted)

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); the bound port. Raises OSError."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Inbound(self),
            host,
            port,
            ssl=self._ssl,
            ssl_handshake_timeout=self.settings.hello_timeout_ms / 1000 if self._ssl else None,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stops listening and ends every inbound connection now (peers reconnect elsewhere
        or when this node is back)."""
        self.closed = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort()
            for task in list(connection.serving):
                task.cancel()  # as the gRPC server cancels its handlers at stop
        if self._server is not None:
            await self._server.wait_closed()


# --- The dialling side -----------------------------------------------------------------------


class _Outbound(asyncio.Protocol):
    """One connection to a peer's framed port: answers the challenge, then carries envelopes."""

    def __init__(self, link: _Link) -> None:
        self._link = link
        self._reader = FrameReader(frame_bytes_max=limits.replication_frame_control_bytes_max)
        self.transport: asyncio.Transport | None = None
        self.accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.paused = False
        self._answered = False
        self._heard_s = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._coalesced: list[bytes] = []  # envelope frames waiting for the end of the turn
        self.serves_appends = False  # the listener's ACCEPT said so (frames.py, step 5)
        self._calls: dict[int, asyncio.Future[pb.FramedAppendAnswer]] = {}
        self._call_ids = itertools.count(1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._heard_s = asyncio.get_running_loop().time()

    def data_received(self, data: bytes) -> None:
        try:
            received = self._reader.feed(data)
        except FrameError as error:
            self._drop(str(error))
            return
        if received:
            self._heard_s = asyncio.get_running_loop().time()
        for kind, payload in received:
            if kind is FrameKind.PONG and self.accepted.done():
                continue
            if kind is FrameKind.CHALLENGE and not self._answered:
                self._answered = True  # one HELLO per connection: a listener gets no second
                self._answer(payload)
            elif kind is FrameKind.ACCEPT and not self.accepted.done():
                if frames.serves_appends(payload):
                    self.serves_appends = True
                    self._reader.frame_bytes_max = limits.replication_frame_answer_bytes_max
                self.accepted.set_result(None)
                self._ping()
            elif kind is FrameKind.ANSWER and self.serves_appends:
                self._answered_call(payload)
            else:
                self._drop(f"a {kind.name} frame out of turn")
                return

    def _answered_call(self, payload: bytes) -> None:
        try:
            answer = pb.FramedAppendAnswer.FromString(payload)
        except Exception as error:  # protobuf's DecodeError, whatever the implementation
            self._drop(f"an answer that does not parse: {error}")
            return
        future = self._calls.pop(answer.call_id, None)
        if future is not None and not future.done():  # else its caller gave up waiting
            future.set_result(answer)

    def call_append(
        self, request: pb.ShardAppendRequest
    ) -> tuple[int, asyncio.Future[pb.FramedAppendAnswer]]:
        """Sends `request` in an APPEND frame: its call id, and a future that gets its ANSWER
        (or ConnectionError if the connection is lost first). Only once `writable()` and
        `serves_appends`."""
        call_id = next(self._call_ids)
        future: asyncio.Future[pb.FramedAppendAnswer] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self.write_frame(encode_frame_pieces(FrameKind.APPEND, framed_append(call_id, request)))
        return call_id, future

    def forget_call(self, call_id: int) -> None:
        """Its caller stopped waiting (deadline): a late ANSWER is then ignored."""
        self._calls.pop(call_id, None)

    def _answer(self, challenge: bytes) -> None:
        if len(challenge) != frames.CHALLENGE_BYTES:
            self._drop(f"a challenge of {len(challenge)} bytes")
            return
        link = self._link
        hello = frames.make_hello(
            challenge=challenge,
            sender=link.owner.node_id,
            receiver=link.node_id,
            raft_password=link.owner.settings.raft_password,
            wall_ms=link.owner.clock.wall_ms(),
        )
        assert self.transport is not None
        self.transport.write(encode_frame(FrameKind.HELLO, frames.encode_hello(hello)))

    def _ping(self) -> None:
        settings = self._link.owner.settings
        loop = asyncio.get_running_loop()
        if self.transport is None or self.transport.is_closing():
            return
        if loop.time() - self._heard_s > settings.silence_ms / 1000:
            self._drop("the peer stopped answering pings")
            return
        self.transport.write(PING)
        self._timer = loop.call_later(settings.ping_ms / 1000, self._ping)

    def _drop(self, why: str) -> None:
        log.info("replication_frames_lost", extra={"peer": self._link.node_id, "reason": why})
        if self.transport is not None:
            self.transport.abort()

    def write_frame(self, frame: bytes) -> None:
        """Writes an ENVELOPE or APPEND frame: a small one at the end of this loop turn, with
        the others of the turn in one socket write (one system call here, one read and one
        callback on the peer's loop); a large one at once, after those (order kept).
        `send_all` writes its burst's at once too."""
        if len(frame) >= limits.replication_frame_coalesce_bytes_max:
            self._coalesced.append(frame)
            self.write_coalesced()
            return
        if not self._coalesced:
            asyncio.get_running_loop().call_soon(self.write_coalesced)
        self._coalesced.append(frame)

    def write_coalesced(self) -> None:
        pending, self._coalesced = self._coalesced, []
        if not pending or self.transport is None or self.transport.is_closing():
            return  # lost with the connection, as queued frames are (module docstring)
        self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        self._link.owner.writes += 1

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._link.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self.lost.done():
            self.lost.set_result(None)
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(ConnectionError("the connection was lost"))
                future.exception()  # retrieved: its caller may have stopped waiting
        if not self.accepted.done():
            self.accepted.set_exception(ConnectionError("closed before ACCEPT"))
            self.accepted.exception()  # retrieved: the link may no longer wait on it

    def writable(self) -> bool:
        return (
            self.accepted.done()
            and not self.accepted.cancelled()
            and self.accepted.exception() is None
            and not self.paused
            and self.transport is not None
            and not self.transport.is_closing()
        )


def framed_append(call_id: int, request: pb.ShardAppendRequest) -> tuple[bytes, bytes]:
    """`pb.FramedAppend(call_id=call_id, request=request.SerializeToString())`, serialized, in
    two pieces: the request is not copied into the wrapper and serialized again (a forwarded
    part's data, ~0.1-0.5 MB, was copied three times more; protowire's docstring)."""
    wrapped = request.SerializeToString()
    head = protowire.varint_field(_FRAMED_APPEND_CALL_ID_FIELD, call_id)
    return head + protowire.length_delimited_head(
        _FRAMED_APPEND_REQUEST_FIELD, len(wrapped)
    ), wrapped


class _Link:
    """The bounded send queue towards one peer, and its current connection."""

    def __init__(self, owner: FramedTransport, node_id: NodeId) -> None:
        self.owner = owner
        self.node_id = node_id
        self.queue: collections.deque[Envelope] = collections.deque()
        self.ready = asyncio.Event()
        self.connection: _Outbound | None = None

    def send(self, envelope: Envelope, batches_cache: AppendBatchesCache | None = None) -> None:
        connection = self.connection
        if not self.queue and connection is not None and connection.writable():
            self._write(connection, envelope, batches_cache)
            return
        if len(self.queue) >= self.owner.queue_max:
            self.owner.dropped += 1  # the replica's resend timer recovers (module docstring)
            return
        self.queue.append(envelope)
        self.ready.set()

    def flush(self) -> None:
        connection = self.connection
        while self.queue and connection is not None and connection.writable():
            self._write(connection, self.queue.popleft())

    def _write(
        self,
        connection: _Outbound,
        envelope: Envelope,
        batches_cache: AppendBatchesCache | None = None,
    ) -> None:
        owner = self.owner
        pieces = envelope_pieces(envelope, sender=owner.node_id, batches_cache=batches_cache)
        connection.write_frame(encode_frame_pieces(FrameKind.ENVELOPE, pieces))
        owner.sent += 1


class FramedTransport:
    """Sends envelopes to peers over their framed ports (module docstring). `resolve` gives a
    peer's framed address ("host:port"), or None when it has none (`send` then drops)."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        resolve: Callable[[NodeId], str | None],
        settings: FramedSettings,
        clock: Clock,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        queue_max: int = limits.replication_send_queue_max,
    ) -> None:
        assert queue_max >= 1
        self.node_id = node_id
        self.settings = settings
        self.clock = clock
        self.queue_max = queue_max
        self._resolve = resolve
        self._ssl_context = ssl_context
        self._links: dict[NodeId, _Link] = {}
        self._new_links: asyncio.Queue[_Link] = asyncio.Queue()
        self.sent = 0
        self.dropped = 0
        self.reconnects = 0
        self.writes = 0  # socket writes of envelope frames (several frames each, coalesced)
        self.appends = 0  # forwarded appends sent as APPEND frames

    def send(self, envelope: Envelope) -> None:
        assert envelope.to != self.node_id, "a message to ourselves"
        self._link(envelope.to).send(envelope)

    async def append(
        self, node_id: NodeId, request: pb.ShardAppendRequest, *, timeout_s: float
    ) -> pb.FramedAppendAnswer | None:
        """A forwarded append to `node_id` over its connection (module docstring): its
        answer; None when it cannot go this way now (not connected, not writable, an older
        listener), nothing sent. Raises TimeoutError past `timeout_s` and ConnectionError
        when the connection is lost before the answer: the append's outcome is unknown."""
        link = self._links.get(node_id)
        connection = None if link is None else link.connection
        if connection is None or not connection.serves_appends or not connection.writable():
            if connection is None:
                self.dial(node_id)  # for the next ones; this one goes over gRPC
            return None
        call_id, future = connection.call_append(request)
        self.appends += 1
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(future)
        finally:
            if not future.done():
                connection.forget_call(call_id)
                future.cancel()

    def serves_appends(self, node_id: NodeId) -> bool:
        """Whether `append` to `node_id` would send now (connected, writable, a listener that
        serves them); a False costs a dial when not connected (for the next ones)."""
        link = self._links.get(node_id)
        connection = None if link is None else link.connection
        if connection is None:
            self.dial(node_id)
            return False
        return connection.serves_appends and connection.writable()

    def send_all(self, envelopes: Sequence[Envelope]) -> None:
        """`send`s each, then writes the touched connections' small frames now (one socket
        write per peer) rather than at the end of the loop turn."""
        links: dict[NodeId, _Link] = {}
        # The same Append's batches to several followers are put in frame form once (the
        # batches are held by `envelopes` meanwhile, so their ids stay theirs).
        batches_cache: AppendBatchesCache = {}
        for envelope in envelopes:
            assert envelope.to != self.node_id, "a message to ourselves"
            link = self._link(envelope.to)
            link.send(envelope, batches_cache)
            links[envelope.to] = link
        for link in links.values():
            if link.connection is not None:
                link.connection.write_coalesced()

    def connected(self, node_id: NodeId) -> bool:
        """Whether the connection to `node_id` is up and admitted (`send` then writes to it)."""
        link = self._links.get(node_id)
        return link is not None and link.connection is not None

    def dial(self, node_id: NodeId) -> None:
        """Connects to `node_id` in the background if not connected (with the reconnect
        backoff), without sending anything: the caller reaches it another way meanwhile."""
        link = self._link(node_id)
        if link.connection is None:
            link.ready.set()

    def _link(self, node_id: NodeId) -> _Link:
        link = self._links.get(node_id)
        if link is None:
            link = self._links[node_id] = _Link(self, node_id)
            self._new_links.put_nowait(link)
        return link

    def statistics(self) -> TransportStatistics:
        return TransportStatistics(
            sent=self.sent, dropped=self.dropped, received=0, reconnects=self.reconnects
        )

    async def run(self) -> None:
        """Owns one connection task per peer. Infinite on purpose: cancelled at node stop."""
        async with asyncio.TaskGroup() as group:
            while True:
                link = await self._new_links.get()
                group.create_task(self._run_link(link), name=f"frames-to-{link.node_id}")

    async def _run_link(self, link: _Link) -> None:
        backoff_ms = limits.replication_reconnect_ms_min
        while True:  # infinite on purpose: one connection after another until cancelled
            await link.ready.wait()
            address = self._resolve(link.node_id)
            if address is None:
                self.dropped += len(link.queue)
                link.queue.clear()
                link.ready.clear()
                continue
            try:
                connection = await self._connect(link, address)
            except (OSError, TimeoutError, ConnectionError, ssl.SSLError) as error:
                if backoff_ms == limits.replication_reconnect_ms_min:  # once per outage
                    log.info(
                        "replication_frames_connect_failed",
                        extra={"peer": link.node_id, "error": str(error) or type(error).__name__},
                    )
            else:
                log.info(
                    "replication_frames_connected", extra={"peer": link.node_id, "to": address}
                )
                backoff_ms = limits.replication_reconnect_ms_min
                link.connection = connection
                link.ready.clear()
                link.flush()
                try:
                    await asyncio.shield(connection.lost)
                finally:
                    link.connection = None
                    if connection.transport is not None:
                        connection.transport.abort()
                    if link.queue:
                        link.ready.set()
            self.reconnects += 1
            await asyncio.sleep(backoff_ms / 1000)  # backoff between reconnects, not a sync
            backoff_ms = min(backoff_ms * 2, limits.replication_reconnect_ms_max)

    async def _connect(self, link: _Link, address: str) -> _Outbound:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if self._ssl_context is not None else None
        timeout_s = self.settings.hello_timeout_ms / 1000
        connection: _Outbound | None = None
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Outbound(link),
                    host,
                    int(port),
                    ssl=context,
                    server_hostname=host if context is not None else None,
                    ssl_handshake_timeout=timeout_s if context is not None else None,
                )
                await connection.accepted
        except BaseException:
            if connection is not None and connection.transport is not None:
                connection.transport.abort()
            raise
        return connection  # asyncio sets TCP_NODELAY on its TCP connections
