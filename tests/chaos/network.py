"""Network partitions between the nodes of a `ClusterProcesses(distinct_hosts=True)` cluster,
with iptables on the loopback interface.

Why cgroups and not just addresses: every node listens on its own address (127.0.0.2, .3, .4),
but a connection a node *opens* leaves from 127.0.0.1 (the kernel picks the loopback route's
source address; the broker does not bind its outgoing sockets), like the test's own clients.
So `-s 127.0.0.2` matches only the replies of node-1's servers, never its requests to the
others. What does tell a node's packets apart is the cgroup of the socket that sends them:
each node runs in its own cgroup v2 group (`NodeProcess.cgroup_procs`, joined before the
broker starts, so every socket it opens is in it), and iptables' `cgroup --path` match sees
it in OUTPUT, which every loopback packet crosses. Isolating node X from node Y is then two
rules: drop what X's processes send to Y's address and what Y's send to X's. Every node-to-node
connection has a server end at a node address, so this cuts both Raft and replication in both
directions, established connections included, while clients (this process, in another cgroup)
still reach every node: an isolated leader keeps answering them until it notices.

All rules of one `Network` live in a chain of its own, `SHOAL_CHAOS_<pid>_<n>`, jumped to from
OUTPUT; `open()` creates it, `heal()` flushes it, `close()` removes the jump and the chain (and
the cgroups). Use as a context manager around the cluster's whole life so the rules go even
when a test fails. Chaos runs of several test sessions on one machine do not meet: each flushes
and deletes only its own chain, and its rules match only its own cgroups.

Needs root, the `iptables` command (scripts/install installs it as root) with the cgroup
match, and a writable cgroup v2 hierarchy; `unusable_reason()` says what is missing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
from pathlib import Path
from types import TracebackType

from tests.support import ClusterProcesses, node_host

CHAIN = "SHOAL_CHAOS"
_GROUP = "shoal-chaos"
_counter = itertools.count()


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (read-write), if it is."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup2" and "rw" in fields[3].split(","):
            return Path(fields[1])
    return None


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "5", *args], capture_output=True, text=True, check=check, timeout=30
    )


def unusable_reason(size: int = 3) -> str | None:
    """None when partitions can be made here; otherwise why not (for a skip message)."""
    if os.geteuid() != 0:
        return "network partitions need root (iptables, cgroups)"
    if shutil.which("iptables") is None:
        return "network partitions need the iptables command (scripts/install adds it as root)"
    root = cgroup2_root()
    if root is None:
        return "network partitions need a read-write cgroup v2 mount (none in /proc/mounts)"
    for index in range(size):
        try:
            with socket.socket() as sock:
                sock.bind((node_host(index), 0))
        except OSError as error:
            return f"cannot bind {node_host(index)} (loopback aliases): {error}"
    probe = root / _GROUP / f"probe-{os.getpid()}"
    chain = f"SHOAL_PROBE_{os.getpid()}"[:28]
    try:
        probe.mkdir(parents=True, exist_ok=True)
        _iptables("-N", chain)
        try:
            _iptables("-A", chain, "-m", "cgroup", "--path", f"{_GROUP}/{probe.name}", "-j", "DROP")
        finally:
            _iptables("-F", chain, check=False)
            _iptables("-X", chain, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        return f"iptables with the cgroup match is not usable here: {detail.strip()}"
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()
    return None


class Network:
    """Partitions for one `distinct_hosts` cluster; see the module docstring."""

    def __init__(self, cluster: ClusterProcesses) -> None:
        assert cluster.distinct_hosts, "partitions need ClusterProcesses(distinct_hosts=True)"
        root = cgroup2_root()
        assert root is not None
        self.cluster = cluster
        number = next(_counter)
        self._name = f"{os.getpid()}-{number}"
        self._chain = f"{CHAIN}_{os.getpid()}_{number}"  # iptables allows 28 characters
        self._dir = root / _GROUP / self._name
        self.isolated: set[int] = set()

    def _path(self, index: int) -> str:
        """The node's cgroup as iptables' `--path` wants it (relative to the v2 root)."""
        return f"{_GROUP}/{self._name}/node-{index + 1}"

    def open(self) -> Network:
        """Before the cluster starts: the cgroups (nodes join them when they start) and an
        empty chain jumped to from OUTPUT."""
        for index, node in enumerate(self.cluster.nodes):
            group = self._dir / f"node-{index + 1}"
            group.mkdir(parents=True, exist_ok=True)
            node.cgroup_procs = group / "cgroup.procs"
        if _iptables("-n", "-L", self._chain, check=False).returncode != 0:
            _iptables("-N", self._chain)
        _iptables("-F", self._chain)
        if _iptables("-C", "OUTPUT", "-j", self._chain, check=False).returncode != 0:
            _iptables("-I", "OUTPUT", "1", "-j", self._chain)
        return self

    def isolate(self, index: int) -> None:
        """Cut node `index` off from every other node, both directions, until `heal()`."""
        for other in range(len(self.cluster.nodes)):
            if other == index:
                continue
            for source, target in ((index, other), (other, index)):
                _iptables(
                    "-A",
                    self._chain,
                    "-m",
                    "cgroup",
                    "--path",
                    self._path(source),
                    "-d",
                    self.cluster.nodes[target].host,
                    "-j",
                    "DROP",
                )
        self.isolated.add(index)

    def heal(self) -> None:
        """Every partition gone (idempotent)."""
        _iptables("-F", self._chain, check=False)
        self.isolated.clear()

    def close(self) -> None:
        """After the cluster stopped: no rule, no jump, no chain, no cgroup left behind."""
        self.heal()
        for _ in range(10):  # every jump, should there be several
            if _iptables("-D", "OUTPUT", "-j", self._chain, check=False).returncode != 0:
                break
        _iptables("-X", self._chain, check=False)
        for index in range(len(self.cluster.nodes)):
            # Fails while a process is still in it (the cluster was not stopped): left be.
            with contextlib.suppress(OSError):
                (self._dir / f"node-{index + 1}").rmdir()
        with contextlib.suppress(OSError):
            self._dir.rmdir()
        with contextlib.suppress(OSError):
            self._dir.parent.rmdir()  # shared by concurrent runs: only when empty

    def __enter__(self) -> Network:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
