"""The rule types of edit checks: what each one's parameters are, how it is checked when saved,
and the properties the analyzer derives from it (category, base severity, base confidence).

How each type is evaluated lives in queries.checks.evaluate; this module only validates, so that
saving a rule (admin, API, generation on import) refuses an invalid one with the reason."""

from dataclasses import dataclass

from queries.checks import expression as expression_language
from queries.models import EditCheck, Query
from studies.models import FormDefinition, ItemDefinition, VisitDefinition

T = EditCheck.RuleType
C = Query.Category
S = Query.Severity
DATE_ANCHORS = ("consent", "enrolment", "visit", "item")


class RuleInvalid(ValueError):
    """A rule whose definition cannot be checked: the message says why."""


@dataclass(frozen=True)
class RuleProperties:
    category: str
    severity: str
    confidence: float  # how often a finding of this rule is a real data error, before history
    row_local: bool  # depends on its own data point only (incremental: only changed points)


PROPERTIES = {
    T.REQUIRED: RuleProperties(C.MISSING, S.MAJOR, 0.97, False),
    T.RANGE: RuleProperties(C.RANGE, S.MAJOR, 0.99, True),  # soft ranges: see confidence_base()
    T.CODELIST: RuleProperties(C.RANGE, S.MINOR, 0.97, True),
    T.DATE_ORDER: RuleProperties(C.INCONSISTENCY, S.MAJOR, 0.95, False),
    T.DATE_WINDOW: RuleProperties(C.VISIT_PROTOCOL, S.MAJOR, 0.9, False),
    T.VISIT_WINDOW: RuleProperties(C.VISIT_PROTOCOL, S.MAJOR, 0.95, False),
    T.FUTURE_DATE: RuleProperties(C.INCONSISTENCY, S.MAJOR, 0.99, True),
    T.CONSISTENCY: RuleProperties(C.INCONSISTENCY, S.MAJOR, 0.9, False),
    T.LAB_PLAUSIBILITY: RuleProperties(C.RANGE, S.MAJOR, 0.98, True),
    T.DUPLICATE: RuleProperties(C.DUPLICATE, S.MINOR, 0.9, False),
    T.EXPRESSION: RuleProperties(C.INCONSISTENCY, S.MAJOR, 0.9, False),
}
SOFT_RANGE_CONFIDENCE = 0.75


def confidence_base(check: EditCheck) -> float:
    if "confidence" in check.params:
        return float(check.params["confidence"])
    if check.rule_type == T.RANGE and check.params.get("kind") == "soft":
        return SOFT_RANGE_CONFIDENCE
    return PROPERTIES[check.rule_type].confidence


def category_of(check: EditCheck) -> str:
    return check.params.get("category") or PROPERTIES[check.rule_type].category


def rule_validate(check: EditCheck) -> dict:
    """The check's params, normalised; raises RuleInvalid with the reason."""
    if check.rule_type not in PROPERTIES:
        raise RuleInvalid(f"Unknown rule type {check.rule_type!r}.")
    if not isinstance(check.params, dict):
        raise RuleInvalid("params must be an object.")
    params = dict(check.params)
    if "confidence" in params and not _is_number(params["confidence"], 0, 1):
        raise RuleInvalid("confidence must be a number from 0 to 1.")
    if "category" in params and params["category"] not in C.values:
        raise RuleInvalid(f"category must be one of {', '.join(C.values)}.")
    validator = _VALIDATORS.get(check.rule_type)
    if validator:
        validator(check, params)
    return params


def _is_number(value, low=None, high=None) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _item(check: EditCheck, *, types: tuple[str, ...] = ()) -> ItemDefinition:
    if check.item_id is None:
        raise RuleInvalid(f"A {check.get_rule_type_display().lower()} rule needs an item.")
    if types and check.item.data_type not in types:
        raise RuleInvalid(f"Item {check.item.oid} is of type {check.item.data_type}; "
                          f"this rule needs {' or '.join(types)}.")
    return check.item


def _item_oid(check: EditCheck, oid, what: str, *, types: tuple[str, ...] = ()) -> ItemDefinition:
    if not isinstance(oid, str) or not oid:
        raise RuleInvalid(f"{what} must name an item OID.")
    item = ItemDefinition.objects.filter(study_id=check.study_id, oid=oid).first()
    if item is None:
        raise RuleInvalid(f"{what}: no item {oid!r} in this study.")
    if types and item.data_type not in types:
        raise RuleInvalid(f"{what}: item {oid} is of type {item.data_type}; this rule needs {' or '.join(types)}.")
    return item


def _form_oid(check: EditCheck, oid, what: str) -> FormDefinition:
    form = FormDefinition.objects.filter(study_id=check.study_id, oid=oid).first() if isinstance(oid, str) else None
    if form is None:
        raise RuleInvalid(f"{what}: no form {oid!r} in this study.")
    return form


def _visit_oids(check: EditCheck, oids, what: str) -> None:
    if not isinstance(oids, list) or not all(isinstance(o, str) for o in oids):
        raise RuleInvalid(f"{what} must be a list of visit OIDs.")
    known = set(VisitDefinition.objects.filter(study_id=check.study_id, oid__in=oids).values_list("oid", flat=True))
    unknown = sorted(set(oids) - known)
    if unknown:
        raise RuleInvalid(f"{what}: no visit {', '.join(unknown)} in this study.")


def _required(check, params):
    _item(check)
    if "visits" in params:
        _visit_oids(check, params["visits"], "visits")


def _range(check, params):
    _item(check, types=("integer", "float"))
    low, high = params.get("low"), params.get("high")
    if low is None and high is None:
        raise RuleInvalid("A range needs low, high or both.")
    for name, value in (("low", low), ("high", high)):
        if value is not None and not _is_number(value):
            raise RuleInvalid(f"{name} must be a number.")
    if low is not None and high is not None and low > high:
        raise RuleInvalid(f"Impossible range: low {low} is above high {high}.")
    params.setdefault("kind", "hard")
    if params["kind"] not in ("hard", "soft"):
        raise RuleInvalid("kind must be hard (impossible values) or soft (unusual values).")
    params.setdefault("units", check.item.units)


def _codelist(check, params):
    item = _item(check)
    codes = params.get("codes", [entry.get("code") for entry in item.codelist if isinstance(entry, dict)])
    if not isinstance(codes, list) or not codes or not all(isinstance(c, str | int | float) for c in codes):
        raise RuleInvalid(f"No codes to check against: item {item.oid} has no codelist and params give no codes.")
    params["codes"] = [str(c) for c in codes]


def _days(params, name):
    value = params.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise RuleInvalid(f"{name} must be a whole number of days.")
    return value


def _date_rule(check, params):
    _item(check, types=("date", "datetime"))
    anchor = params.get("anchor")
    if anchor not in DATE_ANCHORS:
        raise RuleInvalid(f"anchor must be one of {', '.join(DATE_ANCHORS)}.")
    if anchor == "item":
        _item_oid(check, params.get("anchor_item"), "anchor_item", types=("date", "datetime"))
    if anchor == "visit":
        _visit_oids(check, [params.get("anchor_visit")] if params.get("anchor_visit") else None, "anchor_visit")
    low, high = _days(params, "min_days"), _days(params, "max_days")
    if check.rule_type == T.DATE_ORDER:
        # "on or after" the anchor unless the rule says "on or before"
        params.setdefault("order", "after")
        if params["order"] not in ("after", "before"):
            raise RuleInvalid("order must be after or before.")
    elif low is None and high is None:
        raise RuleInvalid("A date window needs min_days, max_days or both.")
    if low is not None and high is not None and low > high:
        raise RuleInvalid(f"Impossible window: min_days {low} is after max_days {high}.")


def _visit_window(check, params):
    params.setdefault("reference", "day1")
    if params["reference"] not in ("day1", "enrolment", "consent"):
        raise RuleInvalid("reference must be day1 (the visit planned on day 1), enrolment or consent.")
    if "visits" in params:
        _visit_oids(check, params["visits"], "visits")
    default = _days(params, "default_window")
    if default is not None and default < 0:
        raise RuleInvalid("default_window must not be negative.")


def _future_date(check, params):
    _item(check, types=("date", "datetime"))


def _consistency(check, params):
    when, require = params.get("when"), params.get("require")
    if not isinstance(when, dict) or not isinstance(require, dict):
        raise RuleInvalid('A consistency rule needs "when" {"item", "in"} and "require" {"form"} or {"item"}.')
    _item_oid(check, when.get("item"), "when.item")
    if not isinstance(when.get("in"), list) or not when["in"]:
        raise RuleInvalid("when.in must list the values that trigger the rule.")
    when["in"] = [str(v) for v in when["in"]]
    if "form" in require:
        _form_oid(check, require["form"], "require.form")
    elif "item" in require:
        _item_oid(check, require["item"], "require.item")
    else:
        raise RuleInvalid('require must name a "form" or an "item" that must be present.')
    # record: the required data must be in the same record (the SAE form of this AE, repeat for repeat)
    params.setdefault("scope", "subject")
    if params["scope"] not in ("subject", "visit", "record"):
        raise RuleInvalid("scope must be subject, visit or record.")


def _lab_plausibility(check, params):
    from queries.checks.lab_limits import analyte_for, item_analyte  # noqa: PLC0415 (a table, loaded when needed)

    item = _item(check, types=("integer", "float"))
    key = params.get("analyte")
    analyte = analyte_for(key) if key else item_analyte(item)
    if analyte is None:
        raise RuleInvalid(f"No physiological limits known for {key or item.label!r}; name an analyte.")
    params["analyte"] = analyte.key
    params.setdefault("medical_review", True)


def _duplicate(check, params):
    if "form" in params:
        _form_oid(check, params["form"], "form")
        keys = params.get("keys")
        if not isinstance(keys, list) or not keys:
            raise RuleInvalid("keys must list the items that make two records the same (e.g. term and start date).")
        for oid in keys:
            _item_oid(check, oid, "keys")
    else:
        _item(check)  # the same subject, visit and item recorded twice


def _expression(check, params):
    text = params.get("expression")
    if not isinstance(text, str) or not text.strip():
        raise RuleInvalid("An expression rule needs an expression.")
    try:
        parsed = expression_language.parse(text)
    except expression_language.ExpressionError as error:
        raise RuleInvalid(f"Bad expression: {error}") from error
    oids = parsed.variables
    known = set(ItemDefinition.objects.filter(study_id=check.study_id, oid__in=oids).values_list("oid", flat=True))
    unknown = [oid for oid in oids if oid not in known]
    if unknown:
        raise RuleInvalid(f"Bad expression: no item {', '.join(unknown)} in this study.")
    if check.item_id is None and oids:
        raise RuleInvalid("Name the item the expression is about (the query goes to its data point).")
    params.setdefault("scope", "visit")
    if params["scope"] not in ("record", "visit", "subject"):
        raise RuleInvalid("scope must be record, visit or subject.")


_VALIDATORS = {
    T.REQUIRED: _required, T.RANGE: _range, T.CODELIST: _codelist, T.DATE_ORDER: _date_rule,
    T.DATE_WINDOW: _date_rule, T.VISIT_WINDOW: _visit_window, T.FUTURE_DATE: _future_date,
    T.CONSISTENCY: _consistency, T.LAB_PLAUSIBILITY: _lab_plausibility, T.DUPLICATE: _duplicate,
    T.EXPRESSION: _expression,
}
