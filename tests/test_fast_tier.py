"""The fast tier's guard (tests/fast_tier.py): a test that starts a node process without the
`process` or `cluster` marker fails, so it cannot slip into `scripts/test --fast`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broker.config import Knobs
from tests import fast_tier
from tests.conftest import node_config
from tests.support import REPO


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "broker", "serve"],  # tests/support.py's NodeProcess
        [
            "/bin/sh",
            "-c",
            'echo $$ > "$0" && exec "$@"',
            "/cg/procs",
            "python3",
            "-m",
            "broker",
            "serve",
        ],  # the chaos tests' cgroup wrapper
        ["/usr/local/bin/shoal", "serve", "--node-id", "node-1"],
        ["scripts/cluster", "--nodes", "3"],
        [str(REPO / "scripts" / "serve")],
    ],
)
def test_node_starts_are_recognised(argv: list[str]) -> None:
    assert fast_tier.starts_node_process(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "broker", "--endpoint", "127.0.0.1:1", "put", "s", "k", "v"],
        [sys.executable, "-m", "broker", "video", "put", "cam"],
        [sys.executable, "-c", "import broker"],
        ["aws", "kinesis", "list-streams"],
        ["scripts/sim", "--seeds", "3"],
    ],
)
def test_other_commands_are_not_node_starts(argv: list[str]) -> None:
    assert not fast_tier.starts_node_process(argv)


def test_an_unmarked_test_cannot_start_a_node_process() -> None:
    """This test has no node-process marker: the audit hook refuses the start (before any
    process exists), whichever way the command is spelled."""
    with pytest.raises(fast_tier.UnmarkedNodeProcess, match="test_an_unmarked_test_cannot"):
        subprocess.Popen([sys.executable, "-m", "broker", "serve"], stdout=subprocess.DEVNULL)
    with pytest.raises(fast_tier.UnmarkedNodeProcess):
        subprocess.run(f"{REPO}/scripts/serve", shell=True, check=False)


def test_a_marked_test_may(request: pytest.FixtureRequest) -> None:
    request.node.add_marker(pytest.mark.process)
    # Recognised as a node start (the words "broker" ... "serve"), but harmless to run.
    done = subprocess.run([sys.executable, "-c", "pass", "broker", "serve"], check=True, timeout=60)
    assert done.returncode == 0


def test_scripts_test_fast_selects_by_the_same_markers() -> None:
    script = (REPO / "scripts" / "test").read_text()
    assert f'-m "{fast_tier.FAST_TIER_SELECTION}"' in script
    for marker in fast_tier.NODE_PROCESS_MARKERS:
        assert f"not {marker}" in fast_tier.FAST_TIER_SELECTION


def test_a_test_node_alone_elects_itself_quickly_and_voters_keep_the_default(
    tmp_path: Path,
) -> None:
    """tests/conftest.py's `node_config`: a single voter's Raft heartbeat is 10 ms (its
    election timeout 40-140 ms); a node with other voters keeps pysyncobj's timing."""
    alone = node_config(tmp_path / "alone")
    voter = node_config(tmp_path / "voter", settings={"peers": ("127.0.0.1:1",)})
    assert alone.knobs.raft_heartbeat_ms == 10
    assert voter.knobs.raft_heartbeat_ms == Knobs().raft_heartbeat_ms == 100
    with pytest.raises(ValueError, match="raft_heartbeat_ms"):
        Knobs(raft_heartbeat_ms=5).validate()


def test_property_tests_try_a_quarter_of_their_examples_in_the_fast_tier_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`fast_tier.examples`: the full count in the default run, a quarter (at least 10, never
    more than the full count) when the run selects the fast tier's markers."""
    monkeypatch.setattr(fast_tier, "_selected", False)
    assert [fast_tier.examples(n) for n in (5, 30, 200)] == [5, 30, 200]
    monkeypatch.setattr(fast_tier, "_selected", True)
    assert [fast_tier.examples(n) for n in (5, 30, 200)] == [5, 10, 50]


def test_the_fast_tier_is_recognised_by_its_marker_selection(
    pytestconfig: pytest.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_tier, "_selected", fast_tier.selected())  # restored afterwards
    monkeypatch.setattr(pytestconfig.option, "markexpr", fast_tier.FAST_TIER_SELECTION)
    fast_tier.configure(pytestconfig)
    assert fast_tier.selected()
    monkeypatch.setattr(pytestconfig.option, "markexpr", "not slow")
    fast_tier.configure(pytestconfig)
    assert not fast_tier.selected()


def test_scripts_test_keeps_compiled_bytecode_out_of_the_tree() -> None:
    """Without bytecode every pytest worker rewrote every test module's asserts on every run
    (PYTHONDONTWRITEBYTECODE is set on the shared machines): scripts/test keeps it under .venv/."""
    script = (REPO / "scripts" / "test").read_text()
    assert "export PYTHONDONTWRITEBYTECODE=\n" in script
    assert 'export PYTHONPYCACHEPREFIX="$PWD/.venv/pycache"' in script
