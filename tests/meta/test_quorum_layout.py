"""Config.quorum_layout: voters, read-only members and StatefulSet DNS patterns."""

from __future__ import annotations

import pytest

from broker.config import (
    Config,
    QuorumLayout,
    expand_peer_pattern,
    node_ordinal,
    pattern_member,
)

PATTERN = "shoal-{0..2}.shoal-headless.ns.svc:50052"


def test_pattern_expands_in_ordinal_order() -> None:
    assert expand_peer_pattern("n{1..3}:7") == ("n1:7", "n2:7", "n3:7")
    for bad in ("n:7", "n{0..1}{0..1}:7", "n{3..1}:7", "n{0..99}:7", "n{0..1}"):
        with pytest.raises(ValueError, match=r"."):
            expand_peer_pattern(bad)


def test_node_ordinal_and_pattern_members() -> None:
    assert node_ordinal("shoal-12") == 12
    with pytest.raises(ValueError, match="ordinal"):
        node_ordinal("shoal")
    assert pattern_member(PATTERN, 4) == "shoal-4.shoal-headless.ns.svc:50052"
    # Ordinals count from the range's first value (loopback addresses in the process tests).
    assert pattern_member("127.0.0.{2..4}:7100", 0) == "127.0.0.2:7100"
    assert pattern_member("127.0.0.{2..4}:7100", 5) == "127.0.0.7:7100"


def test_the_range_votes_and_every_later_ordinal_follows() -> None:
    """A StatefulSet scaled past the voters' range: the new pods join as non-voting members
    of the same quorum, with no other setting changed."""
    voter = Config(node_id="shoal-1", peers_from_dns=PATTERN).quorum_layout()
    assert voter == QuorumLayout(
        self_address="shoal-1.shoal-headless.ns.svc:50052",
        peers=(
            "shoal-0.shoal-headless.ns.svc:50052",
            "shoal-2.shoal-headless.ns.svc:50052",
        ),
        read_only=False,
    )
    follower = Config(node_id="shoal-4", peers_from_dns=PATTERN).quorum_layout()
    assert follower == QuorumLayout(
        self_address="shoal-4.shoal-headless.ns.svc:50052",
        peers=expand_peer_pattern(PATTERN),
        read_only=True,
    )


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
        Config(node_id="shoal", peers_from_dns=PATTERN).validate()
