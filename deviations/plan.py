"""The deviation plan: what the protocol allows, as JSON (`import_deviation_plan FILE --study ID`).

Validated by a JSON schema (a bad file is refused with a message naming the key, and nothing is
stored), stored versioned and audited: an unchanged file (same canonical JSON) makes no new version.
Keys beyond the documented ones are allowed, at the top level and inside every section (a
sponsor's own notes, a visit's VISITNUM): they are stored and ignored. The documented keys are
validated (type, range, required), so a rule cannot be switched on with a value it cannot read.

A section that is absent switches its detector off. `data` (optional) names the study's items the
detectors read where they are not the SDTM / clindata names (see deviations.detectors.data)."""

import hashlib
import json

from django.core.exceptions import ValidationError
from django.db import transaction
from jsonschema import Draft202012Validator

from deviations.models import Deviation, DeviationPlan
from studies.audit import set_audit
from studies.models import Study

CATEGORIES = [c for c in Deviation.Category.values if c != Deviation.Category.OTHER]
# Unmapped categories default as ICH E3 would read them: these may significantly affect the
# reliability of the data or the subjects' safety and rights.
ICH_E3_IMPORTANT = {"informed_consent", "eligibility", "ip_dosing", "prohibited_medication", "safety_reporting"}

_ITEM = {"type": "string", "minLength": 1, "maxLength": 128}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "visits": {
            "type": "object", "minProperties": 1,
            "additionalProperties": {
                "type": "object", "required": ["day"],
                "properties": {"day": {"type": "integer", "not": {"const": 0}},
                               "before": {"type": "integer", "minimum": 0}, "after": {"type": "integer", "minimum": 0}},
            },
        },
        "consent": {
            "type": "object",
            "properties": {"before_first_visit": {"type": "boolean"}, "before_first_dose": {"type": "boolean"},
                           "required": {"type": "boolean"}},
        },
        "dosing": {
            "type": "object", "required": ["arms"],
            "properties": {"arms": {"type": "object", "minProperties": 1, "additionalProperties": {
                "type": "object", "required": ["doses"],
                "properties": {"doses": {"type": "array", "minItems": 1, "items": {"type": "number", "minimum": 0}},
                               "units": {"type": "string", "maxLength": 40}}}}},
        },
        "prohibited_medications": {
            "type": "array",
            "items": {"type": "object", "required": ["name"],
                      "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                                     "washout_days": {"type": "integer", "minimum": 0}}},
        },
        "eligibility": {"type": "object", "properties": {"criteria_not_met_is_deviation": {"type": "boolean"}}},
        "safety": {"type": "object", "required": ["report_within_days"],
                   "properties": {"report_within_days": {"type": "integer", "minimum": 0}}},
        "importance": {"type": "object", "propertyNames": {"enum": [*CATEGORIES, "other"]},
                       "additionalProperties": {"enum": Deviation.Importance.values}},
        "data": {
            "type": "object",
            "properties": {
                "exposure": {"type": "object", "properties": {"dose": _ITEM, "units": _ITEM, "start": _ITEM,
                                                              "end": _ITEM}},
                "con_meds": {"type": "object", "properties": {"decod": _ITEM, "term": _ITEM, "start": _ITEM,
                                                              "end": _ITEM}},
                "adverse_events": {"type": "object", "properties": {"serious": _ITEM, "onset": _ITEM,
                                                                    "reported": _ITEM}},
                "eligibility": {"type": "object",
                                "properties": {"item": _ITEM,
                                               "not_met": {"type": "array", "items": {"type": "string"}}}},
            },
        },
    },
}
_VALIDATOR = Draft202012Validator(SCHEMA)


class PlanInvalid(ValueError):
    """A deviation plan refused, with every problem as "key: message"."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def plan_validate(content) -> dict:
    """The plan, if valid; else PlanInvalid naming each offending key."""
    if not isinstance(content, dict):
        raise PlanInvalid(["(top level): a deviation plan is a JSON object"])
    problems = []
    for error in sorted(_VALIDATOR.iter_errors(content), key=lambda e: (list(map(str, e.path)), e.message)):
        if error.validator == "not" and list(error.path)[-1:] == ["day"]:
            problems.append(f"{_where(error.path)}: there is no study day 0 (day 1 is RFSTDTC, the day before is -1)")
        else:
            problems.append(f"{_where(error.path)}: {error.message}")
    names = [m.get("name", "").strip().upper() for m in content.get("prohibited_medications", []) or []
             if isinstance(m, dict) and isinstance(m.get("name"), str)]
    if len(names) != len(set(names)):
        problems.append("prohibited_medications: a drug is listed twice")
    if problems:
        raise PlanInvalid(problems)
    return content


def importance_of(plan: dict, category: str) -> str:
    mapped = (plan.get("importance") or {}).get(category)
    if mapped:
        return mapped
    return Deviation.Importance.IMPORTANT if category in ICH_E3_IMPORTANT else Deviation.Importance.NON_IMPORTANT


def canonical(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def plan_latest(*, study: Study) -> DeviationPlan | None:
    return DeviationPlan.objects.filter(study=study).order_by("-version").first()


def plan_import(*, study: Study, content, actor, reason: str, filename: str = "") -> tuple[DeviationPlan, bool]:
    """Store `content` as the study's next plan version unless it equals the latest one.
    Returns (plan in force, whether a version was created). Refuses an invalid plan (PlanInvalid)
    and a missing reason (ValidationError) before writing anything."""
    if not (reason or "").strip():
        raise ValidationError({"reason": "A reason for the new plan version is required."})
    plan_validate(content)
    digest = hashlib.sha256(canonical(content).encode()).hexdigest()
    with transaction.atomic():
        Study.objects.select_for_update().get(pk=study.pk)  # two imports of one study: one after the other
        latest = plan_latest(study=study)
        if latest is not None and latest.sha256 == digest:
            return latest, False
        plan = DeviationPlan(study=study, version=(latest.version + 1) if latest else 1, content=content,
                             sha256=digest, filename=filename[:255], reason=reason.strip(), created_by=actor)
        set_audit(plan, actor=actor, reason=reason.strip())
        plan.save()
    return plan, True
