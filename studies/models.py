"""Study data as an EDC holds it: study, sites, subjects, the visit schedule, forms, items and
data points, plus who may see which site (memberships). Every regulated model is audited."""

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from studies.audit import AuditedManager, ReasonRequired


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone")


class Role(models.TextChoices):
    SPONSOR = "sponsor", "Sponsor / study manager"
    DATA_MANAGER = "data_manager", "Data manager"
    CRA = "cra", "CRA / monitor"
    SITE_COORDINATOR = "site_coordinator", "Site coordinator"
    INVESTIGATOR = "investigator", "Investigator (PI)"
    MEDICAL_MONITOR = "medical_monitor", "Medical monitor"
    AUDITOR = "auditor", "Auditor / QA"


# Roles bound to one site by their membership; the CRA is bound to sites by per-site grants.
SITE_ROLES = (Role.SITE_COORDINATOR, Role.INVESTIGATOR)
STUDY_WIDE_ROLES = (Role.SPONSOR, Role.DATA_MANAGER, Role.MEDICAL_MONITOR, Role.AUDITOR)


class Study(models.Model):
    class Status(models.TextChoices):
        SETUP = "setup", "Set-up"
        ACTIVE = "active", "Active"
        CLOSED = "closed", "Closed"

    protocol_id = models.CharField(max_length=64, unique=True)
    oid = models.CharField("ODM OID", max_length=128, unique=True, null=True, blank=True)
    name = models.CharField(max_length=255)
    sponsor = models.CharField(max_length=255, blank=True)
    phase = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["protocol_id"]
        verbose_name_plural = "studies"

    def __str__(self):
        return f"{self.protocol_id}: {self.name}"


class Site(models.Model):
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="sites")
    number = models.CharField(max_length=32)
    name = models.CharField(max_length=255)
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2")
    city = models.CharField(max_length=128, blank=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    language = models.CharField(max_length=8, default="en", help_text="ISO 639-1, the site's working language")
    latitude = models.DecimalField(max_digits=8, decimal_places=5, null=True, blank=True)
    longitude = models.DecimalField(max_digits=8, decimal_places=5, null=True, blank=True)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "number"]
        constraints = [
            models.UniqueConstraint(fields=["study", "number"], name="site_number_unique_in_study"),
            models.CheckConstraint(condition=Q(latitude__gte=-90, latitude__lte=90) | Q(latitude__isnull=True),
                                   name="site_latitude_range"),
            models.CheckConstraint(condition=Q(longitude__gte=-180, longitude__lte=180) | Q(longitude__isnull=True),
                                   name="site_longitude_range"),
        ]
        permissions = [("monitor_site", "Monitor this site (CRA assignment)")]

    def __str__(self):
        return f"{self.number} {self.name}"


class StudyMembership(models.Model):
    """A user's role in a study. Site coordinators and investigators are bound to one site here;
    a CRA's sites are per-object grants (guardian `studies.monitor_site`)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=32, choices=Role.choices)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True, related_name="memberships")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "user__username", "role"]
        constraints = [
            models.UniqueConstraint(fields=["user", "study", "role", "site"], name="membership_unique"),
            models.UniqueConstraint(fields=["user", "study", "role"], condition=Q(site__isnull=True),
                                    name="membership_unique_study_wide"),
            models.CheckConstraint(
                condition=(Q(role__in=SITE_ROLES) & Q(site__isnull=False))
                | (~Q(role__in=SITE_ROLES) & Q(site__isnull=True)),
                name="membership_site_iff_site_role",
            ),
        ]

    def clean(self):
        if self.role in SITE_ROLES and self.site_id is None:
            raise ValidationError({"site": "A site coordinator or investigator belongs to one site."})
        if self.role not in SITE_ROLES and self.site_id is not None:
            raise ValidationError({"site": "Only site roles are bound to a site; grant CRAs sites per object."})
        if self.site_id and self.site.study_id != self.study_id:
            raise ValidationError({"site": "The site belongs to another study."})

    def __str__(self):
        where = f" @ {self.site.number}" if self.site_id else ""
        return f"{self.user} - {self.get_role_display()} in {self.study.protocol_id}{where}"


class Subject(models.Model):
    class Status(models.TextChoices):
        SCREENING = "screening", "Screening"
        SCREEN_FAILED = "screen_failed", "Screen failure"
        ENROLLED = "enrolled", "Enrolled"
        COMPLETED = "completed", "Completed"
        DISCONTINUED = "discontinued", "Discontinued"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="subjects")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="subjects")
    subject_id = models.CharField("pseudonymous subject id", max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCREENING)
    consent_date = models.DateField(null=True, blank=True)
    enrolment_date = models.DateField(null=True, blank=True)
    # The span of participation as the EDC records it (time on study for the KRIs); unknown for
    # sources that do not give it (then enrolment to the last visit stands in)
    first_participation_date = models.DateField(null=True, blank=True)
    last_participation_date = models.DateField(null=True, blank=True)
    # What the deviation detectors read: study day 1 (SDTM RFSTDTC, the first dose) and the arm
    # (SDTM ARMCD) whose doses the protocol allows; empty where the source does not give them.
    first_dose_date = models.DateField(null=True, blank=True, help_text="First dose: study day 1 (SDTM RFSTDTC)")
    arm = models.CharField(max_length=20, blank=True, help_text="Planned arm code (SDTM ARMCD)")

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "subject_id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "subject_id"], name="subject_id_unique_in_study"),
        ]

    def clean(self):
        if self.site_id and self.study_id and self.site.study_id != self.study_id:
            raise ValidationError({"site": "The site belongs to another study."})
        if self.consent_date and self.enrolment_date and self.enrolment_date < self.consent_date:
            raise ValidationError({"enrolment_date": "Enrolment cannot precede informed consent."})

    def __str__(self):
        return self.subject_id


class VisitDefinition(models.Model):
    """A planned visit of the schedule (an ODM StudyEventDef / SDTM TV row)."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="visit_definitions")
    oid = models.CharField(max_length=128)
    name = models.CharField(max_length=255)
    order = models.PositiveIntegerField(default=0)
    planned_day = models.IntegerField(null=True, blank=True, help_text="Planned study day; empty if unscheduled")
    window_before = models.PositiveIntegerField(default=0, help_text="Days allowed before the planned day")
    window_after = models.PositiveIntegerField(default=0, help_text="Days allowed after the planned day")
    repeating = models.BooleanField(default=False)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "order", "planned_day"]
        constraints = [models.UniqueConstraint(fields=["study", "oid"], name="visit_definition_oid_unique")]

    def __str__(self):
        return self.name


class SubjectVisit(models.Model):
    """A visit that happened (or is expected) for one subject."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="subject_visits")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="visits")
    definition = models.ForeignKey(VisitDefinition, on_delete=models.PROTECT, related_name="subject_visits")
    repeat_key = models.CharField(max_length=32, default="1")
    actual_date = models.DateField(null=True, blank=True)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["subject", "definition__order", "repeat_key"]
        constraints = [
            models.UniqueConstraint(fields=["subject", "definition", "repeat_key"], name="subject_visit_unique"),
        ]

    def __str__(self):
        suffix = f" ({self.repeat_key})" if self.repeat_key != "1" else ""
        return f"{self.subject} {self.definition}{suffix}"


class FormDefinition(models.Model):
    """A CRF (an ODM FormDef)."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="form_definitions")
    oid = models.CharField(max_length=128)
    name = models.CharField(max_length=255)
    order = models.PositiveIntegerField(default=0)
    repeating = models.BooleanField(default=False)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "order", "oid"]
        constraints = [models.UniqueConstraint(fields=["study", "oid"], name="form_definition_oid_unique")]

    def __str__(self):
        return self.name


class ItemDefinition(models.Model):
    """A field of a CRF (an ODM ItemDef) with the metadata edit checks and SDV plans read."""

    class DataType(models.TextChoices):
        TEXT = "text", "Text"
        INTEGER = "integer", "Integer"
        FLOAT = "float", "Float"
        DATE = "date", "Date"
        DATETIME = "datetime", "Date and time"
        TIME = "time", "Time"
        BOOLEAN = "boolean", "Boolean"
        PARTIAL_DATE = "partialDate", "Partial date"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="item_definitions")
    form = models.ForeignKey(FormDefinition, on_delete=models.PROTECT, related_name="items", null=True, blank=True)
    oid = models.CharField(max_length=128)
    label = models.CharField(max_length=255)
    data_type = models.CharField(max_length=16, choices=DataType.choices, default=DataType.TEXT)
    units = models.CharField(max_length=64, blank=True)
    codelist = models.JSONField(default=list, blank=True, help_text='[{"code": "1", "decode": "Yes"}, ...]')
    range_low = models.FloatField(null=True, blank=True)
    range_high = models.FloatField(null=True, blank=True)
    mandatory = models.BooleanField(default=False)
    critical = models.BooleanField(default=False, help_text="Critical data: primary endpoint, eligibility, "
                                                            "consent, SAEs, dosing")
    code = models.CharField(max_length=64, blank=True, help_text="Standard code, e.g. a LOINC code for a lab test")
    code_system = models.CharField(max_length=128, blank=True, help_text="e.g. http://loinc.org")
    order = models.PositiveIntegerField(default=0)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "form", "order", "oid"]
        constraints = [
            models.UniqueConstraint(fields=["study", "oid"], name="item_definition_oid_unique"),
            models.CheckConstraint(
                condition=Q(range_low__isnull=True)
                | Q(range_high__isnull=True)
                | Q(range_low__lte=models.F("range_high")),
                name="item_range_ordered",
            ),
        ]

    def clean(self):
        if not isinstance(self.codelist, list) or any(
            not isinstance(entry, dict) or "code" not in entry for entry in self.codelist
        ):
            raise ValidationError({"codelist": 'Expected a list of {"code": ..., "decode": ...} entries.'})

    def __str__(self):
        return f"{self.oid} ({self.label})"


class DataPoint(models.Model):
    """One value of one item for one subject at one visit: the unit of EDC data.

    A change to an existing data point must carry a reason (Part 11); save() refuses one without.
    """

    class SdvState(models.TextChoices):
        NOT_REQUIRED = "not_required", "Not required"
        TO_VERIFY = "to_verify", "To verify"
        VERIFIED = "verified", "Verified"
        DISCREPANCY = "discrepancy", "Discrepancy"

    # study_id is a copy of subject.study_id, kept for the (study, item) index the study-wide reads
    # use. Its integrity comes from the subject, whose own study FK is enforced; PROTECT still holds
    # in the ORM. The subject, visit, form and item references are enforced in the database by
    # set-based triggers (studies/integrity.py), not by foreign key constraints: those check each
    # row's references one lookup at a time, which cost more than writing the rows of a big import.
    # Indexes: (study, item) serves study-wide and per-item reads, the unique (subject, ...) those by
    # subject, and visit those by visit; deleting a form or an item (a metadata change, rare) scans.
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="data_points", db_constraint=False,
                              db_index=False)
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="data_points", db_constraint=False,
                                db_index=False)
    visit = models.ForeignKey(SubjectVisit, on_delete=models.PROTECT, related_name="data_points",
                              db_constraint=False)
    form = models.ForeignKey(FormDefinition, on_delete=models.PROTECT, related_name="data_points",
                             db_constraint=False, db_index=False)
    item = models.ForeignKey(ItemDefinition, on_delete=models.PROTECT, related_name="data_points",
                             db_constraint=False, db_index=False)
    repeat_key = models.CharField(max_length=32, default="1", help_text="Keeps repeating item groups apart")
    raw_value = models.TextField(blank=True)
    value_number = models.FloatField(null=True, blank=True)
    value_date = models.DateField(null=True, blank=True)
    entered_by = models.CharField(max_length=150, blank=True, help_text="User in the source EDC")
    entered_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    sdv_state = models.CharField(max_length=16, choices=SdvState.choices, default=SdvState.NOT_REQUIRED)
    # Flagged, never deleted, when a full EDC snapshot no longer contains the value.
    missing_in_source = models.BooleanField(default=False)
    # Lab results carry their own units and reference range (they vary by lab and by sample).
    units = models.CharField(max_length=64, blank=True)
    normal_low = models.FloatField(null=True, blank=True)
    normal_high = models.FloatField(null=True, blank=True)
    abnormal_flag = models.CharField(max_length=8, blank=True, help_text="HL7 OBX-8 / FHIR interpretation code")
    toxicity_grade = models.PositiveSmallIntegerField(null=True, blank=True, help_text="CTCAE grade")
    collected_at = models.DateTimeField(null=True, blank=True)

    objects = AuditedManager()
    # The history is read by data point (id), by subject (ODM export) and by date and user (audit
    # review); an index on its other foreign keys would only slow every import down.
    # Its user reference is enforced by the triggers of studies/integrity.py, like the data point's.
    history = HistoricalRecords(no_db_index=["study", "visit", "form", "item"], user_db_constraint=False)

    class Meta:
        ordering = ["subject", "visit", "form", "item", "repeat_key"]
        constraints = [
            models.UniqueConstraint(fields=["subject", "visit", "form", "item", "repeat_key"],
                                    name="data_point_unique"),
        ]
        indexes = [models.Index(fields=["study", "item"])]

    def save(self, *args, **kwargs):
        # Invariant of the audit trail, not business logic: an existing value never changes silently.
        if not self._state.adding and not (getattr(self, "_change_reason", None) or "").strip():
            raise ReasonRequired("Changing a data point requires a reason for change.")
        super().save(*args, **kwargs)

    def __str__(self):
        return f"{self.subject} / {self.visit.definition} / {self.item.oid} = {self.raw_value!r}"


class Import(models.Model):
    """One run of an importer (a file, a vendor pull or a webhook): what, from where, by whom, with
    what result. Written outside the import's own transaction so a failure is still recorded."""

    class Source(models.TextChoices):
        ODM = "odm", "CDISC ODM"
        SDTM = "sdtm", "SDTM (SAS transport)"
        CLINDATA = "clindata", "clindata tables"
        HL7 = "hl7", "HL7 v2"
        FHIR = "fhir", "FHIR R4"
        RAVE = "rave", "Medidata Rave"
        REDCAP = "redcap", "REDCap"
        VEEVA = "veeva", "Veeva Vault CDMS"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="imports", null=True, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    filename = models.CharField(max_length=255, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    file_size = models.BigIntegerField(null=True, blank=True)
    full_snapshot = models.BooleanField(default=False, help_text="Values absent from a full snapshot are flagged")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done")
    counts = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["study", "-created_at"])]

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def __str__(self):
        return f"Import {self.pk} ({self.get_source_display()}, {self.get_status_display()})"


class SourceAuditRecord(models.Model):
    """The source system's own audit trail (ODM AuditRecord, OpenClinica audit log): who changed
    what and when in the EDC. Kept as evidence exactly as received; never edited."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="source_audit_records")
    source_import = models.ForeignKey(Import, on_delete=models.PROTECT, related_name="audit_records")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    data_point = models.ForeignKey(DataPoint, on_delete=models.CASCADE, null=True, blank=True,
                                   related_name="source_audit_records")
    item_oid = models.CharField(max_length=128, blank=True)
    event = models.CharField(max_length=128, blank=True, help_text="e.g. 'Item data value updated'")
    user_name = models.CharField(max_length=255, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)
    reason = models.TextField(blank=True)
    location = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [models.Index(fields=["study", "subject"])]

    def __str__(self):
        return f"{self.event or 'audit'} by {self.user_name} at {self.occurred_at}"


class EdcConnection(models.Model):
    """A study's link to a vendor EDC: where it is, which environment variables hold its
    credentials (never the credentials themselves), and when it is next pulled."""

    class Vendor(models.TextChoices):
        RAVE = "rave", "Medidata Rave"
        REDCAP = "redcap", "REDCap"
        VEEVA = "veeva", "Veeva Vault CDMS"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="edc_connections")
    vendor = models.CharField(max_length=16, choices=Vendor.choices)
    base_url = models.URLField(help_text="e.g. https://innovate.mdsol.com, https://redcap.example.org/api/, "
                                         "https://example.veevavault.com")
    remote_study = models.CharField(max_length=255, blank=True,
                                    help_text="The study in the EDC: Rave 'Project(Env)', Vault study name")
    credentials_env = models.CharField(
        max_length=64, help_text="Prefix of the environment variables holding the credentials, e.g. "
                                 "TRIALOPS_EDC_ACME (reads ACME_USERNAME, _PASSWORD or _PASSWORD_FILE, _TOKEN, "
                                 "_WEBHOOK_SECRET)")
    enabled = models.BooleanField(default=True)
    sync_interval_minutes = models.PositiveIntegerField(default=60)
    last_synced_at = models.DateTimeField(null=True, blank=True, help_text="Start of the last successful pull")
    # A claimed sync holds this lease; a worker that died lets the next one take over after it.
    sync_lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "vendor", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(sync_interval_minutes__gte=1), name="edc_sync_interval_positive"),
            models.CheckConstraint(condition=Q(credentials_env__regex=r"^TRIALOPS_EDC_[A-Z0-9_]+$"),
                                   name="edc_credentials_env_is_a_variable_prefix"),
        ]

    def __str__(self):
        return f"{self.get_vendor_display()} for {self.study.protocol_id}"


class WebhookDelivery(models.Model):
    """One accepted "data changed" notification from an EDC. The unique delivery id makes a
    redelivery a no-op; the unique nonce per connection refuses a replayed request."""

    connection = models.ForeignKey(EdcConnection, on_delete=models.CASCADE, related_name="webhook_deliveries")
    delivery_id = models.CharField(max_length=128, unique=True)
    nonce = models.CharField(max_length=128)
    signed_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["connection", "nonce"], name="webhook_nonce_unique")]

    def __str__(self):
        return f"Webhook {self.delivery_id} ({self.connection_id})"


class IdempotencyKey(models.Model):
    """One API POST made with an Idempotency-Key header, per account (config/idempotency.py): its
    request's fingerprint and, once answered with success, the answer to replay for 24 hours.
    Not regulated data: the write it guards is audited where it happens."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="sha256 of method, path, query and body")
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=2000)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="null while in progress")
    response_body = models.BinaryField(default=b"", blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_created")]

    def __str__(self):
        return f"Idempotency-Key {self.key} ({self.user_id})"
