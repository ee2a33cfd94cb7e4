"""Security defaults: JSON only, and production settings that refuse to guess secrets."""

import secrets
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "PATH": "/usr/bin:/bin",
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "shop.example.com",
    "DATABASE_URL": "postgres://shop:secret@db.internal:5432/shop",
    "CELERY_BROKER_URL": "amqp://shop:secret@mq.internal:5672/shop",
}


def _manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_only_json_is_accepted_for_tasks_and_results():
    assert settings.CELERY_ACCEPT_CONTENT == ["json"]
    assert settings.CELERY_RESULT_ACCEPT_CONTENT == ["json"]
    assert settings.CELERY_TASK_SERIALIZER == settings.CELERY_RESULT_SERIALIZER == "json"


def test_production_settings_pass_the_deployment_checklist():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr


def test_production_settings_refuse_to_start_without_their_secrets():
    for missing in ("DJANGO_SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"):
        env = {key: value for key, value in PRODUCTION.items() if key != missing}

        result = _manage("check", env=env)

        assert result.returncode != 0
        assert f"Set the {missing} environment variable" in result.stderr


def test_durations_are_read_as_seconds_days_clock_time_or_iso_8601(monkeypatch):
    from datetime import timedelta

    from config.settings.base import env_duration

    for text, expected in [("900", timedelta(seconds=900)), ("7 days", timedelta(days=7)),
                           ("01:30:00", timedelta(minutes=90)), ("PT15M", timedelta(minutes=15))]:
        monkeypatch.setenv("SOME_DURATION", text)
        assert env_duration("SOME_DURATION", default=timedelta(0)) == expected
    monkeypatch.delenv("SOME_DURATION")
    assert env_duration("SOME_DURATION", default=timedelta(days=1)) == timedelta(days=1)


def test_a_duration_setting_that_is_not_a_duration_stops_the_process_with_a_clear_error():
    result = _manage("check", env={**PRODUCTION, "BUS_INBOX_RETENTION": "a month"})

    assert result.returncode != 0
    assert "BUS_INBOX_RETENTION='a month' is not a duration" in result.stderr


def test_production_settings_refuse_an_empty_secret_key():
    for empty in ("", "   "):
        result = _manage("check", env={**PRODUCTION, "DJANGO_SECRET_KEY": empty})

        assert result.returncode != 0
        assert "ImproperlyConfigured: Set the DJANGO_SECRET_KEY environment variable: it is empty" in result.stderr


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
