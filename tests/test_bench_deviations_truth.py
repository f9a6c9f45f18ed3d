"""The planted truth of bench_deviations checked independently: a plain reference reading of the
issue's rules, record by record over the generated study as stored (ORM rows, a Python loop, no
code of deviations.detectors and none of the generator's role bookkeeping), must find exactly the
evidence keys the generator says it planted, and PatternRecognition must find exactly those too.
So the bench's recall and precision are measured against a truth that does not come from the
detector, and a decoy that breaks a rule (or a planted case that breaks none) fails here."""

import datetime
from collections import defaultdict

import pytest

from deviations.detection import detection_run
from deviations.management.commands._deviation_bench_study import DECOYS, PLAN, PLANTED, generate
from deviations.models import Deviation
from deviations.plan import plan_import
from studies.audit import system_account
from studies.models import DataPoint, Subject, SubjectVisit

pytestmark = pytest.mark.django_db
ENTERED = {"enrolled", "completed", "discontinued"}


def _date(text):
    try:
        return datetime.date.fromisoformat((text or "")[:10])
    except ValueError:
        return None


def _planned(first_dose: datetime.date, day: int) -> datetime.date:
    return first_dose + datetime.timedelta(days=day - 1 if day > 0 else day)


def reference_truth(study, plan: dict) -> set[str]:
    """Every deviation the plan's rules (as the issue states them) find in the stored study."""
    subjects = {s.pk: s for s in Subject.objects.filter(study=study)}
    visits = list(SubjectVisit.objects.filter(study=study, actual_date__isnull=False)
                  .values_list("pk", "subject_id", "definition__name", "actual_date"))
    records = defaultdict(dict)  # (subject, visit, form, repeat) -> {variable: value}
    entered = {}
    for s, v, form, repeat, oid, value, at in DataPoint.objects.filter(study=study).values_list(
            "subject_id", "visit_id", "form__oid", "repeat_key", "item__oid", "raw_value", "entered_at"):
        key = (s, v, form, repeat)
        records[key][oid.split(".", 1)[1]] = value
        entered[key] = min(entered.get(key, at), at) if at else entered.get(key)
    truth = set()
    schedule = plan["visits"]
    by_subject = defaultdict(list)
    for pk, s, name, when in visits:
        by_subject[s].append((pk, name, when))
    exposure = defaultdict(list)
    for (s, v, form, repeat), values in records.items():
        if form == "EX":
            exposure[s].append((v, repeat, values))
    for s, subject in subjects.items():
        first_dose, done = subject.first_dose_date, by_subject[s]
        first_visit = min((when for _, _, when in done), default=None)
        consent = subject.consent_date
        if (consent is None and (first_visit or first_dose)) or (consent and first_visit and consent > first_visit) \
                or (consent and first_dose and consent > first_dose):
            truth.add(f"informed_consent:{s}")
        for pk, name, when in done:
            spec = schedule.get(name)
            if spec and first_dose:
                planned = _planned(first_dose, spec["day"])
                low = planned - datetime.timedelta(days=spec.get("before", 0))
                high = planned + datetime.timedelta(days=spec.get("after", 0))
                if not low <= when <= high:
                    truth.add(f"visit_window:{pk}")
        names = {name for _, name, _ in done if name in schedule}
        latest = max((schedule[n]["day"] for n in names), default=None)
        for name, spec in schedule.items():
            if latest is not None and spec["day"] < latest and name not in names:
                truth.add(f"visit_missed:{s}:{name.upper()}")
        allowed = plan["dosing"]["arms"].get(subject.arm)
        for v, repeat, values in exposure[s]:
            if allowed and values.get("EXDOSE", "").strip() and float(values["EXDOSE"]) not in allowed["doses"]:
                truth.add(f"ip_dosing:{s}:{v}:{repeat}")
        if subject.status in ENTERED and any(form == "IE" for (x, _, form, _) in records if x == s):
            truth.add(f"eligibility:{s}")
    washout = {m["name"]: m.get("washout_days", 0) for m in plan["prohibited_medications"]}
    for (s, v, form, repeat), values in records.items():
        subject = subjects[s]
        if form == "CM" and subject.first_dose_date:
            decod, term = values.get("CMDECOD", "").upper(), values.get("CMTRT", "").upper()
            drug = decod if decod in washout else term if term in washout else None
            if drug is None:
                continue
            start, end = _date(values.get("CMSTDTC")), _date(values.get("CMENDTC"))
            ends = [_date(x.get("EXENDTC")) or _date(x.get("EXSTDTC")) for _, _, x in exposure[s]]
            last = max((e for e in ends if e), default=None)
            before_first = end is not None and (subject.first_dose_date - end).days >= max(washout[drug], 1)
            after_last = start is not None and last is not None and start > last
            if not before_first and not after_last:
                truth.add(f"prohibited_medication:{s}:{v}:{repeat}")
        if form == "AE" and values.get("AESER", "").upper() in ("Y", "YES", "1", "TRUE"):
            onset = _date(values.get("AESTDTC"))
            reported = entered[(s, v, form, repeat)]
            if onset and reported and (reported.date() - onset).days > plan["safety"]["report_within_days"]:
                truth.add(f"safety_reporting:{s}:{v}:{repeat}")
    return truth


def test_the_planted_truth_is_what_the_rules_say_and_the_detector_finds_exactly_it():
    actor = system_account("system.bench")
    generated = generate(sites=20, subjects_per_site=60, seed=16, actor=actor)
    planted = set().union(*generated.expected.values())
    # Every planted kind and every decoy is there (else the comparison below proves little).
    assert all(generated.expected[k] for k in ("informed_consent", "visit_window", "ip_dosing",
                                               "prohibited_medication", "eligibility", "safety_reporting"))
    assert all(generated.decoys[k] > 0 for k in DECOYS), generated.decoys
    assert len(PLANTED) == 10 and generated.decoys["allowed_reduced_dose"] > 0
    truth = reference_truth(generated.study, PLAN)
    assert truth - planted == set(), "decoys or clean subjects that break a rule"
    assert planted - truth == set(), "planted cases that break no rule"
    plan, _ = plan_import(study=generated.study, content=PLAN, actor=actor, reason="truth test")
    detection_run(study=generated.study, actor=actor, plan=plan)
    found = set(Deviation.objects.filter(study=generated.study, source="detected").values_list("evidence_key",
                                                                                               flat=True))
    assert found == truth
