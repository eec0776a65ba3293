"""Master keys and the keyring, without a node: the cluster key every node derives alike (and
re-derives after a Raft password change), the key file (wrapping, rotation and re-wrap, the
KeyIds it knows) and its taking over from the cluster key, and the metadata transitions that
number and re-wrap data keys."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import pytest

from broker.config import Config
from broker.crypto.keyring import Keyring
from broker.crypto.master_keys import (
    ClusterMasterKey,
    LocalKeyFile,
    MasterKeyError,
    WithClusterKey,
    create_key_file,
    rotate_key_file,
)
from broker.errors import ErrorCode, ShoalError
from broker.log.encryption import KeyUnavailableError
from broker.meta.commands import SetStreamEncryption
from broker.meta.image import MetadataImage, StreamDataKey
from broker.meta.state_machine import apply
from broker.types import StreamName
from tests.meta.factories import nodes_image
from tests.meta.test_codecs import EVERY_COMMAND

ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s"


def key_file(tmp_path: Path) -> LocalKeyFile:
    path = tmp_path / "keys.json"
    if not path.exists():
        create_key_file(path)
    return LocalKeyFile(path, region="us-east-1", account_id="000000000000")


def cluster_key(secret: bytes, password: str, *previous: str) -> ClusterMasterKey:
    return ClusterMasterKey(
        lambda: secret,
        password=password,
        previous_passwords=previous,
        region="us-east-1",
        account_id="000000000000",
    )


def encrypted_image(keys: WithClusterKey | ClusterMasterKey | LocalKeyFile) -> MetadataImage:
    """A cluster whose stream "s1" has one data key made by `keys`."""
    image = nodes_image(1)
    for command in EVERY_COMMAND[:2]:  # a cluster and stream "s1"
        image = apply(image, command).image
    _, wrapped = keys.new_data_key(
        "alias/aws/kinesis", stream_arn=image.streams[StreamName("s1")].arn
    )
    command = SetStreamEncryption(
        now_ms=10**13,  # past the stream's CREATING
        name="s1",
        encryption_type="KMS",
        key_id="alias/aws/kinesis",
        updating_ms=0,
        data_key=wrapped,
    )
    return apply(image, command).image


def test_every_node_of_a_cluster_derives_the_same_cluster_key() -> None:
    secret = os.urandom(32)
    node_1, node_2 = cluster_key(secret, "raft-pw"), cluster_key(secret, "raft-pw")
    key_id = node_1.current_key_id()
    assert key_id == node_2.current_key_id()
    assert str(uuid.UUID(key_id)) == key_id  # shaped like a KMS key id
    for known in ("alias/aws/kinesis", "alias/aws/kinesisvideo", key_id, node_1.key_arn(key_id)):
        material, wrapped = node_1.new_data_key(known, stream_arn=ARN)
        assert wrapped.wrapping == f"cluster:{key_id}"
        stored = StreamDataKey(
            version=1, wrapped=wrapped.wrapped, wrapping=wrapped.wrapping, created_ms=0
        )
        assert node_2.unwrap(stored, stream_arn=ARN) == material
    with pytest.raises(ShoalError) as refused:
        node_1.new_data_key("alias/mine", stream_arn=ARN)
    assert refused.value.code is ErrorCode.KMS_NOT_FOUND
    # Another cluster (its own secret) or another Raft password: another key, which opens
    # nothing of this one's.
    for other in (cluster_key(os.urandom(32), "raft-pw"), cluster_key(secret, "other-pw")):
        assert other.current_key_id() != key_id
        with pytest.raises(MasterKeyError, match="raft_password_previous"):
            other.unwrap(stored, stream_arn=ARN)
    # Before the node has applied InitCluster there is no key, and no data key to open.
    unjoined = cluster_key(b"", "raft-pw")
    with pytest.raises(ShoalError) as refused:
        unjoined.new_data_key("alias/aws/kinesis", stream_arn=ARN)
    assert refused.value.code is ErrorCode.KMS_INVALID_STATE
    with pytest.raises(MasterKeyError, match="not joined a cluster"):
        unjoined.unwrap(stored, stream_arn=ARN)


def test_a_changed_raft_password_rewraps_with_the_previous_one() -> None:
    secret = os.urandom(32)
    before = cluster_key(secret, "old-pw")
    image = encrypted_image(before)
    stream = image.streams[StreamName("s1")]
    material = before.unwrap(stream.data_keys[0], stream_arn=stream.arn)
    # Restarted with a new password and no previous one: the key is unavailable, loudly.
    forgetful = Keyring(cluster_key(secret, "new-pw"), lambda: image)
    with pytest.raises(KeyUnavailableError, match="raft_password_previous"):
        forgetful.opening_key(stream.shards[0].uid, 1)
    assert forgetful.rewrap_commands(image, now_ms=1) == []  # nothing it can fix
    # With the previous password it opens the key and re-wraps it under the new one.
    after = cluster_key(secret, "new-pw", "old-pw")
    (rewrap,) = Keyring(after, lambda: image).rewrap_commands(image, now_ms=1)
    image = apply(image, rewrap).image
    (key,) = image.streams[StreamName("s1")].data_keys
    assert key.wrapping == f"cluster:{cluster_key(secret, 'new-pw').current_key_id()}"
    assert cluster_key(secret, "new-pw").unwrap(key, stream_arn=stream.arn) == material


def test_a_key_file_takes_over_from_the_cluster_key(tmp_path: Path) -> None:
    cluster = cluster_key(os.urandom(32), "raft-pw")
    image = encrypted_image(cluster)
    stream = image.streams[StreamName("s1")]
    material = cluster.unwrap(stream.data_keys[0], stream_arn=stream.arn)
    configured = WithClusterKey(key_file(tmp_path), cluster)
    assert configured.unwrap(stream.data_keys[0], stream_arn=stream.arn) == material
    (rewrap,) = Keyring(configured, lambda: image).rewrap_commands(image, now_ms=1)
    image = apply(image, rewrap).image
    (key,) = image.streams[StreamName("s1")].data_keys
    file_key = key_file(tmp_path)
    assert key.wrapping == f"local:{file_key.current_key_id()}"
    assert file_key.unwrap(key, stream_arn=stream.arn) == material
    assert configured.new_data_key("alias/aws/kinesis", stream_arn=ARN)[1].wrapping.startswith(
        "local:"
    )


def test_the_file_must_exist_be_private_and_is_never_made_by_a_node(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="does not exist"):
        LocalKeyFile(tmp_path / "keys.json", region="us-east-1", account_id="000000000000")
    keys = key_file(tmp_path)
    assert (keys.path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(FileExistsError):
        create_key_file(keys.path)
    os.chmod(keys.path, 0o440)  # a Kubernetes Secret volume read through the pod's fsGroup
    key_file(tmp_path)
    for mode in (0o644, 0o660):
        os.chmod(keys.path, mode)
        with pytest.raises(MasterKeyError, match="open to others"):
            key_file(tmp_path)


def test_key_ids_the_file_knows(tmp_path: Path) -> None:
    keys = key_file(tmp_path)
    current = keys.current_key_id()
    for known in (
        "alias/aws/kinesis",
        "arn:aws:kms:eu-west-1:111111111111:alias/aws/kinesisvideo",
        current,
        keys.key_arn(current),
    ):
        material, wrapped = keys.new_data_key(known, stream_arn=ARN)
        assert len(material) == 32 and wrapped.wrapping == f"local:{current}"
    for unknown, message in (
        ("alias/mine", "Alias arn:aws:kms:us-east-1:000000000000:alias/mine is not found."),
        ("nope", "Key 'arn:aws:kms:us-east-1:000000000000:key/nope' does not exist"),
    ):
        with pytest.raises(ShoalError) as refused:
            keys.new_data_key(unknown, stream_arn=ARN)
        assert refused.value.code is ErrorCode.KMS_NOT_FOUND
        assert refused.value.message == message


def test_rotation_rewraps_and_old_wrappings_still_open(tmp_path: Path) -> None:
    later = 10**13  # past the stream's CREATING
    image = nodes_image(1)
    for command in EVERY_COMMAND[:2]:  # a cluster and stream "s1"
        image = apply(image, command).image
    arn = image.streams[StreamName("s1")].arn
    keys = key_file(tmp_path)
    first_id = keys.current_key_id()
    material, wrapped = keys.new_data_key("alias/aws/kinesis", stream_arn=arn)
    command = SetStreamEncryption(
        now_ms=later,
        name="s1",
        encryption_type="KMS",
        key_id="alias/aws/kinesis",
        updating_ms=0,
        data_key=wrapped,
    )
    image = apply(image, command).image
    image = apply(image, dataclasses.replace(command, now_ms=later + 1)).image
    stream = image.streams[StreamName("s1")]
    assert [k.version for k in stream.data_keys] == [1, 2]  # numbered at apply
    current_image = [image]
    keyring = Keyring(keys, lambda: current_image[0])
    shard = stream.shards[0].uid
    sealing = keyring.sealing_key(shard)
    assert sealing is not None and sealing.version == 2
    assert keyring.opening_key(shard, 1).version == 1
    with pytest.raises(KeyUnavailableError):
        keyring.opening_key(shard, 3)
    assert keys.unwrap(stream.data_keys[0], stream_arn=arn) == material
    with pytest.raises(MasterKeyError):  # bound to its stream
        keys.unwrap(stream.data_keys[0], stream_arn=arn + "x")
    assert keyring.rewrap_commands(image, now_ms=4) == []

    second_id = rotate_key_file(keys.path)
    assert keys.current_key_id() == second_id != first_id
    (rewrap,) = keyring.rewrap_commands(image, now_ms=4)
    image = apply(image, rewrap).image
    rewrapped = image.streams[StreamName("s1")].data_keys
    assert [k.wrapping for k in rewrapped] == [f"local:{second_id}"] * 2
    assert keys.unwrap(rewrapped[0], stream_arn=arn) == material  # the same key
    current_image[0] = image
    assert keyring.opening_key(shard, 1).version == 1
    assert keyring.rewrap_commands(image, now_ms=5) == []

    # Stop keeps the keys (sealed batches stay readable); nothing seals any more.
    stopped = SetStreamEncryption(
        now_ms=later + 2, name="s1", encryption_type="NONE", key_id=None, updating_ms=0
    )
    current_image[0] = apply(image, stopped).image
    assert keyring.sealing_key(shard) is None
    assert keyring.opening_key(shard, 2).version == 2
    assert MetadataImage().streams == {}


def test_a_file_that_vanishes_or_breaks_later_keeps_the_loaded_keys(tmp_path: Path) -> None:
    keys = key_file(tmp_path)
    _, wrapped = keys.new_data_key("alias/aws/kinesis", stream_arn=ARN)
    keys.path.write_text("{half a copy")
    assert keys.new_data_key("alias/aws/kinesis", stream_arn=ARN)[1].wrapping == wrapped.wrapping
    keys.path.unlink()
    assert keys.new_data_key("alias/aws/kinesis", stream_arn=ARN)[1].wrapping == wrapped.wrapping
    keys.path.write_text("{}")
    with pytest.raises(MasterKeyError, match="not a Shoal master key file"):
        key_file(tmp_path)  # a node does not start on it


def test_a_key_file_and_the_file_setting_go_together(tmp_path: Path) -> None:
    base = Config(node_id="n", data_dir=tmp_path)
    base.validate()
    assert base.encryption_master_key == "cluster"
    for wrong in (
        {"encryption_master_key": "file"},
        {"encryption_key_file": tmp_path / "keys.json"},
        {"encryption_master_key": "vault"},
    ):
        with pytest.raises(ValueError, match="encryption_"):
            dataclasses.replace(base, **wrong).validate()
