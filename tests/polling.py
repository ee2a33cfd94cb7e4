import time

import pytest

#: Longest wait, in seconds, for a flow to reach the state a test expects.
FLOW_TIMEOUT = 60


def wait_for(predicate, *, timeout: float = FLOW_TIMEOUT, interval: float = 0.2, message: str = ""):
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message or predicate}")
