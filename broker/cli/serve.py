"""`shoal serve`: run a node with settings from flags, `SHOAL_*` variables and a TOML file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from broker.config import add_serve_arguments, config_from_environment
from broker.errors import StartupRefused


def add_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run a node")
    add_serve_arguments(serve)
    serve.set_defaults(run=lambda _client, args: _serve(args), connect=None)


_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class EventFormatter(logging.Formatter):
    """Log lines as `event key=value ...`: our events are named, with their fields passed as
    `extra` (house style B.10), and the standard format would drop the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {
            key: value
            for key, value in vars(record).items()
            if key not in _STANDARD_RECORD_FIELDS and key not in ("message", "asctime")
        }
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={value!r}" for key, value in sorted(fields.items()))


def _serve(args: argparse.Namespace) -> int:
    from broker.node import Node  # imported here: only `serve` needs RocksDB and pysyncobj

    handler = logging.StreamHandler()
    handler.setFormatter(EventFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        config = config_from_environment(vars(args), args.config)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    node = Node(config)
    data_dir = Path(config.data_dir).resolve()

    async def run() -> int:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        drain_first = False

        def on_signal(signum: int) -> None:
            nonlocal drain_first
            # SIGTERM (Kubernetes, systemd, `scripts/cluster` stopping one node) drains first;
            # SIGINT (Ctrl-C) stops at once, as when a whole local cluster goes down together.
            drain_first = drain_first or signum == signal.SIGTERM
            stopping.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await node.start()
        except BaseException:
            # A failed start (an unreadable certificate, a port taken...) leaves the writer and
            # quorum threads running: stop them, or the process would never exit (and never
            # be restarted).
            await node.stop()
            raise
        scheme = "https" if config.tls_cert_file is not None else "http"
        print(
            f"shoal: node {config.node_id} serving gRPC on {config.host}:{node.grpc_port}, "
            f"the AWS API on {scheme}://{config.host}:{node.http_port}, data in {data_dir}",
            flush=True,
        )
        stop_waiter = asyncio.create_task(stopping.wait())
        failure_waiter = asyncio.create_task(node.failed.wait())
        await asyncio.wait((stop_waiter, failure_waiter), return_when=asyncio.FIRST_COMPLETED)
        stop_waiter.cancel()
        failure_waiter.cancel()
        if drain_first:
            # Hand shard and quorum leaderships to other nodes first (bounded), so producers
            # see a planned move instead of a failover.
            await node.drain_for_shutdown()
        await node.stop()
        return 0 if stopping.is_set() else 1  # a background task failed: let it restart us

    try:
        return asyncio.run(run())
    except StartupRefused as refusal:
        # Corrupt data on disk, for instance: one line that says what and where the recovery
        # is documented, no traceback (the process exits; a supervisor restarting it gets the
        # same line until an operator acts).
        print(f"shoal: {refusal}", file=sys.stderr, flush=True)
        return 3
