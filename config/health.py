"""Liveness and readiness probes for load balancers, Kubernetes and `make demo`.

/health answers as long as the process serves requests (it touches nothing else), so a slow
database never gets the web pods restarted. /ready says whether this instance can do its job:
the database answers, and, when a broker is configured, a worker is there to run tasks. Its
`agents` part (agents.health: failure rate, queue depth, heartbeat per agent) never fails it.
"""

import structlog
from django.conf import settings
from django.db import DatabaseError, connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from agents.health import agents_summary
from agents.worker import workers_answering
from config.celery_app import app

WORKER_PING_TIMEOUT_SECONDS = 1.0
logger = structlog.get_logger(__name__)


@never_cache
@require_GET
def health(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request):
    checks = {"database": check_database(), "broker": check_broker()}
    ok = all(check["ok"] for check in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    if checks["database"]["ok"]:
        # Informative only: a failing agent is for the agents page, not a reason to pull this instance.
        body["agents"] = agents_summary()
    return JsonResponse(body, status=200 if ok else 503)


def check_database(alias: str = "default") -> dict:
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        # The probe is anonymous: the answer names the failure, the log has the details (host, user).
        logger.warning("ready_database_failed", error=str(exc))
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


def check_broker() -> dict:
    if settings.TASKS_IN_PROCESS or not settings.REDIS_URL:
        # Embedded mode: tasks run in this process; there is no broker to be down.
        return {"ok": True, "mode": "in-process"}
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=WORKER_PING_TIMEOUT_SECONDS)
        workers = workers_answering(app, timeout=WORKER_PING_TIMEOUT_SECONDS)
    except Exception as exc:  # kombu and redis-py raise many types for "cannot connect"
        logger.warning("ready_broker_failed", error=str(exc))
        return {"ok": False, "mode": "redis", "error": type(exc).__name__}
    if not workers:
        return {"ok": False, "mode": "redis", "error": "no worker answered a ping within 1s", "workers": []}
    return {"ok": True, "mode": "redis", "workers": workers}
