import os

from celery import Celery
from celery.signals import after_task_publish, before_task_publish, setup_logging

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


class DjangoStructLogWorkerStep(DjangoStructLogInitStep):
    """django-structlog's worker step, minus the publish receivers: its AppConfig.ready() already
    connected those in every process (web and worker), and a second pair logs each enqueue twice."""

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        before_task_publish.disconnect(self.receiver.receiver_before_task_publish)
        after_task_publish.disconnect(self.receiver.receiver_after_task_publish)


app.steps["worker"].add(DjangoStructLogWorkerStep)
app.autodiscover_tasks()
