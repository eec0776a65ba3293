"""Fixtures shared by the gateway's tests."""

from __future__ import annotations

import pytest

from broker.wire import put_entries


@pytest.fixture(params=["compiled", "python"])
def put_entries_both_ways(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test runs with the C module of wire/put_entries.py (PutRecords' entry reader, the
    base64 cut) and without it (the Python code it stands in for)."""
    if request.param == "python":
        monkeypatch.setattr(put_entries, "_compiled", None)
    elif not put_entries.compiled_reader():
        pytest.skip("the C module was not built (no C compiler when scripts/install ran)")
    return str(request.param)
