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

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="queries")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="queries")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="queries")
    data_point = models.ForeignKey(DataPoint, on_delete=models.PROTECT, related_name="queries", null=True, blank=True)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.MANUAL)
    rule_code = models.CharField(max_length=64, blank=True, help_text="The edit check that raised it, if any")
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
