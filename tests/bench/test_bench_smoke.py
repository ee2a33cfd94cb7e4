"""The benchmark command in its smoke form, so it never rots. No figure is asserted:
speed is measured by ``bench/run``, never by a timed test."""

import json
import subprocess
from pathlib import Path

import pytest

from bench.report import COMPARISONS, REDIS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench")
    run = subprocess.run([str(ROOT / "bench" / "run"), "--smoke", "--output", str(output)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"bench/run --smoke failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return output, json.loads((output / "results.json").read_text())


def test_every_comparison_has_the_platform_beside_its_baseline_from_the_same_run(smoke_results):
    _, results = smoke_results
    measured = {c["title"]: c for c in results["comparisons"]}
    # The smoke form runs one and two worker processes per context, not four; on Redis
    # two only, and no lean run (bench.scenarios.SMOKE_ON_REDIS).
    expected = [c for c in COMPARISONS if "-c4" not in c.title and not (
        c.platform.startswith(REDIS) and (".scale.c1." in c.platform or ".lean." in c.platform))]
    assert sorted(measured) == sorted(c.title for c in expected)
    for comparison in expected:
        entry = measured[comparison.title]
        assert entry["platform"]["median"] > 0, comparison.title
        if comparison.baseline:
            assert entry["baseline"]["median"] > 0 and len(entry["ratio"]["runs"]) == 1, comparison.title


def test_every_broker_figure_is_measured_on_rabbitmq_and_on_redis_in_the_same_repeat(smoke_results):
    _, results = smoke_results
    side_by_side = {row["title"]: row for row in results["brokers"]}
    assert {"relay: rows published and confirmed", "events end to end, two subscribers (-c2)",
            "commands end to end, one context (-c2)", "latency p50, commit → handler"} <= set(side_by_side)
    for title, row in side_by_side.items():
        assert row["rabbitmq"]["median"] > 0 and row["redis"]["median"] > 0, title
        assert len(row["ratio"]["runs"]) == 1, title
    # CPU is counted on Redis too: the workers', and never RabbitMQ's node (the bench's own
    # redis-server instead, when a run that short used a tick of it).
    cpu_on_redis = {key.rsplit(".", 1)[1] for key in results["figures"]
                    if key.startswith(f"{REDIS}end_to_end.events.cpu.platform.")}
    assert "workers" in cpu_on_redis and "rabbitmq" not in cpu_on_redis


def test_results_say_how_and_where_they_were_measured(smoke_results):
    _, results = smoke_results
    assert results["command"].startswith("bench/run --smoke")
    assert {"RabbitMQ", "Redis", "PostgreSQL", "celery", "kombu", "redis"} <= set(results["versions"])
    assert results["machine"]["cores"] >= 1 and results["settings"]["BUS_RELAY_BATCH_SIZE"] > 0
    assert any(key.startswith("end_to_end.events.cpu.platform.") for key in results["figures"])


def test_the_plots_and_the_results_page_are_written(smoke_results):
    output, _ = smoke_results
    for plot in ("ratios.png", "latency.png", "scale.png", "cpu.png", "brokers.png"):
        assert (output / plot).read_bytes().startswith(b"\x89PNG"), plot
    page = (output / "benchmarks.md").read_text()
    assert "| figure | unit | platform | baseline, same run |" in page and "bench/run --smoke" in page
    assert "| figure | unit | RabbitMQ | Redis | Redis ÷ RabbitMQ, same repeat |" in page
