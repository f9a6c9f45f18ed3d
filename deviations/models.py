"""Protocol deviations: the study's deviation plan (what the protocol allows, versioned), each
deviation with its SDTM DV coding, importance, evidence and review, the PatternRecognition passes
that detect them, root-cause analyses, CAPA records and the periodic compliance reports. Every
regulated record is audited (django-simple-history: who, when, old and new value, why)."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from studies.audit import AuditedManager
from studies.models import Site, Study, Subject, SubjectVisit


class DeviationPlan(models.Model):
    """One version of a study's deviation plan (the JSON of `import_deviation_plan`). A version is
    never edited: a changed file makes the next version; the latest one is in force."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="deviation_plans")
    version = models.PositiveIntegerField()
    content = models.JSONField()
    sha256 = models.CharField(max_length=64, help_text="Digest of the canonical JSON: the same file, no new version")
    filename = models.CharField(max_length=255, blank=True)
    reason = models.TextField(help_text="Why this version was imported")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "-version"]
        constraints = [models.UniqueConstraint(fields=["study", "version"], name="deviation_plan_version_unique")]

    def __str__(self):
        return f"Deviation plan v{self.version} of {self.study.protocol_id}"


class RootCause(models.TextChoices):
    TRAINING = "training", "Training"
    PROCESS = "process", "Site process"
    SYSTEM = "system", "System"
    SUBJECT = "subject", "Subject"
    PROTOCOL_DESIGN = "protocol_design", "Protocol design"


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

    class Resolution(models.TextChoices):
        CONFIRMED = "confirmed", "Confirmed deviation"
        # Detected from data that no longer breaks the rule (corrected), or raised in error: not a
        # deviation, so neither counted by the KRIs nor reported in DV.
        WITHDRAWN = "withdrawn", "Not a deviation (data corrected or raised in error)"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="deviations")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="deviations")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="deviations", null=True, blank=True)
    visit = models.ForeignKey(SubjectVisit, on_delete=models.PROTECT, related_name="deviations", null=True,
                              blank=True)
    category = models.CharField(max_length=32, choices=Category.choices, default=Category.OTHER)
    term = models.CharField(max_length=255, blank=True, help_text="Reported (verbatim) term, as the source gave it")
    # SDTM DV coding from the shipped vocabulary (deviations/data): category, coded term, term.
    dvcat = models.CharField("DVCAT", max_length=200, blank=True)
    dvdecod = models.CharField("DVDECOD", max_length=200, blank=True)
    dvterm = models.CharField("DVTERM", max_length=200, blank=True)
    coding_by_person = models.BooleanField(default=False, help_text="Coded by a person: the detector keeps it")
    importance = models.CharField(max_length=16, choices=Importance.choices, default=Importance.NON_IMPORTANT)
    importance_by_person = models.BooleanField(default=False,
                                               help_text="Importance set by a person: the detector keeps it")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    resolution = models.CharField(max_length=16, choices=Resolution.choices, blank=True)
    status_by_person = models.BooleanField(
        default=False, help_text="Closed or reopened by a person: the detector neither reopens nor closes it")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL)
    description = models.TextField()
    occurred_on = models.DateField(null=True, blank=True)
    detected_on = models.DateField(null=True, blank=True)
    closed_on = models.DateField(null=True, blank=True)
    epoch = models.CharField(max_length=40, blank=True, help_text="SDTM EPOCH (SCREENING, TREATMENT, FOLLOW-UP)")
    reported_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="+")
    external_id = models.CharField(max_length=128, blank=True, help_text="Id in the source system, if imported")
    # Detected deviations: the rule that fired, the key of the evidence (one deviation per key:
    # re-running the detector finds the same key and writes nothing) and the evidence itself.
    rule = models.CharField(max_length=64, blank=True, help_text="Detector rule, e.g. visit_window.out_of_window")
    evidence_key = models.CharField(max_length=160, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    plan = models.ForeignKey(DeviationPlan, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    root_cause = models.CharField(max_length=16, choices=RootCause.choices, blank=True)
    root_cause_analysis = models.ForeignKey("RootCauseAnalysis", on_delete=models.SET_NULL, null=True, blank=True,
                                            related_name="deviations")
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["-occurred_on", "-id"]
        indexes = [models.Index(fields=["study", "importance"]), models.Index(fields=["study", "status"]),
                   models.Index(fields=["site", "category"])]
        constraints = [
            models.UniqueConstraint(fields=["study", "external_id"], condition=~Q(external_id=""),
                                    name="deviation_external_id_unique"),
            models.UniqueConstraint(fields=["study", "evidence_key"], condition=~Q(evidence_key=""),
                                    name="deviation_evidence_key_unique"),
        ]

    def clean(self):
        if self.subject_id and self.site_id and self.subject.site_id != self.site_id:
            raise ValidationError({"site": "The deviation's site must be its subject's site."})
        if self.visit_id and self.subject_id and self.visit.subject_id != self.subject_id:
            raise ValidationError({"visit": "The visit belongs to another subject."})
        if self.occurred_on and self.detected_on and self.detected_on < self.occurred_on:
            raise ValidationError({"detected_on": "A deviation cannot be detected before it occurred."})

    @property
    def is_withdrawn(self) -> bool:
        return self.resolution == self.Resolution.WITHDRAWN

    def __str__(self):
        return f"{self.get_category_display()} ({self.get_importance_display()})"


class DetectionPass(models.Model):
    """One PatternRecognition pass over a study: the plan version, per detector what it found and
    what changed, and how long it took."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="detection_passes")
    plan = models.ForeignKey(DeviationPlan, on_delete=models.PROTECT, related_name="passes")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self):
        return f"Detection pass {self.pk} of {self.study.protocol_id}"


class RootCauseAnalysis(models.Model):
    """A recurring pattern the RootCauseAnalysis agent found (a site's rate of a category, or of
    important / non-important deviations, far above the study's in a period) with the numbers
    that support it and a proposed root cause; a person accepts it or edits it."""

    class Status(models.TextChoices):
        PROPOSED = "proposed", "Proposed"
        ACCEPTED = "accepted", "Accepted"
        EDITED = "edited", "Accepted with changes"
        REJECTED = "rejected", "Rejected"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="root_cause_analyses")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="root_cause_analyses")
    category = models.CharField(max_length=32, help_text="A deviation category, or importance:<level> (kri0003/4)")
    period_start = models.DateField()
    period_end = models.DateField()
    figures = models.JSONField(default=dict, help_text="Counts, subject-days, rates, KRI-style score and flag")
    proposed_root_cause = models.CharField(max_length=16, choices=RootCause.choices)
    rationale = models.TextField()
    root_cause = models.CharField(max_length=16, choices=RootCause.choices, blank=True,
                                  help_text="The root cause a person decided")
    decision_note = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROPOSED)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["-period_start", "site", "category"]
        verbose_name_plural = "root-cause analyses"
        constraints = [models.UniqueConstraint(fields=["study", "site", "category", "period_start"],
                                               name="root_cause_analysis_unique")]

    def __str__(self):
        return f"{self.category} at site {self.site.number} ({self.period_start} to {self.period_end})"


class Capa(models.Model):
    """A corrective and preventive action: who owns it, by when, its status, and whether it worked
    (the site's rate of the category in the period after completion against the period before,
    measured by deviations.capa.capa_effectiveness_check, never typed in)."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    class Effectiveness(models.TextChoices):
        NOT_CHECKED = "", "Not checked"
        TOO_EARLY = "too_early", "Too early to tell"
        EFFECTIVE = "effective", "Effective"
        NOT_EFFECTIVE = "not_effective", "Not effective"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="capas")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="capas")
    category = models.CharField(max_length=32, choices=Deviation.Category.choices)
    root_cause_analysis = models.ForeignKey(RootCauseAnalysis, on_delete=models.SET_NULL, null=True, blank=True,
                                            related_name="capas")
    deviations = models.ManyToManyField(Deviation, blank=True, related_name="capas")
    title = models.CharField(max_length=255)
    corrective_action = models.TextField()
    preventive_action = models.TextField()
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    due_on = models.DateField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    completed_on = models.DateField(null=True, blank=True)
    effectiveness_window_days = models.PositiveIntegerField(default=90)
    effectiveness = models.CharField(max_length=16, choices=Effectiveness.choices, blank=True)
    effectiveness_figures = models.JSONField(default=dict, blank=True)
    effectiveness_checked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["due_on", "id"]
        verbose_name = "CAPA"
        constraints = [
            models.CheckConstraint(condition=Q(effectiveness_window_days__gte=1), name="capa_window_positive"),
            models.CheckConstraint(condition=~Q(status="completed") | Q(completed_on__isnull=False),
                                   name="capa_completed_has_date"),
        ]

    @property
    def is_overdue(self) -> bool:
        return self.status in (self.Status.OPEN, self.Status.IN_PROGRESS) and self.due_on < timezone.localdate()

    def __str__(self):
        return f"CAPA {self.pk}: {self.title}"


class ComplianceReport(models.Model):
    """A periodic deviation summary of a study (ComplianceReporting agent): counts by category,
    importance and site, the trend, open CAPAs and overdue reviews, stored with the inputs it was
    computed from, and signed off by a person (re-authenticated, with the meaning of the signature,
    bound to the digest of the summary)."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="compliance_reports")
    period_start = models.DateField()
    period_end = models.DateField()
    inputs = models.JSONField(default=dict)
    summary = models.JSONField(default=dict)
    sha256 = models.CharField(max_length=64, help_text="Digest of inputs and summary: what a signature signs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    signed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                  related_name="+")
    signed_name = models.CharField(max_length=255, blank=True, help_text="Printed name at signing")
    signed_at = models.DateTimeField(null=True, blank=True)
    signature_meaning = models.CharField(max_length=32, blank=True)
    signed_sha256 = models.CharField(max_length=64, blank=True)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["-period_end", "-id"]
        constraints = [models.UniqueConstraint(fields=["study", "period_start", "period_end"],
                                               name="compliance_report_period_unique")]

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None and self.signed_sha256 == self.sha256

    def __str__(self):
        return f"Deviation report {self.study.protocol_id} {self.period_start} to {self.period_end}"
