"""Turning the runs into results: JSON, plots, and the results page.

Every comparison puts a platform figure beside its baseline from the same
repeat; the ratio is taken per repeat and then summarised, never across runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform as host
import statistics
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
ANALYSIS = ROOT / "bench" / "analysis.md"


@dataclasses.dataclass(frozen=True)
class Comparison:
    title: str
    unit: str
    platform: str
    baseline: str | None
    higher_is_better: bool
    #: The target, as text, and a test of the platform's median (and the ratio's) against it.
    target: str = ""
    met: object = None  # Callable[[float, float | None], bool]


COMPARISONS = [
    Comparison("relay: rows published and confirmed", "rows/s", "relay.platform", "relay.baseline", True,
               "≥ 0.8× the raw batched-confirm loop", lambda value, ratio: ratio >= 0.8),
    Comparison("outbox: publish(), one per transaction", "rows/s", "outbox.one.platform", "outbox.one.baseline",
               True, "little more than the row insert", lambda value, ratio: ratio >= 0.5),
    Comparison("outbox: publish() many times in one transaction", "rows/s", "outbox.many.platform",
               "outbox.many.baseline", True),
    Comparison("outbox: publish_many() in one transaction", "rows/s", "outbox.many.platform_many",
               "outbox.many.baseline", True),
    Comparison("events end to end, two subscribers (-c2)", "handled msg/s", "end_to_end.events.platform",
               "end_to_end.events.baseline", True, "≥ 0.8× bare Celery", lambda value, ratio: ratio >= 0.8),
    Comparison("events end to end, no task events or results (-c2)", "handled msg/s",
               "end_to_end.lean.platform", "end_to_end.lean.baseline", True),
    Comparison("commands end to end, one context (-c2)", "handled msg/s", "end_to_end.commands.platform",
               "end_to_end.commands.baseline", True),
    Comparison("latency p50, commit → handler", "ms", "end_to_end.latency.platform.p50",
               "end_to_end.latency.baseline.p50", False, "≤ 10 ms", lambda value, ratio: value <= 10),
    Comparison("latency p90", "ms", "end_to_end.latency.platform.p90", "end_to_end.latency.baseline.p90", False),
    Comparison("latency p99", "ms", "end_to_end.latency.platform.p99", "end_to_end.latency.baseline.p99", False,
               "≤ 50 ms", lambda value, ratio: value <= 50),
    Comparison("latency max", "ms", "end_to_end.latency.platform.max", "end_to_end.latency.baseline.max", False),
    Comparison("recognising a duplicate delivery", "ms", "duplicates.platform", "duplicates.baseline", False,
               "≤ 1 ms", lambda value, ratio: value <= 1),
    *[Comparison(f"scale: events end to end, -c{c} per context", "handled msg/s",
                 f"end_to_end.scale.c{c}.platform", f"end_to_end.scale.c{c}.baseline", True) for c in (1, 2, 4)],
    Comparison("embedded default: events end to end", "handled msg/s", "embedded.platform", None, True,
               "≥ 200 msg/s", lambda value, ratio: value >= 200),
    Comparison("embedded default: latency p50", "ms", "embedded.platform.latency.p50", None, False,
               "< 100 ms", lambda value, ratio: value < 100),
    Comparison("embedded default: latency p99", "ms", "embedded.platform.latency.p99", None, False),
]


def summarise(values: list[float]) -> dict:
    return {"runs": values, "median": statistics.median(values), "min": min(values), "max": max(values)}


def build(*, runs: list[dict[str, float]], sizes, repeats: int, started: str, finished: str, command: str) -> dict:
    keys = sorted({key for figures in runs for key in figures})
    figures = {key: summarise([r[key] for r in runs if key in r]) for key in keys}
    comparisons = []
    for c in COMPARISONS:
        if c.platform not in figures:
            continue
        entry = {"title": c.title, "unit": c.unit, "higher_is_better": c.higher_is_better,
                 "platform": figures[c.platform], "target": c.target}
        ratio = None
        if c.baseline and c.baseline in figures:
            entry["baseline"] = figures[c.baseline]
            # Same-repeat pairs only: each ratio compares figures measured minutes apart.
            pairs = [r[c.platform] / r[c.baseline] for r in runs if c.platform in r and c.baseline in r]
            entry["ratio"] = summarise(pairs)
            ratio = entry["ratio"]["median"]
        if c.met is not None:
            entry["met"] = bool(c.met(entry["platform"]["median"], ratio))
        comparisons.append(entry)
    return {
        "command": command, "started": started, "finished": finished, "repeats": repeats,
        "sizes": dataclasses.asdict(sizes), "machine": machine(), "versions": versions(),
        "settings": bus_settings(), "figures": figures, "comparisons": comparisons,
    }


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), host.processor())
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_kb / 2**20, 1),
            "kernel": host.release(), "python": host.python_version()}


def versions() -> dict:
    from django.db import connection

    packages = {name: metadata.version(name) for name in
                ("Django", "celery", "kombu", "amqp", "psycopg", "django-celery-results", "pydantic")}
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        packages["PostgreSQL"] = cursor.fetchone()[0]
    rabbitmq = subprocess.run(["rabbitmqctl", "-q", "version"], capture_output=True, text=True)
    packages["RabbitMQ"] = rabbitmq.stdout.strip() or "unknown"
    return packages


def bus_settings() -> dict:
    from django.conf import settings

    names = ["BUS_RELAY_BATCH_SIZE", "BUS_RELAY_POLL_INTERVAL", "BUS_CONFIRM_TIMEOUT", "BUS_DELIVERY_LIMIT",
             "CELERY_WORKER_PREFETCH_MULTIPLIER", "CELERY_TASK_ACKS_LATE", "CELERY_RESULT_BACKEND",
             "CELERY_WORKER_SEND_TASK_EVENTS"]
    values = {name: getattr(settings, name) for name in names}
    values["CONN_MAX_AGE"] = settings.DATABASES["default"]["CONN_MAX_AGE"]
    return values


# -- output -----------------------------------------------------------------------------------

def write(results: dict, output: Path, *, docs_page: bool) -> list[Path]:
    written = [output / "results.json"]
    written[0].write_text(json.dumps(results, indent=2, default=str) + "\n")
    written += plot(results, output)
    return [*written, write_page(results, output, docs_page=docs_page)]


def write_page(results: dict, output: Path, *, docs_page: bool = True) -> Path:
    page = DOCS_PAGE if docs_page else output / "benchmarks.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown(results, page, output))
    return page


def _value(figure: dict) -> str:
    median = figure["median"]
    text = f"{median:,.2f}" if median < 100 else f"{median:,.0f}"
    if figure["min"] != figure["max"]:
        low, high = (f"{figure[k]:,.2f}" if median < 100 else f"{figure[k]:,.0f}" for k in ("min", "max"))
        text += f" ({low}–{high})"
    return text


def table(results: dict) -> str:
    lines = ["| figure | unit | platform | baseline, same run | ratio | target | met |",
             "|---|---|---|---|---|---|---|"]
    for c in results["comparisons"]:
        baseline = _value(c["baseline"]) if "baseline" in c else "—"
        ratio = f"{c['ratio']['median']:.2f}× ({c['ratio']['min']:.2f}–{c['ratio']['max']:.2f})" if "ratio" in c else "—"
        met = {True: "yes", False: "**no**", None: ""}[c.get("met")]
        lines.append(f"| {c['title']} | {c['unit']} | {_value(c['platform'])} | {baseline} | {ratio} | "
                     f"{c['target']} | {met} |")
    return "\n".join(lines)


CPU_PREFIX = "end_to_end.events.cpu."
#: The CPU table's columns: figure prefix and heading.
CPU_COLUMNS = [
    ("end_to_end.events.cpu.platform.", "platform"),
    ("end_to_end.lean.cpu.platform.", "platform without task events or results"),
    ("end_to_end.events.cpu.baseline.", "bare Celery"),
]


def cpu_table(results: dict) -> str:
    """CPU milliseconds per handled message, by process group: where the time goes."""
    figures = results["figures"]
    groups = sorted({key.rsplit(".", 1)[1] for key in figures if key.startswith(CPU_PREFIX)})
    if not groups:
        return ""
    lines = [f"| process group | {' | '.join(heading for _, heading in CPU_COLUMNS)} |",
             "|---" * (len(CPU_COLUMNS) + 1) + "|"]
    totals = [0.0] * len(CPU_COLUMNS)
    for group in groups:
        cells = []
        for column, (prefix, _) in enumerate(CPU_COLUMNS):
            figure = figures.get(prefix + group)
            cells.append(f"{figure['median']:.2f}" if figure else "—")
            totals[column] += figure["median"] if figure else 0
        lines.append(f"| {group} | {' | '.join(cells)} |")
    lines.append(f"| **all** | {' | '.join(f'**{total:.2f}**' for total in totals)} |")
    return "\n".join(lines)


def markdown(results: dict, page: Path, output: Path) -> str:
    plots = os.path.relpath(output, page.parent)
    m, v = results["machine"], results["versions"]
    analysis = ANALYSIS.read_text() if ANALYSIS.exists() else ""
    return f"""# Benchmarks

Every figure beside its baseline measured in the same run; each cell is the
median of {results['repeats']} repeats with the range in brackets, and each ratio
is taken within a repeat, then summarised. Produced by:

```sh
{results['command']}
```

Run {results['started']} to {results['finished']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB),
Linux {m['kernel']}, Python {m['python']}; RabbitMQ {v['RabbitMQ']}, PostgreSQL {v['PostgreSQL']},
Celery {v['celery']}, kombu {v['kombu']}, py-amqp {v['amqp']}, Django {v['Django']}, psycopg {v['psycopg']}.
Sizes: `{json.dumps(results['sizes'])}`. Settings: `{json.dumps(results['settings'], default=str)}`.
Raw figures: [`results.json`]({plots}/results.json).

{table(results)}

What each baseline is: `bench/README.md`.

Where the CPU goes in the events end-to-end run (-c2), per handled message, medians
(read from `/proc` before and after the run; the machine has {m['cores']} cores for everything):

{cpu_table(results)}

![CPU per handled message]({plots}/cpu.png)

![Speed relative to the baseline]({plots}/ratios.png)

![Latency, commit to handler]({plots}/latency.png)

![Throughput by worker processes per context]({plots}/scale.png)

{analysis}"""


def plot(results: dict, output: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    comparisons = [c for c in results["comparisons"] if "ratio" in c]
    # Speed relative to the baseline: higher is better whatever the unit.
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(comparisons) + 1.5))
    labels, speeds, low, high = [], [], [], []
    for c in comparisons:
        r = c["ratio"]
        flip = (lambda x: x) if c["higher_is_better"] else (lambda x: 1 / x)
        values = sorted(flip(x) for x in (r["median"], r["min"], r["max"]))
        labels.append(c["title"])
        speeds.append(flip(r["median"]))
        low.append(flip(r["median"]) - values[0])
        high.append(values[2] - flip(r["median"]))
    ax.barh(labels, speeds, xerr=[low, high], color="#4878a8")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(0.8, color="#c44e52", linestyle="--", linewidth=0.8, label="0.8× target")
    ax.invert_yaxis()
    ax.set_xlabel("speed relative to its baseline, same run (1.0 = as fast)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    paths.append(_save(fig, output / "ratios.png"))

    figures = results["figures"]
    marks = ["p50", "p90", "p99", "max"]
    if all(f"end_to_end.latency.platform.{m}" in figures for m in marks):
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.38
        for offset, side, color in ((-width / 2, "baseline", "#999999"), (width / 2, "platform", "#4878a8")):
            values = [figures[f"end_to_end.latency.{side}.{m}"]["median"] for m in marks]
            ax.bar([i + offset for i in range(len(marks))], values, width, label=side, color=color)
        ax.set_xticks(range(len(marks)), marks)
        ax.set_yscale("log")
        ax.set_ylabel("ms, publishing commit → handler (log scale)")
        ax.legend()
        fig.tight_layout()
        paths.append(_save(fig, output / "latency.png"))

    groups = sorted({key.rsplit(".", 1)[1] for key in figures if key.startswith(CPU_PREFIX)})
    if groups:
        fig, ax = plt.subplots(figsize=(7, 4))
        columns = [(prefix, heading.replace(" without", "\nwithout")) for prefix, heading in CPU_COLUMNS]
        bottoms = [0.0] * len(columns)
        for group in groups:
            values = [figures.get(prefix + group, {"median": 0})["median"] for prefix, _ in columns]
            ax.bar([heading for _, heading in columns], values, bottom=bottoms, label=group)
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
        ax.set_ylabel("CPU ms per handled message")
        ax.legend()
        fig.tight_layout()
        paths.append(_save(fig, output / "cpu.png"))

    levels = sorted(int(k.split(".")[2][1:]) for k in figures if k.startswith("end_to_end.scale.") and k.endswith(".platform"))
    if levels:
        fig, ax = plt.subplots(figsize=(7, 4))
        for side, color in (("baseline", "#999999"), ("platform", "#4878a8")):
            medians = [figures[f"end_to_end.scale.c{c}.{side}"]["median"] for c in levels]
            ax.plot(levels, medians, marker="o", label=side, color=color)
        ax.set_xticks(levels)
        ax.set_xlabel("worker processes per context (prefork concurrency)")
        ax.set_ylabel("handled messages/s, two subscribers")
        ax.set_ylim(bottom=0)
        ax.legend()
        fig.tight_layout()
        paths.append(_save(fig, output / "scale.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
