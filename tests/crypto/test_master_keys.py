"""The local master key file and the keyring, without a node: wrapping, rotation and re-wrap,
the KeyIds a key file knows, and the metadata transitions that number and re-wrap data keys."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from broker.crypto.keyring import Keyring
from broker.crypto.master_keys import (
    LocalKeyFile,
    MasterKeyError,
    create_key_file,
    rotate_key_file,
)
from broker.errors import ErrorCode, ShoalError
from broker.log.encryption import KeyUnavailableError
from broker.meta.commands import SetStreamEncryption
from broker.meta.image import MetadataImage
from broker.meta.state_machine import apply
from broker.types import StreamName
from tests.meta.factories import nodes_image
from tests.meta.test_codecs import EVERY_COMMAND

ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s"


def key_file(tmp_path: Path) -> LocalKeyFile:
    return LocalKeyFile(tmp_path / "keys.json", region="us-east-1", account_id="000000000000")


def test_the_file_is_created_private_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    keys = key_file(tmp_path)
    assert (keys.path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(FileExistsError):
        create_key_file(keys.path)
    os.chmod(keys.path, 0o644)
    with pytest.raises(MasterKeyError, match="readable by others"):
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
