"""The 3-node cluster most cluster tests share: real node processes on loopback ports, formed
before the test starts, their logs printed when it fails, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.helpers import wait_formed
from tests.support import ClusterProcesses


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterProcesses]:
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
