"""Config.quorum_layout: voters, read-only members and StatefulSet DNS patterns."""

from __future__ import annotations

import pytest

from broker.config import (
    Config,
    QuorumLayout,
    automatic_voter_count,
    expand_peer_pattern,
    node_ordinal,
)

PATTERN = "shoal-{0..4}.shoal-headless.ns.svc:50052"


def test_pattern_expands_in_ordinal_order() -> None:
    assert expand_peer_pattern("n{1..3}:7") == ("n1:7", "n2:7", "n3:7")
    for bad in ("n:7", "n{0..1}{0..1}:7", "n{3..1}:7", "n{0..99}:7", "n{0..1}"):
        with pytest.raises(ValueError, match=r"."):
            expand_peer_pattern(bad)


def test_node_ordinal_and_automatic_voters() -> None:
    assert node_ordinal("shoal-12") == 12
    with pytest.raises(ValueError, match="ordinal"):
        node_ordinal("shoal")
    assert [automatic_voter_count(n) for n in range(1, 8)] == [1, 1, 3, 3, 5, 5, 5]


def test_the_first_ordinals_vote_and_the_rest_follow() -> None:
    voter = Config(node_id="shoal-1", peers_from_dns=PATTERN, voters=3).quorum_layout()
    assert voter == QuorumLayout(
        self_address="shoal-1.shoal-headless.ns.svc:50052",
        peers=(
            "shoal-0.shoal-headless.ns.svc:50052",
            "shoal-2.shoal-headless.ns.svc:50052",
        ),
        read_only=False,
    )
    follower = Config(node_id="shoal-4", peers_from_dns=PATTERN, voters=3).quorum_layout()
    assert follower.read_only
    assert len(follower.peers) == 3
    assert all(not p.startswith("shoal-4") for p in follower.peers)
    automatic = Config(node_id="shoal-4", peers_from_dns=PATTERN).quorum_layout()
    assert not automatic.read_only  # 5 members: 5 voters
    assert len(automatic.peers) == 4


def test_explicit_peers_and_join() -> None:
    single = Config().quorum_layout()
    assert single.peers == ()
    assert not single.read_only
    joined = Config(join=("a:1", "b:1", "c:1")).quorum_layout()
    assert joined.read_only
    assert joined.peers == ("a:1", "b:1", "c:1")
    with pytest.raises(ValueError, match="at most one"):
        Config(peers=("a:1",), join=("b:1",)).validate()
    with pytest.raises(ValueError, match="ordinal"):
        Config(node_id="shoal-7", peers_from_dns=PATTERN).validate()
