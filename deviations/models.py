"""Protocol deviations. Detection, root causes and CAPA come in later issues."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from studies.audit import AuditedManager
from studies.models import Site, Study, Subject


class Deviation(models.Model):
    class Category(models.TextChoices):
        INFORMED_CONSENT = "informed_consent", "Informed consent"
        ELIGIBILITY = "eligibility", "Eligibility (inclusion/exclusion)"
        IP_DOSING = "ip_dosing", "IP / dosing"
        VISIT_WINDOW = "visit_window", "Visit or assessment out of window / not done"
        PROHIBITED_MEDICATION = "prohibited_medication", "Prohibited concomitant medication"
        SAFETY_REPORTING = "safety_reporting", "Safety reporting"
        OTHER = "other", "Other"

    class Importance(models.TextChoices):
        IMPORTANT = "important", "Important"
        NON_IMPORTANT = "non_important", "Non-important"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        UNDER_REVIEW = "under_review", "Under review"
        CLOSED = "closed", "Closed"

    class Source(models.TextChoices):
        MANUAL = "manual", "Reported by a person"
        DETECTED = "detected", "Detected from data"
        IMPORTED = "imported", "Imported"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="deviations")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="deviations")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="deviations", null=True, blank=True)
    category = models.CharField(max_length=32, choices=Category.choices, default=Category.OTHER)
    term = models.CharField(max_length=255, blank=True, help_text="Coded term (SDTM DVDECOD)")
    importance = models.CharField(max_length=16, choices=Importance.choices, default=Importance.NON_IMPORTANT)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL)
    description = models.TextField()
    occurred_on = models.DateField(null=True, blank=True)
    detected_on = models.DateField(null=True, blank=True)
    closed_on = models.DateField(null=True, blank=True)
    reported_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="+")
    external_id = models.CharField(max_length=128, blank=True, help_text="Id in the source system, if imported")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["-occurred_on", "-id"]
        indexes = [models.Index(fields=["study", "importance"])]
        constraints = [
            models.UniqueConstraint(fields=["study", "external_id"], condition=~Q(external_id=""),
                                    name="deviation_external_id_unique"),
        ]

    def clean(self):
        if self.subject_id and self.site_id and self.subject.site_id != self.site_id:
            raise ValidationError({"site": "The deviation's site must be its subject's site."})
        if self.occurred_on and self.detected_on and self.detected_on < self.occurred_on:
            raise ValidationError({"detected_on": "A deviation cannot be detected before it occurred."})

    def __str__(self):
        return f"{self.get_category_display()} ({self.get_importance_display()})"
