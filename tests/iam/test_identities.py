"""The IAM commands in the metadata state machine (transitions/iam.py), the image snapshot
with principals, sealed secrets (iam/sealing.py) and the key directory (iam/directory.py)."""

from __future__ import annotations

import dataclasses

import pytest

from broker.errors import ErrorCode
from broker.iam.directory import KeyDirectory
from broker.iam.identities import ACCESS_KEYS_PER_PRINCIPAL_MAX, IamTable, KeyStatus
from broker.iam.sealing import SecretBox, legacy_key
from broker.meta.commands import CreateAccessKey, CreatePrincipal, UpdateAccessKey
from broker.meta.image import MetadataImage
from broker.meta.image_codec import decode_image, encode_image
from broker.meta.state_machine import apply
from tests.meta.iam_factories import ALICE, access_key, every_iam_command


def test_every_iam_command_applies_in_order_and_leaves_nothing() -> None:
    image = MetadataImage()
    for command in every_iam_command(now_ms=5):
        applied = apply(image, command)
        assert applied.error is None, (command, applied.error)
        image = applied.image
    assert image.iam.principals == {} and image.iam.keys == {}


def test_preconditions_are_checked_at_apply_time() -> None:
    create, first_key, *_ = every_iam_command(now_ms=5)
    image = apply(MetadataImage(), create).image
    again = apply(image, create)
    assert again.error is not None and again.error.code is ErrorCode.RESOURCE_IN_USE
    assert again.image.iam is image.iam
    for index in range(ACCESS_KEYS_PER_PRINCIPAL_MAX):
        image = apply(image, CreateAccessKey(now_ms=6, key=access_key(f"K{index}", now_ms=6))).image
    over = apply(image, CreateAccessKey(now_ms=7, key=access_key("K9", now_ms=7)))
    assert over.error is not None and over.error.code is ErrorCode.LIMIT_EXCEEDED
    missing = apply(
        image, UpdateAccessKey(now_ms=8, access_key_id="nope", status=KeyStatus.INACTIVE)
    )
    assert missing.error is not None and missing.error.code is ErrorCode.RESOURCE_NOT_FOUND
    assert isinstance(create, CreatePrincipal)
    clash = dataclasses.replace(create.principal, arn=create.principal.arn + "2", name="alice2")
    taken = apply(image, CreatePrincipal(now_ms=9, principal=clash))
    assert taken.error is not None and "certificate subject" in taken.error.message
    del first_key


def test_image_with_principals_round_trips() -> None:
    image = MetadataImage()
    for command in every_iam_command(now_ms=5)[:5]:
        image = apply(image, command).image
    assert image.iam.principals[ALICE].policies
    data = encode_image(image)
    assert decode_image(data) == image


def _derived(
    password: str, *, level_4: bool = True, secret: bytes = b"cluster secret", previous: str = ""
) -> SecretBox:
    return SecretBox.derived(
        password=password,
        previous_passwords=(previous,) if previous else (),
        cluster_secret=lambda: secret,
        sealing_is_derived=lambda: level_4,
    )


def test_sealed_secrets_open_only_with_the_key_and_id() -> None:
    box = _derived("cluster password")
    sealed = box.seal("AKIA1", "s3cr3t")
    assert b"s3cr3t" not in sealed
    assert box.open("AKIA1", sealed) == "s3cr3t"
    assert box.open("AKIA2", sealed) is None  # moved to another key id
    assert _derived("other").open("AKIA1", sealed) is None
    # The cluster's random secret is in the derivation, as in the data keys' master key.
    assert _derived("cluster password", secret=b"another cluster").open("AKIA1", sealed) is None
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox(b"short")


def test_secrets_sealed_the_old_way_open_and_are_resealed_with_the_derived_key() -> None:
    # Before metadata format 4 every node seals with the Raft password alone (what a binary
    # of format 3 opens); from 4 on with the derived key, and the old form is re-sealed.
    old = _derived("pw", level_4=False).seal("AKIA1", "s1")
    assert SecretBox(legacy_key("pw")).open("AKIA1", old) == "s1"  # the previous release's key
    box = _derived("pw")
    assert box.open("AKIA1", old) == "s1"
    resealed = box.reseal("AKIA1", old)
    assert resealed is not None and resealed != old
    assert box.reseal("AKIA1", resealed) is None  # already current
    assert SecretBox(legacy_key("pw")).open("AKIA1", resealed) is None
    assert _derived("pw").open("AKIA1", resealed) == "s1"
    # After a Raft password change, the previous password opens and is re-sealed too.
    changed = _derived("new", previous="pw")
    again = changed.reseal("AKIA1", resealed)
    assert again is not None and _derived("new").open("AKIA1", again) == "s1"
    assert _derived("stranger").reseal("AKIA1", old) is None  # not this node's to fix


def test_directory_static_keys_are_root_and_inactive_keys_nobody() -> None:
    box = SecretBox(b"k" * 32)
    create, *_ = every_iam_command(now_ms=5)
    image = apply(MetadataImage(), create).image
    key = dataclasses.replace(access_key("AKIAX", now_ms=5), sealed_secret=box.seal("AKIAX", "sx"))
    image = apply(image, CreateAccessKey(now_ms=6, key=key)).image
    current = {"table": image.iam}
    directory = KeyDirectory(
        static_keys={"ROOT": "rs"}, account_id="000000000000", region="us-east-1", box=box,
        iam_table=lambda: current["table"],
    )  # fmt: skip
    root = directory.identity_for_key("ROOT")
    assert root is not None and root.principal_arn == "arn:aws:iam::000000000000:root"
    # IAM is per partition: a node in a China region has aws-cn principals.
    china = KeyDirectory(
        static_keys={"ROOT": "rs"}, account_id="000000000000", region="cn-north-1", box=box,
        iam_table=lambda: current["table"],
    )  # fmt: skip
    china_root = china.identity_for_key("ROOT")
    assert china_root is not None
    assert china_root.principal_arn == "arn:aws-cn:iam::000000000000:root"
    assert directory.secret("AKIAX") == "sx"
    alice = directory.identity_for_key("AKIAX")
    assert alice is not None and alice.account_id == "111122223333"
    image = apply(
        image, UpdateAccessKey(now_ms=7, access_key_id="AKIAX", status=KeyStatus.INACTIVE)
    ).image
    current["table"] = image.iam
    assert directory.secret("AKIAX") is None
    assert directory.identity_for_key("AKIAX") is None
    current["table"] = IamTable()
    assert directory.secret("AKIAX") is None
