"""The 3-node cluster most cluster tests share: real node processes on loopback ports, formed
before the test starts, their logs printed when it fails, stopped afterwards.

`cluster` is one per test; `module_cluster` one per module, for tests that leave every node
running, formed and caught up when they end (a test that stops a node for good, or changes
what the next one assumes about placement, takes `cluster`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.helpers import wait_formed
from tests.support import ClusterProcesses


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterProcesses]:
    yield from _formed_cluster(tmp_path)


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcesses]:
    yield from _formed_cluster(tmp_path_factory.mktemp("cluster"))


def _formed_cluster(tmp_path: Path) -> Iterator[ClusterProcesses]:
    processes = ClusterProcesses(tmp_path)
    processes.start()
    try:
        wait_formed(processes)
        yield processes
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop()
