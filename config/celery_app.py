import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("trialops")
app.config_from_object("django.conf:settings", namespace="CELERY")


@setup_logging.connect
def _use_django_logging(**kwargs):
    # Keep Django's structured JSON logging in workers instead of Celery's own handlers.
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


# Carry the request id of the HTTP request that enqueued a task into that task's logs.
from django_structlog.celery.steps import DjangoStructLogInitStep  # noqa: E402

app.steps["worker"].add(DjangoStructLogInitStep)
app.autodiscover_tasks()
