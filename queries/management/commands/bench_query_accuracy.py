"""Benchmark: how accurately the QueryAnalyzer finds data errors (precision and recall per rule
type) on a generated study whose errors are known.

A seeded generator builds a study (sites reporting labs in US or SI units, a visit schedule
with windows, vital signs, labs, adverse events, SAE and disposition forms) whose clean data
varies the way real data does: values at and just inside range limits, abnormal but plausible
lab values (clinical signals for medical review, not errors), visits late but inside their
window, AEs that end the day they start or start on the consent date, dates equal to today.
Into it go the errors sites make, at realistic rates, for every rule type: a digit typed twice,
a blood pressure transposed, a lab value in the wrong unit, a year typo, a form never entered,
an AE entered twice. Each is recorded with every finding it must cause: the ground truth. An
error that breaks a second rule (a future AE start date puts the AE's end before its start)
expects both findings; a record gets one error at most, so errors do not mask each other.

The analyzer makes one full pass with a fixed `today`. A finding is a true positive when its
rule type and what it points at (its data point; the visit for a visit window; subject, visit
and repeat for a required item with no data point) match an expected one. Findings routed to
medical review are clinical signals, not findings: they are compared with the abnormal lab
values the generator put in. Screen failures, unscheduled visits, forms of the last two weeks
not entered yet and partial AE end dates are in the clean data too: none of them is an error.

Everything runs in one transaction that is rolled back: the database is left as it was. The
last line is the figures as JSON: `injected` counts the expected findings (per rule type in
`per_rule`), `errors` the errors put in (one may cause two findings), `seconds` the analyzer
pass, `build_seconds` writing the study and its checks."""

import copy
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from queries.checks.engine import analyzer_pass
from queries.models import Discrepancy, EditCheck
from queries.services import edit_check_save, edit_checks_generate
from studies.audit import audited_bulk_create, set_audit, system_account
from studies.models import (
    DataPoint,
    FormDefinition,
    ItemDefinition,
    Site,
    Study,
    Subject,
    SubjectVisit,
    VisitDefinition,
)

T = EditCheck.RuleType
D = ItemDefinition.DataType
REASON = "bench_query_accuracy (rolled back)"
TODAY = date(2025, 6, 30)  # the analyzer's today: future-date findings do not depend on the clock
FIRST_ENROLMENT, LAST_ENROLMENT = date(2024, 1, 8), date(2025, 4, 30)
AGE_MIN_DAYS, AGE_MAX_DAYS = 6575, 31046  # 18 and 85 years at consent, in days
DS_MAX_DAYS = 119  # completion or discontinuation on or before study day 120

# oid, name, planned study day, days allowed before, after (Day 1 is the reference: no window)
SCHEDULE = [("SCR", "Screening", -14, 14, 13), ("DAY1", "Day 1", 1, 0, 0), ("WEEK2", "Week 2", 15, 3, 3),
            ("WEEK4", "Week 4", 29, 3, 3), ("WEEK8", "Week 8", 57, 5, 5), ("WEEK12", "Week 12", 85, 7, 7),
            ("EOS", "End of study", 113, 7, 7)]
WINDOWS = {oid: (day, before, after) for oid, _, day, before, after in SCHEDULE}
UNSCHEDULED = [("UNS", "Unscheduled"), ("ET", "Early termination"), ("LOG", "Logs")]
LAB_VISITS = ("SCR", "DAY1", "WEEK4", "WEEK8", "EOS")
LATE_CANDIDATES = ("WEEK2", "WEEK4", "WEEK8", "WEEK12", "EOS")

# Per analyte and lab unit system: units as that lab writes them, normal range, decimals
# reported, and spans of abnormal but physiologically possible values (clinical signals).
LABS = {
    "LB.HGB": ("Hemoglobin", {
        "us": ("g/dL", 12.0, 17.5, 1, [(7.0, 11.5), (18.0, 19.5)]),
        "si": ("g/L", 120, 175, 0, [(70, 115), (180, 195)]),
        "si_lower": ("g/l", 120, 175, 0, [(70, 115), (180, 195)])}),
    "LB.ALT": ("ALT (SGPT)", {
        "us": ("U/L", 7, 56, 0, [(60, 800)]),
        "si": ("IU/L", 0, 40, 0, [(45, 800)]),
        "si_lower": ("U/L", 0, 40, 0, [(45, 800)])}),
    "LB.K": ("Serum Potassium", {
        "us": ("mEq/L", 3.5, 5.1, 1, [(2.5, 3.3), (5.3, 6.9)]),
        "si": ("mmol/L", 3.5, 5.1, 1, [(2.5, 3.3), (5.3, 6.9)]),
        "si_lower": ("mmol/l", 3.5, 5.1, 1, [(2.5, 3.3), (5.3, 6.9)])}),
    "LB.GLUC": ("Glucose", {
        "us": ("mg/dL", 70, 100, 0, [(45, 65), (110, 450)]),
        "si": ("mmol/L", 3.9, 5.6, 1, [(2.5, 3.6), (6.1, 25.0)]),
        "si_lower": ("mmol/l", 3.9, 5.6, 1, [(2.5, 3.6), (6.1, 25.0)])}),
    "LB.CREAT": ("Creatinine", {
        "us": ("mg/dL", 0.7, 1.2, 2, [(1.4, 5.0)]),
        "si": ("umol/L", 62, 106, 0, [(120, 450)]),
        "si_lower": ("µmol/L", 62, 106, 0, [(120, 450)])}),
}
SITES = [("101", "US", "us"), ("102", "US", "us"), ("103", "CA", "si"), ("201", "FR", "si"),
         ("202", "DE", "si_lower"), ("203", "GB", "si")]


def _codes(*codes: str) -> list[dict]:
    return [{"code": c, "decode": c.title()} for c in codes]


DS_REASONS = ["ADVERSE EVENT", "WITHDRAWAL BY SUBJECT", "LOST TO FOLLOW-UP", "PHYSICIAN DECISION"]
VS_RANGES = {"VS.SYSBP": (60, 250), "VS.DIABP": (30, 150), "VS.WEIGHT": (30, 250)}
ITEMS = [  # form, oid, label, data type, mandatory, other metadata
    ("DM", "DM.BRTHDAT", "Date of birth", D.DATE, True, {}),
    ("DM", "DM.SEX", "Sex", D.TEXT, True, {"codelist": _codes("M", "F")}),
    ("VS", "VS.VSDAT", "Date of vital signs", D.DATE, True, {}),
    ("VS", "VS.SYSBP", "Systolic blood pressure", D.INTEGER, True, {"units": "mmHg"}),
    ("VS", "VS.DIABP", "Diastolic blood pressure", D.INTEGER, True, {"units": "mmHg"}),
    ("VS", "VS.WEIGHT", "Weight", D.FLOAT, True, {"units": "kg"}),
    ("LB", "LB.LBDAT", "Date of sample", D.DATE, False, {}),
    *[("LB", oid, label, D.FLOAT, False, {}) for oid, (label, _) in LABS.items()],
    ("LB", "LB.HCG", "Serum pregnancy test", D.TEXT, False, {"codelist": _codes("NEGATIVE", "POSITIVE")}),
    ("AE", "AE.AETERM", "Adverse event", D.TEXT, True, {}),
    ("AE", "AE.AESTDAT", "AE start date", D.DATE, True, {}),
    ("AE", "AE.AEENDAT", "AE end date", D.DATE, False, {}),
    ("AE", "AE.AESER", "Serious", D.TEXT, True, {"codelist": _codes("Y", "N")}),
    ("AE", "AE.AESEV", "Severity", D.TEXT, True, {"codelist": _codes("MILD", "MODERATE", "SEVERE")}),
    ("SAE", "SAE.SAETERM", "Serious adverse event", D.TEXT, True, {}),
    ("SAE", "SAE.SAESTDAT", "SAE onset date", D.DATE, True, {}),
    ("DS", "DS.DSSTDAT", "Date of completion or discontinuation", D.DATE, True, {}),
    ("DS", "DS.DSCOMP", "Completed the study", D.TEXT, True, {"codelist": _codes("Y", "N")}),
    ("DS", "DS.DSREAS", "Reason for discontinuation", D.TEXT, False,
     {"codelist": _codes(*DS_REASONS)}),
]
FORMS = [("DM", "Demographics", False), ("VS", "Vital signs", False), ("LB", "Laboratory", False),
         ("AE", "Adverse events", True), ("SAE", "Serious adverse event", True), ("DS", "Disposition", False)]
MANDATORY = defaultdict(list)
for _form, _oid, _label, _type, _mandatory, _extra in ITEMS:
    if _mandatory:
        MANDATORY[_form].append(_oid)

# The checks a data manager writes for this protocol, beside those the metadata implies
# (range, required, codelist, future date, lab plausibility, visit window).
STUDY_CHECKS = [
    ("AE-AFTER-CONSENT", T.DATE_ORDER, "AE.AESTDAT", {"anchor": "consent"}),
    ("AE-END-AFTER-START", T.DATE_ORDER, "AE.AEENDAT", {"anchor": "item", "anchor_item": "AE.AESTDAT"}),
    ("DM-AGE-18-85", T.DATE_WINDOW, "DM.BRTHDAT",
     {"anchor": "consent", "min_days": -AGE_MAX_DAYS, "max_days": -AGE_MIN_DAYS}),
    ("DS-IN-STUDY-PERIOD", T.DATE_WINDOW, "DS.DSSTDAT",
     {"anchor": "enrolment", "min_days": 0, "max_days": DS_MAX_DAYS}),
    ("SAE-FORM", T.CONSISTENCY, None,
     {"when": {"item": "AE.AESER", "in": ["Y"]}, "require": {"form": "SAE"}, "scope": "record",
      "category": "safety"}),
    ("DS-REASON", T.CONSISTENCY, None,
     {"when": {"item": "DS.DSCOMP", "in": ["N"]}, "require": {"item": "DS.DSREAS"}, "scope": "visit"}),
    ("AE-DUP", T.DUPLICATE, None, {"form": "AE", "keys": ["AE.AETERM", "AE.AESTDAT"]}),
    ("LB-K-ONCE", T.DUPLICATE, "LB.K", {}),
    ("VS-SYS-GT-DIA", T.EXPRESSION, "VS.DIABP", {"expression": "[VS.SYSBP] > [VS.DIABP]"}),
    ("HCG-FEMALE-ONLY", T.EXPRESSION, "LB.HCG",
     {"expression": '[DM.SEX] == "F" or is_missing([LB.HCG])', "scope": "subject"}),
]
AE_TERMS = ["Headache", "Nausea", "Fatigue", "Dizziness", "Diarrhoea", "Rash", "Back pain", "Cough",
            "Nasopharyngitis", "Insomnia", "Arthralgia", "Vomiting", "Pyrexia", "Hypertension", "Constipation"]
SERIOUS_TERMS = ["Pneumonia", "Myocardial infarction", "Syncope", "Acute kidney injury", "Cellulitis"]
# Codes as sites mistype them: the decode, another case, a number
CODE_TYPOS = {"M": ["Male", "m", "1"], "F": ["Female", "f", "2"], "Y": ["Yes", "YES", "1"], "N": ["No", "0"],
              "MILD": ["Mild", "1"], "MODERATE": ["Moderate", "MOD"], "SEVERE": ["Severe", "SEV"]}
BP_AT_LIMITS = [(250, 140), (249, 150), (60, 30), (61, 45), (118, 30), (230, 150)]
WEIGHT_AT_LIMITS = [30.0, 30.1, 249.9, 250.0]


def _iso(day: date) -> str:
    return day.isoformat()


def _date(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw.strip()) if raw.strip() else None
    except ValueError:
        return None


def _number(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


def _years(day: date, years: int) -> date:
    return day.replace(year=day.year + years, day=min(day.day, 28) if day.month == 2 else day.day)


# The generated study, in memory ------------------------------------------------------------

@dataclass(eq=False)
class Participant:
    number: int
    site: tuple
    consent: date
    enrolment: date | None  # None: a screen failure
    sex: str
    sbp: int  # the subject's usual blood pressure and weight
    dbp: int
    weight: float
    status: str = Subject.Status.ENROLLED
    visits: dict = field(default_factory=dict)  # key ("WEEK2", "UNS.1") -> Visit
    records: list = field(default_factory=list)
    obj: Subject | None = None


@dataclass(eq=False)
class Visit:
    participant: Participant
    oid: str
    date: date | None
    repeat: str = "1"
    touched: bool = False
    obj: SubjectVisit | None = None


@dataclass(eq=False)
class Record:
    """The values of one form for one subject, visit and repeat."""

    visit: Visit
    form: str
    repeat: str = "1"
    points: dict = field(default_factory=dict)
    touched: bool = False

    def add(self, item: str, raw: str, **lab) -> "Point":
        self.points[item] = Point(self, item, raw, **lab)
        return self.points[item]


@dataclass(eq=False)
class Point:
    record: Record
    item: str
    raw: str
    units: str = ""
    normal_low: float | None = None
    normal_high: float | None = None
    signal: bool = False  # abnormal but plausible lab value: medical review expected, not a finding
    obj: DataPoint | None = None


@dataclass(frozen=True)
class Missing:
    """A required item with no data point in its record."""

    record: Record
    item: str


class StudyDesign:
    """Clean data from `rng`, then errors injected into it; `expected` maps each finding the
    errors must cause, (rule type, point / visit / Missing), to what was injected."""

    def __init__(self, rng: random.Random, subjects: int):
        self.rng = rng
        self.participants = [self._participant(n) for n in range(subjects)]
        self.expected: dict[tuple, str] = {}
        self.errors: Counter = Counter()
        self._inject()

    # Clean data ------------------------------------------------------------------------------

    def _participant(self, number: int) -> Participant:
        rng = self.rng
        enrolment = FIRST_ENROLMENT + timedelta(days=rng.randint(0, (LAST_ENROLMENT - FIRST_ENROLMENT).days))
        gap = rng.choice([1, 28]) if rng.random() < 0.1 else rng.randint(2, 27)  # screening days -28..-1
        screening = enrolment - timedelta(days=gap)
        consent = screening - timedelta(days=rng.choice([0, 0, 0, 1, 2, 3, 5, 7]))
        p = Participant(number, SITES[rng.randrange(len(SITES))], consent, enrolment, rng.choice("MF"),
                        rng.randint(100, 165), rng.randint(62, 95), rng.uniform(48, 125))
        p.visits["SCR"] = Visit(p, "SCR", screening)
        p.visits["LOG"] = Visit(p, "LOG", None)
        if rng.random() < 0.08:
            p.enrolment, p.status = None, Subject.Status.SCREEN_FAILED  # screening data only
        else:
            self._visits(p)
        age = rng.choice([AGE_MIN_DAYS, AGE_MAX_DAYS]) if rng.random() < 0.02 else rng.randint(AGE_MIN_DAYS, 29200)
        dm = self._record(p, "SCR", "DM")
        dm.add("DM.BRTHDAT", _iso(consent - timedelta(days=age)))
        dm.add("DM.SEX", p.sex)
        for key, visit in list(p.visits.items()):
            # Forms of a visit of the last two weeks may not be entered yet: not missing data
            if visit.oid in ("LOG", "ET") or (visit.date > TODAY - timedelta(days=14) and rng.random() < 0.5):
                continue
            self._vitals(p, key)
            if visit.oid in LAB_VISITS or visit.oid == "UNS":
                self._labs(p, key)
        self._adverse_events(p)
        return p

    def _visits(self, p: Participant) -> None:
        rng = self.rng
        p.visits["DAY1"] = Visit(p, "DAY1", p.enrolment)
        self._unscheduled(p)
        leaves_after = rng.choice(LATE_CANDIDATES[:-1]) if rng.random() < 0.1 else None
        for oid in LATE_CANDIDATES:
            day, before, after = WINDOWS[oid]
            roll = rng.random()
            if roll < 0.1:
                offset = after  # late, on the last day of the window
            elif roll < 0.15:
                offset = -before
            elif roll < 0.3:
                offset = rng.randint(-before, after)
            else:
                offset = rng.randint(-1, 1)
            when = p.enrolment + timedelta(days=day - 1 + offset)
            if when > TODAY:
                return  # still on study
            p.visits[oid] = Visit(p, oid, when)
            if oid == leaves_after:
                ended = when + timedelta(days=rng.randint(1, 20))
                if ended <= TODAY:
                    p.visits["ET"] = Visit(p, "ET", ended)
                    p.status = Subject.Status.DISCONTINUED
                    ds = self._record(p, "ET", "DS")
                    ds.add("DS.DSSTDAT", _iso(ended))
                    ds.add("DS.DSCOMP", "N")
                    ds.add("DS.DSREAS", rng.choice(DS_REASONS))
                return
        p.status = Subject.Status.COMPLETED
        ds = self._record(p, "EOS", "DS")
        ds.add("DS.DSSTDAT", _iso(p.visits["EOS"].date))
        ds.add("DS.DSCOMP", "Y")

    def _unscheduled(self, p: Participant) -> None:
        """An extra visit or two (a lab retest, a blood pressure follow-up): no window."""
        if self.rng.random() < 0.1:
            for n in range(self.rng.randint(1, 2)):
                when = p.enrolment + timedelta(days=self.rng.randint(5, 100))
                if when <= TODAY:
                    p.visits[f"UNS.{n + 1}"] = Visit(p, "UNS", when, str(n + 1))

    def _record(self, p: Participant, visit: str, form: str, repeat: str = "1") -> Record:
        """A new record of `form` at the participant's visit `visit` (a key of p.visits)."""
        record = Record(p.visits[visit], form, repeat)
        p.records.append(record)
        return record

    def _vitals(self, p: Participant, key: str) -> None:
        rng, visit = self.rng, p.visits[key]
        systolic = min(max(round(p.sbp + rng.gauss(0, 7)), 85), 210)
        diastolic = min(max(round(p.dbp + rng.gauss(0, 5)), 45), systolic - 15)
        weight = round(p.weight + rng.gauss(0, 1.2), 1)
        if rng.random() < 0.01:
            systolic, diastolic = rng.choice(BP_AT_LIMITS)
        if rng.random() < 0.005:
            weight = rng.choice(WEIGHT_AT_LIMITS)
        vs = self._record(p, key, "VS")
        vs.add("VS.VSDAT", _iso(visit.date))
        vs.add("VS.SYSBP", str(systolic), units="mmHg")  # the units the EDC exports with the value
        vs.add("VS.DIABP", str(diastolic), units="mmHg")
        vs.add("VS.WEIGHT", f"{weight:.1f}", units="kg")

    def _lab_value(self, low: float, high: float, decimals: int) -> str:
        scale = 10 ** decimals
        return f"{self.rng.randint(round(low * scale), round(high * scale)) / scale:.{decimals}f}"

    def _labs(self, p: Participant, key: str) -> None:
        rng, visit = self.rng, p.visits[key]
        lb = self._record(p, key, "LB")
        lb.add("LB.LBDAT", _iso(visit.date))
        for oid, (_, systems) in LABS.items():
            units, low, high, decimals, abnormal = systems[p.site[2]]
            signal = rng.random() < 0.04
            if signal:
                raw = self._lab_value(*rng.choice(abnormal), decimals)
            elif rng.random() < 0.05:
                raw = f"{rng.choice([low, high]):.{decimals}f}"  # on the normal limit: normal
            else:
                raw = self._lab_value(low, high, decimals)
            lb.add(oid, raw, units=units, normal_low=low, normal_high=high, signal=signal)
        if visit.oid == "SCR" and p.sex == "F":
            lb.add("LB.HCG", "NEGATIVE")

    def _adverse_events(self, p: Participant) -> None:
        rng = self.rng
        last = max(v.date for v in p.visits.values() if v.date)
        seen = set()
        for n in range(rng.choices([0, 1, 2, 3, 4, 5], [30, 30, 20, 10, 6, 4])[0]):
            serious = rng.random() < 0.06
            term = rng.choice(SERIOUS_TERMS if serious else AE_TERMS)
            start = p.consent if rng.random() < 0.04 else p.consent + timedelta(
                days=rng.randint(0, (last - p.consent).days))
            while (term.lower(), start) in seen:  # the same AE twice is an error, never clean data
                start += timedelta(days=1)
            seen.add((term.lower(), start))
            ae = self._record(p, "LOG", "AE", str(n + 1))
            ae.add("AE.AETERM", term)
            ae.add("AE.AESTDAT", _iso(start))
            if rng.random() < 0.8:  # else ongoing
                end = min(start if rng.random() < 0.15 else start + timedelta(days=rng.randint(1, 30)), TODAY)
                # now and then the day is unknown: a partial date, not an error
                ae.add("AE.AEENDAT", end.isoformat()[:7] if rng.random() < 0.03 else _iso(end))
            code = "Y" if serious else "N"
            ae.add("AE.AESER", code + " " if rng.random() < 0.02 else code)  # a trailing blank is the same code
            ae.add("AE.AESEV", "SEVERE" if serious else rng.choice(["MILD", "MILD", "MODERATE"]))
            if serious:
                sae = self._record(p, "LOG", "SAE", str(n + 1))
                sae.add("SAE.SAETERM", term)
                sae.add("SAE.SAESTDAT", _iso(start))

    # Errors ----------------------------------------------------------------------------------

    def _expect(self, rule_type: str, ref, cause: str) -> None:
        self.expected.setdefault((rule_type, ref), cause)

    def _records(self, form: str, *, visits=None, repeat: str | None = None) -> list[Record]:
        return [r for p in self.participants for r in p.records if r.form == form
                and (visits is None or r.visit.oid in visits) and (repeat is None or r.repeat == repeat)]

    def _choose(self, pool: list, rate: float, kind: str, minimum: int = 1) -> list:
        """`rate` of the untouched candidates (at least `minimum`), marked touched."""
        pool = [c for c in pool if not c.touched]
        chosen = self.rng.sample(pool, min(len(pool), max(minimum, round(rate * len(pool)))))
        for candidate in chosen:
            candidate.touched = True
        self.errors[kind] += len(chosen)
        return chosen

    def _inject(self) -> None:
        # Visits first: a late visit moves the dates of its forms. Each step takes records no
        # earlier step touched.
        self._late_visits()
        self._duplicates()
        self._missing_values()
        self._out_of_range()
        self._bad_codes()
        self._dates_out_of_order()
        self._dates_out_of_window()
        self._future_dates()
        self._impossible_labs()
        self._contradictions()
        self._missing_forms()

    def _vitals_findings(self, record: Record, cause: str) -> None:
        """Range and expression findings of a changed vital-signs record."""
        values = {}
        for oid, (low, high) in VS_RANGES.items():
            point = record.points.get(oid)
            if point is None or not point.raw.strip():
                continue
            values[oid] = _number(point.raw)
            if values[oid] is None or not low <= values[oid] <= high:
                self._expect(T.RANGE, point, cause)
        systolic, diastolic = values.get("VS.SYSBP"), values.get("VS.DIABP")
        if systolic is not None and diastolic is not None and not systolic > diastolic:
            self._expect(T.EXPRESSION, record.points["VS.DIABP"], cause)

    def _date_findings(self, record: Record, cause: str) -> None:
        """Future-date, date-order and date-window findings of a record whose dates changed."""
        p = record.visit.participant
        dates = {oid: _date(point.raw) for oid, point in record.points.items() if oid.endswith("DAT")}
        for oid, day in dates.items():
            if day and day > TODAY:
                self._expect(T.FUTURE_DATE, record.points[oid], cause)
        start, end = dates.get("AE.AESTDAT"), dates.get("AE.AEENDAT")
        if start and start < p.consent:
            self._expect(T.DATE_ORDER, record.points["AE.AESTDAT"], cause)
        if start and end and end < start:
            self._expect(T.DATE_ORDER, record.points["AE.AEENDAT"], cause)
        if dates.get("DS.DSSTDAT") and not 0 <= (dates["DS.DSSTDAT"] - p.enrolment).days <= DS_MAX_DAYS:
            self._expect(T.DATE_WINDOW, record.points["DS.DSSTDAT"], cause)
        if dates.get("DM.BRTHDAT") and not -AGE_MAX_DAYS <= (dates["DM.BRTHDAT"] - p.consent).days <= -AGE_MIN_DAYS:
            self._expect(T.DATE_WINDOW, record.points["DM.BRTHDAT"], cause)

    def _late_visits(self) -> None:
        """A visit done outside its window; its forms carry the date it was done."""
        pool = [p.visits[oid] for p in self.participants for oid in LATE_CANDIDATES if oid in p.visits]
        for visit in self._choose(pool, 0.02, "visit out of window"):
            p = visit.participant
            day, before, after = WINDOWS[visit.oid]
            visit.date = p.enrolment + timedelta(days=day - 1 + after + self.rng.randint(1, 14))
            if visit.date > TODAY:  # not done yet if late: early instead
                visit.date = p.enrolment + timedelta(days=day - 1 - before - self.rng.randint(1, 5))
            self._expect(T.VISIT_WINDOW, visit, "visit out of window")
            for record in [r for r in p.records if r.visit is visit]:
                record.touched = True
                for point in record.points.values():
                    if point.item in ("VS.VSDAT", "LB.LBDAT", "DS.DSSTDAT"):
                        point.raw = _iso(visit.date)
                self._date_findings(record, "visit out of window")

    def _duplicates(self) -> None:
        rng = self.rng
        for record in self._choose(self._records("AE"), 0.02, "AE entered twice"):
            p = record.visit.participant
            again = Record(record.visit, "AE", str(sum(r.form == "AE" for r in p.records) + 1), touched=True)
            for oid, point in record.points.items():
                again.add(oid, point.raw)
            if rng.random() < 0.4:  # retyped: another case, a trailing blank
                again.points["AE.AETERM"].raw = rng.choice([str.lower, str.upper, lambda t: t + " "])(
                    again.points["AE.AETERM"].raw)
            p.records.append(again)
            self._expect(T.DUPLICATE, again.points["AE.AETERM"], "AE entered twice")
            if again.points["AE.AESER"].raw.strip() == "Y":  # the copy of a serious AE has no SAE form of its own
                self._expect(T.CONSISTENCY, again.points["AE.AESER"], "AE entered twice")
        for record in self._choose(self._records("LB", repeat="1"), 0.01, "lab result loaded twice"):
            k = record.points["LB.K"]
            again = Record(record.visit, "LB", "2", touched=True)
            again.add("LB.K", k.raw, units=k.units, normal_low=k.normal_low, normal_high=k.normal_high, signal=k.signal)
            record.visit.participant.records.append(again)
            self._expect(T.DUPLICATE, again.points["LB.K"], "lab result loaded twice")

    def _missing_values(self) -> None:
        """A required item left empty, or never saved, in a form otherwise entered."""
        for form, rate in (("VS", 0.03), ("AE", 0.03), ("DM", 0.03), ("DS", 0.03)):
            for record in self._choose(self._records(form), rate, "required item missing"):
                oid = self.rng.choice([o for o in MANDATORY[form] if o in record.points])
                if self.rng.random() < 0.5:
                    del record.points[oid]
                    self._expect(T.REQUIRED, Missing(record, oid), "required item missing")
                else:
                    record.points[oid].raw = ""
                    self._expect(T.REQUIRED, record.points[oid], "required item missing")

    def _out_of_range(self) -> None:
        """A digit typed twice or lost, a lost decimal point, both pressures in one field."""
        rng = self.rng
        for record in self._choose(self._records("VS"), 0.03, "vital sign typo"):
            oid = rng.choice(list(VS_RANGES))
            point = record.points[oid]
            raw = point.raw
            if oid == "VS.WEIGHT":
                point.raw = rng.choice([raw.replace(".", ""), f"{float(raw) / 10:.2f}"])
            elif oid == "VS.SYSBP" and rng.random() < 0.2:
                point.raw = f"{raw}/{record.points['VS.DIABP'].raw}"
            else:
                point.raw = rng.choice([raw + raw[-1], raw[1:] if oid == "VS.SYSBP" else raw[:-1]])
            self._vitals_findings(record, "vital sign typo")

    def _bad_codes(self) -> None:
        for form, oids in (("DM", ["DM.SEX"]), ("AE", ["AE.AESER", "AE.AESEV"]), ("DS", ["DS.DSCOMP"])):
            for record in self._choose(self._records(form), 0.02, "code not in the codelist"):
                point = record.points[self.rng.choice(oids)]
                point.raw = self.rng.choice(CODE_TYPOS[point.raw.strip()])
                self._expect(T.CODELIST, point, "code not in the codelist")

    def _dates_out_of_order(self) -> None:
        """An AE dated before consent (a medical-history condition, a year typo) or ending
        before it starts (day and month swapped, the wrong month)."""
        rng = self.rng
        for record in self._choose(self._records("AE"), 0.02, "AE dates out of order"):
            p = record.visit.participant
            start = _date(record.points["AE.AESTDAT"].raw)
            if "AE.AEENDAT" in record.points and rng.random() < 0.5:
                record.points["AE.AEENDAT"].raw = _iso(start - timedelta(days=rng.randint(1, 40)))
            else:
                earlier = _years(start, -1)
                if earlier >= p.consent:
                    earlier = p.consent - timedelta(days=rng.randint(3, 400))
                term = record.points["AE.AETERM"].raw.strip().lower()
                taken = {(r.points["AE.AETERM"].raw.strip().lower(), r.points["AE.AESTDAT"].raw) for r in p.records
                         if r.form == "AE" and r is not record and {"AE.AETERM", "AE.AESTDAT"} <= set(r.points)}
                while (term, _iso(earlier)) in taken:  # not a duplicate of another AE by chance
                    earlier -= timedelta(days=1)
                record.points["AE.AESTDAT"].raw = _iso(earlier)
            self._date_findings(record, "AE dates out of order")

    def _dates_out_of_window(self) -> None:
        """A birth year typo (the consent year, a century off); a disposition date of the wrong
        year or the screening date."""
        rng = self.rng
        for record in self._choose(self._records("DM"), 0.02, "date out of its window"):
            p = record.visit.participant
            birth = _date(record.points["DM.BRTHDAT"].raw)
            record.points["DM.BRTHDAT"].raw = _iso(rng.choice([_years(birth, p.consent.year - birth.year),
                                                                _years(birth, 100), _years(birth, -100)]))
            self._date_findings(record, "date out of its window")
        for record in self._choose(self._records("DS"), 0.02, "date out of its window"):
            p = record.visit.participant
            ended = _date(record.points["DS.DSSTDAT"].raw)
            record.points["DS.DSSTDAT"].raw = _iso(rng.choice([_years(ended, 1), _years(ended, -1),
                                                                p.visits["SCR"].date]))
            self._date_findings(record, "date out of its window")

    def _future_dates(self) -> None:
        """Next year's date, or the year's digits transposed (2024 -> 2042)."""
        rng = self.rng
        pool = self._records("VS") + self._records("LB", repeat="1") + self._records("AE")
        for record in self._choose(pool, 0.01, "date in the future"):
            oid = {"VS": "VS.VSDAT", "LB": "LB.LBDAT"}.get(record.form) or rng.choice(
                [o for o in ("AE.AESTDAT", "AE.AEENDAT") if o in record.points and _date(record.points[o].raw)])
            day = _date(record.points[oid].raw)
            later = _years(day, 1)
            if later <= TODAY or rng.random() < 0.5:
                later = _years(day, int(str(day.year)[:2] + str(day.year)[3] + str(day.year)[2]) - day.year)
            record.points[oid].raw = _iso(later)
            self._date_findings(record, "date in the future")

    def _impossible_labs(self) -> None:
        """A slipped decimal point, a value in another unit than the one written beside it."""
        rng = self.rng
        errors = {  # error: (item, what the site typed, labs where it happens)
            "k_times_10": ("LB.K", lambda v, _: f"{v * 10:g}", ("us", "si", "si_lower")),
            "k_divided_by_10": ("LB.K", lambda v, _: f"{v / 10:.2f}", ("us", "si", "si_lower")),
            "hgb_times_10": ("LB.HGB", lambda v, _: f"{v * 10:g}", ("us", "si", "si_lower")),
            # mg/dL written as umol/L (SI labs), umol/L written as mg/dL (US labs)
            "creat_other_unit": ("LB.CREAT", lambda v, us: f"{v * 88.42:.0f}" if us else f"{v / 88.42:.2f}",
                                 ("us", "si", "si_lower")),
            "gluc_mmol_as_mg": ("LB.GLUC", lambda v, _: f"{v * 0.05551:.1f}", ("us",)),
        }
        for record in self._choose(self._records("LB", repeat="1"), 0.05, "lab value impossible"):
            system = record.visit.participant.site[2]
            # A value in its normal range gets the error: an abnormal one in the wrong unit may
            # still be possible (creatinine 450 umol/L typed as 5.09 under umol/L)
            kinds = [k for k, (oid, _, labs) in errors.items() if system in labs and not record.points[oid].signal]
            oid, typed, _ = errors[rng.choice(kinds or ["k_times_10"])]
            point = record.points[oid]
            point.raw, point.signal = typed(float(point.raw), system == "us"), False
            self._expect(T.LAB_PLAUSIBILITY, point, "lab value impossible")

    def _contradictions(self) -> None:
        """Systolic and diastolic pressure swapped (or the diastolic typed twice); a pregnancy
        test recorded for a man."""
        for record in self._choose(self._records("VS"), 0.01, "blood pressure transposed"):
            systolic, diastolic = record.points["VS.SYSBP"], record.points["VS.DIABP"]
            if self.rng.random() < 0.75:
                systolic.raw, diastolic.raw = diastolic.raw, systolic.raw
            else:
                diastolic.raw = systolic.raw
            self._vitals_findings(record, "blood pressure transposed")
        men = [r for r in self._records("LB", visits=("SCR",), repeat="1") if r.visit.participant.sex == "M"]
        for record in self._choose(men, 0.03, "pregnancy test for a man"):
            record.add("LB.HCG", "NEGATIVE")

    def _missing_forms(self) -> None:
        """An SAE form never entered for a serious AE; a discontinuation without its reason."""
        serious = []  # (SAE record, its AE record), the AE untouched: its seriousness is as entered
        for p in self.participants:
            aes = {r.repeat: r for r in p.records if r.form == "AE"}
            serious += [(r, aes[r.repeat]) for r in p.records if r.form == "SAE" and not aes[r.repeat].touched]
        missing = self._choose([sae for sae, _ in serious], 0.1, "SAE form missing")
        for sae, ae in serious:
            if sae in missing:
                ae.touched = True
                ae.visit.participant.records.remove(sae)
                # The rule is scoped to the record: each serious AE needs its own SAE form
                self._expect(T.CONSISTENCY, ae.points["AE.AESER"], "SAE form missing")
        stopped = [r for r in self._records("DS") if r.points.get("DS.DSCOMP") and r.points["DS.DSCOMP"].raw == "N"
                   and "DS.DSREAS" in r.points]
        for record in self._choose(stopped, 0.1, "discontinuation reason missing"):
            del record.points["DS.DSREAS"]
            self._expect(T.CONSISTENCY, record.points["DS.DSCOMP"], "discontinuation reason missing")
        # Once every error is in: a pregnancy test of a subject whose sex is recorded and is not F
        # (a man, or a woman whose code was mistyped) contradicts the sex.
        for p in self.participants:
            points = [pt for r in p.records for pt in r.points.values()]
            sex = next((pt.raw for pt in points if pt.item == "DM.SEX"), "")
            for point in points:
                if point.item == "LB.HCG" and sex.strip() and sex != "F":
                    self._expect(T.EXPRESSION, point, "pregnancy test for a man")

    def signals(self) -> list[Point]:
        """The abnormal but plausible lab values: medical review, not findings."""
        return [pt for p in self.participants for r in p.records for pt in r.points.values() if pt.signal]


# Writing it, running the analyzer, scoring ------------------------------------------------

class Command(BaseCommand):
    help = "Precision and recall of the QueryAnalyzer on a generated study with known errors of every rule type."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=1, help="the generator's seed: the same seed, the same study")
        parser.add_argument("--subjects", type=int, default=300)
        parser.add_argument("--show", type=int, default=10, help="missed and false findings listed, at most")

    def handle(self, *args, seed, subjects, show, **options):
        if subjects < 1:
            raise CommandError("--subjects must be at least 1")
        design = StudyDesign(random.Random(seed), subjects)
        with transaction.atomic():  # everything written is rolled back at the end
            result, lines = self._measure(design, show=show)
            transaction.set_rollback(True)
        for line in lines:
            self.stdout.write(line)
        self.stdout.write(json.dumps({"bench": "query_accuracy", "seed": seed, **result}))

    def _measure(self, design: StudyDesign, *, show: int) -> tuple[dict, list[str]]:
        actor = system_account("bench-query-accuracy")
        started = time.perf_counter()
        study, items = self._write(design, actor)
        edit_checks_generate(study=study, actor=actor, reason=REASON)
        for code, rule_type, item, params in STUDY_CHECKS:
            check = EditCheck(study=study, code=code, name=code, rule_type=rule_type, params=copy.deepcopy(params),
                              item=items[item] if item else None)
            edit_check_save(check=check, actor=actor, reason=REASON)
        build_seconds = time.perf_counter() - started

        started = time.perf_counter()
        done = analyzer_pass(study=study, actor=actor, full=True, today=TODAY)
        seconds = time.perf_counter() - started
        if done.errors:
            raise CommandError(f"edit checks failed at run time: {done.errors}")
        result, lines = self._score(design, study, items, show=show)
        checks = EditCheck.objects.filter(study=study)
        data_points = DataPoint.objects.filter(study=study).count()
        lines.insert(0, f"study {study.protocol_id}: {len(design.participants)} subjects at {len(SITES)} sites, "
                        f"{data_points} data points, {checks.count()} edit checks of "
                        f"{checks.values('rule_type').distinct().count()} rule types; today {TODAY}; "
                        f"built in {build_seconds:.2f} s, analyzer pass {seconds:.2f} s ({connection.vendor}, "
                        "rolled back)")
        lines.insert(1, "errors injected: " + ", ".join(f"{kind} {n}" for kind, n in sorted(design.errors.items())))
        return {"subjects": len(design.participants), "data_points": data_points, **result,
                "queries_raised": done.counts.get("queries_raised"), "seconds": round(seconds, 3),
                "build_seconds": round(build_seconds, 3), "database": connection.vendor}, lines

    def _write(self, design: StudyDesign, actor) -> tuple[Study, dict]:
        """The study in the database, every write audited like an import's."""
        def create(objects: list) -> list:
            created = audited_bulk_create(objects, actor=actor, reason=REASON, batch_size=2000)
            if created and created[0].pk is None:
                raise CommandError("this database does not return ids from a bulk insert")
            return created

        study = Study(protocol_id=f"BENCH-ACC-{uuid.uuid4().hex[:10]}", name="bench_query_accuracy (rolled back)")
        set_audit(study, actor=actor, reason=REASON).save()
        sites = {s.number: s for s in create([Site(study=study, number=number, name=f"Site {number}", country=country)
                                              for number, country, _ in SITES])}
        definitions = {v.oid: v for v in create(
            [VisitDefinition(study=study, oid=oid, name=name, order=n, planned_day=day, window_before=before,
                             window_after=after) for n, (oid, name, day, before, after) in enumerate(SCHEDULE)]
            + [VisitDefinition(study=study, oid=oid, name=name, order=len(SCHEDULE) + n)
               for n, (oid, name) in enumerate(UNSCHEDULED)])}
        forms = {f.oid: f for f in create([FormDefinition(study=study, oid=oid, name=name, order=n, repeating=repeating)
                                           for n, (oid, name, repeating) in enumerate(FORMS)])}
        items = {i.oid: i for i in create([
            ItemDefinition(study=study, form=forms[form], oid=oid, label=label, data_type=data_type, order=n,
                           mandatory=mandatory, range_low=VS_RANGES.get(oid, (None, None))[0],
                           range_high=VS_RANGES.get(oid, (None, None))[1], **extra)
            for n, (form, oid, label, data_type, mandatory, extra) in enumerate(ITEMS)])}
        people = design.participants
        for p, subject in zip(people, create([
                Subject(study=study, site=sites[p.site[0]], subject_id=f"{p.site[0]}-{p.number + 1:04d}",
                        status=p.status, consent_date=p.consent, enrolment_date=p.enrolment) for p in people]),
                strict=True):
            p.obj = subject
        visits = [v for p in people for v in p.visits.values()]
        for visit, row in zip(visits, create([
                SubjectVisit(study=study, subject=v.participant.obj, definition=definitions[v.oid], repeat_key=v.repeat,
                             actual_date=v.date)
                for v in visits]), strict=True):
            visit.obj = row
        # In record order: an AE or lab result entered twice gets the later id, as it would
        points = [pt for p in people for r in p.records for pt in r.points.values()]
        for point, row in zip(points, create([self._data_point(study, pt, items[pt.item]) for pt in points]),
                              strict=True):
            point.obj = row
        return study, items

    @staticmethod
    def _data_point(study: Study, point: Point, item: ItemDefinition) -> DataPoint:
        record = point.record
        numeric = item.data_type in (D.INTEGER, D.FLOAT)
        return DataPoint(study=study, subject=record.visit.participant.obj, visit=record.visit.obj,
                         form_id=item.form_id, item=item, repeat_key=record.repeat, raw_value=point.raw,
                         value_number=_number(point.raw) if numeric and point.raw else None,
                         value_date=_date(point.raw) if item.data_type == D.DATE else None,
                         units=point.units, normal_low=point.normal_low, normal_high=point.normal_high,
                         entered_by="site")

    def _score(self, design: StudyDesign, study: Study, items: dict, *, show: int) -> tuple[dict, list[str]]:
        def target(ref) -> tuple:
            if isinstance(ref, Point):
                return ("dp", ref.obj.pk)
            if isinstance(ref, Visit):
                return ("visit", ref.obj.pk)
            r = ref.record
            return ("missing", r.visit.participant.obj.pk, r.visit.obj.pk, items[ref.item].pk, r.repeat)

        expected = {(rule_type, target(ref)): cause for (rule_type, ref), cause in design.expected.items()}
        shown = {target(ref): _described(ref) for _, ref in design.expected}
        signals = {target(pt) for pt in design.signals()}
        found, medical, described = _findings(study)
        detected = set(found) & set(expected)
        per_rule = {}
        for rule_type in T.values:
            injected = sum(1 for t, _ in expected if t == rule_type)
            mine = [f for f in found if f[0] == rule_type]
            true_positive = sum(1 for f in mine if f in expected)
            per_rule[rule_type] = {"injected": injected, "found": len(mine), "true_positive": true_positive,
                                   "precision": _ratio(true_positive, len(mine)),
                                   "recall": _ratio(sum(1 for e in detected if e[0] == rule_type), injected)}
        true_positive = sum(1 for f in found if f in expected)
        routed = signals & set(medical)
        result = {
            "precision": _ratio(true_positive, len(found)), "recall": _ratio(len(detected), len(expected)),
            "injected": len(expected), "errors": sum(design.errors.values()), "found": len(found),
            "true_positive": true_positive,
            "medical_review": {"signals": len(medical), "abnormal_plausible_labs": len(signals), "routed": len(routed),
                               "all_routed": routed == signals, "unexpected": len(set(medical) - signals)},
            "per_rule": per_rule,
        }
        missed = [f"  missed {rule_type:16} {shown[what]} ({cause})" for (rule_type, what), cause in expected.items()
                  if (rule_type, what) not in detected]
        false = [f"  false  {rule_type:16} {described[i]}" for i, (rule_type, what) in enumerate(found)
                 if (rule_type, what) not in expected]
        return result, _table(result) + missed[:show] + false[:show]


def _findings(study: Study) -> tuple[list[tuple], list[tuple], list[str]]:
    """The pass's findings as (rule type, what it points at), the medical-review signals (what
    they point at), and a description of each finding."""
    found, medical, described = [], [], []
    rows = Discrepancy.objects.filter(study=study, status=Discrepancy.Status.OPEN).values_list(
        "rule_type", "key", "data_point_id", "visit_id", "item_id", "disposition", "edit_check__code", "observed",
        "expected")
    for rule_type, key, point, visit, item, disposition, code, observed, wanted in rows:
        if point is not None:
            what = ("dp", point)
        elif key.startswith("visit:"):
            what = ("visit", visit)
        elif key.startswith("missing:"):  # missing:<subject>:<visit>:<repeat>, see evaluate.required
            _, subject, visit_id, repeat = key.split(":", 3)
            what = ("missing", int(subject), int(visit_id), item, repeat)
        else:
            what = ("key", key)
        if disposition == Discrepancy.Disposition.MEDICAL_REVIEW:
            medical.append(what)
        else:
            found.append((rule_type, what))
            described.append(f"{code} {key}: {observed[:60]} | expected {wanted[:40]}")
    return found, medical, described


def _table(result: dict) -> list[str]:
    lines = [f"{'rule type':17} {'injected':>8} {'found':>6} {'true pos':>8} {'precision':>9} {'recall':>7}"]
    for name, figures in [*result["per_rule"].items(), ("overall", result)]:
        lines.append(f"{name:17} {figures['injected']:8} {figures['found']:6} {figures['true_positive']:8} "
                     f"{_shown(figures['precision']):>9} {_shown(figures['recall']):>7}")
    review = result["medical_review"]
    lines.append(f"medical review: {review['signals']} signals; {review['routed']} of "
                 f"{review['abnormal_plausible_labs']} abnormal but plausible lab values routed there; "
                 f"{review['unexpected']} others")
    return lines


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _described(ref) -> str:
    visit = ref.record.visit if isinstance(ref, Point | Missing) else ref
    where = f"subject {visit.participant.obj.subject_id}, {visit.oid}"
    if isinstance(ref, Point):
        return f"{ref.item} = {ref.raw!r}{' ' + ref.units if ref.units else ''} ({where})"
    if isinstance(ref, Missing):
        return f"{ref.item} absent ({where}, repeat {ref.record.repeat})"
    return f"visit on {ref.date} ({where})"


def _shown(value) -> str:
    return "-" if value is None else f"{value:.4f}"
