"""The reference flows (``tests.flows``) on the in-memory bus, in one process."""

import pytest

from tests.flows import FlowContract
from tests.memory_bus import MemoryBus


class TestFlowsInMemory(FlowContract):
    @pytest.fixture
    def bus(self, db):
        return MemoryBus()
