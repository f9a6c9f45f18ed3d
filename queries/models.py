"""Data-clarification queries and their threads. Behaviour (edit checks, lifecycle, SLAs) comes
with the QueryAnalyzer and QueryTracker; here the records and their audit."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from studies.audit import AuditedManager
from studies.models import DataPoint, Site, Study, Subject


class Query(models.Model):
    class State(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        OPEN = "open", "Open"
        ANSWERED = "answered", "Answered"
        CLOSED = "closed", "Closed"
        CANCELLED = "cancelled", "Cancelled"

    class Origin(models.TextChoices):
        RULE = "rule", "Edit check (system)"
        MANUAL = "manual", "Manual"
        IMPORTED = "imported", "Imported from the EDC"

    class Category(models.TextChoices):
        MISSING = "missing", "Missing data"
        RANGE = "range", "Out of range"
        INCONSISTENCY = "inconsistency", "Inconsistency"
        VISIT_PROTOCOL = "visit_protocol", "Visit / protocol"
        SAFETY = "safety", "Safety"
        DUPLICATE = "duplicate", "Duplicate"
        OTHER = "other", "Other"

    class Severity(models.TextChoices):
        CRITICAL = "critical", "Critical"
        MAJOR = "major", "Major"
        MINOR = "minor", "Minor"

    class Recipient(models.TextChoices):
        """The marking group: who must answer."""

        SITE = "site", "Site"
        CRA = "cra", "CRA"
        DATA_MANAGEMENT = "data_management", "Data management"
        CODING = "coding", "Coding"
        SAFETY = "safety", "Safety"

    class Resolution(models.TextChoices):
        CORRECTED = "corrected", "Data corrected"
        CONFIRMED_CORRECT = "confirmed_correct", "Data confirmed correct"
        OTHER = "other", "Other"

    class TextOrigin(models.TextChoices):
        TEMPLATE = "template", "Template"
        LLM = "llm", "Template reworded by the LLM service"
        PERSON = "person", "Written by a person"
        IMPORTED = "imported", "Imported from the EDC"

    class Escalation(models.IntegerChoices):
        """Who is chased when the query is overdue: the ladder, one step per missed SLA."""

        SITE = 0, "Site"
        CRA = 1, "CRA"
        INVESTIGATOR = 2, "Principal investigator"
        SPONSOR = 3, "Sponsor"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="queries")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="queries")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="queries")
    data_point = models.ForeignKey(DataPoint, on_delete=models.PROTECT, related_name="queries", null=True, blank=True)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.MANUAL)
    rule_code = models.CharField(max_length=160, blank=True, help_text="The edit check that raised it, if any")
    category = models.CharField(max_length=16, choices=Category.choices, default=Category.OTHER)
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.MINOR)
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    recipient = models.CharField(max_length=16, choices=Recipient.choices, default=Recipient.SITE)
    text = models.TextField()
    due_date = models.DateField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="+")
    external_id = models.CharField(max_length=128, blank=True, help_text="Id in the source EDC, if imported")
    created_at = models.DateTimeField(default=timezone.now)
    answered_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=20, choices=Resolution.choices, blank=True,
                                  help_text="How a closed query ended; empty when unknown (imported)")
    language = models.CharField(max_length=8, blank=True, help_text="ISO 639-1 language of the text")
    text_origin = models.CharField(max_length=16, choices=TextOrigin.choices, default=TextOrigin.PERSON)
    prompt_version = models.CharField(max_length=80, blank=True,
                                      help_text="The LLM prompt (name@version) that reworded the text, if any")
    released_at = models.DateTimeField(null=True, blank=True, help_text="When it left Candidate for the site")
    cancelled_at = models.DateTimeField(null=True, blank=True)
    escalation = models.PositiveSmallIntegerField(choices=Escalation.choices, default=Escalation.SITE)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "queries"
        indexes = [models.Index(fields=["study", "state"]), models.Index(fields=["site", "state"])]
        constraints = [
            models.UniqueConstraint(fields=["study", "external_id"], condition=~Q(external_id=""),
                                    name="query_external_id_unique"),
        ]

    def clean(self):
        if self.subject_id and self.site_id and self.subject.site_id != self.site_id:
            raise ValidationError({"site": "The query's site must be its subject's site."})
        if self.data_point_id and self.data_point.subject_id != self.subject_id:
            raise ValidationError({"data_point": "The data point belongs to another subject."})

    def __str__(self):
        return f"Query {self.pk} ({self.get_state_display()})"


class QueryMessage(models.Model):
    class Kind(models.TextChoices):
        QUESTION = "question", "Question"
        ANSWER = "answer", "Answer"
        REQUERY = "requery", "Re-query"
        NOTE = "note", "Note"
        CLOSE = "close", "Closing note"

    query = models.ForeignKey(Query, on_delete=models.CASCADE, related_name="messages")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.QUESTION)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                               related_name="+")
    author_name = models.CharField(max_length=150, blank=True, help_text="Author in the source EDC, if imported")
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["query", "created_at", "id"]

    def __str__(self):
        return f"{self.get_kind_display()} on query {self.query_id}"


class EditCheck(models.Model):
    """A rule on study data (DOMAIN.md, Queries). Versioned: `version` goes up whenever what the
    rule checks changes (queries.services.edit_check_save), and every discrepancy records the
    version that found it; audited: every save has a history row with actor and reason.

    `params` depend on the rule type; queries.checks.rules validates them (`clean()` refuses an
    invalid rule with the reason: unknown item, bad expression, impossible window)."""

    class RuleType(models.TextChoices):
        REQUIRED = "required", "Required"
        RANGE = "range", "Range (hard or soft, unit-aware)"
        CODELIST = "codelist", "Codelist"
        DATE_ORDER = "date_order", "Date order"
        DATE_WINDOW = "date_window", "Date window"
        VISIT_WINDOW = "visit_window", "Visit window"
        FUTURE_DATE = "future_date", "Future date"
        CONSISTENCY = "consistency", "Cross-form consistency"
        LAB_PLAUSIBILITY = "lab_plausibility", "Lab plausibility"
        DUPLICATE = "duplicate", "Duplicate"
        EXPRESSION = "expression", "Expression"

    class Source(models.TextChoices):
        METADATA = "metadata", "Generated from the study metadata"
        LIBRARY = "library", "Standard check"
        MANUAL = "manual", "Written for the study"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="edit_checks")
    code = models.CharField(max_length=160, help_text="Stable name within the study, e.g. RNG-VS.SYSBP")
    name = models.CharField(max_length=255)
    rule_type = models.CharField(max_length=20, choices=RuleType.choices)
    item = models.ForeignKey("studies.ItemDefinition", on_delete=models.PROTECT, null=True, blank=True,
                             related_name="edit_checks", help_text="The item checked, where the rule has one")
    params = models.JSONField(default=dict, blank=True)
    severity = models.CharField(max_length=8, choices=Query.Severity.choices, blank=True,
                                help_text="Overrides the severity derived from the rule; empty: derived")
    active = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "code"]
        constraints = [models.UniqueConstraint(fields=["study", "code"], name="edit_check_code_unique")]

    def clean(self):
        from queries.checks.rules import RuleInvalid, rule_validate  # noqa: PLC0415 (rules import models)

        if self.item_id and self.study_id and self.item.study_id != self.study_id:
            raise ValidationError({"item": "The item belongs to another study."})
        try:
            self.params = rule_validate(self)
        except RuleInvalid as error:
            raise ValidationError({"params": str(error)}) from error

    def __str__(self):
        return f"{self.code} v{self.version}"


class Discrepancy(models.Model):
    """What an edit check found: one row per (edit check, key), kept across analyzer passes, so a
    discrepancy that is still there is recognised instead of raised again.

    Derived data, recomputed by every pass of the QueryAnalyzer and written set-based; the
    regulated record is the Query it raises (audited). `key` names the thing found (a data point,
    a missing item of a visit, a visit, a pair of duplicates) within the check."""

    class Status(models.TextChoices):
        OPEN = "open", "Open (the rule still fails)"
        RESOLVED = "resolved", "Resolved (the rule passes now)"

    class Disposition(models.TextChoices):
        QUERY = "query", "Query to the site"
        HELD_BACK = "held_back", "Held back for data-manager review"
        MEDICAL_REVIEW = "medical_review", "Medical review (clinical signal, not a data error)"
        CONFIRMED = "confirmed", "Confirmed correct (not raised again unless the value changes)"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="discrepancies")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="discrepancies")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="discrepancies")
    visit = models.ForeignKey("studies.SubjectVisit", on_delete=models.PROTECT, null=True, blank=True,
                              related_name="discrepancies")
    item = models.ForeignKey("studies.ItemDefinition", on_delete=models.PROTECT, null=True, blank=True,
                             related_name="discrepancies")
    data_point = models.ForeignKey(DataPoint, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="discrepancies")
    edit_check = models.ForeignKey(EditCheck, on_delete=models.PROTECT, related_name="discrepancies")
    check_version = models.PositiveIntegerField()
    key = models.CharField(max_length=255)
    rule_type = models.CharField(max_length=20, choices=EditCheck.RuleType.choices)
    category = models.CharField(max_length=16, choices=Query.Category.choices)
    severity = models.CharField(max_length=8, choices=Query.Severity.choices)
    confidence = models.FloatField()
    observed = models.TextField(blank=True)
    expected = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="Values for the query text")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    disposition = models.CharField(max_length=16, choices=Disposition.choices, default=Disposition.QUERY)
    query = models.ForeignKey(Query, on_delete=models.SET_NULL, null=True, blank=True, related_name="discrepancies")
    found_at = models.DateTimeField(default=timezone.now)
    changed_at = models.DateTimeField(default=timezone.now, help_text="Last time the analyzer changed this row")
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-found_at", "id"]
        verbose_name_plural = "discrepancies"
        constraints = [
            models.UniqueConstraint(fields=["edit_check", "key"], name="discrepancy_check_key_unique"),
            models.CheckConstraint(condition=Q(confidence__gte=0, confidence__lte=1),
                                   name="discrepancy_confidence_0_1"),
        ]
        indexes = [models.Index(fields=["study", "status", "disposition"]), models.Index(fields=["subject"])]

    def __str__(self):
        return f"{self.edit_check.code} {self.key} ({self.get_status_display()})"


class AnalyzerPass(models.Model):
    """One pass of the QueryAnalyzer over a study: the watermark of the next incremental pass
    (data changed since `started_at`) and what it found."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="analyzer_passes")
    full = models.BooleanField()
    checks_fingerprint = models.CharField(max_length=64, help_text="Which checks, at which versions, ran")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict)
    errors = models.JSONField(default=list, help_text="Rules that failed at run time, with the reason")

    class Meta:
        ordering = ["-started_at"]
        get_latest_by = "started_at"

    def __str__(self):
        return f"{'Full' if self.full else 'Incremental'} pass of {self.study_id} at {self.started_at:%Y-%m-%d %H:%M}"


class QueryReminder(models.Model):
    """A reminder or escalation step sent for a query: one row per (query, step, due date), so
    the same step is never sent twice, also when the scheduler fires twice."""

    query = models.ForeignKey(Query, on_delete=models.CASCADE, related_name="reminders")
    step = models.CharField(max_length=32, help_text="e.g. reminder, overdue, escalation:cra")
    due_date = models.DateField(help_text="The due date the step was sent for (a re-query restarts the clock)")
    recipients = models.JSONField(default=list)
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["query", "sent_at"]
        constraints = [models.UniqueConstraint(fields=["query", "step", "due_date"], name="query_reminder_once")]

    def __str__(self):
        return f"{self.step} for query {self.query_id}"


class Notification(models.Model):
    """An in-app notification to one user (a query to answer, an overdue query, an escalation)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    query = models.ForeignKey(Query, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications")
    kind = models.CharField(max_length=32)
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "read_at"])]

    def __str__(self):
        return f"{self.kind} to {self.user_id}"


class QueryEdcLink(models.Model):
    """A query raised in a vendor EDC through one connection: the ledger of the push and of the
    states pulled back (queries.edc). One row per (query, connection), claimed before the push, so
    a query is raised once per connection even when two syncs race or one dies mid-way.

    Pending: claimed, the EDC's id not yet recorded; `lease_until` keeps other syncs off while the
    claimer pushes (null once a push failed: free to retry). Pushed: `remote_id` is the EDC's id."""

    class Status(models.TextChoices):
        PENDING = "pending", "Claimed, not yet confirmed by the EDC"
        PUSHED = "pushed", "Raised in the EDC"

    query = models.ForeignKey(Query, on_delete=models.PROTECT, related_name="edc_links")
    connection = models.ForeignKey("studies.EdcConnection", on_delete=models.CASCADE, related_name="query_links")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    remote_id = models.CharField(max_length=128, blank=True, help_text="The query's id in the EDC")
    state_pushed = models.CharField(max_length=16, choices=Query.State.choices, blank=True)
    state_pulled = models.CharField(max_length=16, blank=True, help_text="The EDC's state at the last pull")
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(default=timezone.now)
    pushed_at = models.DateTimeField(null=True, blank=True)
    pulled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["connection", "query"]
        constraints = [
            models.UniqueConstraint(fields=["query", "connection"], name="query_edc_link_once"),
            models.UniqueConstraint(fields=["connection", "remote_id"], condition=~Q(remote_id=""),
                                    name="query_edc_link_remote_id_unique"),
            models.CheckConstraint(condition=Q(status="pending") | ~Q(remote_id=""),
                                   name="query_edc_link_pushed_has_remote_id"),
        ]

    @property
    def local_id(self) -> str:
        """The id sent with the push (Rave keeps it as the query's QueryRepeatKey)."""
        return f"TQ-{self.query_id}"

    def __str__(self):
        return f"Query {self.query_id} in {self.connection_id} ({self.get_status_display()})"
