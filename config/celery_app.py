import os

from celery import Celery
from celery.signals import after_task_publish, before_task_publish, setup_logging, task_postrun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("trialops")
app.config_from_object("django.conf:settings", namespace="CELERY")


# Celery's Django fixup closes every database connection after every task unless this is set, so each
# task of a workflow paid for a new PostgreSQL connection (most of a step's cost in
# bench_orchestrator). Keep connections, and let Django's own rule (CONN_MAX_AGE, broken connections)
# decide when to close them, as it does around each web request.
app.conf.CELERY_DB_REUSE_MAX = 10**9


@task_postrun.connect
def _close_old_database_connections(**kwargs):
    from django.db import close_old_connections

    close_old_connections()


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


@app.on_after_finalize.connect
def _schedule_workflows(sender, **kwargs):
    # Each built-in workflow definition with a `schedule` trigger becomes a celery beat entry.
    # Read from the YAML files, not the database: beat may start before the database is reachable.
    from celery.schedules import crontab

    from agents.workflow_spec import builtin_schedules

    for name, schedule in builtin_schedules():
        if "cron" in schedule:
            minute, hour, day_of_month, month_of_year, day_of_week = schedule["cron"].split()
            every = crontab(minute, hour, day_of_week, day_of_month, month_of_year)
        else:
            every = schedule["every"]
        start = sender.signature("agents.workflow_start_scheduled", (name,))
        sender.add_periodic_task(every, start, name=f"workflow {name}")
