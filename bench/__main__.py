"""``python -m bench``: run every scenario with its baseline, repeat, write the results.
(``python -m bench chaos``: the chaos soak, ``bench/chaos.py``.)

Needs RabbitMQ and PostgreSQL (``CELERY_BROKER_URL``, ``DATABASE_URL``) of its
own: ``bench/run`` starts them and sets both. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks that it runs")
    parser.add_argument("--repeat", type=int, help="runs of each scenario (default 3, smoke 1)")
    parser.add_argument("--only", nargs="+", help="scenarios to run (default: all)")
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

    started = scenarios.now()
    runs: list[dict[str, float]] = []
    for repeat in range(repeats):
        run = scenarios.Run(sizes=sizes, env=scenarios.process_environment(), logs=logs, repeat=repeat,
                            profiles=profiles if repeat == 0 else None)
        figures: dict[str, float] = {}
        for name in chosen:
            began = time.monotonic()
            print(f"bench: repeat {repeat + 1}/{repeats}: {name} ...", flush=True)
            figures.update({f"{name}.{key}": value for key, value in scenarios.SCENARIOS[name](run).items()})
            print(f"bench:   {name} took {time.monotonic() - began:.0f}s", flush=True)
        runs.append(figures)

    results = report.build(
        runs=runs, sizes=sizes, repeats=repeats, started=started, finished=scenarios.now(),
        command=" ".join(["bench/run", *map(shlex.quote, argv)]),
    )
    written = report.write(results, options.output, docs_page=not options.smoke and not options.only)
    print(report.table(results))
    print(f"bench: wrote {', '.join(str(path) for path in written)} (process logs in {logs})")


if __name__ == "__main__":
    main(sys.argv[1:])
