"""``python -m bench``: run every scenario with its baseline, repeat, write the results.
(``python -m bench chaos``: the chaos soak, ``bench/chaos.py``.)

Needs RabbitMQ and PostgreSQL (``CELERY_BROKER_URL``, ``DATABASE_URL``) of its
own: ``bench/run`` starts them and sets both. The scenarios that go through a
broker run on RabbitMQ and on a redis-server the bench starts for itself (AOF,
``appendfsync everysec``), one right after the other. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

#: The brokers the broker scenarios (``scenarios.BROKER_SCENARIOS``) run on; a figure
#: on Redis is named ``redis.<scenario>.<figure>``, one on RabbitMQ ``<scenario>.<figure>``.
BROKERS = ("rabbitmq", "redis")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks that it runs")
    parser.add_argument("--repeat", type=int, help="runs of each scenario (default 3, smoke 1)")
    parser.add_argument("--only", nargs="+", help="scenarios to run (default: all)")
    parser.add_argument("--brokers", nargs="+", choices=BROKERS, default=list(BROKERS),
                        help="brokers the broker scenarios run on (default: both)")
    parser.add_argument("--profile", action="store_true", help="keep py-spy and pyinstrument profiles")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results",
                        help="folder for results.json, the plots and profiles")
    parser.add_argument("--page-only", action="store_true",
                        help="measure nothing: write the results page again from results.json (after editing bench/analysis.md)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    if argv[:1] == ["chaos"]:
        from bench import chaos

        return chaos.main(argv[1:])
    options = parse_arguments(argv)
    if options.page_only:
        from bench import report

        report.write_page(json.loads((options.output / "results.json").read_text()), options.output)
        return
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ["DJANGO_DEBUG"] = "false"

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from bench import report, scenarios

    if not settings.CELERY_BROKER_URL.startswith("amqp://") or settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        sys.exit("bench: needs RabbitMQ and PostgreSQL; run it with bench/run (which starts them)")
    call_command("migrate", verbosity=0)

    sizes = scenarios.SMOKE if options.smoke else scenarios.FULL
    repeats = options.repeat or (1 if options.smoke else 3)
    chosen = options.only or list(scenarios.SCENARIOS)
    unknown = set(chosen) - set(scenarios.SCENARIOS)
    if unknown:
        sys.exit(f"bench: unknown scenarios {sorted(unknown)}; known: {', '.join(scenarios.SCENARIOS)}")
    options.output.mkdir(parents=True, exist_ok=True)
    profiles = options.output / "profiles" if options.profile else None
    if profiles:
        profiles.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    on_redis = "redis" in options.brokers and set(chosen) & set(scenarios.BROKER_SCENARIOS)
    redis_server = _start_redis(logs) if on_redis else None

    started = scenarios.now()
    runs: list[dict[str, float]] = []
    try:
        for repeat in range(repeats):
            run = scenarios.Run(sizes=sizes, env=scenarios.process_environment(), logs=logs, repeat=repeat,
                                profiles=profiles if repeat == 0 else None)
            figures: dict[str, float] = {}
            # RabbitMQ first in even repeats, Redis first in odd ones: neither always on a warmer machine.
            order = options.brokers if repeat % 2 == 0 else options.brokers[::-1]
            for name in chosen:
                on_brokers = name in scenarios.BROKER_SCENARIOS
                for broker in order if on_brokers else ["rabbitmq"]:  # the others use no broker: run once
                    began, label = time.monotonic(), f"{name} on {broker}" if on_brokers else name
                    print(f"bench: repeat {repeat + 1}/{repeats}: {label} ...", flush=True)
                    if broker == "rabbitmq":
                        measured, prefix = scenarios.SCENARIOS[name](run), name
                    else:
                        measured, prefix = _on_redis(redis_server, name, run, options.smoke), f"redis.{name}"
                    figures.update({f"{prefix}.{key}": value for key, value in measured.items()})
                    print(f"bench:   {label} took {time.monotonic() - began:.0f}s", flush=True)
            runs.append(figures)
    finally:
        if redis_server is not None:
            redis_server.stop()

    results = report.build(
        runs=runs, sizes=sizes, repeats=repeats, started=started, finished=scenarios.now(),
        command=" ".join(["bench/run", *map(shlex.quote, argv)]),
    )
    whole = not options.smoke and not options.only and len(options.brokers) == len(BROKERS)
    written = report.write(results, options.output, docs_page=whole)
    print(report.table(results))
    print(f"bench: wrote {', '.join(str(path) for path in written)} (process logs in {logs})")


def _start_redis(logs: Path):
    """A redis-server of the bench's own (a free port, a folder in the logs), AOF fsynced every second."""
    from tests.integration.redis import RedisServer

    server = RedisServer(logs / "redis-server")
    server.start()
    print(f"bench: redis-server on {server.url}, data in {server.folder}", flush=True)
    return server


def _on_redis(server, name: str, run, smoke: bool) -> dict[str, float]:
    """One repeat of scenario ``name`` on Redis, in a process of its own (``bench.on_broker``)."""
    argv = [sys.executable, "-m", "bench.on_broker", "--broker-url", server.url, "--scenario", name,
            "--repeat", str(run.repeat), "--logs", str(run.logs / "redis")]
    if smoke:
        argv.append("--smoke")
    if run.profiles is not None:
        argv += ["--profiles", str(run.profiles / "redis")]
    result = subprocess.run(argv, cwd=ROOT, env=run.env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{name} on Redis failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main(sys.argv[1:])
