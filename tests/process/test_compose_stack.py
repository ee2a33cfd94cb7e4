"""docker-compose.yml is a production stack: nothing of the platform starts before the
database and the broker are healthy and ``migrate`` has succeeded, every long-running
service restarts and has a healthcheck, a worker gets longer to stop than its warm
shutdown takes, the web is published on this machine only, any password works, and the
image carries no secret, environment or cache of the machine it was built on."""

from datetime import timedelta

import pytest
from kombu import Connection

from tests.compose import FILLED_IN, ROOT, compose_config
from tests.process.test_settings import PRODUCTION, _load

pytestmark = pytest.mark.process

#: Longest a worker's warm shutdown may take: a handler waits for the database up to this.
BUS_DATABASE_WAIT = timedelta(seconds=60)
#: A password no URL can carry as it is.
AWKWARD_PASSWORD = "p/@$:#%x"


@pytest.fixture(params=[(), ("docker-compose.redis.yml",)], ids=["rabbitmq", "redis"])
def stack(request, tmp_path) -> dict:
    files = ("docker-compose.yml", *request.param)
    return compose_config(tmp_path, {**FILLED_IN, "REDIS_PASSWORD": "z"}, files)["services"]


def _platform(services: dict) -> dict:
    return {name: service for name, service in services.items() if service.get("image") == "django-message-platform"}


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    number = duration.rstrip("smh")
    return float(number) * units[duration[len(number):]]


def test_every_platform_process_waits_for_healthy_services_and_for_migrate_to_succeed(stack):
    # given the stack as docker-compose reads it
    brokers = {"rabbitmq"} | ({"redis"} if "redis" in stack else set())

    for name, service in _platform(stack).items():
        conditions = {dependency: wait["condition"] for dependency, wait in service["depends_on"].items()}

        # then the database and every broker are healthy first, and the tables made
        assert conditions["postgres"] == "service_healthy", name
        if name == "migrate":
            assert "migrate" not in conditions and service["restart"] == "no"
            continue
        assert all(conditions[broker] == "service_healthy" for broker in brokers), name
        assert conditions["migrate"] == "service_completed_successfully", name
    for service in ("postgres", "rabbitmq", *(("redis",) if "redis" in stack else ())):
        assert stack[service]["healthcheck"]["test"], service


def test_every_long_running_service_restarts_has_a_healthcheck_and_outlasts_a_warm_shutdown(stack):
    for name, service in stack.items():
        if name == "migrate":
            continue

        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
        if name in _platform(stack):
            assert _seconds(service["stop_grace_period"]) > BUS_DATABASE_WAIT.total_seconds(), name


def test_the_web_and_flower_are_published_on_this_machine_only(stack, tmp_path):
    published = {name: [port.split(":")[0] for port in service.get("ports", [])] for name, service in stack.items()}

    assert published["web"] == ["127.0.0.1"] and published["flower"] == ["127.0.0.1"]
    # ... unless .env says otherwise, for a proxy on another machine
    wider = compose_config(tmp_path, {**FILLED_IN, "WEB_PUBLISH": "0.0.0.0:8000"})["services"]["web"]["ports"]
    assert wider == ["0.0.0.0:8000:8000/tcp"]


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.redis.yml")],
                         ids=["rabbitmq", "redis"])
def test_a_password_with_slash_at_and_dollar_reaches_the_settings_unchanged(tmp_path, files):
    # given every password of .env one that breaks a URL written by hand
    passwords = {"POSTGRES_PASSWORD": AWKWARD_PASSWORD, "RABBITMQ_PASSWORD": AWKWARD_PASSWORD,
                 "REDIS_PASSWORD": AWKWARD_PASSWORD}
    web = compose_config(tmp_path, {**FILLED_IN, **passwords}, files)["services"]["web"]
    environment = {key: value for key, value in web["environment"].items() if value is not None}

    # when the production settings read the web's environment
    code_reads = _load("config.settings.production", {"PATH": PRODUCTION["PATH"], **environment},
                       "DATABASES", "celery:broker_url")
    broker = Connection(code_reads["celery:broker_url"])

    # then the database and the broker get the password as it was written
    assert code_reads["DATABASES"]["default"]["PASSWORD"] == AWKWARD_PASSWORD
    assert (broker.password, broker.hostname) == (AWKWARD_PASSWORD, "redis" if len(files) > 1 else "rabbitmq")


def test_the_image_leaves_out_secrets_environments_caches_and_test_artifacts():
    ignored = set((ROOT / ".dockerignore").read_text().splitlines())

    assert {".env", ".venv", "var", "**/__pycache__", ".pytest_cache", ".cache", "**/node_modules", "tests",
            ".git"} <= ignored
