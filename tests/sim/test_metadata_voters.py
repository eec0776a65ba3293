"""Metadata voters in the simulation (broker/sim/metadata.py, issue 20): every voter's image
is the same after the same number of applied commands, through applies, snapshots, restarts
and wiped disks; and the check fails when a snapshot loses something."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker.meta.image import MetadataImage
from broker.meta.image_codec import image_from_document
from broker.sim.metadata import run_metadata_seed

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("seed", range(3))
def test_every_voter_has_the_same_image_at_the_same_count(seed: int) -> None:
    result = run_metadata_seed(seed)
    assert result.ok, f"seed {seed}: {result.violation}"
    assert result.entries > 150


def test_a_snapshot_that_loses_the_tags_is_caught() -> None:
    def lossy(document: dict[str, Any]) -> MetadataImage:
        image = image_from_document(document)
        streams = {
            name: dataclasses.replace(stream, tags=()) for name, stream in image.streams.items()
        }
        return dataclasses.replace(image, streams=streams)

    failures = [
        result for seed in range(6) if not (result := run_metadata_seed(seed, restore=lossy)).ok
    ]
    assert failures, "a lossy snapshot codec went unnoticed"
    assert "differs" in (failures[0].violation or "")
