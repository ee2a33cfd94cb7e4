"""Metrics on in a test: ``metrics_on`` gives the bus a recorder into the test's own folder, and
``recorded`` reads back what the processes of that folder recorded, as ``/metrics`` adds it up."""

import pytest
from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector

from messaging import metrics


@pytest.fixture
def metrics_on(tmp_path, monkeypatch, settings):
    """Metrics on, into a folder of this test's (``BUS_METRICS_DIR``); off again after it."""
    folder = tmp_path / "metrics"
    settings.BUS_METRICS_DIR = str(folder)
    monkeypatch.setattr(metrics, "recorder", metrics.Recorder(folder))
    # What the recorder sets as it makes its metrics, given back after the test.
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    return folder


def recorded(folder, name: str, **labels: str) -> float:
    """The sample ``name`` with ``labels``, summed over the processes of ``folder`` (0 if none)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return registry.get_sample_value(name, labels) or 0.0
