"""The settings as the tests see them: JSON only, durations read as documented, and the
contexts' own settings stay theirs. Loading each settings module in a fresh process with
exactly the environment it documents is in ``tests/process/test_settings.py``."""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.test import override_settings
from kombu import Connection

from apps.basket import app_settings as basket_settings
from apps.payment import app_settings as payment_settings


def test_only_json_is_accepted_for_tasks_and_results():
    assert settings.CELERY_ACCEPT_CONTENT == ["json"]
    assert settings.CELERY_RESULT_ACCEPT_CONTENT == ["json"]
    assert settings.CELERY_TASK_SERIALIZER == settings.CELERY_RESULT_SERIALIZER == "json"


def test_durations_are_read_as_seconds_days_clock_time_or_iso_8601(monkeypatch):
    from config.environment import env_duration

    for text, expected in [("900", timedelta(seconds=900)), ("7 days", timedelta(days=7)),
                           ("01:30:00", timedelta(minutes=90)), ("PT15M", timedelta(minutes=15))]:
        monkeypatch.setenv("SOME_DURATION", text)
        assert env_duration("SOME_DURATION", default=timedelta(0)) == expected
    monkeypatch.delenv("SOME_DURATION")
    assert env_duration("SOME_DURATION", default=timedelta(days=1)) == timedelta(days=1)


def test_a_password_given_apart_reaches_every_address_of_the_url_url_encoded():
    from config.environment import env, url_with_password

    # given a password no URL can carry as it is
    password = "p/@$:#%?x"

    # when the settings put it into URLs that name the user only (or a stale password)
    database = env.db_url_config(url_with_password("postgres://platform@postgres:5432/platform", password))
    broker = url_with_password("amqp://platform:old@h1:5672/v;amqp://platform@h2:5672/v", password)
    redis = url_with_password("redis://redis:6379/0", password)

    # then each reader gets the password back, and the rest of each URL is as it was
    assert (database["USER"], database["PASSWORD"], database["HOST"], database["NAME"]) == (
        "platform", password, "postgres", "platform")
    assert [(Connection(url).userid, Connection(url).password, Connection(url).hostname)
            for url in broker.split(";")] == [("platform", password, "h1"), ("platform", password, "h2")]
    assert Connection(redis).password == password and Connection(redis).hostname == "redis"
    assert url_with_password("amqp://platform:kept@h1/v", "") == "amqp://platform:kept@h1/v"


def test_the_platform_settings_name_no_context_setting():
    for name in ("PAYMENT_APPROVAL_LIMIT", "CHECKOUT_DEADLINE"):
        assert not hasattr(settings, name)


def test_context_settings_have_their_defaults():
    assert payment_settings.approval_limit() == Decimal("10000.00")
    assert basket_settings.checkout_deadline() == timedelta(minutes=15)


def test_a_setting_or_a_test_override_wins_over_a_context_default():
    with override_settings(PAYMENT_APPROVAL_LIMIT=Decimal("15.00"), CHECKOUT_DEADLINE=timedelta(hours=1)):
        assert payment_settings.approval_limit() == Decimal("15.00")
        assert basket_settings.checkout_deadline() == timedelta(hours=1)
