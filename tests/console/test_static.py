"""The vendored client libraries are exactly the npm files VENDORED.md names (drift check)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "broker" / "console" / "static"

# sha256 of each file as `npm pack` delivered it (versions in static/VENDORED.md).
PINNED = {
    "htmx.min.js": "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",  # 2.0.11
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "hls.light.min.js": "482cccb3a224554f64d8c2cf0d335dba4a3819bdb726afbfddfe15de4c277d82",  # 1.7.4
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_vendored_file_matches_its_pinned_hash(name: str) -> None:
    digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()
    assert digest == PINNED[name], f"{name} drifted from the npm release VENDORED.md names"


def test_every_vendored_file_is_pinned_and_documented() -> None:
    notes = (STATIC / "VENDORED.md").read_text()
    own = {"console.js", "console.css", "VENDORED.md"}
    for path in STATIC.iterdir():
        if path.name in own:
            continue
        assert path.name in PINNED, f"{path.name} is vendored without a pinned hash"
        assert f"`{path.name}`" in notes, f"{path.name} is missing from VENDORED.md"


AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
# axe-core 4.14.1 (vendor/VENDORED.md)
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"


def test_the_accessibility_checker_is_the_pinned_release() -> None:
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256
