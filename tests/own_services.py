"""A RabbitMQ vhost and a PostgreSQL database of one's own, beside those the URLs
name, made afresh: for processes that must share no queue and no table with
anything else (the chaos soak, the browser tests' live platform).

Both are on the node and cluster the URLs point at; only the names differ.
"""

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
