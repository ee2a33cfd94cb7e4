"""The reference flows (``tests.flows``) on the in-memory bus users test with (``messaging.testing``)."""

import pytest

from tests.flows import FlowContract
from messaging.testing import TestBus


class TestFlowsInMemory(FlowContract):
    @pytest.fixture
    def bus(self, db):
        return TestBus()
