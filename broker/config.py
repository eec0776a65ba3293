"""One typed configuration for a node: defaults < config file (TOML) < environment < flags.

`Config` is frozen and built once (`load_config`) by `__main__`; it is passed down explicitly,
and no other module reads `os.environ`. `Knobs` holds timing values with production defaults;
every default is commented with its reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import limits


@dataclass(frozen=True, slots=True, kw_only=True)
class Knobs:
    """Timing and sizing values. Tests shorten them; production keeps the defaults."""

    # How long a stream shows CREATING / UPDATING / DELETING. AWS takes minutes; we take well
    # under a second by default, so clients that watch states (boto3 waiters, Terraform) see
    # them, yet tests and scripts are not slowed. 0 is allowed.
    stream_creating_ms: int = 200
    stream_updating_ms: int = 200
    stream_deleting_ms: int = 200
    # Retention trimming and removal of deleted streams' data run this often; retention is
    # enforced on reads at once, so this only bounds how long disk space stays used.
    housekeeping_interval_ms: int = 30_000

    def validate(self) -> None:
        for name in ("stream_creating_ms", "stream_updating_ms", "stream_deleting_ms"):
            value = getattr(self, name)
            if not 0 <= value <= 600_000:
                raise ValueError(f"{name} must be within 0..600000, got {value}")
        if not 100 <= self.housekeeping_interval_ms <= 3_600_000:
            raise ValueError("housekeeping_interval_ms must be within 100..3600000")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a node needs to start. See `shoal serve --help` for each setting."""

    node_id: str = "shoal-0"
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"  # where the gRPC API and the Raft port listen
    grpc_port: int = 50051
    raft_port: int = 50052
    # The AWS wire protocol (JSON 1.1 and CBOR over HTTP/1.1 and HTTP/2). 4567 is where local
    # Kinesis setups (kinesalite, LocalStack) already point. With a certificate it serves TLS
    # (ALPN h2 and http/1.1); without one, cleartext HTTP/1.1 and h2c with prior knowledge.
    http_port: int = 4567
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # SigV4 access keys as "ACCESS_KEY_ID:SECRET" pairs. Empty: requests are not
    # authenticated (the development default of `scripts/serve`); any key: every request must
    # be signed by one of them.
    aws_credentials: tuple[str, ...] = ()
    # Other voters of the metadata quorum as host:raft_port; empty for a single node.
    peers: tuple[str, ...] = ()
    # Encrypts and authenticates Raft traffic (pysyncobj pickles its messages: without a
    # password anyone reaching the Raft port could run code). Set a real secret in production.
    raft_password: str = "shoal-development-only"
    region: str = "us-east-1"
    account_id: str = "000000000000"
    shard_count_per_account_max: int = limits.shard_count_per_account_default
    on_demand_streams_max: int = limits.on_demand_streams_per_account_default
    # Per-shard throughput, enforced where the shard is written and read. AWS's numbers by
    # default, so code tested against Shoal sees the throttling it will see on AWS; 0 lifts
    # a limit (self-hosters who want a shard to take what the disk can).
    shard_write_bytes_per_second: int = limits.shard_write_bytes_per_second_default
    shard_write_records_per_second: int = limits.shard_write_records_per_second_default
    shard_read_calls_per_second: int = limits.shard_read_calls_per_second_default
    shard_read_bytes_per_second: int = limits.shard_read_bytes_per_second_default
    knobs: Knobs = field(default_factory=Knobs)

    def validate(self) -> None:
        if not self.node_id:
            raise ValueError("node_id must not be empty")
        for name in ("grpc_port", "raft_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65_535:
                raise ValueError(f"{name} must be a TCP port, got {port}")
        if self.grpc_port != 0 and self.grpc_port == self.raft_port:
            raise ValueError("grpc_port and raft_port must differ")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        for pair in self.aws_credentials:
            key_id, _, secret = pair.partition(":")
            if not key_id or not secret:
                raise ValueError("aws_credentials entries must look like ACCESS_KEY_ID:SECRET")
        if not self.raft_password:
            raise ValueError("raft_password must not be empty")
        if len(self.account_id) != 12 or not self.account_id.isdigit():
            raise ValueError("account_id must be 12 digits, as in an AWS ARN")
        if not self.region:
            raise ValueError("region must not be empty")
        if self.shard_count_per_account_max < 1 or self.on_demand_streams_max < 0:
            raise ValueError("account limits must be positive")
        for name in (
            "shard_write_bytes_per_second",
            "shard_write_records_per_second",
            "shard_read_calls_per_second",
            "shard_read_bytes_per_second",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (unlimited) or positive")
        self.knobs.validate()

    @property
    def access_keys(self) -> dict[str, str]:
        """SigV4 secrets by access key id; empty when authentication is off."""
        return dict(pair.partition(":")[::2] for pair in self.aws_credentials)

    @property
    def raft_address(self) -> str:
        return f"{self.host}:{self.raft_port}"

    def stream_arn(self, stream_name: str) -> str:
        return f"arn:aws:kinesis:{self.region}:{self.account_id}:stream/{stream_name}"


# Settings that can come from a file, the environment (SHOAL_<NAME>) or a flag (--<name>).
_SETTINGS: dict[str, type] = {
    "node_id": str,
    "data_dir": Path,
    "host": str,
    "grpc_port": int,
    "raft_port": int,
    "http_port": int,
    "tls_cert_file": Path,
    "tls_key_file": Path,
    "aws_credentials": tuple,
    "peers": tuple,
    "raft_password": str,
    "region": str,
    "account_id": str,
    "shard_count_per_account_max": int,
    "on_demand_streams_max": int,
    "shard_write_bytes_per_second": int,
    "shard_write_records_per_second": int,
    "shard_read_calls_per_second": int,
    "shard_read_bytes_per_second": int,
}
_KNOB_SETTINGS = {f.name: int for f in dataclasses.fields(Knobs)}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The `shoal serve` flags; every flag defaults to None so that lower layers show through."""
    parser.add_argument("--config", type=Path, help="a TOML file with settings")
    for name in (*_SETTINGS, *_KNOB_SETTINGS):
        flag = "--" + name.replace("_", "-")
        if name == "peers":
            parser.add_argument(flag, help="comma-separated host:raft_port of the other voters")
        elif name == "aws_credentials":
            parser.add_argument(
                flag, help="comma-separated ACCESS_KEY_ID:SECRET pairs; turns SigV4 checks on"
            )
        else:
            parser.add_argument(flag, help=f"overrides SHOAL_{name.upper()}")


def _convert(name: str, kind: type, raw: Any) -> Any:
    if kind is tuple:
        if isinstance(raw, str):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        return tuple(str(item) for item in raw)
    if kind is int:
        try:
            return int(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    return kind(raw)


def load_config(
    *,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None = None,
) -> Config:
    """Build and validate a Config; raises ValueError with a readable message."""
    layered: dict[str, Any] = {}
    if config_file is not None:
        with config_file.open("rb") as handle:
            file_values = tomllib.load(handle)
        unknown = set(file_values) - set(_SETTINGS) - set(_KNOB_SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings in {config_file}: {', '.join(sorted(unknown))}")
        layered.update(file_values)
    layered.update(
        {
            name: environ[f"SHOAL_{name.upper()}"]
            for name in (*_SETTINGS, *_KNOB_SETTINGS)
            if f"SHOAL_{name.upper()}" in environ
        }
    )
    layered.update(
        {
            name: value
            for name, value in flags.items()
            if value is not None and (name in _SETTINGS or name in _KNOB_SETTINGS)
        }
    )
    settings = {
        name: _convert(name, kind, layered[name])
        for name, kind in _SETTINGS.items()
        if name in layered
    }
    knob_values = {
        name: _convert(name, int, layered[name]) for name in _KNOB_SETTINGS if name in layered
    }
    config = Config(**settings, knobs=Knobs(**knob_values))
    config.validate()
    return config


def config_from_environment(argv_flags: Mapping[str, Any], config_path: Path | None) -> Config:
    """`load_config` with the process environment; used by the CLI only."""
    return load_config(flags=argv_flags, environ=os.environ, config_file=config_path)
