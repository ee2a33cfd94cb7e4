"""Settings every environment shares, grouped by concern (cookiecutter-django's layout).

What differs per environment is not declared here: debug, the secret key, the allowed
hosts, the URLs of the database and the broker. ``local`` reads them with the embedded
defaults (SQLite, the filesystem broker, a public key) and ``production`` requires each;
both hand the URLs to ``database()`` and ``relay_poll_interval()``
below, so what depends on the kind of database or broker follows the URL in every
environment. ``test`` reads them as ``local`` does (the embedded default unless the test
setup exports services) and sets what tests need, such as quick retries.
"""

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.environment import env, env_duration

#: The repository root (``platform/config/settings/base.py`` is three levels down).
BASE_DIR = Path(__file__).resolve().parents[3]

# GENERAL
# https://docs.djangoproject.com/en/5.2/ref/settings/
TIME_ZONE = "UTC"
USE_TZ = True
LANGUAGE_CODE = "en-us"
#: Our date-time formats before Django's: the admin shows times to the second.
#: https://docs.djangoproject.com/en/5.2/ref/settings/#format-module-path
FORMAT_MODULE_PATH = ["config.formats"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

#: Where the embedded default keeps its SQLite file and broker folders, and every
#: process its liveness file unless BUS_HEALTH_DIR says otherwise.
BUS_DATA_DIR = Path(env.str("BUS_DATA_DIR", default=str(BASE_DIR / "var")))


# DATABASES
# https://docs.djangoproject.com/en/5.2/ref/settings/#databases
def database(url: str) -> dict:
    """The database at ``url`` as ``DATABASES["default"]``, with what its engine needs."""
    config = env.db_url_config(url)
    if config.get("ENGINE") == "django.db.backends.sqlite3":
        # WAL lets the web, the relay and the workers read while one writes;
        # IMMEDIATE takes the write lock up front instead of failing on upgrade.
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
        # A file, not memory: worker processes started by tests share it.
        config["TEST"] = {"NAME": str(BUS_DATA_DIR / "test-platform.sqlite3")}
        # SQLite makes the file, not its folder (in a fresh clone ./var does not exist yet).
        if config.get("NAME") and config["NAME"] != ":memory:":
            Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    if config.get("ENGINE") == "django.db.backends.postgresql":
        # TCP keepalives (libpq's, after 10 s idle, every 5 s, 3 misses): a connection whose
        # server is gone without a word, as after the client's host lost its network while
        # it waited on a lock and the server ended the session meanwhile, fails within about
        # 25 s. Without them the process waited for the answer until its task's time limit
        # (the chaos soak's --cluster form met it). The URL's own (``?keepalives_idle=2``) win.
        config["OPTIONS"] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                             "keepalives_count": 3, **config.get("OPTIONS", {})}
    # Seconds a connection is kept for reuse: a worker keeps one across tasks
    # (see config.celery_app) instead of opening one per message.
    config["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    # No ping before each task or request: a query that fails marks the connection,
    # and the next task or request replaces it (Django's close_old_connections).
    config["CONN_HEALTH_CHECKS"] = False
    return config


# APPS
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "messaging",
    # The operator console over the bus (admin pages, repair, conversations); optional.
    "console",
    "apps.catalog",
    "apps.basket",
    "apps.ordering",
    "apps.payment",
    # Not a context: `manage.py seed_demo`, demo data made through the contexts' services.
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# STATIC FILES
# https://docs.djangoproject.com/en/5.2/howto/static-files/deployment/
STATIC_URL = "static/"
#: Where collectstatic puts the admin's CSS and JS (the Docker image does at build); production
#: serves them from here (WhiteNoise). Not under BUS_DATA_DIR: they are built, not data.
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))

# LOGGING
# https://docs.djangoproject.com/en/5.2/topics/logging/
#: ``text``, a line for people; or ``json``, one JSON object per line for a log pipeline, naming
#: the message each line was written for (``messaging.log_context``), in every process.
BUS_LOG_FORMAT = env.str("BUS_LOG_FORMAT", default="text")
if BUS_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"BUS_LOG_FORMAT={BUS_LOG_FORMAT!r}: use text or json")
#: ``LOGGING``, with Python's warnings logged too in JSON.
LOGGING_CONFIG = "messaging.log_context.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"message": {"()": "messaging.log_context.LogContextFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "messaging.log_context.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": BUS_LOG_FORMAT, "filters": ["message"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # In JSON, what Django and gunicorn log goes to the root's handler too, instead of their own
    # handlers' text lines (Django's default logging; gunicorn's in its web processes).
    "loggers": {name: {"handlers": [], "propagate": True} for name in (
        "django", "django.server", "gunicorn.error", "gunicorn.access",
    )} if BUS_LOG_FORMAT == "json" else {},
}

# CELERY
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# The broker's kombu transport and its options come from its adapter
# (messaging.brokers, chosen by CELERY_BROKER_URL's scheme), applied in config.celery_app.
# No ``confirm_publish``: it makes every publish on every connection wait for its own
# confirm, the worker's task events included. The bus's publishers (relay, retries)
# have the broker confirm a batch at a time (messaging.brokers).
#: Reconnect forever: a broker restart must never stop a worker for good.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
#: Seconds of AMQP heartbeat a worker asks for (RabbitMQ takes the lower of its own, 60 by
#: default, and this): a connection silent for about that long is taken for dead, by the
#: broker (it gives the worker's unacknowledged messages to the others) and by the worker
#: (it reconnects, to the next node of a failover URL). A host that lost its network is
#: found out only this way. Celery's default.
CELERY_BROKER_HEARTBEAT = env.float("CELERY_BROKER_HEARTBEAT", default=120.0)
#: A channel error (a queue deleted under the worker, say) reconnects too, instead of
#: stopping the worker with "Unrecoverable error".
CELERY_BROKER_CHANNEL_ERROR_RETRY = True
#: JSON only, everywhere: pickle would execute whatever a sender put in.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
#: Results (one row per task id) go to django-celery-results, shown in the admin,
#: one upsert each (messaging.results); ``CELERY_TASK_IGNORE_RESULT=true`` saves that
#: write per message (the inbox and dead letters still record every outcome).
CELERY_RESULT_BACKEND = "messaging.results:ResultBackend"
CELERY_TASK_IGNORE_RESULT = env.bool("CELERY_TASK_IGNORE_RESULT", default=False)
CELERY_RESULT_EXTENDED = True
#: A result lost to a database outage is stored once the database is back, never raised:
#: raising would fail a task whose handlers had committed (messaging.results).
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
#: Longest pause, in milliseconds, between two tries of a result store meanwhile.
CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS = 5000
#: Ack after the handler's transaction committed; a killed worker's message comes back.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
#: A task that fails outside the bus's own retry and dead-letter handling (the
#: database down while dead-lettering, say) is rejected, so RabbitMQ moves it
#: to the dead-letter queue instead of it being acknowledged and lost.
CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT = False
#: Handlers write: a crash should return as few messages as possible (and move as few
#: toward the delivery limit); more per pool process helps a context with few queues.
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=1)
#: Retries wait in the bus's own queues, not in Celery's native delayed delivery.
CELERY_WORKER_CONSUMER = "messaging.worker:Consumer"
#: Flower sees tasks only when workers send task events (a fifth of a worker's CPU).
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_WORKER_SEND_TASK_EVENTS", default=True)
#: Below RabbitMQ's consumer (ack) timeout of 30 minutes.
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_TIMEZONE = TIME_ZONE

# MESSAGING (the bus)
def relay_poll_interval(database: dict) -> float:
    """``BUS_RELAY_POLL_INTERVAL`` for the relay of ``database`` (a ``DATABASES`` entry)."""
    # Seconds between outbox polls when no nudge arrives (the safety net). SQLite has no
    # LISTEN/NOTIFY: there the poll is the only way, and a poll finding nothing is one read.
    on_sqlite = database["ENGINE"] == "django.db.backends.sqlite3"
    return env.float("BUS_RELAY_POLL_INTERVAL", default=0.02 if on_sqlite else 1.0)


#: The bounded context whose queues this process consumes (set by ``python -m workers``).
BUS_CONTEXT = env.str("BUS_CONTEXT", default="")
#: The relay's broker URL, to connect as a broker user of its own (least privilege: ``manage.py
#: bus_permissions``); empty: ``CELERY_BROKER_URL``. A context's worker takes ``BUS_BROKER_URL_<CONTEXT>``.
BUS_BROKER_URL_RELAY = env.str("BUS_BROKER_URL_RELAY", default="")
#: Largest serialized ``data`` accepted at publish, in bytes.
BUS_MAX_PAYLOAD_BYTES = env.int("BUS_MAX_PAYLOAD_BYTES", default=256 * 1024)
#: Deepest nesting of objects and arrays accepted in ``data`` at publish: JSON readers
#: give up on deep nesting (Python's at about a thousand levels), so a consumer could not read it.
BUS_MAX_PAYLOAD_DEPTH = env.int("BUS_MAX_PAYLOAD_DEPTH", default=32)
#: How many times a failing handler is retried before its message is dead-lettered.
BUS_MAX_RETRIES = env.int("BUS_MAX_RETRIES", default=5)
#: First retry delay in seconds; doubles each attempt, with jitter.
BUS_RETRY_BACKOFF = env.float("BUS_RETRY_BACKOFF", default=2.0)
#: Longest retry delay in seconds.
BUS_RETRY_BACKOFF_MAX = env.float("BUS_RETRY_BACKOFF_MAX", default=300.0)
#: How long a message of a contract version newer than a worker's code is held back for a
#: worker running the newer code (a rolling deploy, publishers first) before it is dead-lettered.
BUS_NEWER_VERSION_HOLD = env_duration("BUS_NEWER_VERSION_HOLD", default=timedelta(hours=6))
#: Most bytes of a dead letter's body (as JSON) kept whole; a larger one keeps this much
#: of its start as text, and its size. Room for the largest envelope the platform sends.
BUS_DEAD_LETTER_BODY_LIMIT = env.int("BUS_DEAD_LETTER_BODY_LIMIT", default=2 * BUS_MAX_PAYLOAD_BYTES)
#: Redeliveries after which the broker dead-letters a message (a worker died each time).
BUS_DELIVERY_LIMIT = env.int("BUS_DELIVERY_LIMIT", default=5)
#: Deliveries a worker's pool process handles at once, in one database transaction, when it
#: finds them waiting (``messaging.batch_dispatch``; a batch is never waited for). 1: one at a time.
BUS_BATCH_SIZE = env.int("BUS_BATCH_SIZE", default=16)
#: The same per context, where one should differ: ``BUS_BATCH_SIZE_BY_CONTEXT=payment=1,ordering=4``.
BUS_BATCH_SIZE_BY_CONTEXT = env.dict("BUS_BATCH_SIZE_BY_CONTEXT", cast={"value": int}, default={})
#: Rows the relay publishes per transaction.
BUS_RELAY_BATCH_SIZE = env.int("BUS_RELAY_BATCH_SIZE", default=200)
#: Seconds a worker holds a message while the database cannot be reached, trying again,
#: before handing it back to the broker (uncounted); well under CELERY_TASK_SOFT_TIME_LIMIT.
BUS_DATABASE_WAIT = env.float("BUS_DATABASE_WAIT", default=60.0)
#: Seconds a publisher (the relay, a worker sending a retry) waits for the broker's confirm.
BUS_CONFIRM_TIMEOUT = env.float("BUS_CONFIRM_TIMEOUT", default=10.0)
#: Redis: seconds a taken message may stay unacknowledged before Redis gives it to another
#: worker (its own died). Longer than a worker can hold one: the task time limit plus the
#: longest retry wait (``manage.py check`` compares them); a dead worker's messages wait this long.
BUS_REDIS_VISIBILITY_TIMEOUT = env.int("BUS_REDIS_VISIBILITY_TIMEOUT", default=900)
#: Redis with Sentinel (``CELERY_BROKER_URL=sentinel://...``): the name of the primary the
#: sentinels watch (``sentinel monitor <name> ...`` in their configuration).
BUS_REDIS_SENTINEL_MASTER = env.str("BUS_REDIS_SENTINEL_MASTER", default="")
#: Redis with Sentinel: replicas that must have a published batch before it counts as published
#: (``WAIT``), so a failover cannot lose it; 0 counts the primary's answer, as on one Redis.
BUS_REDIS_REPLICAS_TO_CONFIRM = env.int("BUS_REDIS_REPLICAS_TO_CONFIRM", default=1)
#: RabbitMQ's management API (https://www.rabbitmq.com/docs/management#http-api), which
#: ``bus_topology --plan`` reads the broker's queues and bindings from (AMQP cannot list them).
#: Empty: the broker URL's host on port 15672 (15671 for amqps), with the broker URL's user
#: unless this URL names one (that user needs the ``management`` or ``monitoring`` tag).
BUS_RABBITMQ_MANAGEMENT_URL = env("BUS_RABBITMQ_MANAGEMENT_URL", default="")
#: Embedded broker: seconds a worker waits before looking at its queue folders again when all
#: are empty (kombu's default of 1 s put a second into every hop).
BUS_EMBEDDED_POLL_INTERVAL = env.float("BUS_EMBEDDED_POLL_INTERVAL", default=0.02)
#: The contracts' lock file, committed with the code: the JSON Schema of every contract version,
#: which ``manage.py bus_contracts check`` compares with the code to catch a breaking change.
BUS_CONTRACTS_LOCK = Path(env.str("BUS_CONTRACTS_LOCK", default=str(BASE_DIR / "contracts.lock.json")))

# HEALTH (liveness files of workers and the relay; messaging.health, ``manage.py bus_health``)
#: Where each process keeps its liveness file (one folder per machine or container).
BUS_HEALTH_DIR = Path(env.str("BUS_HEALTH_DIR", default=str(BUS_DATA_DIR / "health")))
#: Seconds between a healthy process's beats.
BUS_HEALTH_INTERVAL = env.float("BUS_HEALTH_INTERVAL", default=5.0)
#: Seconds without a beat after which ``bus_health`` calls a process stuck: a few beats,
#: and longer than a relay round can take (a confirm timeout, a purge batch).
BUS_HEALTH_MAX_AGE = env.float("BUS_HEALTH_MAX_AGE", default=60.0)

# METRICS (Prometheus: messaging.metrics, /metrics; docs/how-to/observe.md)
#: Where this host's bus processes write their metrics (prometheus_client's multiprocess folder,
#: files per process): a local folder, empty when the host's processes start. Empty: metrics off.
BUS_METRICS_DIR = env.str("BUS_METRICS_DIR", default="")
#: The bearer token Prometheus sends to ``/metrics`` (a secret). Empty: ``/metrics`` answers 404.
BUS_METRICS_TOKEN = env.str("BUS_METRICS_TOKEN", default="")

# RETENTION (the bus's tables; messaging.retention)
#: How long a published outbox row stays, for people tracing a message; unpublished rows always stay.
BUS_OUTBOX_RETENTION = env_duration("BUS_OUTBOX_RETENTION", default=timedelta(days=7))
#: How long the inbox remembers a handled message: it must outlast the longest redelivery
#: (retries, delivery limit and the replay window below; ``manage.py check`` says if not).
BUS_INBOX_RETENTION = env_duration("BUS_INBOX_RETENTION", default=timedelta(days=30))
#: How long after it was dead-lettered a message may still be retried with its own id.
BUS_DEAD_LETTER_REPLAY_WINDOW = env_duration("BUS_DEAD_LETTER_REPLAY_WINDOW", default=timedelta(days=14))
#: How often the relay purges rows past their retention (dead letters are never purged).
BUS_PURGE_INTERVAL = env_duration("BUS_PURGE_INTERVAL", default=timedelta(minutes=10))
#: Rows deleted per statement: short transactions, short locks.
BUS_PURGE_BATCH_SIZE = env.int("BUS_PURGE_BATCH_SIZE", default=1000)
