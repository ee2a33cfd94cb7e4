"""The settings modules, each loaded in a fresh process with exactly the environment it
documents: production refuses to guess a secret, what depends on the kind of database or
broker follows the URL, and a context's settings are read from its environment variables."""

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compose import FILLED_IN, compose_config

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "PATH": "/usr/bin:/bin",
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "shop.example.com",
    "DATABASE_URL": "postgres://shop:secret@db.internal:5432/shop",
    "CELERY_BROKER_URL": "amqp://shop:secret@mq.internal:5672/shop",
}
#: What production refuses to start without.
REQUIRED_IN_PRODUCTION = ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL")
#: A real database and broker, as ``scripts/services`` exports them.
SERVICES = {"DATABASE_URL": PRODUCTION["DATABASE_URL"], "CELERY_BROKER_URL": PRODUCTION["CELERY_BROKER_URL"]}

pytestmark = pytest.mark.process


def _manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_production_settings_pass_the_deployment_checklist():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("missing", REQUIRED_IN_PRODUCTION)
def test_production_settings_refuse_to_start_without_each_required_variable(missing):
    env = {key: value for key, value in PRODUCTION.items() if key != missing}

    result = _manage("check", env=env)

    assert result.returncode != 0
    assert f"ImproperlyConfigured: Set the {missing} environment variable" in result.stderr


@pytest.mark.parametrize("empty", REQUIRED_IN_PRODUCTION)
def test_production_settings_refuse_each_required_variable_empty(empty):
    for blank in ("", "   "):
        result = _manage("check", env={**PRODUCTION, empty: blank})

        assert result.returncode != 0
        assert f"ImproperlyConfigured: Set the {empty} environment variable: it is empty" in result.stderr


def test_a_duration_setting_that_is_not_a_duration_stops_the_process_with_a_clear_error():
    result = _manage("check", env={**PRODUCTION, "BUS_INBOX_RETENTION": "a month"})

    assert result.returncode != 0
    assert "BUS_INBOX_RETENTION='a month' is not a duration" in result.stderr


def _import_the_web_entry_point(env: dict) -> subprocess.CompletedProcess:
    """Import ``config.wsgi`` as gunicorn does, with no DJANGO_SETTINGS_MODULE unless ``env`` has one."""
    code = "import config.wsgi; from django.conf import settings; print(settings.SETTINGS_MODULE, settings.DEBUG)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"})


def test_the_web_entry_point_defaults_to_the_production_settings():
    without_settings_module = {key: value for key, value in PRODUCTION.items() if key != "DJANGO_SETTINGS_MODULE"}

    result = _import_the_web_entry_point(without_settings_module)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["config.settings.production", "False"]


def test_the_web_entry_point_never_falls_back_to_the_local_settings():
    result = _import_the_web_entry_point({"PATH": PRODUCTION["PATH"]})

    assert result.returncode != 0
    assert "Set the DJANGO_SECRET_KEY environment variable" in result.stderr


def test_the_web_entry_point_follows_an_explicit_settings_module(tmp_path):
    result = _import_the_web_entry_point({"PATH": PRODUCTION["PATH"], "DJANGO_SETTINGS_MODULE": "config.settings.local",
                                          "BUS_DATA_DIR": str(tmp_path)})

    assert result.stdout.split() == ["config.settings.local", "True"], result.stderr


def _load(settings_module: str, env: dict, *names: str) -> dict:
    """The named settings of ``settings_module`` loaded in a fresh process with exactly ``env``;
    a name ``celery:<key>`` is the Celery app's configuration (the broker's transport is its adapter's)."""
    code = ("import json, sys; from django.conf import settings; from config.celery_app import app; "
            "print(json.dumps({name: app.conf[name[7:]] if name.startswith('celery:') else getattr(settings, name) "
            "for name in sys.argv[1:]}, default=str))")
    result = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**env, "PATH": PRODUCTION["PATH"], "DJANGO_SETTINGS_MODULE": settings_module,
                                 "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


SERVICE_SETTINGS = ("DATABASES", "BUS_RELAY_POLL_INTERVAL", "CELERY_BROKER_URL",
                    "celery:broker_transport", "celery:broker_transport_options")


@pytest.mark.parametrize("settings_module", ["config.settings.local", "config.settings.test"])
def test_without_any_variable_local_and_test_settings_are_the_embedded_default(settings_module):
    loaded = _load(settings_module, {}, "DEBUG", "SECRET_KEY", "BUS_DATA_DIR", *SERVICE_SETTINGS)

    data = ROOT / "var"
    assert loaded["BUS_DATA_DIR"] == str(data)
    database = loaded["DATABASES"]["default"]
    assert (database["ENGINE"], database["NAME"]) == ("django.db.backends.sqlite3", str(data / "platform.sqlite3"))
    assert "journal_mode=WAL" in database["OPTIONS"]["init_command"]
    assert database["TEST"]["NAME"] == str(data / "test-platform.sqlite3")
    assert loaded["BUS_RELAY_POLL_INTERVAL"] == 0.02
    assert loaded["CELERY_BROKER_URL"].startswith("filesystem://")
    assert loaded["celery:broker_transport"] == "messaging.brokers.embedded:Transport"
    assert loaded["celery:broker_transport_options"]["data_folder_in"] == str(data / "broker" / "queues")
    # A public key named for its module ("local-only-insecure-...", "test-only-insecure-...").
    assert loaded["DEBUG"] is True and loaded["SECRET_KEY"].startswith(f"{settings_module.split('.')[-1]}-only-insecure")


@pytest.mark.parametrize("settings_module", ["config.settings.local", "config.settings.test"])
def test_local_and_test_settings_on_postgresql_and_rabbitmq_get_nothing_of_sqlite_or_the_embedded_broker(
        settings_module):
    loaded = _load(settings_module, SERVICES, *SERVICE_SETTINGS)

    database = loaded["DATABASES"]["default"]
    assert (database["ENGINE"], database["HOST"]) == ("django.db.backends.postgresql", "db.internal")
    assert "TEST" not in database and "init_command" not in database["OPTIONS"]  # only the keepalives
    assert database["OPTIONS"]["keepalives"] == 1
    assert loaded["BUS_RELAY_POLL_INTERVAL"] == 1.0
    assert (loaded["CELERY_BROKER_URL"], loaded["celery:broker_transport"]) == (SERVICES["CELERY_BROKER_URL"], None)
    assert loaded["celery:broker_transport_options"] == {}


def test_on_redis_the_transport_is_the_buses_own_with_its_visibility_timeout():
    loaded = _load("config.settings.production", {**PRODUCTION, "CELERY_BROKER_URL": "redis://:pw@redis.internal:6379/0",
                                                   "BUS_REDIS_VISIBILITY_TIMEOUT": "1200"}, *SERVICE_SETTINGS)

    assert loaded["celery:broker_transport"] == "messaging.brokers.redis:Transport"
    assert loaded["celery:broker_transport_options"]["visibility_timeout"] == 1200


def test_on_redis_a_fresh_clones_sqlite_database_is_made_in_a_folder_nothing_made_yet(tmp_path):
    # On the embedded broker its adapter made BUS_DATA_DIR; on Redis nothing did, and
    # `run_platform` stopped at "unable to open database file".
    data = tmp_path / "fresh" / "var"
    result = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False,
                            env={"PATH": PRODUCTION["PATH"], "DJANGO_SETTINGS_MODULE": "config.settings.local",
                                 "BUS_DATA_DIR": str(data), "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})

    assert result.returncode == 0, result.stderr
    assert (data / "platform.sqlite3").is_file()


def test_production_settings_load_with_the_variables_they_document():
    loaded = _load("config.settings.production", PRODUCTION, "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "MIDDLEWARE",
                   *SERVICE_SETTINGS)

    assert loaded["DEBUG"] is False
    assert (loaded["SECRET_KEY"], loaded["ALLOWED_HOSTS"]) == (PRODUCTION["DJANGO_SECRET_KEY"], ["shop.example.com"])
    database = loaded["DATABASES"]["default"]
    assert (database["ENGINE"], database["CONN_MAX_AGE"]) == ("django.db.backends.postgresql", 60)
    # TCP keepalives: a connection to a server gone without a word fails in seconds, never hangs.
    assert database["OPTIONS"] == {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                                   "keepalives_count": 3}
    assert loaded["BUS_RELAY_POLL_INTERVAL"] == 1.0
    assert (loaded["celery:broker_transport"], loaded["celery:broker_transport_options"]) == (None, {})
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in loaded["MIDDLEWARE"]


def test_the_database_urls_own_keepalives_win():
    loaded = _load("config.settings.production",
                   {**PRODUCTION, "DATABASE_URL": PRODUCTION["DATABASE_URL"] + "?keepalives_idle=2"}, "DATABASES")

    assert loaded["DATABASES"]["default"]["OPTIONS"]["keepalives_idle"] == 2


def test_what_depends_on_the_database_follows_its_url_in_production_too(tmp_path):
    loaded = _load("config.settings.production", {**PRODUCTION, "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite3'}"},
                   "DATABASES", "BUS_RELAY_POLL_INTERVAL")

    assert loaded["DATABASES"]["default"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert loaded["BUS_RELAY_POLL_INTERVAL"] == 0.02


@pytest.mark.parametrize(("compose_files", "transport"), [
    (["docker-compose.yml"], None),
    (["docker-compose.yml", "docker-compose.redis.yml"], "messaging.brokers.redis:Transport"),
])
def test_the_docker_compose_environment_is_enough_for_the_production_settings(tmp_path, compose_files, transport):
    filled_in = {**FILLED_IN, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "REDIS_PASSWORD": "s"}
    services = compose_config(tmp_path, filled_in, compose_files)["services"]
    platform = {name: service for name, service in services.items() if service.get("image") == "django-message-platform"}
    assert {"web", "relay", "worker-ordering"} <= set(platform)
    for name, service in platform.items():
        # A variable with no value (a context setting .env leaves out) is unset in the container.
        environment = {key: value for key, value in service["environment"].items() if value is not None}
        loaded = _load(environment["DJANGO_SETTINGS_MODULE"], environment, "SECRET_KEY", "celery:broker_transport")

        assert loaded == {"SECRET_KEY": filled_in["DJANGO_SECRET_KEY"], "celery:broker_transport": transport}, name


def _context_settings(env: dict) -> subprocess.CompletedProcess:
    code = ("from apps.basket.app_settings import checkout_deadline; "
            "from apps.payment.app_settings import approval_limit; print(approval_limit(), checkout_deadline())")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**env, "PATH": PRODUCTION["PATH"], "DJANGO_SETTINGS_MODULE": "config.settings.local",
                               "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"})


def test_a_deployment_sets_context_settings_by_their_environment_variables():
    result = _context_settings({"PAYMENT_APPROVAL_LIMIT": "150.00", "CHECKOUT_DEADLINE": "PT1H"})

    assert result.stdout.split() == ["150.00", "1:00:00"], result.stderr


def test_a_context_setting_that_cannot_be_read_stops_the_process_with_a_clear_error():
    for variable, text, error in [("PAYMENT_APPROVAL_LIMIT", "lots", "PAYMENT_APPROVAL_LIMIT='lots' is not an amount"),
                                  ("CHECKOUT_DEADLINE", "soon", "CHECKOUT_DEADLINE='soon' is not a duration")]:
        result = _context_settings({variable: text})

        assert result.returncode != 0
        assert error in result.stderr
