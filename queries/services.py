"""Writes of the queries app: edit checks (versioned, audited), their generation from the study
metadata, and analyzer passes. A query's lifecycle is in queries.lifecycle."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from queries.checks import engine
from queries.checks.lab_limits import item_analyte
from queries.models import AnalyzerPass, EditCheck
from studies.audit import set_audit
from studies.models import ItemDefinition, Study, VisitDefinition

# What a rule checks; a change to any of these makes a new version of the rule.
_RULE_FIELDS = ("rule_type", "item_id", "params", "severity", "active")


def edit_check_save(*, check: EditCheck, actor, reason: str) -> EditCheck:
    """Validate and save `check` (new or changed), with a new version when what it checks
    changed. Refuses an invalid rule with ValidationError naming the reason."""
    if not (reason or "").strip():
        raise ValidationError({"reason": "A reason for the change is required."})
    check.full_clean()
    with transaction.atomic():
        if check.pk:
            stored = EditCheck.objects.select_for_update().get(pk=check.pk)
            if any(getattr(stored, f) != getattr(check, f) for f in _RULE_FIELDS):
                check.version = stored.version + 1
        check.updated_at = timezone.now()
        set_audit(check, actor=actor, reason=reason)
        check.save()
    return check


def _generated(study: Study) -> list[dict]:
    """The checks the study's metadata implies: RangeCheck -> range (hard), Mandatory ->
    required, CodeList -> codelist, date items -> no future date, known lab analytes ->
    physiological plausibility (and medical review of abnormal values), planned visit days with
    windows -> visit window."""
    wanted = []
    for item in ItemDefinition.objects.filter(study=study).select_related("form").order_by("order", "pk"):
        label = f"{item.label} ({item.oid})"[:200]
        numeric = item.data_type in (ItemDefinition.DataType.INTEGER, ItemDefinition.DataType.FLOAT)
        # A RangeCheck on a text item (ODM allows it) compares strings: not a range of values
        if numeric and (item.range_low is not None or item.range_high is not None):
            wanted.append({"code": f"RNG-{item.oid}", "name": f"{label}: within range", "rule_type": "range",
                           "item": item, "params": {"low": item.range_low, "high": item.range_high, "kind": "hard",
                                                    "units": item.units}, "source": EditCheck.Source.METADATA})
        if item.mandatory and item.form_id:
            wanted.append({"code": f"REQ-{item.oid}", "name": f"{label}: required", "rule_type": "required",
                           "item": item, "params": {}, "source": EditCheck.Source.METADATA})
        if item.codelist:
            wanted.append({"code": f"CL-{item.oid}", "name": f"{label}: in its codelist", "rule_type": "codelist",
                           "item": item, "params": {}, "source": EditCheck.Source.METADATA})
        if item.data_type in (ItemDefinition.DataType.DATE, ItemDefinition.DataType.DATETIME):
            wanted.append({"code": f"FUT-{item.oid}", "name": f"{label}: not in the future",
                           "rule_type": "future_date", "item": item, "params": {}, "source": EditCheck.Source.LIBRARY})
        analyte = item_analyte(item) if numeric else None
        if analyte is not None:
            wanted.append({"code": f"LAB-{item.oid}", "name": f"{label}: physiologically possible",
                           "rule_type": "lab_plausibility", "item": item, "params": {"analyte": analyte.key},
                           "source": EditCheck.Source.LIBRARY})
    windows = VisitDefinition.objects.filter(study=study, planned_day__isnull=False).exclude(
        window_before=0, window_after=0)
    if windows.exists():
        wanted.append({"code": "VISIT-WINDOW", "name": "Visits within their planned window", "item": None,
                       "rule_type": "visit_window", "params": {"reference": "day1"},
                       "source": EditCheck.Source.LIBRARY})
    return [{**w, "code": w["code"][:160]} for w in wanted]


def edit_checks_generate(*, study: Study, actor, reason: str) -> dict:
    """Create or update the study's generated checks (never those written for the study); a
    generated check the metadata no longer implies is deactivated, not deleted. Idempotent:
    unchanged metadata writes nothing."""
    counts = {"created": 0, "updated": 0, "deactivated": 0, "skipped": []}
    stored = {c.code: c for c in EditCheck.objects.filter(study=study).exclude(source=EditCheck.Source.MANUAL)}
    wanted = _generated(study)
    for spec in wanted:
        check = stored.get(spec["code"])
        try:
            # A rule the metadata implies but that cannot be checked (a codelist with no codes...)
            # is skipped with its reason: metadata never fails an import through its edit checks.
            if check is None:
                edit_check_save(check=EditCheck(study=study, **spec), actor=actor, reason=reason)
                counts["created"] += 1
                continue
            before = (check.name, check.rule_type, check.item_id, check.params, check.active)
            check.name, check.rule_type, check.item, check.active = spec["name"], spec["rule_type"], spec["item"], True
            check.params = {**check.params, **spec["params"]}
            # Normalises params, so an unchanged rule compares equal; only the rule's own
            # validation (no query per check): a changed one is fully validated when saved.
            check.clean()
            if (check.name, check.rule_type, check.item_id, check.params, check.active) != before:
                edit_check_save(check=check, actor=actor, reason=reason)
                counts["updated"] += 1
        except ValidationError as error:
            counts["skipped"].append({"code": spec["code"], "reason": "; ".join(
                message for messages in error.message_dict.values() for message in messages)})
    codes = {spec["code"] for spec in wanted}
    for code, check in stored.items():
        if code not in codes and check.active:
            check.active = False
            edit_check_save(check=check, actor=actor, reason=f"{reason}: no longer in the metadata")
            counts["deactivated"] += 1
    return counts


def analyzer_run(*, study: Study, actor, full: bool | None = None, threshold: float | None = None,
                 generate: bool = True) -> AnalyzerPass:
    """Generate the metadata checks (when asked) and run one analyzer pass."""
    if generate:
        edit_checks_generate(study=study, actor=actor, reason="Generated from the study metadata")
    return engine.analyzer_pass(study=study, actor=actor, full=full,
                                threshold=engine.DEFAULT_THRESHOLD if threshold is None else threshold)
