"""Broker URLs for tests that only need the bus to believe it runs on a broker
(the adapter is chosen by the URL's scheme; nothing here connects)."""

BROKER_URLS = {
    "embedded": "filesystem://localhost/",
    "rabbitmq": "amqp://platform@localhost:5672/platform",
    "redis": "redis://localhost:6379/0",
}


def on_broker(settings, name: str) -> None:
    """Make the bus use ``name``'s adapter (pytest-django's ``settings`` fixture restores it)."""
    settings.CELERY_BROKER_URL = BROKER_URLS[name]
