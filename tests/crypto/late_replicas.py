"""A node that applies the metadata log late: every image the log passed through is one a node
may hold when a record reaches its replica. A stream whose encryption is decided before its
first record must have its key in every image that places a replica of it, or that node
stores the record in the clear (docs/ARCHITECTURE.md, "Encryption at rest"). The real Kinesis
service over an in-memory quorum, with the default cluster master key."""

from __future__ import annotations

from broker.clock import SystemClock
from broker.config import Config, Knobs
from broker.crypto.keyring import Keyring
from broker.crypto.master_keys import ClusterMasterKey, MasterKeys
from broker.meta.commands import SetMetadataFormat
from broker.meta.frontend import MetadataFrontend
from broker.meta.image import MetadataImage
from broker.meta.metadata_format import METADATA_FORMAT_MAX
from broker.meta.quorum import LocalQuorum
from broker.meta.state_machine import apply
from broker.service.context import ServiceContext
from broker.service.in_process import LocalKinesis
from broker.service.kinesis import KinesisService
from broker.types import StreamName
from tests.meta.factories import init_cluster, nodes_image


class RecordingQuorum(LocalQuorum):
    """Every image the metadata log passes through: what a node applying it late may hold."""

    def __init__(self, image: MetadataImage) -> None:
        super().__init__(image)
        self.images = [image]

    def _set_image(self, image: MetadataImage) -> None:
        super()._set_image(image)
        self.images.append(image)


class NoShards:
    meter = None


def service_over(quorum: RecordingQuorum) -> tuple[LocalKinesis, MetadataFrontend, MasterKeys]:
    frontend = MetadataFrontend(quorum, propose_timeout_ms=5_000)
    master = ClusterMasterKey(
        lambda: quorum.image().iterator_secret,
        password="raft-password",
        region="us-east-1",
        account_id="000000000000",
    )
    knobs = Knobs(stream_creating_ms=0, stream_updating_ms=0)
    ctx = ServiceContext(
        config=Config(knobs=knobs),
        clock=SystemClock(),
        metadata=frontend,
        shards=NoShards(),  # type: ignore[arg-type]  # creating and describing touch no shard
        master_keys=master,
    )
    return LocalKinesis(KinesisService(ctx)), frontend, master


def replicas_without_key(
    images: list[MetadataImage], stream_name: str, master: MasterKeys
) -> list[int]:
    """The images (by index) in which a node holds a replica of `stream_name`'s shards (placed,
    epoch 1 on) yet its keyring has no key to seal them with: a late node stores in the clear."""
    without = []
    for index, image in enumerate(images):
        stream = image.streams.get(StreamName(stream_name))
        if stream is None:
            continue
        keyring = Keyring(master, lambda image=image: image)  # type: ignore[misc]
        if any(
            shard.replicas and shard.epoch >= 1 and keyring.sealing_key(shard.uid) is None
            for shard in stream.shards
        ):
            without.append(index)
    return without


def three_nodes_at_the_newest_format() -> MetadataImage:
    image = nodes_image(3, apply(MetadataImage(), init_cluster()).image)
    return apply(image, SetMetadataFormat(now_ms=1, level=METADATA_FORMAT_MAX)).image
