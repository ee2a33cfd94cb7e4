"""A publisher of one release: changes the prices of some products, one every interval, until stopped.

``python -m tests.integration.rolling_deploy.publish_prices SKU [SKU ...]`` from the tree of
the release to run (its ``apps.catalog.services``, so the contract version its code writes),
in the platform's environment. Prints "publisher ready." once it publishes, and how many at the end.
"""

import argparse
import itertools
import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path

#: Seconds between two price changes: a few a second, a steady flow beside the deploy.
INTERVAL = 0.05


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("skus", nargs="+")
    skus = parser.parse_args().skus
    sys.path.insert(0, str(Path.cwd() / "platform"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()
    from apps.catalog.services import product_change_price

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    print("publisher ready.", flush=True)
    published = 0
    for sku in itertools.cycle(skus):
        if stopping:
            break
        product_change_price(sku=sku, new_price=Decimal(10 + published % 90) + Decimal("0.50"))
        published += 1
        time.sleep(INTERVAL)
    print(f"published {published} price changes", flush=True)


if __name__ == "__main__":
    main()
