"""Turning the runs into results: JSON, plots, and the results page.

Every comparison puts a platform figure beside its baseline from the same
repeat; the ratio is taken per repeat and then summarised, never across runs.
The broker scenarios' figures on Redis (``redis.<figure>``) are compared with
their own baseline on Redis, and with the same figure on RabbitMQ, again
within a repeat.
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
               "end_to_end.events.baseline", True, "≥ 1.0× bare Celery", lambda value, ratio: ratio >= 1.0),
    Comparison("events end to end, two subscribers, against the same guarantees by hand (-c2)", "handled msg/s",
               "end_to_end.events.platform", "end_to_end.events.by_hand", True, "≥ 1.5× the same guarantees by hand",
               lambda value, ratio: ratio >= 1.5),
    Comparison("events end to end, no task events or results (-c2)", "handled msg/s",
               "end_to_end.lean.platform", "end_to_end.lean.baseline", True),
    Comparison("commands end to end, one context (-c2)", "handled msg/s", "end_to_end.commands.platform",
               "end_to_end.commands.baseline", True, "≥ 1.0× bare Celery", lambda value, ratio: ratio >= 1.0),
    Comparison("commands end to end, against the same guarantees by hand (-c2)", "handled msg/s",
               "end_to_end.commands.platform", "end_to_end.commands.by_hand", True),
    Comparison("CPU per handled message, all processes, events (-c2)", "ms", "end_to_end.events.cpu_all.platform",
               "end_to_end.events.cpu_all.baseline", False, "≤ 3 ms", lambda value, ratio: value <= 3),
    Comparison("CPU per handled message, against the same guarantees by hand (-c2)", "ms",
               "end_to_end.events.cpu_all.platform", "end_to_end.events.cpu_all.by_hand", False),
    Comparison("latency p50, commit → handler", "ms", "end_to_end.latency.platform.p50",
               "end_to_end.latency.baseline.p50", False, "≤ 10 ms", lambda value, ratio: value <= 10),
    Comparison("latency p90", "ms", "end_to_end.latency.platform.p90", "end_to_end.latency.baseline.p90", False),
    Comparison("latency p99", "ms", "end_to_end.latency.platform.p99", "end_to_end.latency.baseline.p99", False,
               "≤ 25 ms", lambda value, ratio: value <= 25),
    Comparison("latency max", "ms", "end_to_end.latency.platform.max", "end_to_end.latency.baseline.max", False),
    Comparison("recognising a duplicate delivery", "ms", "duplicates.platform", "duplicates.baseline", False,
               "≤ 1 ms", lambda value, ratio: value <= 1),
    *[Comparison(f"scale: events end to end, -c{c} per context", "handled msg/s",
                 f"end_to_end.scale.c{c}.platform", f"end_to_end.scale.c{c}.baseline", True) for c in (1, 2, 4)],
    Comparison("events end to end with traces on (OTLP/HTTP), against off (-c2)", "handled msg/s",
               "observability.traces", "observability.off", True),
    Comparison("CPU per handled message with traces on, against off (-c2)", "ms",
               "observability.cpu_all.traces", "observability.cpu_all.off", False),
    Comparison("events end to end with metrics on, against off (-c2)", "handled msg/s",
               "observability.metrics", "observability.off", True),
    Comparison("CPU per handled message with metrics on, against off (-c2)", "ms",
               "observability.cpu_all.metrics", "observability.cpu_all.off", False),
    Comparison("traces and metrics off: their hooks' time per delivery, in process", "µs",
               "observability.off_hooks_us", None, False, "< 20 µs: under 1 % of a delivery's 2–3 ms of CPU",
               lambda value, ratio: value < 20),
    Comparison("embedded default: events end to end, a burst", "handled msg/s", "embedded.platform", None, True,
               "≥ 200 msg/s", lambda value, ratio: value >= 200),
    Comparison("embedded default: events at a steady 160 a second (320 handled/s offered)", "handled msg/s",
               "embedded.steady.platform", None, True, "≥ 300 msg/s sustained",
               lambda value, ratio: value >= 300),
    Comparison("embedded default: backlog when the steady publishing stopped", "messages",
               "embedded.steady.backlog", None, False),
    Comparison("embedded default: latency p50", "ms", "embedded.platform.latency.p50", None, False,
               "< 100 ms", lambda value, ratio: value < 100),
    Comparison("embedded default: latency p99", "ms", "embedded.platform.latency.p99", None, False),
]
#: Figures on Redis are named as on RabbitMQ, under this prefix.
REDIS = "redis."
#: Scenarios that go through a broker (``scenarios.BROKER_SCENARIOS``): measured on both.
BROKER_FIGURES = ("relay.", "end_to_end.")
#: The same comparisons on Redis, each against its baseline on Redis (the same targets).
ON_REDIS = [
    dataclasses.replace(c, title=f"{c.title}, on Redis", platform=REDIS + c.platform, baseline=REDIS + c.baseline)
    for c in COMPARISONS if c.platform.startswith(BROKER_FIGURES)
]
COMPARISONS += ON_REDIS


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
        if c.platform.startswith(REDIS):
            entry["broker"] = "Redis"
        comparisons.append(entry)
    return {
        "command": command, "started": started, "finished": finished, "repeats": repeats,
        "sizes": dataclasses.asdict(sizes), "machine": machine(), "versions": versions(),
        "settings": bus_settings(), "figures": figures, "comparisons": comparisons,
        "brokers": brokers_side_by_side(runs, figures),
    }


def brokers_side_by_side(runs: list[dict[str, float]], figures: dict) -> list[dict]:
    """Each broker figure on RabbitMQ and on Redis, and Redis ÷ RabbitMQ taken within each repeat."""
    rows, seen = [], set()
    for c in COMPARISONS:
        on_redis = REDIS + c.platform
        if c.platform.startswith(REDIS) or on_redis not in figures or c.platform not in figures or c.platform in seen:
            continue  # a figure compared with two baselines has one row here, beside the first
        seen.add(c.platform)
        row = {"title": c.title, "unit": c.unit, "higher_is_better": c.higher_is_better,
               "rabbitmq": figures[c.platform], "redis": figures[on_redis],
               "ratio": summarise([r[on_redis] / r[c.platform] for r in runs if on_redis in r and c.platform in r])}
        if c.baseline and c.baseline in figures and REDIS + c.baseline in figures:
            row["baseline"] = {"rabbitmq": figures[c.baseline], "redis": figures[REDIS + c.baseline]}
        rows.append(row)
    return rows


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
    packages["redis"] = metadata.version("redis")  # the client, redis-py
    redis_server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    packages["Redis"] = next((word[2:] for word in redis_server.split() if word.startswith("v=")), "unknown")
    return packages


def bus_settings() -> dict:
    from django.conf import settings

    names = ["BUS_BATCH_SIZE", "BUS_BATCH_SIZE_BY_CONTEXT", "BUS_RELAY_BATCH_SIZE", "BUS_RELAY_POLL_INTERVAL", "BUS_CONFIRM_TIMEOUT", "BUS_DELIVERY_LIMIT",
             "CELERY_WORKER_PREFETCH_MULTIPLIER", "CELERY_TASK_ACKS_LATE", "CELERY_RESULT_BACKEND",
             "CELERY_WORKER_SEND_TASK_EVENTS", "BUS_REDIS_VISIBILITY_TIMEOUT"]
    values = {name: getattr(settings, name) for name in names}
    values["CONN_MAX_AGE"] = settings.DATABASES["default"]["CONN_MAX_AGE"]
    # How the bench runs its redis-server (tests/integration/redis.py).
    values["redis-server"] = "appendonly yes, appendfsync everysec, no RDB snapshots"
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


def table(results: dict, *, broker: str | None = None) -> str:
    """Each comparison, platform beside baseline: RabbitMQ's and those with no broker, or
    those on ``broker`` ("Redis")."""
    lines = ["| figure | unit | platform | baseline, same run | ratio | target | met |",
             "|---|---|---|---|---|---|---|"]
    for c in results["comparisons"]:
        if c.get("broker") != broker:
            continue
        baseline = _value(c["baseline"]) if "baseline" in c else "—"
        ratio = f"{c['ratio']['median']:.2f}× ({c['ratio']['min']:.2f}–{c['ratio']['max']:.2f})" if "ratio" in c else "—"
        met = {True: "yes", False: "**no**", None: ""}[c.get("met")]
        lines.append(f"| {c['title']} | {c['unit']} | {_value(c['platform'])} | {baseline} | {ratio} | "
                     f"{c['target']} | {met} |")
    return "\n".join(lines)


def brokers_table(results: dict) -> str:
    """Each broker figure on RabbitMQ and on Redis, and their ratio within each repeat."""
    lines = [("| figure | unit | RabbitMQ | Redis | Redis ÷ RabbitMQ, same repeat | baseline on RabbitMQ | "
              "baseline on Redis |"), "|---|---|---|---|---|---|---|"]
    for row in results.get("brokers", []):
        ratio = row["ratio"]
        baselines = [_value(row["baseline"][b]) for b in ("rabbitmq", "redis")] if "baseline" in row else ["—", "—"]
        lines.append(f"| {row['title']} | {row['unit']} | {_value(row['rabbitmq'])} | {_value(row['redis'])} | "
                     f"{ratio['median']:.2f}× ({ratio['min']:.2f}–{ratio['max']:.2f}) | {' | '.join(baselines)} |")
    return "\n".join(lines)


#: The CPU table's columns: figure prefix and heading.
CPU_COLUMNS = [
    ("end_to_end.events.cpu.platform.", "platform, RabbitMQ"),
    ("end_to_end.lean.cpu.platform.", "platform without task events or results, RabbitMQ"),
    ("end_to_end.events.cpu.baseline.", "bare Celery, RabbitMQ"),
    ("end_to_end.events.cpu.by_hand.", "the same guarantees by hand, RabbitMQ"),
    (REDIS + "end_to_end.events.cpu.platform.", "platform, Redis"),
    (REDIS + "end_to_end.lean.cpu.platform.", "platform without task events or results, Redis"),
    (REDIS + "end_to_end.events.cpu.baseline.", "bare Celery, Redis"),
    (REDIS + "end_to_end.events.cpu.by_hand.", "the same guarantees by hand, Redis"),
]


def _cpu_columns(figures: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """The CPU columns measured in these results, and the process groups in any of them."""
    columns = [(prefix, heading) for prefix, heading in CPU_COLUMNS if any(key.startswith(prefix) for key in figures)]
    groups = sorted({key.rsplit(".", 1)[1] for key in figures for prefix, _ in columns if key.startswith(prefix)})
    return columns, groups


def cpu_table(results: dict) -> str:
    """CPU milliseconds per handled message, by process group: where the time goes."""
    figures = results["figures"]
    columns, groups = _cpu_columns(figures)
    if not groups:
        return ""
    lines = [f"| process group | {' | '.join(heading for _, heading in columns)} |",
             "|---" * (len(columns) + 1) + "|"]
    totals = [0.0] * len(columns)
    for group in groups:
        cells = []
        for column, (prefix, _) in enumerate(columns):
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

## RabbitMQ and Redis

The scenarios that go through a broker (the relay, and everything end to end)
ran on RabbitMQ above and on Redis {v.get('Redis', 'unknown')} (redis-py {v.get('redis', 'unknown')}), a
redis-server of the bench's own with `appendonly yes` and `appendfsync everysec`,
one right after the other in each repeat (RabbitMQ first in odd repeats, Redis
first in even ones). Each figure, and Redis ÷ RabbitMQ taken within each repeat
(above 1: Redis higher, faster in msg/s, slower in ms):

{brokers_table(results)}

The same figures on Redis beside their baselines on Redis (the raw relay loop
with redis-py; bare Celery on kombu's own Redis transport):

{table(results, broker="Redis")}

![Redis ÷ RabbitMQ]({plots}/brokers.png)

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
    _speed_bars(ax, comparisons, color="#4878a8")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(0.8, color="#c44e52", linestyle="--", linewidth=0.8, label="0.8× target")
    ax.invert_yaxis()
    ax.set_xlabel("speed relative to its baseline, same run (1.0 = as fast)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    paths.append(_save(fig, output / "ratios.png"))

    figures = results["figures"]
    marks = ["p50", "p90", "p99", "max"]
    series = [(label, prefix, side, color) for label, prefix, side, color in (
        ("baseline, RabbitMQ", "", "baseline", "#999999"), ("platform, RabbitMQ", "", "platform", "#4878a8"),
        ("baseline, Redis", REDIS, "baseline", "#d9a6a6"), ("platform, Redis", REDIS, "platform", "#c44e52"),
    ) if all(f"{prefix}end_to_end.latency.{side}.{m}" in figures for m in marks)]
    if series:
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(series)
        for n, (label, prefix, side, color) in enumerate(series):
            values = [figures[f"{prefix}end_to_end.latency.{side}.{m}"]["median"] for m in marks]
            offset = (n - (len(series) - 1) / 2) * width
            ax.bar([i + offset for i in range(len(marks))], values, width, label=label, color=color)
        ax.set_xticks(range(len(marks)), marks)
        ax.set_yscale("log")
        ax.set_ylabel("ms, publishing commit → handler (log scale)")
        ax.legend()
        fig.tight_layout()
        paths.append(_save(fig, output / "latency.png"))

    columns, groups = _cpu_columns(figures)
    if groups:
        fig, ax = plt.subplots(figsize=(2 + 1.4 * len(columns), 4.5))
        columns = [(prefix, heading.replace(" without", "\nwithout").replace(", ", ",\n"))
                   for prefix, heading in columns]
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
        for label, prefix, side, color in (
            ("baseline, RabbitMQ", "", "baseline", "#999999"), ("platform, RabbitMQ", "", "platform", "#4878a8"),
            ("baseline, Redis", REDIS, "baseline", "#d9a6a6"), ("platform, Redis", REDIS, "platform", "#c44e52"),
        ):
            if all(f"{prefix}end_to_end.scale.c{c}.{side}" in figures for c in levels):
                medians = [figures[f"{prefix}end_to_end.scale.c{c}.{side}"]["median"] for c in levels]
                ax.plot(levels, medians, marker="o", label=label, color=color,
                        linestyle="--" if prefix else "-")
        ax.set_xticks(levels)
        ax.set_xlabel("worker processes per context (prefork concurrency)")
        ax.set_ylabel("handled messages/s, two subscribers")
        ax.set_ylim(bottom=0)
        ax.legend()
        fig.tight_layout()
        paths.append(_save(fig, output / "scale.png"))

    rows = results.get("brokers", [])
    if rows:
        # Redis ÷ RabbitMQ as speed: above 1, Redis is faster (a latency's ratio is inverted).
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
        _speed_bars(ax, rows, color="#c44e52")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.set_xlabel("the platform on Redis, speed relative to RabbitMQ, same repeat (1.0 = as fast)")
        fig.tight_layout()
        paths.append(_save(fig, output / "brokers.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _speed_bars(ax, rows: list[dict], *, color: str) -> None:
    """One bar per row: its ratio as speed (a latency's ratio inverted), with the range of the repeats."""
    labels, speeds, low, high = [], [], [], []
    for row in rows:
        r = row["ratio"]
        flip = (lambda x: x) if row["higher_is_better"] else (lambda x: 1 / x)
        values = sorted(flip(x) for x in (r["median"], r["min"], r["max"]))
        labels.append(row["title"])
        speeds.append(flip(r["median"]))
        low.append(flip(r["median"]) - values[0])
        high.append(values[2] - flip(r["median"]))
    ax.barh(labels, speeds, xerr=[low, high], color=color)
