"""Monitoring plans, monitors, visits, trips and visit reports (the sdv app's models; see
sdv/monitoring/__init__.py). Every regulated row is audited (simple-history: who, when, why)."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from studies.audit import AuditedManager
from studies.models import Site, Study

TIERS = (("low", "Low"), ("medium", "Medium"), ("high", "High"))


class MonitoringPlan(models.Model):
    """One imported version of a study's monitoring plan (the JSON file as given, and its parts the
    scheduler reads). A new import is a new version; the latest one is in force."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="monitoring_plans")
    version = models.PositiveIntegerField()
    start = models.DateField()
    horizon_weeks = models.PositiveIntegerField()
    frequency = models.JSONField(help_text='Per tier: {"high": {"on_site_every_weeks": 4}, ...}')
    on_site_days = models.PositiveSmallIntegerField(default=1, help_text="Days one on-site visit takes")
    remote_visit_hours = models.FloatField(default=2, help_text="Hours one remote visit takes of a monitor's "
                                                                "weekly remote hours")
    document = models.JSONField(help_text="The plan file as imported")
    sha256 = models.CharField(max_length=64)
    filename = models.CharField(max_length=255, blank=True)
    imported_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    imported_at = models.DateTimeField(default=timezone.now)
    last_result = models.JSONField(default=dict, blank=True,
                                   help_text="Figures of the last scheduling: travel, naive travel, solver time")

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "-version"]
        constraints = [models.UniqueConstraint(fields=["study", "version"], name="monitoring_plan_version_unique")]

    def __str__(self):
        return f"Monitoring plan v{self.version} of {self.study.protocol_id}"


class Monitor(models.Model):
    """A CRA as the monitoring plan describes them: home base, the countries they may work in,
    on-site capacity (days per ISO week), weekly remote hours and days off."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="monitors")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="monitor_roles")
    name = models.CharField(max_length=255)
    home_city = models.CharField(max_length=128, blank=True)
    home_latitude = models.DecimalField(max_digits=8, decimal_places=5)
    home_longitude = models.DecimalField(max_digits=8, decimal_places=5)
    countries = models.JSONField(default=list, help_text="ISO 3166-1 alpha-2 codes where the monitor may work")
    days_per_week = models.PositiveSmallIntegerField(default=4)
    remote_hours_per_week = models.FloatField(default=8)
    days_off = models.JSONField(default=list, blank=True, help_text="Dates (YYYY-MM-DD) the monitor is away")
    active = models.BooleanField(default=True, help_text="In the plan in force")

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "user__username"]
        constraints = [models.UniqueConstraint(fields=["study", "user"], name="monitor_unique_in_study")]

    @property
    def username(self) -> str:
        return self.user.username

    def __str__(self):
        return f"{self.name} ({self.user.username})"


class MonitoringTierOverride(models.Model):
    """A site's tier set by the monitoring plan instead of the latest risk assessment, with why."""

    plan = models.ForeignKey(MonitoringPlan, on_delete=models.PROTECT, related_name="tier_overrides")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="monitoring_tier_overrides")
    tier = models.CharField(max_length=8, choices=TIERS)
    reason = models.TextField(blank=True)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["plan", "site"], name="tier_override_unique_in_plan")]

    def __str__(self):
        return f"{self.site.number}: {self.tier} ({self.reason})"


class MonitoringTrip(models.Model):
    """Consecutive on-site days of one monitor: home -> sites in date order -> home, with overnight
    stays between. Derived from the visits at each planning (and after each accepted move)."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="monitoring_trips")
    monitor = models.ForeignKey(Monitor, on_delete=models.PROTECT, related_name="trips")
    start_date = models.DateField()
    end_date = models.DateField()
    travel_km = models.FloatField(default=0)

    objects = AuditedManager()
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "monitor", "start_date"]

    def __str__(self):
        return f"Trip {self.pk} of {self.monitor} {self.start_date}..{self.end_date} ({self.travel_km:.0f} km)"


class MonitoringVisit(models.Model):
    class Kind(models.TextChoices):
        ON_SITE = "on_site", "On-site"
        REMOTE = "remote", "Remote"

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        CONFIRMED = "confirmed", "Confirmed"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="monitoring_visits")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="monitoring_visits")
    monitor = models.ForeignKey(Monitor, on_delete=models.PROTECT, related_name="visits")
    date = models.DateField(help_text="First day of the visit")
    days = models.PositiveSmallIntegerField(default=1, help_text="Days on site (the plan's on_site_days)")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PLANNED)
    trip = models.ForeignKey(MonitoringTrip, on_delete=models.SET_NULL, null=True, blank=True, related_name="visits")
    travel_km = models.FloatField(default=0, help_text="The visit's leg of its trip (the last visit also carries "
                                                       "the way home)")
    reason = models.TextField(blank=True, help_text="Why this visit: tier, frequency, risk change")
    locked = models.BooleanField(default=False, help_text="Moved by a person: re-planning keeps it where it is")
    plan = models.ForeignKey(MonitoringPlan, on_delete=models.PROTECT, related_name="visits")
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditedManager()
    history = HistoricalRecords()

    KEPT = (Status.CONFIRMED, Status.DONE)

    class Meta:
        ordering = ["date", "monitor_id", "site_id"]
        indexes = [models.Index(fields=["study", "date"]), models.Index(fields=["monitor", "date"])]
        constraints = [models.CheckConstraint(condition=Q(kind="on_site") | Q(trip__isnull=True, travel_km=0),
                                              name="remote_visit_has_no_trip")]

    def clean(self):
        if self.site_id and self.study_id and self.site.study_id != self.study_id:
            raise ValidationError({"site": "The site belongs to another study."})

    def __str__(self):
        return f"{self.get_kind_display()} visit of site {self.site.number} on {self.date} ({self.status})"


class VisitReport(models.Model):
    """The monitoring visit report a CRA writes for one visit, with the site's SDV progress as it
    stood when the report was saved."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SUBMITTED = "submitted", "Submitted"

    visit = models.OneToOneField(MonitoringVisit, on_delete=models.PROTECT, related_name="report")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    attendees = models.TextField(blank=True)
    summary = models.TextField(blank=True)
    findings = models.TextField(blank=True)
    actions = models.TextField(blank=True, help_text="Action items for the site, with due dates")
    sdv_progress = models.JSONField(default=dict, blank=True, help_text="The site's SDV progress when saved")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    updated_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)

    objects = AuditedManager()
    history = HistoricalRecords()

    def __str__(self):
        return f"Report of {self.visit} ({self.status})"
