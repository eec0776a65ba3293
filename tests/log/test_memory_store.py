"""The `LogStore` contract against the reference `MemoryLogStore`."""

from __future__ import annotations

import pytest

from broker.log.memory_store import MemoryLogStore
from tests.log.conformance import LogStoreContract, StoreFactory


class TestMemoryLogStore(LogStoreContract):
    @pytest.fixture
    def make_store(self) -> StoreFactory:
        return MemoryLogStore
