"""Faults injected into PostgreSQL: the cluster the tests' database URL points at.

The cluster is found by its port (``pg_lsclusters``), so a private cluster
(``PG_CLUSTER``/``PG_PORT`` for ``scripts/services``) takes the fault when the
tests run on it, and the default one otherwise.
"""

import contextlib
import subprocess

from django.conf import settings
from django.db import connections


def cluster() -> tuple[str, str]:
    """(version, name) of the cluster listening on the database's port."""
    port = str(settings.DATABASES["default"]["PORT"] or 5432)
    listing = subprocess.run(["pg_lsclusters", "-h"], check=True, capture_output=True, text=True).stdout
    for line in listing.splitlines():
        version, name, cluster_port = line.split()[:3]
        if cluster_port == port:
            return version, name
    raise RuntimeError(f"no PostgreSQL cluster on port {port}:\n{listing}")


def database_stop() -> None:
    """Stop the cluster at once (fast shutdown: every session is cut)."""
    version, name = cluster()
    subprocess.run(["pg_ctlcluster", version, name, "stop", "-m", "fast"], check=True, capture_output=True,
                   timeout=120)
    # This process's own sessions died with it: the next query opens new ones.
    connections.close_all()


def database_start() -> None:
    version, name = cluster()
    subprocess.run(["pg_ctlcluster", version, name, "start"], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def database_stopped():
    database_stop()
    try:
        yield
    finally:
        database_start()
