"""Runs and steps of agent workflows: the database is the ledger of every step and its claim.

The agents app is a framework (like Celery) and imports no domain app, so a run points at its
study by id, not by foreign key.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from simple_history.models import HistoricalRecords


class Status(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    COMPENSATED = "compensated", "Compensated"


FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.COMPENSATED)
ACTIVE = (Status.PENDING, Status.RUNNING)


class WorkflowDefinition(models.Model):
    """One version of a workflow (agents.workflow_spec). Immutable once a run used it: a changed
    spec for the same (name, version) is refused by agents.services.workflow_definition_save."""

    name = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    spec = models.JSONField()  # the parsed, validated YAML
    source = models.TextField()  # the YAML as written, comments included
    checksum = models.CharField(max_length=64)  # sha256 of the spec (agents.workflow_spec.spec_checksum)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="workflow_definition_version_unique"),
        ]

    def __str__(self):
        return f"{self.name} v{self.version}"


class AgentRun(models.Model):
    class Trigger(models.TextChoices):
        MANUAL = "manual", "Manual"
        SCHEDULE = "schedule", "Schedule"
        EVENT = "event", "Event"
        IMPORT = "import", "Import"

    workflow = models.CharField(max_length=64)
    # Null for a one-step run of an agent (run_agent), which has no stored definition.
    definition = models.ForeignKey(
        WorkflowDefinition, null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    attempt = models.PositiveIntegerField(default=1)  # 2, 3, ... after each retry from the failed step
    study_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    request_id = models.CharField(max_length=64, blank=True)
    steps_total = models.PositiveIntegerField(default=0)
    steps_done = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Two runs of one workflow on one study never overlap: a second start (or a retry or
            # rollback that makes a finished run active again) is refused by this index, which no
            # check-then-insert race can get past. "No study" counts as one scope (0).
            models.UniqueConstraint(
                "workflow",
                Coalesce("study_id", Value(0)),
                condition=Q(status__in=ACTIVE),
                name="agent_run_one_active_per_workflow_and_study",
            ),
        ]

    def __str__(self):
        return f"{self.workflow} #{self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


class AgentStep(models.Model):
    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=64)
    agent = models.CharField(max_length=64)
    agent_version = models.CharField(max_length=32)
    stage = models.PositiveIntegerField(default=0)  # position in the canvas: steps of one stage run in parallel
    # Set on a compensation step: the succeeded step whose work it undoes in a rollback.
    compensates = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="compensations"
    )
    # From the definition: {"max", "backoff", "backoff_max"} for retries, "time_limit" in seconds.
    policy = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=255, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            # One row per step of a run: the claim on this row is what makes a redelivered task a no-op.
            models.UniqueConstraint(fields=["run", "key"], name="agent_step_key_unique_in_run"),
        ]
        indexes = [
            # agents.health reads each agent's recent finished steps.
            models.Index(fields=["agent", "finished_at"], name="agent_step_agent_finished"),
        ]

    def __str__(self):
        return f"{self.run_id}/{self.key} ({self.status})"


# --- LLM service (agents.llm): versioned prompts and the ledger of every model call ----------------


class PromptTemplate(models.Model):
    """One version of a prompt. Never edited: a change is a new version (agents.llm.prompts), and the
    checksum, verified at every use, shows whether a stored version was altered afterwards."""

    name = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    text = models.TextField()  # string.Template syntax: $variable or ${variable}
    offline_text = models.TextField(blank=True)  # what the offline provider answers for free text
    variables = models.JSONField(default=list)  # the names the text uses
    identifier_variables = models.JSONField(default=list)  # variables holding direct identifiers: never sent
    active = models.BooleanField(default=True)  # active versions share the traffic (A/B)
    checksum = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="prompt_template_version_unique"),
        ]

    def __str__(self):
        return f"{self.name} v{self.version}"


class LlmCall(models.Model):
    """One answer given to a caller of llm_complete (Part 11 traceability of an AI step): which model
    and prompt version, a hash of exactly what was sent, what came back, what it cost, whether the
    answer came from the cache or the offline fallback, and which reviewer accepted it."""

    class Provider(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        OFFLINE = "offline", "Offline"

    class Outcome(models.TextChoices):
        PENDING = "", "Pending review"
        ACCEPTED = "accepted", "Accepted"
        EDITED = "edited", "Edited"
        REJECTED = "rejected", "Rejected"

    provider = models.CharField(max_length=16, choices=Provider.choices)
    model = models.CharField(max_length=64)
    prompt_template = models.ForeignKey(PromptTemplate, on_delete=models.PROTECT, related_name="calls")
    prompt_version = models.PositiveIntegerField()
    purpose = models.CharField(max_length=64)
    study_id = models.BigIntegerField(null=True, blank=True)
    input_hash = models.CharField(max_length=64)  # sha256 of the redacted messages and the schema
    messages = models.JSONField(default=list)  # as sent (after redaction): the input the hash covers
    redactions = models.JSONField(default=dict, blank=True)  # what was redacted before sending: kind -> count
    output = models.JSONField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    cache_hit = models.BooleanField(default=False)
    # A cache hit points at the call whose answer it reused: the model's answer stays traceable.
    cache_source = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    fallback_used = models.BooleanField(default=False)
    fallback_reason = models.TextField(blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The monthly budget sums a study's costs of this month; the cache looks up an earlier answer.
            models.Index(fields=["study_id", "created_at"], name="llm_call_study_month"),
            models.Index(fields=["model", "prompt_template", "input_hash"], name="llm_call_cache_key"),
        ]

    def __str__(self):
        return f"{self.purpose} via {self.provider}/{self.model} #{self.pk}"


# --- Per-study agent configuration, events between agents, worker heartbeats -----------------------


class AgentConfig(models.Model):
    """An agent's configuration for one study, validated against the agent's config_schema by
    agents.services.agent_config_set, and whether the agent is enabled (or paused) there. No row
    means: enabled, with an empty config. Audited (simple-history): who changed what, when."""

    agent = models.CharField(max_length=64)
    study_id = models.BigIntegerField()  # no foreign key: agents imports no domain app
    config = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["agent", "study_id"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "study_id"], name="agent_config_one_per_study"),
        ]

    def __str__(self):
        return f"{self.agent} on study {self.study_id} ({'enabled' if self.enabled else 'paused'})"


class Event(models.Model):
    """A typed fact one agent published for others (`discrepancies.found`, `risk.changed`, ...).
    Its dispatch starts the workflows subscribed with `on_event: <type>`; processed_at, set by a
    compare-and-set update, makes the dispatch happen once even if its task is delivered twice."""

    type = models.CharField(max_length=64)
    study_id = models.BigIntegerField(null=True, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    source_run = models.ForeignKey(AgentRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    source_step = models.ForeignKey(AgentStep, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    started_runs = models.JSONField(default=list, blank=True)  # ids of the runs its dispatch started
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["type", "created_at"], name="agent_event_type_created")]

    def __str__(self):
        return f"{self.type} #{self.pk}"


class WorkerHeartbeat(models.Model):
    """When each Celery worker was last seen alive (worker_ready, then a beat task every minute)."""

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list, blank=True)
    last_seen_at = models.DateTimeField()

    def __str__(self):
        return f"{self.hostname} @ {self.last_seen_at:%Y-%m-%d %H:%M:%S}"
