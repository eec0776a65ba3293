"""`shoal serve`: run a node with settings from flags, `SHOAL_*` variables and a TOML file.

Exit codes: 0 stopped by SIGTERM or SIGINT (also while still starting, e.g. waiting for its
metadata quorum: the stop is prompt and says what it interrupted); 1 the node could not start
(`startup.StartupError`: one line naming the setting and the fix) or a background task failed
(so a supervisor restarts it), or its stop did not finish within `limits.node_stop_timeout_ms`
(the step it was stuck in is logged); 2 the settings are invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from broker import limits
from broker.cli.logs import configure_logging
from broker.config import Config, add_serve_arguments, config_from_environment, unknown_variables

log = logging.getLogger("broker.cli.serve")


def add_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run a node")
    add_serve_arguments(serve)
    serve.set_defaults(run=lambda _client, args: _serve(args), connect=None)


def _serve(args: argparse.Namespace) -> int:
    from broker.errors import StartupRefused
    from broker.startup import StartupError  # with the node: only `serve` needs them

    try:
        config = config_from_environment(vars(args), args.config)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        log_format=config.log_format, log_level=config.log_level, node_id=config.node_id
    )
    for line in unknown_variables(os.environ):
        log.warning("unknown_setting_variable", extra={"detail": line})
    try:
        return asyncio.run(_run(config, data_dir=os.path.abspath(config.data_dir)))
    except (StartupError, StartupRefused) as error:
        # StartupRefused: data on disk failed its checks (a corrupt metadata journal), with
        # the recovery it needs in the same line.
        print(f"error: {error}", file=sys.stderr)
        return 1


async def _run(config: Config, *, data_dir: str) -> int:
    from broker.node import Node  # imported here: only `serve` needs RocksDB and pysyncobj

    node = Node(config)
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
    if not await _start_or_stop(node, stopping):
        return 0
    _settle_the_heap()
    _keep_page_memory()
    scheme = "https" if config.tls_cert_file is not None else "http"
    if config.log_format == "text":  # with JSON logs, the node_started event says the same
        print(
            f"shoal: node {config.node_id} serving gRPC on {config.api_address} and the AWS "
            f"API on {scheme}://{config.http_address} (listening on {config.bind_host}: gRPC "
            f"{node.grpc_port}, AWS {node.http_port}, metrics {node.metrics_port}), data in "
            f"{data_dir}",
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
    exit_unless_stopped_within(node)
    await node.stop()
    return 0 if stopping.is_set() else 1  # a background task failed: let it restart us


def exit_unless_stopped_within(
    node: Any,
    *,
    timeout_s: float = limits.node_stop_timeout_ms / 1000,
    exit_now: Callable[[int], Any] | None = None,
) -> threading.Timer:
    """Call as a stop begins: if the process still runs `timeout_s` later, log the step `node`
    is in and end the process at once with status 1. A watchdog thread, so it also covers what
    follows the stop (`asyncio.run` and the interpreter's exit wait without end for a worker
    thread that is stuck). Ending the process is a crash the node recovers from at its next
    start: everything it acknowledged is already durable."""

    def timed_out() -> None:
        log.error(
            "node_stop_timed_out",
            extra={"detail": f"still {node.phase} after {timeout_s:g} s; exiting now"},
        )
        (exit_now or _exit_at_once)(1)

    watchdog = threading.Timer(timeout_s, timed_out)
    watchdog.daemon = True  # a process that ends in time ends with it
    watchdog.start()
    return watchdog


def _exit_at_once(status: int) -> None:
    logging.shutdown()  # what was logged reaches the log before the process ends
    os._exit(status)


def _settle_the_heap() -> None:
    """Once the node serves: what start-up allocated (modules, botocore's service models,
    servers, the metadata image: millions of objects) moves to the collector's permanent
    generation, so no later full collection walks it again (one took 0.5-0.65 s on a fresh
    node, a stall of every request in flight), and young collections run every
    `limits.gc_young_allocations` allocations rather than CPython's 700. No collection first:
    it would be that stall now; start-up garbage frozen with the rest stays (bounded, once)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(limits.gc_young_allocations, older, oldest)


def _keep_page_memory() -> bool:
    """Large buffers (a 10 MB GetRecords page, grpc's copy of it, RocksDB's values) reuse
    memory the process already has instead of fresh pages from the kernel: glibc's malloc serves
    allocations up to `limits.malloc_mmap_threshold_bytes` from its heap and returns the heap's
    free top to the kernel only beyond `limits.malloc_trim_threshold_bytes`. With glibc's
    defaults two or three freed page-sized buffers pass its trim threshold, so every page was
    written into memory the kernel had to fault in and zero again (about a quarter of a drained
    page's CPU, issue 18). The cost: up to that much freed memory stays resident. Whether it
    applied (False without glibc, or where the operator set glibc's MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_)."""
    if {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & os.environ.keys():
        return False  # the operator's tuning wins
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    return bool(
        mallopt(_M_MMAP_THRESHOLD, limits.malloc_mmap_threshold_bytes)
        and mallopt(_M_TRIM_THRESHOLD, limits.malloc_trim_threshold_bytes)
    )


_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3


async def _start_or_stop(node: Any, stopping: asyncio.Event) -> bool:
    """Starts `node` unless a signal comes first; whether it is serving. A signal during the
    start (a node waiting minutes for its quorum) stops it at once, with one line saying what
    it interrupted. A failed start stops what was started and raises (StartupError: one line
    for the operator), or the process would never exit: the writer and quorum threads run."""
    start = asyncio.create_task(node.start())
    signalled = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait((start, signalled), return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
    if not start.done():
        phase = node.phase
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
        exit_unless_stopped_within(node)
        await node.stop()
        print(f"shoal: node {node.config.node_id} stopped while {phase}", file=sys.stderr)
        return False
    try:
        start.result()
    except BaseException:
        exit_unless_stopped_within(node)
        await node.stop()
        raise
    return True
