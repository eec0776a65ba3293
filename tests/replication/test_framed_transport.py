"""The framed replication transport (broker/rpc/frames.py, broker/rpc/framed.py), in process on
loopback: a real listener and a real dialler, and raw sockets for a peer that misbehaves.

Goal: envelopes arrive whole and checked whatever pieces the bytes come in; a frame above the
limit is refused from its header; only a dialler signing the connection's challenge with the
cluster's key gets a message in; with TLS only a certificate of the cluster's CA does; a peer
that closes mid-frame costs nothing; the dialler reconnects after the listener goes away and
its send queue stays bounded meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from broker import limits
from broker.api.internal.v1 import internal_pb2 as pb
from broker.clock import ManualClock, SystemClock
from broker.config import DEFAULT_REPLICATION_PORT, load_config
from broker.log.records import BATCH_FORMAT_VERSION, AppendBatch, new_record
from broker.replication.messages import Append, AppendAck, Envelope, ReplicationMessage
from broker.rpc import frames
from broker.rpc.framed import FramedListener, FramedSettings, FramedTransport
from broker.rpc.frames import FrameError, FrameKind, FrameReader, FrameTooLarge, encode_frame
from broker.rpc.replication_codec import envelope_to_proto
from broker.rpc.routed import RoutedTransport
from broker.tls import SslContexts, TlsFiles
from broker.types import NodeId, Offset, ShardUid
from tests.certificates import issue, make_authority

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")
SHARD = ShardUid(3)
PASSWORD = "cluster-secret"
CLOCK = SystemClock()
DEADLINE_S = 10


def _append(first: int = 0) -> Append:
    batch = AppendBatch(
        shard_uid=SHARD,
        first_offset=Offset(first),
        arrival_ms=1_000,
        records=(new_record("k", b"x" * 1200), new_record("j", b"y")),
        epoch=2,
        version=BATCH_FORMAT_VERSION,  # travels as its stored bytes, with its CRC
    )
    return Append(
        shard_uid=SHARD,
        epoch=2,
        leader=A,
        first_offset=Offset(first),
        prev_epoch=0 if first == 0 else 2,
        batches=(
            AppendBatch.from_value(shard_uid=SHARD, first_offset=Offset(first), value=batch.value),
        ),
        leader_hw=Offset(0),
        leader_log_start=Offset(0),
    )


def _ack(log_end: int) -> AppendAck:
    return AppendAck(
        shard_uid=SHARD,
        epoch=2,
        sender=A,
        ok=True,
        log_end=Offset(log_end),
        last_epoch=2,
        promised_epoch=2,
        rejoining=False,
    )


class _Endpoint:
    def __init__(self, node_id: NodeId = B) -> None:
        self._node_id = node_id
        self.delivered: list[ReplicationMessage] = []
        self.arrived = asyncio.Event()

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    def deliver(self, message: ReplicationMessage) -> None:
        self.delivered.append(message)
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while len(self.delivered) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def _eventually(condition: Callable[[], bool]) -> None:
    """Polls a counter of the transport, bounded by the deadline."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


# --- frames ----------------------------------------------------------------------------------


def test_frames_arrive_whole_from_any_pieces() -> None:
    stream = b"".join(
        (
            encode_frame(FrameKind.PING),
            encode_frame(FrameKind.ENVELOPE, b"first" * 300),
            encode_frame(FrameKind.ENVELOPE, b"second"),
        )
    )
    for piece in (1, 2, 5, 7, 64, len(stream)):
        reader = FrameReader(frame_bytes_max=10_000)
        got: list[tuple[FrameKind, bytes]] = []
        for start in range(0, len(stream), piece):
            got.extend(reader.feed(stream[start : start + piece]))
        assert got == [
            (FrameKind.PING, b""),
            (FrameKind.ENVELOPE, b"first" * 300),
            (FrameKind.ENVELOPE, b"second"),
        ], piece
        assert reader.buffered == 0


def test_a_frame_above_the_limit_is_refused_from_its_header() -> None:
    reader = FrameReader(frame_bytes_max=100)
    assert reader.feed(encode_frame(FrameKind.ENVELOPE, b"z" * 100)) == [
        (FrameKind.ENVELOPE, b"z" * 100)
    ]
    with pytest.raises(FrameTooLarge):
        reader.feed(frames.HEADER.pack(101, FrameKind.ENVELOPE))  # no payload needed
    with pytest.raises(FrameError):
        FrameReader(frame_bytes_max=100).feed(frames.HEADER.pack(0, 99))


def test_a_hello_is_good_for_its_own_challenge_receiver_and_key_only() -> None:
    challenge = b"c" * frames.CHALLENGE_BYTES
    now_ms = CLOCK.wall_ms()
    hello = frames.make_hello(
        challenge=challenge, sender=A, receiver=B, raft_password=PASSWORD, wall_ms=now_ms
    )
    decoded = frames.decode_hello(frames.encode_hello(hello))
    assert decoded == hello

    def refusal(h: frames.Hello, *, challenge: bytes = challenge, node_id: str = B) -> str | None:
        return frames.hello_refusal(
            h, challenge=challenge, node_id=node_id, raft_password=PASSWORD, now_ms=now_ms
        )

    assert refusal(hello) is None
    assert refusal(hello, challenge=b"d" * frames.CHALLENGE_BYTES)  # replayed elsewhere
    assert refusal(hello, node_id="c")  # a stale address
    forged = frames.make_hello(
        challenge=challenge, sender=A, receiver=B, raft_password="guess", wall_ms=now_ms
    )
    assert refusal(forged)
    stale = frames.make_hello(
        challenge=challenge,
        sender=A,
        receiver=B,
        raft_password=PASSWORD,
        wall_ms=now_ms - 3_600_000,
    )
    assert refusal(stale)
    with pytest.raises(FrameError):
        frames.decode_hello(b"only\nthree\nfields")


# --- listener and dialler --------------------------------------------------------------------


class _Pair:
    def __init__(self, listener: FramedListener, transport: FramedTransport, endpoint: _Endpoint):
        self.listener = listener
        self.transport = transport
        self.endpoint = endpoint


@contextlib.asynccontextmanager
async def _serving(
    *,
    listener_password: str = PASSWORD,
    dialler_password: str = PASSWORD,
    server_ssl: ssl.SSLContext | None = None,
    client_ssl: ssl.SSLContext | None = None,
    queue_max: int = 1_000,
    port: int = 0,
    hello_timeout_ms: int = 5_000,
) -> AsyncIterator[_Pair]:
    endpoint = _Endpoint()
    listener = FramedListener(
        endpoint,
        settings=FramedSettings(raft_password=listener_password),
        clock=CLOCK,
        ssl_context=server_ssl,
    )
    bound = await listener.start("127.0.0.1", port)
    transport = FramedTransport(
        node_id=A,
        resolve=lambda node: f"127.0.0.1:{bound}" if node == B else None,
        settings=FramedSettings(raft_password=dialler_password, hello_timeout_ms=hello_timeout_ms),
        clock=CLOCK,
        ssl_context=(lambda: client_ssl) if client_ssl is not None else None,
        queue_max=queue_max,
    )
    runner = asyncio.create_task(transport.run())
    try:
        yield _Pair(listener, transport, endpoint)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await listener.close()


@pytest.fixture
async def pair() -> AsyncIterator[_Pair]:
    async with _serving() as p:
        yield p


async def test_envelopes_arrive_in_order_and_checked(pair: _Pair) -> None:
    pair.transport.send(Envelope(to=B, message=_append()))
    for end in range(1, 50):
        pair.transport.send(Envelope(to=B, message=_ack(end)))
    await pair.endpoint.wait_for(50)
    first, *acks = pair.endpoint.delivered
    assert first == _append()
    assert [a.log_end for a in acks if isinstance(a, AppendAck)] == list(range(1, 50))
    assert pair.listener.received == 50
    assert pair.transport.statistics().sent == 50


async def test_small_frames_of_one_loop_turn_leave_in_one_write(pair: _Pair) -> None:
    pair.transport.send(Envelope(to=B, message=_ack(1)))
    await pair.endpoint.wait_for(1)  # connected and admitted
    writes = pair.transport.writes
    for end in range(2, 32):  # one turn: the acks of one group commit, say
        pair.transport.send(Envelope(to=B, message=_ack(end)))
    assert pair.transport.writes == writes  # nothing written yet: at the end of the turn
    await pair.endpoint.wait_for(31)
    assert pair.transport.writes == writes + 1
    acks = [m.log_end for m in pair.endpoint.delivered if isinstance(m, AppendAck)]
    assert acks == list(range(1, 32))
    # A large frame goes at once, after the small ones queued before it (order kept).
    big_batch = AppendBatch(
        shard_uid=SHARD,
        first_offset=Offset(0),
        arrival_ms=1_000,
        records=(new_record("k", b"z" * limits.replication_frame_coalesce_bytes_max),),
        epoch=2,
        version=BATCH_FORMAT_VERSION,
    )
    big = dataclasses.replace(_append(), batches=(big_batch,))
    pair.transport.send(Envelope(to=B, message=_ack(32)))
    pair.transport.send(Envelope(to=B, message=big))
    assert pair.transport.writes == writes + 2  # written in the send, with the ack before it
    await pair.endpoint.wait_for(33)
    assert pair.endpoint.delivered[-2:] == [_ack(32), big]


async def test_send_all_writes_its_frames_in_the_call_one_write_per_peer(pair: _Pair) -> None:
    pair.transport.send(Envelope(to=B, message=_ack(1)))
    await pair.endpoint.wait_for(1)  # connected and admitted
    writes = pair.transport.writes
    pair.transport.send(Envelope(to=B, message=_ack(2)))  # would wait for the end of the turn
    pair.transport.send_all([Envelope(to=B, message=_ack(end)) for end in range(3, 20)])
    assert pair.transport.writes == writes + 1  # written in the call, the earlier one first
    await pair.endpoint.wait_for(19)
    assert pair.transport.writes == writes + 1
    acks = [m.log_end for m in pair.endpoint.delivered if isinstance(m, AppendAck)]
    assert acks == list(range(1, 20))


async def _raw_admitted(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-made dialler that passes the challenge."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    header = await reader.readexactly(frames.HEADER.size)
    length, kind = frames.HEADER.unpack(header)
    assert kind == FrameKind.CHALLENGE
    challenge = await reader.readexactly(length)
    hello = frames.make_hello(
        challenge=challenge, sender=A, receiver=B, raft_password=PASSWORD, wall_ms=CLOCK.wall_ms()
    )
    writer.write(encode_frame(FrameKind.HELLO, frames.encode_hello(hello)))
    assert await reader.readexactly(frames.HEADER.size) == encode_frame(FrameKind.ACCEPT)
    return reader, writer


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _envelope_bytes(message: ReplicationMessage) -> bytes:
    proto = envelope_to_proto(Envelope(to=B, message=message), sender=A)
    return encode_frame(FrameKind.ENVELOPE, proto.SerializeToString())


async def test_a_damaged_batch_or_foreign_envelope_is_dropped_and_the_stream_goes_on(
    pair: _Pair,
) -> None:
    port = pair.listener.port
    _, writer = await _raw_admitted(port)
    good = envelope_to_proto(Envelope(to=B, message=_append()), sender=A)
    damaged = pb.ReplicationEnvelope()
    damaged.CopyFrom(good)
    value = bytearray(damaged.append.batches[0].value)
    value[-1] ^= 0xFF
    damaged.append.batches[0].value = bytes(value)
    impostor = pb.ReplicationEnvelope()
    impostor.CopyFrom(good)
    impostor.from_node = "c"  # not the node that signed the HELLO
    for envelope in (damaged, impostor, good):
        writer.write(encode_frame(FrameKind.ENVELOPE, envelope.SerializeToString()))
    await pair.endpoint.wait_for(1)
    assert pair.endpoint.delivered == [_append()]
    await _close(writer)


async def test_a_peer_closing_mid_frame_costs_nothing(pair: _Pair) -> None:
    port = pair.listener.port
    _, writer = await _raw_admitted(port)
    frame = _envelope_bytes(_append())
    writer.write(frame[: len(frame) // 2])
    await writer.drain()
    await _close(writer)
    await _eventually(lambda: not pair.listener.connections)
    assert pair.endpoint.delivered == []
    pair.transport.send(Envelope(to=B, message=_ack(1)))  # the listener still serves
    await pair.endpoint.wait_for(1)


async def test_an_oversize_frame_or_an_unsigned_envelope_closes_the_connection(
    pair: _Pair,
) -> None:
    port = pair.listener.port
    reader, writer = await _raw_admitted(port)
    writer.write(frames.HEADER.pack(pair.listener.settings.frame_bytes_max + 1, FrameKind.ENVELOPE))
    async with asyncio.timeout(DEADLINE_S):
        assert await reader.read() == b""  # closed by the listener
    await _close(writer)
    # An envelope before any HELLO: refused, never delivered; and before a HELLO the limit is
    # a control frame's, so an unknown peer cannot make the listener buffer megabytes.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_envelope_bytes(_ack(1)))
    async with asyncio.timeout(DEADLINE_S):
        while await reader.read(1 << 16):
            pass
    await _close(writer)
    assert pair.endpoint.delivered == []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        frames.HEADER.pack(limits.replication_frame_control_bytes_max + 1, FrameKind.HELLO)
    )
    # Closed on that header, long before the HELLO timeout (5 s) would close it anyway.
    async with asyncio.timeout(limits.replication_hello_timeout_ms / 1000 / 2):
        while await reader.read(1 << 16):
            pass
    await _close(writer)
    assert pair.listener.connections == set()


async def test_connections_waiting_for_admission_are_bounded(
    pair: _Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "replication_unadmitted_connections_max", 2)
    port = pair.listener.port
    waiting = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    await _eventually(lambda: pair.listener.unadmitted() == 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(DEADLINE_S):
        assert await reader.read() == b""  # the third is closed at once, not after 5 s
    await _close(writer)
    for _, held in waiting:
        await _close(held)
    await _eventually(lambda: pair.listener.unadmitted() == 0)
    pair.transport.send(Envelope(to=B, message=_ack(1)))  # an admitted peer still gets in
    await pair.endpoint.wait_for(1)


async def test_a_dialler_without_the_cluster_key_gets_nothing_in() -> None:
    async with _serving(dialler_password="not-the-cluster-one") as pair:
        for end in range(3):
            pair.transport.send(Envelope(to=B, message=_ack(end)))
        await _eventually(lambda: pair.listener.refused >= 2)  # refused, and again on retry
        assert pair.endpoint.delivered == []


async def test_the_dialler_reconnects_and_its_queue_stays_bounded() -> None:
    async with _serving(queue_max=5) as pair:
        pair.transport.send(Envelope(to=B, message=_ack(1)))
        await pair.endpoint.wait_for(1)
        port = pair.listener.port
        await pair.listener.close()  # the peer goes away
        await _eventually(lambda: pair.transport._links[B].connection is None)
        for end in range(2, 22):
            pair.transport.send(Envelope(to=B, message=_ack(end)))
        assert pair.transport.statistics().dropped == 15  # 5 queued, the rest dropped
        # The peer comes back on the same port: the queued five go out.
        listener = FramedListener(
            pair.endpoint, settings=FramedSettings(raft_password=PASSWORD), clock=CLOCK
        )
        await listener.start("127.0.0.1", port)
        try:
            await pair.endpoint.wait_for(6)
            assert [m.log_end for m in pair.endpoint.delivered if isinstance(m, AppendAck)] == [
                1,
                2,
                3,
                4,
                5,
                6,
            ]
        finally:
            await listener.close()


async def test_mutual_tls_admits_the_clusters_certificates_only(tmp_path: Path) -> None:
    ca = make_authority(tmp_path / "ca", "cluster-ca")
    rogue = make_authority(tmp_path / "rogue", "rogue-ca")
    node = issue(ca, tmp_path / "ca", "node")
    impostor = issue(rogue, tmp_path / "rogue", "impostor")

    def contexts(leaf_cert: Path, leaf_key: Path, ca_file: Path) -> SslContexts:
        files = TlsFiles(
            cert_file=leaf_cert, key_file=leaf_key, ca_file=ca_file, require_client_auth=True
        )
        return SslContexts(files, clock=CLOCK)

    ours = contexts(node.cert_file, node.key_file, ca.cert_file)
    async with _serving(server_ssl=ours.listener(), client_ssl=ours.dialler()) as pair:
        pair.transport.send(Envelope(to=B, message=_append()))
        await pair.endpoint.wait_for(1)
        assert pair.endpoint.delivered == [_append()]
        peer = next(iter(pair.listener.connections))
        assert peer._transport is not None
        assert peer._transport.get_extra_info("peercert") is not None  # a client certificate

    theirs = contexts(impostor.cert_file, impostor.key_file, ca.cert_file)
    async with _serving(server_ssl=ours.listener(), client_ssl=theirs.dialler()) as pair:
        pair.transport.send(Envelope(to=B, message=_ack(1)))
        await _eventually(lambda: pair.transport.reconnects >= 2)
        assert pair.endpoint.delivered == []
    # A plaintext dialler does not get past the handshake either (it waits for a challenge
    # the listener never sends in the clear, and gives up after its hello timeout).
    async with _serving(server_ssl=ours.listener(), client_ssl=None, hello_timeout_ms=300) as pair:
        pair.transport.send(Envelope(to=B, message=_ack(1)))
        await _eventually(lambda: pair.transport.reconnects >= 2)
        assert pair.endpoint.delivered == []


# --- the node's choice of path, its setting, renewed certificates ----------------------------


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[Envelope] = []

    def send(self, envelope: Envelope) -> None:
        self.sent.append(envelope)

    def send_all(self, envelopes: Sequence[Envelope]) -> None:
        self.sent.extend(envelopes)

    def connected(self, node_id: NodeId) -> bool:  # a framed side whose links are all up
        return True


def test_a_peer_is_reached_framed_only_when_it_advertises_the_port() -> None:
    grpc_side, framed_side = _Recorder(), _Recorder()
    advertised = {B: "127.0.0.1:1"}
    routed = RoutedTransport(
        grpc=grpc_side,  # type: ignore[arg-type]
        framed=framed_side,  # type: ignore[arg-type]
        framed_address=advertised.get,
    )
    routed.send(Envelope(to=B, message=_ack(1)))
    routed.send(Envelope(to=NodeId("c"), message=_ack(2)))
    del advertised[B]  # B registered again without the port: gRPC from the next message
    routed.send(Envelope(to=B, message=_ack(3)))
    assert [e.message.log_end for e in framed_side.sent] == [1]  # type: ignore[union-attr]
    assert [e.message.log_end for e in grpc_side.sent] == [2, 3]  # type: ignore[union-attr]
    # This node without the port: gRPC to everyone, whatever they advertise.
    grpc_only = _Recorder()
    routed = RoutedTransport(
        grpc=grpc_only,  # type: ignore[arg-type]
        framed=None,
        framed_address={B: "127.0.0.1:1"}.get,
    )
    routed.send(Envelope(to=B, message=_ack(4)))
    assert len(grpc_only.sent) == 1
    # `send_all` chooses the same way, message by message.
    grpc_side, framed_side = _Recorder(), _Recorder()
    routed = RoutedTransport(
        grpc=grpc_side,  # type: ignore[arg-type]
        framed=framed_side,  # type: ignore[arg-type]
        framed_address={B: "127.0.0.1:1"}.get,
    )
    routed.send_all([Envelope(to=B, message=_ack(5)), Envelope(to=C, message=_ack(6))])
    assert [e.message.log_end for e in framed_side.sent] == [5]  # type: ignore[union-attr]
    assert [e.message.log_end for e in grpc_side.sent] == [6]  # type: ignore[union-attr]


async def test_a_peer_whose_framed_port_cannot_be_reached_gets_grpc_until_it_can() -> None:
    endpoint = _Endpoint()
    listener = FramedListener(
        endpoint, settings=FramedSettings(raft_password=PASSWORD), clock=CLOCK
    )
    port = await listener.start("127.0.0.1", 0)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: a port nobody answers on
    advertised = {B: f"127.0.0.1:{port}", C: f"127.0.0.1:{closed.getsockname()[1]}"}
    framed = FramedTransport(
        node_id=A,
        resolve=advertised.get,
        settings=FramedSettings(raft_password=PASSWORD),
        clock=CLOCK,
    )
    grpc_side = _Recorder()
    routed = RoutedTransport(
        grpc=grpc_side,  # type: ignore[arg-type]
        framed=framed,
        framed_address=advertised.get,
    )
    runner = asyncio.create_task(framed.run())
    try:
        routed.send(Envelope(to=B, message=_ack(1)))  # not connected yet: gRPC, and a dial
        assert [e.message for e in grpc_side.sent] == [_ack(1)]
        await _eventually(lambda: framed.connected(B))
        routed.send(Envelope(to=B, message=_ack(2)))
        await endpoint.wait_for(1)
        assert endpoint.delivered == [_ack(2)] and len(grpc_side.sent) == 1
        # C's framed port does not answer (a firewall that lets only the gRPC port through):
        # every message to C goes over gRPC while the framed side keeps trying; none is lost.
        for end in range(3, 13):
            routed.send(Envelope(to=C, message=_ack(end)))
            await asyncio.sleep(0.01)  # the dial's attempts run meanwhile (and fail)
        ends = [e.message.log_end for e in grpc_side.sent[1:]]  # type: ignore[union-attr]
        assert ends == list(range(3, 13))
        assert not framed.connected(C) and framed.statistics().dropped == 0
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await listener.close()
        closed.close()


def test_the_setting_is_a_real_port_distinct_from_the_others(tmp_path: Path) -> None:
    config = load_config(
        flags={"data_dir": str(tmp_path)}, environ={"SHOAL_REPLICATION_PORT": "50054"}
    )
    assert config.replication_port == 50054
    assert config.replication_address == "127.0.0.1:50054"
    # On by default, on its own port; "off" (any case, from the environment, a flag or the
    # file) turns it off: gRPC to every peer.
    default = load_config(flags={"data_dir": str(tmp_path)}, environ={})
    assert default.replication_address == f"127.0.0.1:{DEFAULT_REPLICATION_PORT}"
    for environ, flags in (
        ({"SHOAL_REPLICATION_PORT": "off"}, {}),
        ({"SHOAL_REPLICATION_PORT": "50054"}, {"replication_port": "OFF"}),
    ):
        off = load_config(flags={"data_dir": str(tmp_path), **flags}, environ=environ)
        assert off.replication_port is None and off.replication_address == ""
    file = tmp_path / "shoal.toml"
    file.write_text('replication_port = "off"\n')
    from_file = load_config(flags={"data_dir": str(tmp_path)}, environ={}, config_file=file)
    assert from_file.replication_port is None
    with pytest.raises(ValueError, match="replication_port must be an integer"):
        load_config(flags={"data_dir": str(tmp_path)}, environ={"SHOAL_REPLICATION_PORT": "of"})
    with pytest.raises(ValueError, match="replication_port"):
        load_config(flags={"data_dir": str(tmp_path)}, environ={"SHOAL_REPLICATION_PORT": "0"})
    with pytest.raises(ValueError, match="replication_port"):
        load_config(
            flags={"data_dir": str(tmp_path)},
            environ={"SHOAL_REPLICATION_PORT": "50051", "SHOAL_GRPC_PORT": "50051"},
        )


def test_renewed_certificate_files_are_used_for_new_connections(tmp_path: Path) -> None:
    ca = make_authority(tmp_path / "ca", "cluster-ca")
    first = issue(ca, tmp_path / "ca", "node")
    clock = ManualClock(wall_ms=1_790_000_000_000)
    files = TlsFiles(
        cert_file=first.cert_file,
        key_file=first.key_file,
        ca_file=ca.cert_file,
        require_client_auth=True,
    )
    contexts = SslContexts(files, clock=clock, check_interval_ms=1_000)
    before = contexts.dialler()
    renewed = issue(ca, tmp_path / "renewed", "node")
    first.cert_file.write_bytes(renewed.cert_file.read_bytes() + b"\n")  # another size
    first.key_file.write_bytes(renewed.key_file.read_bytes())
    assert contexts.dialler() is before  # looked at no more than every check interval
    clock.advance(ms=1_000)
    assert contexts.dialler() is not before
