"""GrpcLeaseClient (broker/client/leases.py) against the gRPC LeaseService
(broker/gateway/lease_service.py), and KCL-style workers using it end to end.

Goal: every lease operation works over the wire with the lease core's outcomes (refusals as
LeaseError values with the right refusal, transport failures as ShoalError), errors carry the
Kinesis error name in the rich gRPC status, the CLI lists and deletes applications, and two
workers in one application share a stream's shards through the metadata quorum, with no two
checkpointing a shard in one lease period.

Method: a grpc.aio server on 127.0.0.1 serving only `lease_handler`, over a MetadataFrontend on
a LocalQuorum (unit-level tests) or on the in-process node's own metadata quorum (the worker
test; the node does not register the lease service itself yet). Real time, bounded waits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

import grpc
import pytest

from broker.api.leases.v1 import leases_pb2 as pb
from broker.caller import Caller
from broker.cli import main
from broker.client.grpc_client import AsyncShoalClient
from broker.client.leases import GrpcLeaseClient
from broker.client.worker import (
    InitializationInput,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
    Worker,
    WorkerConfig,
)
from broker.clock import ManualClock
from broker.consumers import leases
from broker.consumers.leases import (
    Checkpoint,
    CheckpointLease,
    CreateLeases,
    DeleteApplication,
    DeleteLease,
    Lease,
    LeaseError,
    LeaseRefusal,
    NewLease,
    ReleaseLease,
    RenewLease,
    StealLease,
    TakeLease,
)
from broker.errors import ErrorCode, ShoalError
from broker.gateway.lease_service import lease_handler
from broker.meta.frontend import MetadataFrontend
from broker.meta.quorum import LocalQuorum
from broker.node import Node
from broker.wire.error_mapping import error_from_rpc_error
from tests.meta.factories import create_stream, nodes_image

pytestmark = pytest.mark.integration

APP = "app"
STREAM = "s1"
SHARD_0 = "shardId-000000000000"
SHARD_1 = "shardId-000000000001"


class LeaseKey(TypedDict):
    application: str
    stream_name: str
    lease_key: str


KEY_0: LeaseKey = {"application": APP, "stream_name": STREAM, "lease_key": SHARD_0}


@dataclass
class LeaseServer:
    target: str
    quorum: LocalQuorum


async def serve_leases(frontend: MetadataFrontend, clock: ManualClock) -> grpc.aio.Server:
    server = grpc.aio.server()
    caller = Caller(region="us-east-1", account_id="000000000000")
    server.add_generic_rpc_handlers((lease_handler(frontend, clock, caller=caller),))
    return server


@pytest.fixture
async def lease_server(clock: ManualClock) -> AsyncIterator[LeaseServer]:
    quorum = LocalQuorum(nodes_image(1))
    await quorum.start()
    await quorum.propose(create_stream(STREAM, shard_count=2))
    server = await serve_leases(MetadataFrontend(quorum), clock)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield LeaseServer(target=f"127.0.0.1:{port}", quorum=quorum)
    finally:
        await server.stop(None)
        await quorum.stop()


@pytest.fixture
async def lease_client(lease_server: LeaseServer) -> AsyncIterator[GrpcLeaseClient]:
    async with GrpcLeaseClient(lease_server.target) as client:
        yield client


async def create(client: GrpcLeaseClient, *shard_ids: str) -> tuple[Lease, ...]:
    result = await client.create_leases(
        CreateLeases(
            application=APP,
            stream_name=STREAM,
            leases=tuple(NewLease(shard_id=shard_id) for shard_id in shard_ids),
        )
    )
    assert not isinstance(result, LeaseError), result
    return result


def lease_of(result: Lease | LeaseError) -> Lease:
    assert isinstance(result, Lease), result
    return result


def refusal_of(result: object) -> LeaseRefusal:
    assert isinstance(result, LeaseError), result
    return result.refusal


async def test_the_lease_operations_over_grpc(
    lease_client: GrpcLeaseClient, lease_server: LeaseServer
) -> None:
    created = await create(lease_client, SHARD_0, SHARD_1)
    assert [lease.lease_key for lease in created] == [SHARD_0, SHARD_1]
    key = KEY_0
    taken = lease_of(
        await lease_client.take(
            TakeLease(**key, owner="w1", expected_owner=None, expected_counter=0)
        )
    )
    assert (taken.lease_owner, taken.lease_counter) == ("w1", 1)
    renewed = lease_of(await lease_client.renew(RenewLease(**key, owner="w1", expected_counter=1)))
    assert renewed.lease_counter == 2
    pending = lease_of(
        await lease_client.checkpoint(
            CheckpointLease(
                **key, owner="w1", expected_counter=2, checkpoint=Checkpoint("42", 7), pending=True
            )
        )
    )
    assert pending.pending_checkpoint == Checkpoint("42", 7)
    done = lease_of(
        await lease_client.checkpoint(
            CheckpointLease(**key, owner="w1", expected_counter=2, checkpoint=Checkpoint("42", 7))
        )
    )
    assert done.checkpoint == Checkpoint("42", 7)
    assert done.pending_checkpoint is None
    stolen = lease_of(
        await lease_client.steal(
            StealLease(**key, owner="w2", expected_owner="w1", expected_counter=2)
        )
    )
    assert (stolen.lease_owner, stolen.lease_counter) == ("w2", 3)
    released = lease_of(
        await lease_client.release(ReleaseLease(**key, owner="w2", expected_counter=3))
    )
    assert released.lease_owner is None
    # What the client returns is what the quorum holds.
    image_lease = lease_server.quorum.image().leases.get(APP, STREAM, SHARD_0)
    assert image_lease == released
    listed = await lease_client.list_leases(application=APP, stream_name=STREAM)
    assert [lease.lease_key for lease in listed] == [SHARD_0, SHARD_1]
    assert listed[0] == released
    assert await lease_client.list_leases(application=APP) == listed
    assert await lease_client.list_applications() == (APP,)


async def test_refusals_come_back_as_lease_errors(lease_client: GrpcLeaseClient) -> None:
    await create(lease_client, SHARD_0)
    key = KEY_0
    lease_of(
        await lease_client.take(
            TakeLease(**key, owner="w1", expected_owner=None, expected_counter=0)
        )
    )
    # A second taker with a stale observation: CONFLICT.
    late = await lease_client.take(
        TakeLease(**key, owner="w2", expected_owner=None, expected_counter=0)
    )
    assert refusal_of(late) is LeaseRefusal.CONFLICT
    # A zombie's checkpoint (w2 took it over): CONFLICT, and the checkpoint does not move.
    lease_of(
        await lease_client.take(
            TakeLease(**key, owner="w2", expected_owner="w1", expected_counter=1)
        )
    )
    zombie = await lease_client.checkpoint(
        CheckpointLease(**key, owner="w1", expected_counter=1, checkpoint=Checkpoint("5"))
    )
    assert refusal_of(zombie) is LeaseRefusal.CONFLICT
    (lease,) = await lease_client.list_leases(application=APP, stream_name=STREAM)
    assert lease.checkpoint == leases.TRIM_HORIZON
    # NOT_FOUND: no such lease, stream or application.
    missing = await lease_client.renew(
        RenewLease(
            application=APP, stream_name=STREAM, lease_key=SHARD_1, owner="w1", expected_counter=0
        )
    )
    assert refusal_of(missing) is LeaseRefusal.NOT_FOUND
    no_stream = await lease_client.create_leases(
        CreateLeases(application=APP, stream_name="nope", leases=(NewLease(shard_id=SHARD_0),))
    )
    assert refusal_of(no_stream) is LeaseRefusal.NOT_FOUND
    assert refusal_of(
        await lease_client.delete_application(DeleteApplication(application="x"))
    ) is (LeaseRefusal.NOT_FOUND)
    # INVALID: a steal from oneself, a checkpoint moving back, deleting an unfinished lease.
    self_steal = await lease_client.steal(
        StealLease(**key, owner="w2", expected_owner="w2", expected_counter=2)
    )
    assert refusal_of(self_steal) is LeaseRefusal.INVALID
    lease_of(
        await lease_client.checkpoint(
            CheckpointLease(**key, owner="w2", expected_counter=2, checkpoint=Checkpoint("9"))
        )
    )
    back = await lease_client.checkpoint(
        CheckpointLease(**key, owner="w2", expected_counter=2, checkpoint=Checkpoint("8"))
    )
    assert refusal_of(back) is LeaseRefusal.INVALID
    assert refusal_of(await lease_client.delete_lease(DeleteLease(**key))) is LeaseRefusal.INVALID


async def test_delete_lease_and_application(lease_client: GrpcLeaseClient) -> None:
    await create(lease_client, SHARD_0, SHARD_1)
    key = KEY_0
    lease_of(
        await lease_client.take(
            TakeLease(**key, owner="w1", expected_owner=None, expected_counter=0)
        )
    )
    lease_of(
        await lease_client.checkpoint(
            CheckpointLease(**key, owner="w1", expected_counter=1, checkpoint=leases.SHARD_END)
        )
    )
    deleted = lease_of(await lease_client.delete_lease(DeleteLease(**key)))
    assert deleted.checkpoint.is_shard_end
    assert await lease_client.delete_application(DeleteApplication(application=APP)) == 1
    assert await lease_client.list_applications() == ()


async def test_errors_carry_the_kinesis_error_name(lease_server: LeaseServer) -> None:
    """The rich status, as KinesisService sends it: ErrorInfo.reason is the Kinesis name."""
    async with grpc.aio.insecure_channel(lease_server.target) as channel:

        async def call(method: str, request: Any, response: Any) -> Any:
            stub = channel.unary_unary(
                f"/broker.api.leases.v1.LeaseService/{method}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )
            return await stub(request, timeout=5)

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(
                "RenewLease",
                pb.RenewLeaseRequest(
                    application=APP, stream_name=STREAM, lease_key=SHARD_0, owner="w1"
                ),
                pb.RenewLeaseResponse,
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_from_rpc_error(raised.value).code is ErrorCode.RESOURCE_NOT_FOUND
        bad = pb.CheckpointRequest(
            application=APP,
            stream_name=STREAM,
            lease_key=SHARD_0,
            owner="w1",
            checkpoint=pb.Checkpoint(sequence_number="five"),
        )
        for request in (bad, pb.CheckpointRequest(application=APP, stream_name=STREAM)):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call("Checkpoint", request, pb.CheckpointResponse)
            error = error_from_rpc_error(raised.value)
            assert error.code is ErrorCode.INVALID_ARGUMENT
            assert error.code.kinesis_name == "InvalidArgumentException"


async def test_transport_failures_raise() -> None:
    """Nobody listening: every call raises ShoalError (an unknown outcome), none returns a
    LeaseError the worker would take for a refusal."""
    async with GrpcLeaseClient("127.0.0.1:1", timeout_s=2) as client:
        with pytest.raises(ShoalError) as raised:
            await client.renew(
                RenewLease(
                    application=APP,
                    stream_name=STREAM,
                    lease_key=SHARD_0,
                    owner="w1",
                    expected_counter=0,
                )
            )
        assert raised.value.code is ErrorCode.UNAVAILABLE
        with pytest.raises(ShoalError):
            await client.list_leases(application=APP)


async def test_the_leases_cli(
    lease_client: GrpcLeaseClient, lease_server: LeaseServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await create(lease_client, SHARD_0, SHARD_1)
    lease_of(
        await lease_client.take(
            TakeLease(
                application=APP,
                stream_name=STREAM,
                lease_key=SHARD_1,
                owner="worker-1",
                expected_owner=None,
                expected_counter=0,
            )
        )
    )
    endpoint = ["--endpoint", lease_server.target]
    # The CLI runs its own event loop: give it a thread, this loop keeps serving.
    assert await asyncio.to_thread(main, [*endpoint, "leases", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "APPLICATION",
        "STREAM",
        "SHARD",
        "OWNER",
        "COUNTER",
        "CHECKPOINT",
        "PARENTS",
    ]
    assert out[1].split() == [APP, STREAM, SHARD_0, "-", "0", "TRIM_HORIZON", "-"]
    assert out[2].split() == [APP, STREAM, SHARD_1, "worker-1", "1", "TRIM_HORIZON", "-"]
    code = await asyncio.to_thread(
        main, [*endpoint, "leases", "list", "--application", "other", "--stream", STREAM]
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == "(no leases)"
    assert await asyncio.to_thread(main, [*endpoint, "leases", "delete-application", APP]) == 0
    assert capsys.readouterr().out.strip() == f"deleted application {APP} (2 leases)"
    assert await asyncio.to_thread(main, [*endpoint, "leases", "delete-application", APP]) == 1
    assert "ResourceNotFoundException" in capsys.readouterr().err
    assert await asyncio.to_thread(main, [*endpoint, "leases", "delete-application", "a b"]) == 1
    assert "InvalidArgumentException" in capsys.readouterr().err


# --- Workers end to end ------------------------------------------------------------------------


class AuditedGrpcLeaseClient(GrpcLeaseClient):
    """Records every successful checkpoint with the lease period (counter) it was made in;
    one list shared by every worker's client."""

    def __init__(self, target: str, checkpoints: list[tuple[str, int, str]]) -> None:
        super().__init__(target)
        self.checkpoints = checkpoints

    async def checkpoint(self, operation: CheckpointLease) -> Lease | LeaseError:
        result = await super().checkpoint(operation)
        if isinstance(result, Lease):
            self.checkpoints.append((result.lease_key, operation.expected_counter, operation.owner))
        return result


@dataclass
class Journal:
    delivered: dict[bytes, str] = field(default_factory=dict)  # data -> worker

    def processor(self, worker_id: str) -> JournalProcessor:
        return JournalProcessor(self, worker_id)


class JournalProcessor:
    def __init__(self, journal: Journal, worker_id: str) -> None:
        self.journal = journal
        self.worker_id = worker_id

    async def initialize(self, initialization_input: InitializationInput) -> None:
        pass

    async def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        for record in process_records_input.records:
            self.journal.delivered[record.data] = self.worker_id
        await process_records_input.checkpointer.checkpoint()

    async def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        pass

    async def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        await shard_ended_input.checkpointer.checkpoint()

    async def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        await shutdown_requested_input.checkpointer.checkpoint()


async def wait_for(predicate: Callable[[], bool], *, deadline_s: float, what: str) -> None:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > deadline_s:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def put(client: AsyncShoalClient, prefix: str, count: int) -> set[bytes]:
    data = [f"{prefix}-{i}".encode() for i in range(count)]
    entries = [{"Data": d, "PartitionKey": f"key-{d.decode()}"} for d in data]
    response = await client.call("PutRecords", {"StreamName": STREAM, "Records": entries})
    assert response["FailedRecordCount"] == 0
    return set(data)


async def test_two_workers_share_a_stream_through_the_lease_service(
    node: Node, client: AsyncShoalClient
) -> None:
    """Two workers, each with its own GrpcLeaseClient, split 4 shards 2/2 through the node's
    metadata quorum and process every record; when one shuts down gracefully, the other takes
    its shards at their checkpoints and processes what comes next."""
    await client.call("CreateStream", {"StreamName": STREAM, "ShardCount": 4})
    metadata = node._metadata
    assert metadata is not None
    assert isinstance(node.clock, ManualClock)
    server = await serve_leases(metadata, node.clock)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    checkpoints: list[tuple[str, int, str]] = []
    journal = Journal()
    workers: dict[str, Worker] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    lease_clients: list[GrpcLeaseClient] = []

    def start(worker_id: str) -> None:
        lease_client = AuditedGrpcLeaseClient(target, checkpoints)
        lease_clients.append(lease_client)
        worker = Worker(
            application=APP,
            stream_name=STREAM,
            processor_factory=lambda: journal.processor(worker_id),
            lease_client=lease_client,
            kinesis=client,
            config=WorkerConfig(
                worker_id=worker_id,
                failover_ms=1_000,
                lease_take_interval_ms=200,
                polling_idle_interval_ms=20,
                shard_sync_interval_ms=500,
                parent_poll_interval_ms=50,
                retry_backoff_ms_min=10,
                retry_backoff_ms_max=100,
                shutdown_timeout_ms=10_000,
                rng=random.Random(worker_id),
            ),
        )
        workers[worker_id] = worker
        tasks[worker_id] = asyncio.create_task(worker.run())

    def held() -> dict[str, int]:
        return {w: len(worker.statistics().held_shard_ids) for w, worker in workers.items()}

    def owners() -> dict[str, str | None]:
        table = metadata.image().leases
        return {key: lease.lease_owner for key, lease in table.stream_leases(APP, STREAM).items()}

    try:
        start("w0")
        start("w1")
        await wait_for(
            lambda: (
                sorted(held().values()) == [2, 2]
                and sorted(o or "" for o in owners().values()) == ["w0", "w0", "w1", "w1"]
            ),
            deadline_s=15,
            what="two workers holding two shards each",
        )
        records = await put(client, "a", 200)
        await wait_for(lambda: records <= journal.delivered.keys(), deadline_s=15, what="delivery")
        assert set(journal.delivered.values()) == {"w0", "w1"}
        # w1 leaves gracefully: it checkpoints and releases; w0 takes its shards over.
        async with asyncio.timeout(15):
            await workers.pop("w1").shutdown()
            await tasks.pop("w1")
        await wait_for(lambda: held() == {"w0": 4}, deadline_s=15, what="w0 holding all")
        more = await put(client, "b", 200)
        await wait_for(lambda: more <= journal.delivered.keys(), deadline_s=15, what="delivery")
        assert {journal.delivered[d] for d in more} == {"w0"}
        # Every shard got records, and every checkpoint reached the quorum's image.
        table = metadata.image().leases
        for lease in table.stream_leases(APP, STREAM).values():
            assert not lease.checkpoint.is_sentinel, lease
        # No two workers checkpointed one shard in one lease period.
        period_owner: dict[tuple[str, int], str] = {}
        for shard, counter, owner in checkpoints:
            assert period_owner.setdefault((shard, counter), owner) == owner, (shard, counter)
        async with asyncio.timeout(15):
            await workers.pop("w0").shutdown()
            await tasks.pop("w0")
        assert all(owner is None for owner in owners().values()), "released on shutdown"
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for lease_client in lease_clients:
            await lease_client.close()
        await server.stop(None)


@pytest.mark.integration
async def test_every_node_serves_the_lease_service(node: Node, client: AsyncShoalClient) -> None:
    """The node registers LeaseService on its gRPC port next to KinesisService."""
    await client.call("CreateStream", {"StreamName": "leased", "ShardCount": 1})
    async with GrpcLeaseClient(f"127.0.0.1:{node.grpc_port}") as remote:
        created = await remote.create_leases(
            CreateLeases(
                application="app",
                stream_name="leased",
                leases=(NewLease(shard_id="shardId-000000000000"),),
            )
        )
        assert not isinstance(created, LeaseError)
        assert await remote.list_applications() == ("app",)
