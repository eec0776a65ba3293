"""What a node checks before it starts anything, and how a start that cannot succeed fails.

A start fails with `StartupError`: one line that names the setting at fault and the fix, which
`shoal serve` prints as `error: ...` with a non-zero exit code, never a traceback (a traceback
is for bugs). The checks run before any thread or listener exists, so a refused start leaves
nothing behind:

- `check_ports`: every configured port (gRPC, AWS door, Raft, metrics, health) can be bound
  on `Config.bind_host`. The listeners themselves bind without SO_REUSEPORT, so a port taken
  between this check and the bind still fails (`port_in_use`), never splits connections
  between two processes.
- `prepare_data_dir`: `data_dir` exists or can be created, is a directory, and takes a
  durable write; its marker file (`DATA_DIR_MARKER`) names the node and the formats that
  wrote it, so another node's directory, or one written by a newer Shoal, is refused before
  anything reads or rewrites it.

Lifecycle: `Node.start()` calls these first; `Node` maps later failures (a RocksDB lock held by
another process, a quorum that never answers) to `StartupError` too.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker import __version__
from broker.config import Config, setting_source

DATA_DIR_MARKER = "shoal-data.json"
_MARKER_VERSION = 1
_PROBE_NAME = ".shoal-write-probe"
_PORT_SETTINGS = (
    "grpc_port",
    "http_port",
    "raft_port",
    "metrics_port",
    "health_port",
    "replication_port",
)


class StartupError(Exception):
    """A start that cannot succeed. `str(error)` is one line for an operator: what is wrong,
    the setting involved and what to do."""


def port_in_use(name: str, host: str, port: int, error: OSError) -> StartupError:
    """The message for a listener that could not bind `port` (setting `name`)."""
    if error.errno == errno.EADDRINUSE:
        return StartupError(
            f"{name} {port} is already in use on {host} (another shoal serve, or another "
            f"program, listens there): stop it or choose another port with {setting_source(name)}"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"cannot listen on {host}: it is not an address of this machine; set "
            f"{setting_source('listen_host')} to one of its addresses or 0.0.0.0"
        )
    if error.errno == errno.EACCES:
        return StartupError(
            f"{name} {port} on {host} needs privileges this process lacks: choose a port "
            f"above 1023 with {setting_source(name)}"
        )
    return StartupError(f"cannot listen on {host}:{port} ({name}): {error.strerror or error}")


def check_ports(config: Config) -> None:
    """Binds, then releases, every port the node will listen on (skipping 0: any free port,
    and the Raft port of a non-voting member, which listens nowhere)."""
    host = config.bind_host
    read_only = config.quorum_layout().read_only
    for name in _PORT_SETTINGS:
        port = getattr(config, name)
        if not port or (name == "raft_port" and read_only):
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the servers do: SO_REUSEADDR (a port in TIME_WAIT is free), no SO_REUSEPORT.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                probe.listen(1)
            except socket.gaierror as error:
                raise StartupError(
                    f"cannot listen on {host!r}: the name does not resolve ({error.strerror}); "
                    f"set {setting_source('listen_host')} to an address of this machine"
                ) from error
            except OSError as error:
                raise port_in_use(name, host, port, error) from error


@dataclass(frozen=True, slots=True, kw_only=True)
class DataDirMarker:
    """`<data_dir>/shoal-data.json`: who wrote this directory, and in which formats."""

    node_id: str
    metadata_format: int  # the cluster's metadata format when this node last started
    written_by: str  # the Shoal version, for people


def prepare_data_dir(config: Config, *, metadata_format_max: int) -> DataDirMarker | None:
    """Creates `data_dir` if needed and checks that it can be used; returns its marker (None
    for a directory no Shoal has started in yet, or one from before markers existed).

    Refuses, with the setting and the fix: a path that is not a directory, a directory this
    process cannot write (permissions, a read-only file system, a full disk), another node's
    directory, and one whose metadata format is newer than `metadata_format_max`."""
    data_dir = config.data_dir
    where = f"data_dir {str(data_dir)!r}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:
        raise StartupError(
            f"{where} is not a directory: point {setting_source('data_dir')} at a directory"
        ) from error
    except OSError as error:
        raise _unusable(where, error) from error
    if not data_dir.is_dir():
        raise StartupError(
            f"{where} is not a directory: point {setting_source('data_dir')} at a directory"
        )
    _probe_write(data_dir, where)
    marker = read_marker(data_dir)
    if marker is None:
        return None
    if marker.node_id != config.node_id:
        raise StartupError(
            f"{where} belongs to node {marker.node_id}, not {config.node_id}: give every node "
            f"its own data directory, or start this one with node_id {marker.node_id}"
        )
    if marker.metadata_format > metadata_format_max:
        raise StartupError(
            f"{where} holds metadata format {marker.metadata_format} (written by "
            f"{marker.written_by}); this version ({__version__}) reads formats up to "
            f"{metadata_format_max}: run a newer Shoal (a rollback is only possible before "
            '`shoal cluster finalize-upgrade`, docs/operations.md "Rolling upgrades")'
        )
    return marker


def read_marker(data_dir: Path) -> DataDirMarker | None:
    path = data_dir / DATA_DIR_MARKER
    try:
        document: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StartupError(
            f"{path} is unreadable ({error}): restore it from a copy, or remove it if this "
            "directory belongs to the node being started"
        ) from error
    if not isinstance(document, dict) or document.get("v") != _MARKER_VERSION:
        raise StartupError(
            f"{path} was written by an unknown Shoal version: run a newer Shoal on this "
            "data directory"
        )
    return DataDirMarker(
        node_id=str(document["node_id"]),
        metadata_format=int(document["metadata_format"]),
        written_by=str(document.get("written_by", "unknown")),
    )


def write_marker(data_dir: Path, *, node_id: str, metadata_format: int) -> None:
    """Records who runs on `data_dir` (tmp file, fsync, rename: old or new, never torn)."""
    document = {
        "v": _MARKER_VERSION,
        "node_id": node_id,
        "metadata_format": metadata_format,
        "written_by": f"shoal {__version__}",
    }
    path = data_dir / DATA_DIR_MARKER
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(json.dumps(document, sort_keys=True).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _probe_write(data_dir: Path, where: str) -> None:
    probe = data_dir / _PROBE_NAME
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as error:
        raise _unusable(where, error) from error


def _unusable(where: str, error: OSError) -> StartupError:
    if error.errno == errno.EROFS:
        reason = "is on a read-only file system: mount its volume read-write"
    elif error.errno in (errno.EACCES, errno.EPERM):
        reason = (
            f"is not writable by this process (uid {os.getuid()}): fix its owner or mode "
            "(on Kubernetes, the pod's fsGroup)"
        )
    elif error.errno == errno.ENOSPC:
        reason = "is on a full file system: free or add space"
    else:
        reason = f"cannot be used ({error.strerror or error})"
    return StartupError(f"{where} {reason}, or point {setting_source('data_dir')} elsewhere")


def tls_files_unusable(error: Exception) -> StartupError:
    detail = f"{error.strerror}: {error.filename}" if isinstance(error, OSError) else str(error)
    return StartupError(
        f"the TLS certificate or key cannot be used ({detail}): check "
        f"{setting_source('tls_cert_file')}, {setting_source('tls_key_file')} and "
        f"{setting_source('tls_ca_file')} (PEM files this process can read, the key matching "
        "the certificate)"
    )


def locked_by_another_process(data_dir: Path) -> StartupError:
    return StartupError(
        f"data_dir {str(data_dir)!r} is in use by another running node (its RocksDB lock is "
        f"held): stop that node, or give this one its own {setting_source('data_dir')}"
    )
