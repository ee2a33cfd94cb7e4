from django.apps import AppConfig


class BasketConfig(AppConfig):
    name = "apps.basket"
    label = "basket"
