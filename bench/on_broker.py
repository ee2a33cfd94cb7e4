"""One repeat of a broker scenario on another broker: ``python -m bench.on_broker``.

A process takes its broker from ``CELERY_BROKER_URL`` once, as it starts (the
Celery app's transport, the relay's adapter), so ``python -m bench``, which
runs on RabbitMQ, measures a scenario on Redis in a process of its own, right
beside the same scenario on RabbitMQ. The same scenario code, the same
database; prints one JSON line: the scenario's figures.
"""

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.on_broker", description=__doc__)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--repeat", type=int, required=True)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--profiles", type=Path)
    options = parser.parse_args()
    os.environ.update({"CELERY_BROKER_URL": options.broker_url, "DJANGO_SETTINGS_MODULE": "config.settings.local",
                       "DJANGO_DEBUG": "false"})

    import django

    django.setup()
    from bench import scenarios

    options.logs.mkdir(parents=True, exist_ok=True)
    if options.profiles:
        options.profiles.mkdir(parents=True, exist_ok=True)
    run = scenarios.Run(sizes=scenarios.SMOKE_ON_REDIS if options.smoke else scenarios.FULL,
                        env=scenarios.process_environment(), logs=options.logs, repeat=options.repeat,
                        profiles=options.profiles)
    print(json.dumps(scenarios.SCENARIOS[options.scenario](run)))


if __name__ == "__main__":
    main()
