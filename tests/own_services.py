"""A RabbitMQ vhost and a PostgreSQL database of one's own, beside those the URLs
name, made afresh: for processes that must share no queue and no table with
anything else (the chaos soak, the browser tests' live platform).

Both are on the node and cluster the URLs point at; only the names differ.
``PostgreSQLCluster`` goes further: a whole cluster of one's own, which a fault
may stop without stopping anyone else's database.
"""

import os
import secrets
import subprocess
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tests.integration.rabbitmq import rabbitmqctl_run


def fresh_vhost_and_database(broker_url: str, database_url: str, *, suffix: str) -> tuple[str, str]:
    """Empty ``<vhost>_<suffix>`` and ``<database>_<suffix>``, dropped first if left by an
    earlier run; the broker and database URLs that name them."""
    broker = urlsplit(broker_url)
    vhost = f"{broker.path.strip('/') or 'default'}_{suffix}"
    rabbitmqctl_run("delete_vhost", vhost, check=False)
    rabbitmqctl_run("add_vhost", vhost)
    rabbitmqctl_run("set_permissions", "-p", vhost, broker.username, ".*", ".*", ".*")
    database = urlsplit(database_url)
    name = f"{database.path.strip('/')}_{suffix}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        # FORCE: processes an earlier run left behind must not keep the database.
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(broker._replace(path=f"/{vhost}")), urlunsplit(database._replace(path=f"/{name}"))


class PostgreSQLCluster:
    """A PostgreSQL cluster of one's own, made with Debian's ``pg_createcluster`` on the next
    free port (as root, as ``scripts/services`` makes its clusters), with a role and a
    database for the platform; ``drop()`` stops and removes it.

    ``tests.integration.postgresql`` finds the cluster to stop by the database URL's
    port: pointed at this one, an outage stops this cluster and nobody else's.
    """

    def __init__(self, name: str, *, version: str = os.environ.get("PG_VERSION", "15"),
                 listen: str = "127.0.0.1", clients: str = "", options: dict[str, str] | None = None) -> None:
        """``listen``: the address it listens on (also the one its URL names) besides the
        loopback; ``clients``: a network (``10.77.0.0/24``) allowed to log in with a password,
        besides this machine; ``options``: server settings (``postgresql.conf``)."""
        self.name, self.version = name, version
        self.listen, self.clients, self.options = listen, clients, options or {}
        self.user, self.password = "platform", secrets.token_hex(16)
        self.port: int | None = None

    def create(self) -> str:
        """Create and start the cluster; the URL of its database."""
        settings = {**self.options, **({"listen_addresses": f"localhost,{self.listen}"}
                                       if self.listen != "127.0.0.1" else {})}
        self._run("pg_createcluster", self.version, self.name,
                  *(f"--pgoption={key}={value}" for key, value in settings.items()))
        if self.clients:
            with open(f"/etc/postgresql/{self.version}/{self.name}/pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.clients} scram-sha-256\n")
        self._run("pg_ctlcluster", self.version, self.name, "start")
        listing = self._run("pg_lsclusters", "-h", self.version, self.name)
        self.port = int(listing.split()[2])
        self._psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self._psql(f"CREATE DATABASE platform OWNER {self.user}")
        return f"postgres://{self.user}:{self.password}@{self.listen}:{self.port}/platform"

    def drop(self) -> None:
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name], capture_output=True, timeout=120)

    def _psql(self, statement: str) -> None:
        self._run("runuser", "-u", "postgres", "--", "psql", "-p", str(self.port), "-qc", statement)

    @staticmethod
    def _run(*argv: str) -> str:
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout
