"""`import_monitoring_plan FILE --study PROTOCOL_ID`: the monitoring plan as JSON, checked against
its schema and against the study (every site number must be one of its sites), then stored as a
new plan version in one transaction: monitors (accounts created as CRAs of the study when absent,
with no usable password), tier overrides with their reason, and the sites' city, country,
coordinates (and language and time zone when given), each write audited with the plan's reason.
A bad file is refused with a message naming the key, and nothing is stored.

    {"start": "2026-03-02", "horizon_weeks": 8,
     "frequency": {"high": {"on_site_every_weeks": 4},
                   "medium": {"on_site_every_weeks": 8, "remote_every_weeks": 4},
                   "low": {"remote_every_weeks": 8}},
     "on_site_days": 1,
     "monitors": [{"username": "cra.anna", "name": "Anna Berg",
                   "home": {"city": "Vienna", "lat": 48.21, "lon": 16.37},
                   "countries": ["AT", "CZ"], "days_per_week": 4}],
     "sites": {"701": {"city": "Graz", "country": "AT", "lat": 47.07, "lon": 15.44,
                       "tier": "high", "reason": "new PI"}}}

Optional keys beyond the issue's shape: `remote_visit_hours` (2), a monitor's
`remote_hours_per_week` (8) and `days_off` (dates), a site's `language` and `timezone`, and
`road_km` (a road distance matrix, km between "home:<username>" and site numbers). Other extra
keys are allowed and kept in the stored document.
"""

import datetime
import hashlib
import json
import zoneinfo
from decimal import Decimal

import jsonschema
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from sdv.monitoring.models import Monitor, MonitoringPlan, MonitoringTierOverride
from studies.audit import set_audit
from studies.models import Role, Site, Study, StudyMembership
from studies.services import membership_grant

MAX_BYTES = 5 * 1024 * 1024
_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
_WEEKS = {"type": "integer", "minimum": 1, "maximum": 104}
_LAT = {"type": "number", "minimum": -90, "maximum": 90}
_LON = {"type": "number", "minimum": -180, "maximum": 180}
_COUNTRY = {"type": "string", "pattern": "^[A-Z]{2}$"}
_TIER_FREQUENCY = {"type": "object", "properties": {"on_site_every_weeks": _WEEKS, "remote_every_weeks": _WEEKS}}
SCHEMA = {
    "type": "object",
    "required": ["start", "horizon_weeks", "frequency", "monitors", "sites"],
    "properties": {
        "start": _DATE,
        "horizon_weeks": {"type": "integer", "minimum": 1, "maximum": 104},
        "frequency": {"type": "object", "required": ["high", "medium", "low"],
                      "properties": {"high": _TIER_FREQUENCY, "medium": _TIER_FREQUENCY, "low": _TIER_FREQUENCY}},
        "on_site_days": {"type": "integer", "minimum": 1, "maximum": 5},
        "remote_visit_hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 40},
        "monitors": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["username", "name", "home", "countries", "days_per_week"],
            "properties": {
                "username": {"type": "string", "pattern": r"^[\w.@+-]{1,150}$"},
                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                "home": {"type": "object", "required": ["lat", "lon"],
                         "properties": {"city": {"type": "string", "maxLength": 128}, "lat": _LAT, "lon": _LON}},
                "countries": {"type": "array", "minItems": 1, "items": _COUNTRY, "uniqueItems": True},
                "days_per_week": {"type": "integer", "minimum": 0, "maximum": 5},
                "remote_hours_per_week": {"type": "number", "minimum": 0, "maximum": 60},
                "days_off": {"type": "array", "items": _DATE},
            }}},
        "sites": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object",
            "required": ["country", "lat", "lon"],
            "properties": {
                "city": {"type": "string", "maxLength": 128}, "country": _COUNTRY, "lat": _LAT, "lon": _LON,
                "tier": {"enum": ["low", "medium", "high"]}, "reason": {"type": "string", "maxLength": 1000},
                "language": {"type": "string", "pattern": "^[a-z]{2}$"}, "timezone": {"type": "string"},
            }}},
        "road_km": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {
            "type": "number", "minimum": 0}}},
    },
}


def _where(error: jsonschema.ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        return f"{path}.{missing}" if path else missing
    return path or "(the plan)"


def plan_parse(raw: bytes) -> dict:
    """The plan as a checked dict, or ValidationError({key: message}) naming the key at fault."""
    if len(raw) > MAX_BYTES:
        raise ValidationError({"file": f"the plan is larger than {MAX_BYTES // (1024 * 1024)} MiB"})
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ValidationError({"file": "the plan is not UTF-8 text"})
    except json.JSONDecodeError as exc:
        raise ValidationError({"file": f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"})
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        error = errors[0]
        raise ValidationError({_where(error): error.message})
    try:
        datetime.date.fromisoformat(document["start"])
    except ValueError:
        raise ValidationError({"start": f"{document['start']!r} is not a date (YYYY-MM-DD)"})
    seen = set()
    for i, monitor in enumerate(document["monitors"]):
        if monitor["username"] in seen:
            raise ValidationError({f"monitors[{i}].username": f"{monitor['username']!r} appears twice"})
        seen.add(monitor["username"])
        for j, day in enumerate(monitor.get("days_off", [])):
            try:
                datetime.date.fromisoformat(day)
            except ValueError:
                raise ValidationError({f"monitors[{i}].days_off[{j}]": f"{day!r} is not a date (YYYY-MM-DD)"})
    for number, site in document["sites"].items():
        if "timezone" in site and site["timezone"] not in zoneinfo.available_timezones():
            raise ValidationError({f"sites.{number}.timezone": f"{site['timezone']!r} is not an IANA time zone"})
    for tier, rule in document["frequency"].items():
        if tier in ("low", "medium", "high") and not rule:
            raise ValidationError({f"frequency.{tier}": "give on_site_every_weeks, remote_every_weeks or both"})
    return document


@transaction.atomic
def monitoring_plan_import(*, study: Study, raw: bytes, actor, filename: str = "") -> MonitoringPlan:
    document = plan_parse(raw)
    Study.objects.select_for_update().get(pk=study.pk)  # one import of a study at a time
    # ...and none while the plan in force is being scheduled or a visit moved (they read the
    # monitors and sites this import changes).
    MonitoringPlan.objects.select_for_update().filter(study=study).order_by("-version").first()
    sites = {site.number: site for site in Site.objects.filter(study=study)}
    unknown = [number for number in document["sites"] if number not in sites]
    if unknown:
        raise ValidationError({f"sites.{unknown[0]}": f"no site {unknown[0]} in study {study.protocol_id} "
                                                      f"(known: {', '.join(sorted(sites)[:20])})"})
    latest = MonitoringPlan.objects.filter(study=study).order_by("-version").first()
    version = (latest.version if latest else 0) + 1
    sha256 = hashlib.sha256(raw).hexdigest()
    reason = f"Monitoring plan v{version} ({filename or 'upload'}, sha256 {sha256[:12]})"
    plan = MonitoringPlan(study=study, version=version, start=datetime.date.fromisoformat(document["start"]),
                          horizon_weeks=document["horizon_weeks"], frequency=document["frequency"],
                          on_site_days=document.get("on_site_days", 1),
                          remote_visit_hours=document.get("remote_visit_hours", 2), document=document,
                          sha256=sha256, filename=filename[:255], imported_by=actor)
    plan.full_clean()
    set_audit(plan, actor=actor, reason=reason)
    plan.save()
    for number, spec in document["sites"].items():
        _site_update(sites[number], spec, actor=actor, reason=reason)
        if spec.get("tier"):
            override = MonitoringTierOverride(plan=plan, site=sites[number], tier=spec["tier"],
                                              reason=spec.get("reason", ""))
            set_audit(override, actor=actor, reason=reason)
            override.save()
    _monitors_update(study, document["monitors"], actor=actor, reason=reason)
    return plan


def _site_update(site: Site, spec: dict, *, actor, reason: str) -> None:
    values = {"city": spec.get("city", site.city), "country": spec["country"],
              "latitude": Decimal(str(round(spec["lat"], 5))), "longitude": Decimal(str(round(spec["lon"], 5)))}
    for key in ("language", "timezone"):
        if key in spec:
            values[key] = spec[key]
    if all(getattr(site, key) == value for key, value in values.items()):
        return
    for key, value in values.items():
        setattr(site, key, value)
    site.full_clean()
    set_audit(site, actor=actor, reason=reason)
    site.save()


def _monitors_update(study: Study, specs: list[dict], *, actor, reason: str) -> None:
    User = get_user_model()
    listed = set()
    for spec in specs:
        user = User.objects.filter(username=spec["username"]).first()
        if user is None:
            first, _, last = spec["name"].partition(" ")
            user = User(username=spec["username"], first_name=first[:150], last_name=last[:150])
            user.set_unusable_password()
            user.save()
        if not StudyMembership.objects.filter(user=user, study=study, role=Role.CRA).exists():
            membership_grant(user=user, study=study, role=Role.CRA, actor=actor)
        monitor = Monitor.objects.filter(study=study, user=user).first() or Monitor(study=study, user=user)
        monitor.name = spec["name"]
        monitor.home_city = spec["home"].get("city", "")
        monitor.home_latitude = Decimal(str(round(spec["home"]["lat"], 5)))
        monitor.home_longitude = Decimal(str(round(spec["home"]["lon"], 5)))
        monitor.countries = sorted(spec["countries"])
        monitor.days_per_week = spec["days_per_week"]
        monitor.remote_hours_per_week = spec.get("remote_hours_per_week", 8)
        monitor.days_off = sorted(spec.get("days_off", []))
        monitor.active = True
        monitor.full_clean()
        set_audit(monitor, actor=actor, reason=reason)
        monitor.save()
        listed.add(monitor.pk)
    for monitor in Monitor.objects.filter(study=study, active=True).exclude(pk__in=listed):
        monitor.active = False  # no longer in the plan: their planned visits move at the next planning
        set_audit(monitor, actor=actor, reason=f"{reason}: not in this plan")
        monitor.save()
