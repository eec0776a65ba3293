"""Master keys: what wraps (encrypts) the per-stream data keys kept in the metadata quorum.

Envelope encryption: every encrypted stream has AES-256 data keys that seal its batches
(`broker/log/encryption.py`); the metadata image holds them only wrapped by a master key, so
neither the metadata journal, its snapshots nor the shard logs hold a usable key. Any replica
opens any batch of a stream with the one data key the quorum holds, so every node of a cluster
must be able to unwrap every data key. Three kinds:

- `ClusterMasterKey` (the default): derived (HKDF-SHA256) from two secrets every node of a
  cluster already shares and nothing else needs: the cluster's random secret, made once by
  InitCluster and kept in the metadata quorum (`MetadataImage.iterator_secret`), and the
  operator's `raft_password`, which is never written to the data directory. A cluster works
  with no key setup; what it protects is in docs/operations.md "Encryption at rest". A changed
  `raft_password` derives a new key: `raft_password_previous` keeps the old one derivable
  until every data key is re-wrapped.
- `LocalKeyFile`: master keys in a JSON file the operator gives every node (a Kubernetes
  Secret), readable by its owner only (0600). The KeyIds it knows: `alias/aws/kinesis` (the
  AWS-managed key, which is the file's newest key) and each key's id and ARN. Rotation (`shoal
  encryption rotate-master-key`) appends a new key; data keys wrapped by an older one are
  re-wrapped by the node that runs the controller (`Keyring.rewrap_commands`), and the old key
  stays in the file until nothing is wrapped by it.
- `KmsMasterKeys`: a KMS-compatible service through boto3, endpoint from the standard
  `AWS_ENDPOINT_URL_KMS` (moto's server in the tests). A data key is made by KMS
  `GenerateDataKey` under the stream's KeyId and opened with `Decrypt`, with the stream's ARN
  as encryption context (`aws:kinesis:arn`, as AWS Kinesis does); KMS's errors become
  Kinesis's KMS* exceptions. KMS rotates its key material itself (old ciphertexts still
  decrypt), so nothing needs re-wrapping.

`WithClusterKey` puts a configured key file or KMS in front of the cluster key, which then only
opens the data keys made before the switch (a key file re-wraps them at once).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker import arns, error_messages
from broker.clock import SystemClock
from broker.errors import ErrorCode, ShoalError
from broker.log.encryption import DATA_KEY_BYTES, NONCE_BYTES
from broker.meta.commands import WrappedDataKey
from broker.meta.image import StreamDataKey

log = logging.getLogger(__name__)

AWS_MANAGED_ALIAS = "alias/aws/kinesis"
# The AWS-managed keys of the services whose data lives in Kinesis streams here (a video
# stream's default KmsKeyId, a delivery stream's AWS-owned key): with the cluster key or a key
# file, all are its current key, as `alias/aws/kinesis` is.
AWS_MANAGED_ALIASES = frozenset({AWS_MANAGED_ALIAS, "alias/aws/kinesisvideo", "alias/aws/firehose"})
_KMS_ARN_PREFIX = re.compile(r"^arn:aws[\w-]*:kms:[\w-]+:\d{12}:")
_KEY_FILE_FORMAT = 1
_WRAP_CONTEXT = b"shoal data key\x00"


class MasterKeyError(Exception):
    """A data key cannot be unwrapped or re-wrapped here (an unknown master key, a wrong
    file, an unreachable KMS). Callers on the data path turn it into `KeyUnavailableError`."""


class MasterKeyMissingError(MasterKeyError):
    """The master key that wraps a data key is not one this node has (another cluster's key,
    another key file, another kind of master key, a KMS key that does not exist)."""


class MasterKeys(Protocol):
    def new_data_key(self, key_id: str, *, stream_arn: str) -> tuple[bytes, WrappedDataKey]:
        """A fresh data key for a stream encrypted under `key_id` (a key id, key ARN, alias
        name or alias ARN): its material and its wrapped form. Raises `ShoalError` with a
        KMS* code when the key cannot be used."""
        ...

    def check_key(self, key_id: str) -> None:
        """Raises `ShoalError` with a KMS* code when `key_id` cannot be used here (not
        found, disabled, pending deletion, not a symmetric encryption key)."""
        ...

    def unwrap(self, key: StreamDataKey, *, stream_arn: str) -> bytes:
        """The material of a stored data key; raises `MasterKeyError` (`MasterKeyMissingError`
        when the master key wrapping it is not here)."""
        ...

    def rewrap(self, key: StreamDataKey, *, stream_arn: str) -> WrappedDataKey | None:
        """The key wrapped by the current master key; None when it already is."""
        ...


@dataclass(frozen=True, slots=True)
class _LocalKey:
    key_id: str
    material: bytes
    created_ms: int


def create_key_file(path: Path) -> None:
    """Writes a key file with one new master key, readable by its owner only; refuses to
    overwrite one (O_EXCL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": _KEY_FILE_FORMAT, "keys": [_new_key_entry()]}
    _write_new(path, document)


def rotate_key_file(path: Path) -> str:
    """Appends a new master key to the file (which becomes the current one); returns its id.
    The file is replaced atomically, with the same 0600 permissions."""
    document = _read_document(path)
    entry = _new_key_entry()
    document["keys"].append(entry)
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    _write_new(temporary, document)
    os.replace(temporary, path)
    return str(entry["id"])


def _new_key_entry() -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "material": base64.b64encode(os.urandom(DATA_KEY_BYTES)).decode("ascii"),
        "created_ms": SystemClock().wall_ms(),
    }


def _write_new(path: Path, document: dict[str, Any]) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())


def _read_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MasterKeyError(f"cannot read the master key file {path}: {exc}") from exc
    if (
        not isinstance(document, dict)
        or document.get("format") != _KEY_FILE_FORMAT
        or not isinstance(document.get("keys"), list)
        or not document["keys"]
    ):
        raise MasterKeyError(f"{path} is not a Shoal master key file (format 1, keys)")
    return document


class _SymmetricMasterKeys:
    """Master keys this node holds itself (AES-256), the newest current: the KeyIds they
    answer to, and data keys wrapped with AES-GCM under the stream's ARN. `_keys` and
    `_missing` say where the keys come from."""

    _kind = ""  # the `wrapping` prefix: "local" or "cluster"

    def __init__(self, *, region: str, account_id: str) -> None:
        self._region = region
        self._account_id = account_id

    def _keys(self) -> tuple[_LocalKey, ...]:
        """Every key known now, the current one last; raises `MasterKeyError` if none."""
        raise NotImplementedError

    def _missing(self, key_id: str) -> str:
        """Why a data key's master key `key_id` is not among `_keys()`."""
        raise NotImplementedError

    def current_key_id(self) -> str:
        return self._keys()[-1].key_id

    def key_arn(self, key_id: str) -> str:
        return arns.regional("kms", self._region, self._account_id, f"key/{key_id}")

    def _by_id(self, key_id: str) -> _LocalKey | None:
        return next((key for key in self._keys() if key.key_id == key_id), None)

    def resolve(self, key_id: str) -> _LocalKey:
        """The master key a stream's KeyId names; KMSNotFoundException if none."""
        arn_prefix = arns.regional("kms", self._region, self._account_id, "")
        name = _KMS_ARN_PREFIX.sub("", key_id)
        if name in AWS_MANAGED_ALIASES:
            return self._current()
        found = self._by_id(name.removeprefix("key/")) if not name.startswith("alias/") else None
        if found is None:
            raise ShoalError(ErrorCode.KMS_NOT_FOUND, _not_found_message(key_id, arn_prefix))
        return found

    def _current(self) -> _LocalKey:
        try:
            return self._keys()[-1]
        except MasterKeyError as error:  # no key to make data keys with: not the caller's
            raise ShoalError(ErrorCode.KMS_INVALID_STATE, str(error)) from error

    def check_key(self, key_id: str) -> None:
        self.resolve(key_id)

    def new_data_key(self, key_id: str, *, stream_arn: str) -> tuple[bytes, WrappedDataKey]:
        master = self.resolve(key_id)
        material = os.urandom(DATA_KEY_BYTES)
        return material, self.wrap(master, material, stream_arn)

    def wraps(self, key: StreamDataKey) -> bool:
        return key.wrapping.startswith(self._kind + ":")

    def unwrap(self, key: StreamDataKey, *, stream_arn: str) -> bytes:
        kind, _, key_id = key.wrapping.partition(":")
        if kind != self._kind:
            raise MasterKeyMissingError(
                f"data key {key.version} of {stream_arn} is wrapped by {key.wrapping}, and "
                f"this node's master keys are {self._kind} keys"
            )
        master = self._by_id(key_id)
        if master is None:
            raise MasterKeyMissingError(
                f"master key {key_id} (wrapping data key {key.version} of {stream_arn}) is "
                f"not here: {self._missing(key_id)}"
            )
        nonce, sealed = key.wrapped[:NONCE_BYTES], key.wrapped[NONCE_BYTES:]
        try:
            return AESGCM(master.material).decrypt(nonce, sealed, _aad(stream_arn))
        except InvalidTag as exc:
            raise MasterKeyError(
                f"data key {key.version} of {stream_arn} does not unwrap with master key {key_id}"
            ) from exc

    def rewrap(self, key: StreamDataKey, *, stream_arn: str) -> WrappedDataKey | None:
        current = self._keys()[-1]
        if key.wrapping == f"{self._kind}:{current.key_id}":
            return None
        return self.wrap(current, self.unwrap(key, stream_arn=stream_arn), stream_arn)

    def wrap_current(self, material: bytes, *, stream_arn: str) -> WrappedDataKey:
        return self.wrap(self._keys()[-1], material, stream_arn)

    def wrap(self, master: _LocalKey, material: bytes, stream_arn: str) -> WrappedDataKey:
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + AESGCM(master.material).encrypt(nonce, material, _aad(stream_arn))
        return WrappedDataKey(wrapped=wrapped, wrapping=f"{self._kind}:{master.key_id}")


class LocalKeyFile(_SymmetricMasterKeys):
    """Master keys from a key file (module docstring). The file must exist (`shoal encryption
    rotate-master-key --key-file PATH` creates one): a node never makes its own, since a key
    only one node holds breaks every other replica. Reloaded when it changes, so a rotated
    file copied onto a running node is picked up."""

    _kind = "local"

    def __init__(self, path: Path, *, region: str, account_id: str) -> None:
        super().__init__(region=region, account_id=account_id)
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._loaded: tuple[_LocalKey, ...] = ()
        if not path.exists():
            raise MasterKeyError(
                f"the master key file {path} does not exist: create it once with `shoal "
                "encryption rotate-master-key --key-file PATH` and give every node the same file"
            )
        self._reload()
        # Group read is allowed: a Kubernetes Secret volume gives a non-root pod its files
        # through the pod's fsGroup (mode 0440); anything for others, or group write, is not.
        mode = path.stat().st_mode & 0o777
        if mode & 0o027:
            raise MasterKeyError(
                f"the master key file {path} is open to others (mode {mode:o}); chmod 600 it"
            )

    @property
    def path(self) -> Path:
        return self._path

    def _keys(self) -> tuple[_LocalKey, ...]:
        with self._lock:
            self._reload()
            return self._loaded

    def _missing(self, key_id: str) -> str:
        return f"{self._path} lacks it (every node needs the same master key file)"

    def _reload(self) -> None:
        """Reads the file again if it changed. A file that cannot be read now (replaced
        mid-copy, briefly missing) keeps the keys already loaded, with a warning; only the
        first load fails."""
        try:
            self._load()
        except (MasterKeyError, OSError) as error:
            if not self._loaded:
                raise MasterKeyError(str(error)) from error
            log.warning(
                "master_key_file_unreadable", extra={"path": str(self._path), "error": str(error)}
            )

    def _load(self) -> None:
        stat = self._path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        document = _read_document(self._path)
        keys = []
        for entry in document["keys"]:
            try:
                material = base64.b64decode(entry["material"], validate=True)
                keys.append(_LocalKey(str(entry["id"]), material, int(entry["created_ms"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise MasterKeyError(f"{self._path}: a key entry is malformed") from exc
            if len(material) != DATA_KEY_BYTES:
                raise MasterKeyError(f"{self._path}: key {entry['id']} is not 32 bytes")
        self._loaded = tuple(keys)
        self._stamp = stamp


_CLUSTER_KEY_INFO = b"shoal cluster master key v1"


class ClusterMasterKey(_SymmetricMasterKeys):
    """The default master key, derived from the cluster's secret and the Raft password
    (module docstring). `cluster_secret` reads the applied metadata image's secret (empty
    until the node has applied InitCluster, when no stream has data keys yet either).
    `previous_passwords`: older Raft passwords whose keys still open data keys not yet
    re-wrapped."""

    _kind = "cluster"

    def __init__(
        self,
        cluster_secret: Callable[[], bytes],
        *,
        password: str,
        previous_passwords: tuple[str, ...] = (),
        region: str,
        account_id: str,
    ) -> None:
        super().__init__(region=region, account_id=account_id)
        self._cluster_secret = cluster_secret
        self._passwords = (*previous_passwords, password)  # the current one last
        self._derived: tuple[bytes, tuple[_LocalKey, ...]] | None = None

    def _keys(self) -> tuple[_LocalKey, ...]:
        secret = self._cluster_secret()
        if not secret:
            raise MasterKeyError("this node has not joined a cluster yet (no cluster secret)")
        derived = self._derived
        if derived is None or derived[0] != secret:
            derived = (secret, tuple(_derive(secret, p) for p in self._passwords))
            self._derived = derived  # one tuple assignment: safe without a lock
        return derived[1]

    def _missing(self, key_id: str) -> str:
        return (
            "it was derived from another raft_password (after a password change, set "
            "raft_password_previous to the old one until the data keys are re-wrapped)"
        )


def derive_cluster_key(cluster_secret: bytes, password: str, *, label: bytes) -> bytes:
    """The one key derivation of the cluster's own keys: HKDF-SHA256 of the Raft password,
    salted with the cluster's random secret, one `label` (HKDF's info) per use, so the keys
    of two uses never coincide. Uses: the cluster master key wrapping streams' data keys
    (`_CLUSTER_KEY_INFO`) and the key sealing access-key secrets (`iam/sealing.py`)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=DATA_KEY_BYTES, salt=cluster_secret, info=label
    ).derive(password.encode("utf-8"))


def _derive(cluster_secret: bytes, password: str) -> _LocalKey:
    material = derive_cluster_key(cluster_secret, password, label=_CLUSTER_KEY_INFO)
    # A stable id that says nothing about the key: a KMS-shaped UUID from an HMAC of it.
    tag = hmac.new(material, b"key id", hashlib.sha256).digest()[:16]
    return _LocalKey(str(uuid.UUID(bytes=tag)), material, 0)


class WithClusterKey:
    """A configured key file or KMS (`primary`) makes and opens data keys; the cluster key
    still opens the ones made before the node was configured so. A key file re-wraps them
    (`rewrap`, run by the controller's node), so the cluster key wraps nothing afterwards;
    with KMS they stay wrapped by the cluster key (KMS cannot take over a key it did not
    make without its Encrypt call under the stream's KeyId, which `rewrap` is not given)."""

    def __init__(self, primary: LocalKeyFile | KmsMasterKeys, cluster: ClusterMasterKey) -> None:
        self.primary = primary
        self._cluster = cluster

    def check_key(self, key_id: str) -> None:
        self.primary.check_key(key_id)

    def new_data_key(self, key_id: str, *, stream_arn: str) -> tuple[bytes, WrappedDataKey]:
        return self.primary.new_data_key(key_id, stream_arn=stream_arn)

    def unwrap(self, key: StreamDataKey, *, stream_arn: str) -> bytes:
        if self._cluster.wraps(key):
            return self._cluster.unwrap(key, stream_arn=stream_arn)
        return self.primary.unwrap(key, stream_arn=stream_arn)

    def rewrap(self, key: StreamDataKey, *, stream_arn: str) -> WrappedDataKey | None:
        if not self._cluster.wraps(key):
            return self.primary.rewrap(key, stream_arn=stream_arn)
        if isinstance(self.primary, LocalKeyFile):
            material = self._cluster.unwrap(key, stream_arn=stream_arn)
            return self.primary.wrap_current(material, stream_arn=stream_arn)
        return None


def _aad(stream_arn: str) -> bytes:
    return _WRAP_CONTEXT + stream_arn.encode("utf-8")


def _not_found_message(key_id: str, arn_prefix: str) -> str:
    if key_id.startswith(("alias/", arn_prefix + "alias/")):
        alias = key_id if key_id.startswith("arn:") else arn_prefix + key_id
        return f"Alias {alias} is not found."
    key = key_id if key_id.startswith("arn:") else f"{arn_prefix}key/{key_id}"
    return f"Key '{key}' does not exist"


# KMS error names (botocore's kms model) -> what Kinesis reports for them.
_KMS_ERRORS = {
    "NotFoundException": ErrorCode.KMS_NOT_FOUND,
    "DisabledException": ErrorCode.KMS_DISABLED,
    "KMSInvalidStateException": ErrorCode.KMS_INVALID_STATE,
    "InvalidKeyUsageException": ErrorCode.KMS_INVALID_STATE,
    "AccessDeniedException": ErrorCode.KMS_ACCESS_DENIED,
    "KMSAccessDeniedException": ErrorCode.KMS_ACCESS_DENIED,
    "OptInRequired": ErrorCode.KMS_OPT_IN_REQUIRED,
    "ThrottlingException": ErrorCode.KMS_THROTTLING,
    "LimitExceededException": ErrorCode.KMS_THROTTLING,
}


class KmsMasterKeys:
    """Data keys made and opened by a KMS-compatible service (module docstring). `client` is
    a boto3 KMS client (blocking: the service calls it off the event loop)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @staticmethod
    def from_environment(*, region: str) -> KmsMasterKeys:
        import boto3  # only nodes configured for KMS need it loaded

        return KmsMasterKeys(boto3.client("kms", region_name=region))

    def check_key(self, key_id: str) -> None:
        with _kinesis_errors():
            _check_usable(self._client.describe_key(KeyId=key_id)["KeyMetadata"])

    def new_data_key(self, key_id: str, *, stream_arn: str) -> tuple[bytes, WrappedDataKey]:
        with _kinesis_errors():
            # DescribeKey first: KMS refuses a disabled or doomed key in GenerateDataKey
            # itself, but not every KMS-compatible service does (moto does not).
            _check_usable(self._client.describe_key(KeyId=key_id)["KeyMetadata"])
            answer = self._client.generate_data_key(
                KeyId=key_id, KeySpec="AES_256", EncryptionContext=_context(stream_arn)
            )
        wrapped = WrappedDataKey(
            wrapped=bytes(answer["CiphertextBlob"]), wrapping=f"kms:{answer['KeyId']}"
        )
        return bytes(answer["Plaintext"]), wrapped

    def unwrap(self, key: StreamDataKey, *, stream_arn: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        if not key.wrapping.startswith("kms:"):
            raise MasterKeyMissingError(
                f"data key {key.version} of {stream_arn} is wrapped by {key.wrapping}, and "
                "this node uses KMS"
            )
        try:
            answer = self._client.decrypt(
                CiphertextBlob=key.wrapped,
                EncryptionContext=_context(stream_arn),
                KeyId=key.wrapping.removeprefix("kms:"),
            )
        except ClientError as exc:
            missing = exc.response.get("Error", {}).get("Code") == "NotFoundException"
            error = MasterKeyMissingError if missing else MasterKeyError
            raise error(
                f"KMS cannot decrypt data key {key.version} of {stream_arn}: {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise MasterKeyError(
                f"KMS cannot decrypt data key {key.version} of {stream_arn}: {exc}"
            ) from exc
        return bytes(answer["Plaintext"])

    def rewrap(self, key: StreamDataKey, *, stream_arn: str) -> WrappedDataKey | None:
        return None  # KMS rotates key material behind the same key id


@contextlib.contextmanager
def _kinesis_errors() -> Iterator[None]:
    """KMS's errors as Kinesis reports them (its KMS* exceptions)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = _KMS_ERRORS.get(str(error.get("Code")), ErrorCode.KMS_INVALID_STATE)
        raise ShoalError(code, str(error.get("Message") or code.spec.default_message)) from exc
    except BotoCoreError as exc:
        raise ShoalError(
            ErrorCode.KMS_THROTTLING, error_messages.kms_unreachable(error=exc)
        ) from exc


def _check_usable(metadata: dict[str, Any]) -> None:
    """A key Kinesis can encrypt with: enabled, symmetric, for encryption (KMS's texts)."""
    arn = metadata.get("Arn", metadata.get("KeyId"))
    state = metadata.get("KeyState", "Enabled")
    if state == "Disabled":
        raise ShoalError(ErrorCode.KMS_DISABLED, error_messages.kms_key_disabled(arn=arn))
    if state != "Enabled":
        raise ShoalError(
            ErrorCode.KMS_INVALID_STATE,
            error_messages.kms_key_state(arn=arn, state_words=_state_words(state)),
        )
    if (
        metadata.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT"
        or metadata.get("KeySpec", "SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT"
    ):
        raise ShoalError(ErrorCode.KMS_INVALID_STATE, error_messages.kms_key_not_symmetric(arn=arn))


def _state_words(state: str) -> str:
    """PendingDeletion -> pending deletion, as KMS words a key state in its messages."""
    return "".join(f" {c.lower()}" if c.isupper() else c for c in state).strip()


def _context(stream_arn: str) -> dict[str, str]:
    return {"aws:kinesis:arn": stream_arn}
