"""Source data verification (source documents, the pages read from them and the verdict on each
EDC value) and risk-based monitoring (KRIs, site risk, SDV plans)."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from studies.audit import AuditedManager
from studies.models import DataPoint, ItemDefinition, Site, Study, Subject, SubjectVisit


def source_document_path(instance, filename):
    # Content-addressed (sdv.documents.document_store names the file by its sha256): the name carries
    # no subject identifier, and the same bytes are stored once whatever their documents.
    return f"sources/{filename[:2]}/{filename}"


class SourceDocument(models.Model):
    """A source document (lab report, medical note, ECG printout) uploaded for one subject, at one
    visit or for the subject as a whole. The file is stored under its sha256 outside the static
    root and served only through a view that checks the reader may see the subject."""

    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded, waiting for the agent"
        PROCESSING = "processing", "Processing"
        EXTRACTED = "extracted", "Read by the agent"
        VERIFIED = "verified", "Verified (every value reviewed)"
        FAILED = "failed", "Could not be read"

    class TextSource(models.TextChoices):
        TEXT_LAYER = "text_layer", "PDF text layer"
        OCR = "ocr", "OCR"
        MIXED = "mixed", "Text layer and OCR"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="source_documents")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="source_documents")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="source_documents")
    visit = models.ForeignKey(SubjectVisit, on_delete=models.PROTECT, related_name="source_documents",
                              null=True, blank=True)
    file = models.FileField(upload_to=source_document_path, max_length=255)
    original_name = models.CharField(max_length=255, blank=True, help_text="The uploaded file's name")
    content_type = models.CharField(max_length=100, blank=True, help_text="From the file's magic bytes")
    sha256 = models.CharField(max_length=64, blank=True)
    file_size = models.BigIntegerField(default=0)
    page_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UPLOADED)
    error = models.TextField(blank=True, help_text="Why the document could not be read")
    text_source = models.CharField(max_length=16, choices=TextSource.choices, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    agent_version = models.CharField(max_length=32, blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["-uploaded_at"]
        constraints = [
            # The same file twice for the same visit (or the same subject, without a visit) is one document.
            models.UniqueConstraint(fields=["subject", "visit", "sha256"], condition=Q(visit__isnull=False),
                                    name="source_document_once_per_visit"),
            models.UniqueConstraint(fields=["subject", "sha256"], condition=Q(visit__isnull=True),
                                    name="source_document_once_per_subject"),
        ]
        indexes = [models.Index(fields=["study", "status"])]

    def clean(self):
        if self.subject_id and self.site_id and self.subject.site_id != self.site_id:
            raise ValidationError({"site": "The document's site must be its subject's site."})
        if self.visit_id and self.visit.subject_id != self.subject_id:
            raise ValidationError({"visit": "The visit belongs to another subject."})

    def __str__(self):
        return f"Source document {self.pk} ({self.get_status_display()})"


class SourcePage(models.Model):
    """One page as the DataVerification agent read it: every word with its box and confidence and
    the lab rows laid out from them, with the transform that produced the page image the boxes are
    in (rotation, deskew) so the crops a CRA sees are cut from exactly what was read. Audited: a
    re-read replaces the page and keeps the earlier reading in the history (Part 11)."""

    document = models.ForeignKey(SourceDocument, on_delete=models.PROTECT, related_name="pages")
    number = models.PositiveIntegerField(help_text="1-based")
    width = models.PositiveIntegerField(help_text="Pixels of the page image the boxes are in")
    height = models.PositiveIntegerField()
    dpi = models.PositiveIntegerField()
    text_source = models.CharField(max_length=16, choices=SourceDocument.TextSource.choices)
    rotation = models.SmallIntegerField(default=0, help_text="Quarter turns applied (degrees, counter-clockwise)")
    skew = models.FloatField(default=0, help_text="Deskew applied (degrees, counter-clockwise)")
    steps = models.JSONField(default=list, blank=True, help_text="Clean-up applied before OCR")
    mean_confidence = models.FloatField(null=True, blank=True, help_text="Mean word confidence, 0-100")
    words = models.JSONField(default=list, help_text="[[text, confidence 0-100, x0, y0, x1, y1], ...]")
    rows = models.JSONField(default=list, help_text="Lab rows laid out from the words")
    agent_version = models.CharField(max_length=32)
    read_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["document", "number"]
        constraints = [models.UniqueConstraint(fields=["document", "number"], name="source_page_unique")]

    def __str__(self):
        return f"Page {self.number} of document {self.document_id}"


class SourceVerification(models.Model):
    """The verdict on one EDC value against one source document (the agent's, then the CRA's), or
    a CRA's manual SDV against paper on site (no document). One current verdict per (document,
    item): a re-read replaces it, and the history keeps every earlier one with who and why.

    The EDC value and its version are copied at the verdict: a later change of the value makes
    the verdict stale (shown), and the data point itself goes back to "to verify"."""

    class Verdict(models.TextChoices):
        VERIFIED = "verified", "Verified"
        DISCREPANCY = "discrepancy", "Discrepancy"
        NOT_FOUND = "not_found", "Not found"
        NEEDS_REVIEW = "needs_review", "Needs review"

    class Method(models.TextChoices):
        DOCUMENT = "document", "Against an uploaded document"
        MANUAL = "manual", "Manual SDV against paper on site"

    class Review(models.TextChoices):
        NONE = "", "Not reviewed"
        CONFIRMED = "confirmed", "Confirmed"
        OVERRIDDEN = "overridden", "Overridden"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="source_verifications")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="source_verifications")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="source_verifications")
    visit = models.ForeignKey(SubjectVisit, on_delete=models.PROTECT, related_name="source_verifications")
    item = models.ForeignKey(ItemDefinition, on_delete=models.PROTECT, related_name="source_verifications")
    data_point = models.ForeignKey(DataPoint, on_delete=models.PROTECT, related_name="source_verifications")
    document = models.ForeignKey(SourceDocument, on_delete=models.PROTECT, related_name="verifications",
                                 null=True, blank=True)
    method = models.CharField(max_length=16, choices=Method.choices, default=Method.DOCUMENT)
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    agent_verdict = models.CharField(max_length=16, choices=Verdict.choices, blank=True,
                                     help_text="What the agent found; the verdict differs when a CRA overrode it")
    edc_value = models.TextField(blank=True)
    edc_unit = models.CharField(max_length=64, blank=True)
    data_point_version = models.PositiveIntegerField(help_text="The version of the value the verdict is about")
    source_value = models.CharField(max_length=64, blank=True)
    source_unit = models.CharField(max_length=64, blank=True)
    source_name = models.CharField(max_length=255, blank=True, help_text="The test name as printed")
    source_text = models.TextField(blank=True, help_text="The whole row as read")
    analyte = models.CharField(max_length=16, blank=True, help_text="CDISC LBTESTCD")
    confidence = models.FloatField(null=True, blank=True, help_text="OCR confidence of the value, 0-1")
    page = models.PositiveIntegerField(null=True, blank=True)
    bbox = models.JSONField(null=True, blank=True, help_text="[x0, y0, x1, y1] of the value in the page image")
    row_bbox = models.JSONField(null=True, blank=True, help_text="[x0, y0, x1, y1] of its row")
    explanation = models.TextField(blank=True, help_text="How the verdict was reached (units, rounding)")
    agent_version = models.CharField(max_length=32, blank=True)
    review = models.CharField(max_length=16, choices=Review.choices, blank=True, default="")
    reason = models.TextField(blank=True, help_text="The CRA's reason for an override or a manual SDV")
    verified_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="+")
    verified_at = models.DateTimeField(null=True, blank=True)
    query = models.ForeignKey("queries.Query", on_delete=models.PROTECT, null=True, blank=True,
                              related_name="source_verifications")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["visit", "item", "id"]
        constraints = [
            models.UniqueConstraint(fields=["document", "item"], condition=Q(document__isnull=False),
                                    name="source_verification_one_per_document_item"),
            models.UniqueConstraint(fields=["data_point"], condition=Q(document__isnull=True),
                                    name="source_verification_one_manual_per_data_point"),
            models.CheckConstraint(condition=Q(method="manual", document__isnull=True)
                                   | Q(method="document", document__isnull=False),
                                   name="source_verification_method_matches_document"),
        ]
        indexes = [models.Index(fields=["study", "verdict"]), models.Index(fields=["data_point"])]

    @property
    def stale(self) -> bool:
        """The EDC value changed since the verdict (needs the data point loaded)."""
        return self.data_point.version != self.data_point_version

    def __str__(self):
        return f"{self.get_verdict_display()}: {self.item_id} of document {self.document_id}"


# --- Risk-based monitoring ------------------------------------------------------------------------
class KriDefinition(models.Model):
    """One key risk indicator of a study, as data: what is counted or summed per subject for the
    numerator and the denominator, how the groups are scored and flagged. Seeded from gsm's site
    KRIs and their country twins (sdv/data/gsm_kri_definitions.json); each edit raises `version`,
    and the history keeps every earlier version with who changed it and why."""

    class Level(models.TextChoices):
        SITE = "site", "Site"
        COUNTRY = "country", "Country"
        STUDY = "study", "Study"

    class Analysis(models.TextChoices):
        NORMAL_RATE = "normal_rate", "Normal approximation (rate)"
        NORMAL_BINARY = "normal_binary", "Normal approximation (proportion)"
        POISSON = "poisson", "Poisson"
        IDENTITY = "identity", "Identity"
        FISHER = "fisher", "Fisher exact"

    class AccrualMetric(models.TextChoices):
        NUMERATOR = "numerator", "Numerator"
        DENOMINATOR = "denominator", "Denominator"
        DIFFERENCE = "difference", "Denominator - numerator"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="kri_definitions")
    kri_id = models.CharField(max_length=16, help_text="e.g. kri0001 (site), cou0001 (country)")
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.SITE)
    abbreviation = models.CharField(max_length=16)
    name = models.CharField(max_length=128)
    numerator_label = models.CharField(max_length=128)
    denominator_label = models.CharField(max_length=128)
    numerator = models.JSONField(help_text='What to count or sum per subject, e.g. {"source": "adverse_events", '
                                           '"filters": {"serious": true}, "snapshot_cut": true}')
    denominator = models.JSONField(help_text='e.g. {"source": "subjects", "sum": "days_on_study"}')
    population = models.CharField(max_length=16, default="enrolled",
                                  help_text="The subjects grouped: enrolled, or screened (screen failures too)")
    analysis = models.CharField(max_length=16, choices=Analysis.choices)
    score_of = models.CharField(max_length=16, default="metric", help_text="identity: score the metric or the "
                                                                           "numerator")
    thresholds = models.JSONField(default=list)
    flags = models.JSONField(default=list, blank=True)
    weights = models.JSONField(default=list, blank=True, help_text="Risk-score weight of each flag")
    accrual_threshold = models.FloatField(null=True, blank=True)
    accrual_metric = models.CharField(max_length=16, choices=AccrualMetric.choices, blank=True)
    active = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "kri_id"]
        constraints = [models.UniqueConstraint(fields=["study", "kri_id"], name="kri_definition_unique_in_study")]

    def __str__(self):
        return f"{self.kri_id} {self.name} (v{self.version})"


def default_critical_rules() -> list[dict]:
    """What counts as critical beyond the item metadata, until a study says otherwise: consent,
    eligibility, dosing, seriousness of adverse events and anything labelled a primary endpoint
    (ICH E6(R3) critical-to-quality factors)."""
    return [{"kind": "form", "oid": "IC", "why": "informed consent"},
            {"kind": "form", "oid": "IE", "why": "eligibility"},
            {"kind": "form", "oid": "EX", "why": "dosing"},
            {"kind": "item", "oid": "AE.AESER", "why": "serious adverse events"},
            {"kind": "label", "contains": "primary endpoint", "why": "primary endpoint"}]


def default_qtls() -> list[dict]:
    """gsm 1.8.4's quality tolerance limits: participants with 1+ important deviation, and study
    discontinuations, each against its limit (a proportion)."""
    return [{"kri": "qtl0004", "limit": 0.01}, {"kri": "qtl0006", "limit": 0.2}]


class RiskConfig(models.Model):
    """A study's risk-based monitoring settings: tier cut-offs on the site risk score, SDV shares
    per tier, first-N subjects verified fully, quality tolerance limits and critical-data rules."""

    study = models.OneToOneField(Study, on_delete=models.PROTECT, related_name="risk_config")
    medium_from = models.FloatField(default=10, help_text="A site risk score from this is medium risk")
    high_from = models.FloatField(default=25, help_text="A site risk score from this is high risk")
    sdv_share = models.JSONField(default=dict, blank=True,
                                 help_text='Share of non-critical data points verified per tier, '
                                           'e.g. {"low": 0.1, "medium": 0.25, "high": 0.5}')
    first_subjects_fully = models.PositiveIntegerField(default=3, help_text="The first N subjects of each site "
                                                                            "are verified fully")
    qtls = models.JSONField(default=default_qtls, blank=True,
                            help_text='Quality tolerance limits of study-level KRIs: '
                                      '[{"kri": "qtl0004", "limit": 0.3, "historical": 0.2}, ...]')
    critical_rules = models.JSONField(default=default_critical_rules, blank=True,
                                      help_text='What counts as critical beyond the item metadata: '
                                                '[{"kind": "form", "oid": "IC"}, {"kind": "item", "oid": "AE.AESER"}, '
                                                '{"kind": "label", "contains": "primary endpoint"}]')
    version = models.PositiveIntegerField(default=1)

    objects = AuditedManager()
    history = HistoricalRecords()

    DEFAULT_SDV_SHARE = {"low": 0.10, "medium": 0.25, "high": 0.50}
    RULE_KINDS = {"form": "oid", "item": "oid", "label": "contains"}

    def clean(self):
        if self.medium_from > self.high_from:
            raise ValidationError({"high_from": "The high-risk cut-off must not be below the medium one."})
        if not isinstance(self.sdv_share, dict):
            raise ValidationError({"sdv_share": "an object of shares per tier low/medium/high"})
        for tier, share in self.sdv_share.items():
            if tier not in self.DEFAULT_SDV_SHARE or not isinstance(share, (int, float)) or not 0 <= share <= 1:
                raise ValidationError({"sdv_share": f"{tier}: a share between 0 and 1 per tier low/medium/high"})
        for rule in self.critical_rules if isinstance(self.critical_rules, list) else [None]:
            key = self.RULE_KINDS.get(rule.get("kind")) if isinstance(rule, dict) else None
            if key is None or not isinstance(rule.get(key), str) or not rule[key]:
                raise ValidationError({"critical_rules": f"{rule!r}: each rule is a form or item OID "
                                                         '({"kind": "form", "oid": ...}) or a label text '
                                                         '({"kind": "label", "contains": ...})'})
        for qtl in self.qtls if isinstance(self.qtls, list) else [None]:
            numbers = [qtl.get(k) for k in ("limit", "historical") if k in qtl] if isinstance(qtl, dict) else []
            if (not isinstance(qtl, dict) or not isinstance(qtl.get("kri"), str) or "limit" not in qtl
                    or not all(isinstance(n, (int, float)) and 0 <= n <= 1 for n in numbers)):
                raise ValidationError({"qtls": f"{qtl!r}: each limit names a study-level KRI (kri), a proportion "
                                               "(limit) and optionally the historical rate it was set from"})

    def share(self, tier: str) -> float:
        return float({**self.DEFAULT_SDV_SHARE, **(self.sdv_share or {})}[tier])

    def tier_of(self, score: float) -> str:
        return "high" if score >= self.high_from else "medium" if score >= self.medium_from else "low"

    def __str__(self):
        return f"Risk configuration of {self.study.protocol_id}"


class KriSnapshot(models.Model):
    """One computation of every active KRI of a study as of a date. Results are derived data (they
    can always be recomputed from the study data and the definitions' versions recorded in them),
    so they are written in bulk as plain rows; a recomputation of the same date replaces them."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="kri_snapshots")
    snapshot_date = models.DateField()
    computed_at = models.DateTimeField(default=timezone.now)
    seconds = models.FloatField(default=0)
    problems = models.JSONField(default=list, blank=True, help_text="KRIs that could not be computed, and why")
    qtl = models.JSONField(default=list, blank=True, help_text="Quality tolerance limit checks of study KRIs")

    class Meta:
        ordering = ["study", "-snapshot_date"]
        constraints = [models.UniqueConstraint(fields=["study", "snapshot_date"], name="kri_snapshot_unique")]

    def __str__(self):
        return f"KRI snapshot {self.snapshot_date} of {self.study_id}"


class KriResult(models.Model):
    """One group's result of one KRI in one snapshot (a site, a country or the study)."""

    snapshot = models.ForeignKey(KriSnapshot, on_delete=models.CASCADE, related_name="results")
    kri_id = models.CharField(max_length=16)
    definition_version = models.PositiveIntegerField()
    level = models.CharField(max_length=8, choices=KriDefinition.Level.choices)
    group = models.CharField(max_length=64, help_text="Site number, country code or study protocol id")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True, related_name="kri_results")
    numerator = models.FloatField()
    denominator = models.FloatField()
    metric = models.FloatField()
    score = models.FloatField(null=True, blank=True)
    flag = models.SmallIntegerField(null=True, blank=True, help_text="Empty where accrual is too low")
    weight = models.FloatField(null=True, blank=True)
    overall = models.FloatField(null=True, blank=True, help_text="The study-wide metric p")
    factor = models.FloatField(null=True, blank=True, help_text="Over-dispersion phi")
    # Trend, as of the computation: the group's flag in the study's previous snapshot, and how many
    # snapshots in a row (this one included) it has been flagged (gsm's no_of_consecutive_loads).
    previous_flag = models.SmallIntegerField(null=True, blank=True, help_text="Flag in the previous snapshot")
    flag_changed = models.BooleanField(default=False, help_text="The flag differs from the previous snapshot's")
    consecutive_flagged = models.PositiveIntegerField(default=0, help_text="Snapshots in a row flagged (not 0)")

    class Meta:
        ordering = ["snapshot", "kri_id", "group"]
        indexes = [models.Index(fields=["snapshot", "kri_id"]), models.Index(fields=["site", "kri_id"])]

    def __str__(self):
        return f"{self.kri_id} {self.group}: {self.score} ({self.flag})"


class SiteRiskAssessment(models.Model):
    """A site's risk as of a snapshot: score, tier and a plain-language explanation. Audited: the
    tier decides how much of the site's data is verified at source."""

    class Tier(models.TextChoices):
        LOW = "low", "Low"
        MEDIUM = "medium", "Medium"
        HIGH = "high", "High"

    snapshot = models.ForeignKey(KriSnapshot, on_delete=models.PROTECT, related_name="site_assessments")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="risk_assessments")
    risk_score = models.FloatField()
    tier = models.CharField(max_length=8, choices=Tier.choices)
    previous_tier = models.CharField(max_length=8, choices=Tier.choices, blank=True)
    flagged = models.JSONField(default=list, blank=True, help_text="The KRIs flagged, with score and flag")
    explanation = models.TextField(blank=True)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["snapshot", "-risk_score", "site"]
        constraints = [models.UniqueConstraint(fields=["snapshot", "site"], name="site_risk_unique_per_snapshot")]

    def __str__(self):
        return f"{self.site} {self.tier} ({self.risk_score:.0f})"


class SdvSelection(models.Model):
    """A data point selected for source data verification, with why. Stable: once selected it
    stays selected (a lower tier later does not un-select it); rows are never deleted."""

    class Reason(models.TextChoices):
        CRITICAL = "critical", "Critical data"
        FIRST_SUBJECTS = "first_subjects", "One of the site's first subjects"
        SAMPLED = "sampled", "Sampled for the site's tier"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="sdv_selections")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="sdv_selections")
    data_point = models.OneToOneField("studies.DataPoint", on_delete=models.PROTECT, related_name="sdv_selection")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    tier = models.CharField(max_length=8, choices=SiteRiskAssessment.Tier.choices)
    selected_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["site_id", "data_point_id"]
        indexes = [models.Index(fields=["site", "reason"])]

    def __str__(self):
        return f"SDV of data point {self.data_point_id} ({self.reason})"


class SdvPlan(models.Model):
    """A site's SDV plan: the tier it was sized for, the share sampled and what it selected."""

    site = models.OneToOneField(Site, on_delete=models.PROTECT, related_name="sdv_plan")
    tier = models.CharField(max_length=8, choices=SiteRiskAssessment.Tier.choices)
    share = models.FloatField()
    first_subjects = models.PositiveIntegerField()
    counts = models.JSONField(default=dict, blank=True)
    reason = models.TextField(blank=True, help_text="Why the plan was (re)computed")
    updated_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    def __str__(self):
        return f"SDV plan of {self.site} ({self.tier}, {self.share:.0%})"


# Monitoring plans, monitors, visits and trips live in their own module (sdv/monitoring).
from sdv.monitoring.models import (  # noqa: E402, F401
    Monitor,
    MonitoringPlan,
    MonitoringTierOverride,
    MonitoringTrip,
    MonitoringVisit,
    VisitReport,
)
