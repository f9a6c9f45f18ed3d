"""Health of each registered agent, read from the step ledger, the broker and worker heartbeats.

Per agent, over the steps that finished in the last HEALTH_WINDOW_DAYS days: when it last
succeeded and failed, how many steps finished (`runs`), the share that failed, and the p50/p95 of
their duration (finished_at - started_at of the last attempt). One grouped query for all agents;
on PostgreSQL the percentiles are computed there too (percentile_cont), elsewhere from the
durations only. Queue depth is the length of the agent's queue on the Redis broker (None with the
in-memory broker, or when Redis does not answer). The heartbeat is the last time a worker
consuming the agent's queue said it was alive (agents.tasks records it).
"""

import statistics
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import connection
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, FloatField, Func, Max, Q
from django.utils import timezone

from agents.models import AgentStep, Status, WorkerHeartbeat
from agents.registry import QUEUES, get_agent, registered_agents

logger = structlog.get_logger(__name__)

HEALTH_WINDOW_DAYS = 7
BROKER_TIMEOUT_SECONDS = 1.0


class PercentileCont(Aggregate):
    """PostgreSQL's percentile_cont(p) WITHIN GROUP (ORDER BY expression)."""

    function = "percentile_cont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, percentile: float, **extra):
        super().__init__(expression, percentile=float(percentile), **extra)


def agent_health_all() -> dict[str, dict]:
    """{agent name: health} for every registered agent (see agent_health for the keys)."""
    agents = registered_agents()
    stats = _step_stats([agent.name for agent in agents])
    depths = queue_depths()
    heartbeats = _heartbeats_by_queue()
    return {
        agent.name: {
            **stats.get(agent.name, _no_steps()),
            "queue": agent.queue,
            "queue_depth": depths.get(agent.queue),
            "last_heartbeat_at": heartbeats.get(agent.queue),
        }
        for agent in agents
    }


def agent_health(name: str) -> dict:
    """Keys: last_success_at, last_failure_at, runs, failure_rate (0..1 or None), p50_ms, p95_ms
    (None without finished steps), queue, queue_depth (None when the broker cannot tell),
    last_heartbeat_at. Raises AgentNotFound for an unknown name."""
    agent = get_agent(name)
    return {
        **_step_stats([agent.name]).get(agent.name, _no_steps()),
        "queue": agent.queue,
        "queue_depth": queue_depths().get(agent.queue),
        "last_heartbeat_at": _heartbeats_by_queue().get(agent.queue),
    }


def _no_steps() -> dict:
    return {
        "last_success_at": None,
        "last_failure_at": None,
        "runs": 0,
        "failure_rate": None,
        "p50_ms": None,
        "p95_ms": None,
    }


def _step_stats(names: list[str]) -> dict[str, dict]:
    since = timezone.now() - timedelta(days=HEALTH_WINDOW_DAYS)
    finished = AgentStep.objects.filter(
        agent__in=names, finished_at__gte=since, status__in=[Status.SUCCEEDED, Status.FAILED]
    )
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    aggregates = {
        "runs": Count("id"),
        "failures": Count("id", filter=Q(status=Status.FAILED)),
        "last_success_at": Max("finished_at", filter=Q(status=Status.SUCCEEDED)),
        "last_failure_at": Max("finished_at", filter=Q(status=Status.FAILED)),
    }
    postgres = connection.vendor == "postgresql"
    if postgres:
        seconds = Func(duration, template="EXTRACT(EPOCH FROM %(expressions)s)", output_field=FloatField())
        aggregates |= {
            "p50_s": PercentileCont(seconds, 0.5, filter=Q(started_at__isnull=False)),
            "p95_s": PercentileCont(seconds, 0.95, filter=Q(started_at__isnull=False)),
        }
    rows = {row["agent"]: row for row in finished.values("agent").annotate(**aggregates).order_by()}
    if not postgres:
        _percentiles_from_durations(finished, rows)
    return {name: _stats_row(row) for name, row in rows.items()}


def _percentiles_from_durations(finished, rows: dict[str, dict]) -> None:
    """SQLite has no percentile function: read the durations alone (one column pair per step)."""
    durations: dict[str, list[float]] = {}
    for agent, started_at, finished_at in finished.filter(started_at__isnull=False).values_list(
        "agent", "started_at", "finished_at"
    ):
        durations.setdefault(agent, []).append((finished_at - started_at).total_seconds())
    for agent, values in durations.items():
        rows[agent]["p50_s"], rows[agent]["p95_s"] = _percentile(values, 0.5), _percentile(values, 0.95)


def _percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks, as percentile_cont does."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(p * 100) - 1]


def _stats_row(row: dict) -> dict:
    runs = row["runs"]
    to_ms = lambda seconds: None if seconds is None else round(seconds * 1000, 1)  # noqa: E731
    return {
        "last_success_at": row["last_success_at"],
        "last_failure_at": row["last_failure_at"],
        "runs": runs,
        "failure_rate": round(row["failures"] / runs, 4) if runs else None,
        "p50_ms": to_ms(row.get("p50_s")),
        "p95_ms": to_ms(row.get("p95_s")),
    }


def queue_depths() -> dict[str, int | None]:
    """Messages waiting in each agent queue: LLEN on the Redis broker; None when it cannot tell."""
    if settings.TASKS_IN_PROCESS or not settings.REDIS_URL:
        return dict.fromkeys(QUEUES)
    import redis

    try:
        client = redis.Redis.from_url(
            settings.CELERY_BROKER_URL,
            socket_timeout=BROKER_TIMEOUT_SECONDS,
            socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
        )
        with client.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                pipe.llen(queue)
            depths = pipe.execute()
        client.close()
    except redis.RedisError as exc:
        logger.warning("agent_health_queue_depth_failed", error=str(exc))
        return dict.fromkeys(QUEUES)
    return dict(zip(QUEUES, depths, strict=True))


def _heartbeats_by_queue() -> dict[str, object]:
    latest: dict[str, object] = {}
    for queues, seen in WorkerHeartbeat.objects.values_list("queues", "last_seen_at"):
        for queue in queues or []:
            if queue not in latest or seen > latest[queue]:
                latest[queue] = seen
    return latest


def agents_summary() -> dict:
    """For /ready: each agent's failure rate, queue depth and heartbeat; informative only."""
    try:
        health = agent_health_all()
    except Exception as exc:  # readiness never fails on agent health
        logger.warning("agent_health_failed", error=str(exc))
        return {"ok": True, "error": type(exc).__name__}
    return {
        "ok": True,
        "agents": {
            name: {
                "failure_rate": row["failure_rate"],
                "queue_depth": row["queue_depth"],
                "last_success_at": row["last_success_at"].isoformat() if row["last_success_at"] else None,
                "last_heartbeat_at": row["last_heartbeat_at"].isoformat() if row["last_heartbeat_at"] else None,
            }
            for name, row in health.items()
        },
    }
