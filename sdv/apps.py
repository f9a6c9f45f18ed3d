from django.apps import AppConfig


class SdvConfig(AppConfig):
    name = "sdv"
