"""`python manage.py seed_demo`: a demo study with EDC data, queries and deviations, and one user per role.

Idempotent: every object is looked up by its natural key first, so a second run adds nothing.
Every regulated write is attributed to the `system.seed` account with a reason (21 CFR Part 11),
through the product's own audited paths: set_audit + save(), audited_bulk_create/update and the
studies services. Dates are relative to today, so the demo study always looks current.
"""

import random
from datetime import UTC, date, datetime, time, timedelta

from auditlog.context import set_actor
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from deviations.coding import code
from deviations.models import Deviation
from queries.models import Query, QueryMessage
from sdv.monitoring.demo import demo_monitoring_seed
from studies.audit import audited_bulk_create, audited_bulk_update, set_audit
from studies.models import (
    DataPoint,
    FormDefinition,
    ItemDefinition,
    Role,
    Site,
    Study,
    StudyMembership,
    Subject,
    SubjectVisit,
    VisitDefinition,
)
from studies.services import cra_site_assign, data_point_update, membership_grant, subject_create, typed_value

SEED_USERNAME = "system.seed"
REASON = "Demo data created by seed_demo"
T = ItemDefinition.DataType
YES_NO = [{"code": "Y", "decode": "Yes"}, {"code": "N", "decode": "No"}]

# username: (first name, last name, role, site number or None, staff)
USERS = {
    "sponsor": ("Helen", "Carter", Role.SPONSOR, None, True),
    "dm": ("Daniel", "Moreau", Role.DATA_MANAGER, None, False),
    "cra": ("Clara", "Rossi", Role.CRA, None, False),
    "site1": ("Camille", "Dubois", Role.SITE_COORDINATOR, "101", False),
    "pi1": ("Pierre", "Laurent", Role.INVESTIGATOR, "101", False),
    "site2": ("Jonas", "Weber", Role.SITE_COORDINATOR, "102", False),
    "medmon": ("Maya", "Patel", Role.MEDICAL_MONITOR, None, False),
    "auditor": ("Arthur", "Quinn", Role.AUDITOR, None, False),
}
CRA_SITES = ("101", "102")
SPONSOR_APPS = ("studies", "queries", "deviations", "sdv")

# (oid, name, planned study day, window before, window after)
VISITS = [
    ("SE.SCREENING", "Screening", -14, 7, 0),
    ("SE.BASELINE", "Baseline", 1, 0, 0),
    ("SE.WEEK4", "Week 4", 29, 3, 3),
    ("SE.WEEK12", "Week 12", 85, 7, 7),
    ("SE.EOS", "End of study", None, 0, 0),
]
# form oid -> (name, repeating, items); item: (oid, label, type, units, low, high, mandatory, critical, codelist)
FORMS = {
    "F.DM": ("Demographics", False, [
        ("I.DM.ICDAT", "Informed consent date", T.DATE, "", None, None, True, True, []),
        ("I.DM.AGE", "Age", T.INTEGER, "years", 18, 85, True, True, []),
        ("I.DM.SEX", "Sex", T.TEXT, "", None, None, True, False,
         [{"code": "F", "decode": "Female"}, {"code": "M", "decode": "Male"}]),
        ("I.DM.HEIGHT", "Height", T.FLOAT, "cm", 120, 220, False, False, []),
        ("I.DM.ELIG", "All eligibility criteria met", T.BOOLEAN, "", None, None, True, True, YES_NO),
    ]),
    "F.VS": ("Vital signs", False, [
        ("I.VS.SYSBP", "Systolic blood pressure", T.INTEGER, "mmHg", 70, 250, True, True, []),
        ("I.VS.DIABP", "Diastolic blood pressure", T.INTEGER, "mmHg", 40, 150, True, False, []),
        ("I.VS.PULSE", "Heart rate", T.INTEGER, "beats/min", 40, 150, False, False, []),
        ("I.VS.WEIGHT", "Weight", T.FLOAT, "kg", 35, 250, True, False, []),
    ]),
    "F.LB": ("Laboratory", False, [
        ("I.LB.HGB", "Haemoglobin", T.FLOAT, "g/dL", 5, 20, False, False, []),
        ("I.LB.CREAT", "Creatinine", T.FLOAT, "umol/L", 20, 800, False, False, []),
        ("I.LB.ALT", "Alanine aminotransferase", T.FLOAT, "U/L", 0, 1000, False, False, []),
        ("I.LB.K", "Potassium", T.FLOAT, "mmol/L", 2, 8, False, True, []),
    ]),
    "F.AE": ("Adverse events", True, [
        ("I.AE.TERM", "Adverse event (verbatim term)", T.TEXT, "", None, None, True, False, []),
        ("I.AE.STDAT", "Start date", T.DATE, "", None, None, True, False, []),
        ("I.AE.SEV", "Severity", T.TEXT, "", None, None, True, False,
         [{"code": "MILD", "decode": "Mild"}, {"code": "MODERATE", "decode": "Moderate"},
          {"code": "SEVERE", "decode": "Severe"}]),
        ("I.AE.SER", "Serious", T.BOOLEAN, "", None, None, True, True, YES_NO),
    ]),
}
VISIT_FORMS = {"SE.SCREENING": ["F.DM", "F.VS", "F.LB"], "SE.BASELINE": ["F.VS"],
               "SE.WEEK4": ["F.VS", "F.AE"], "SE.WEEK12": ["F.VS", "F.LB"]}

MAIN_STUDY = {
    "protocol_id": "TRIALOPS-DEMO-001",
    "name": "A Phase II, randomised, double-blind, placebo-controlled study of TRX-101 "
            "in adults with uncontrolled essential hypertension",
    "sponsor": "TrialOps Demo Pharma", "phase": "II", "subjects_per_site": 10,
    "sites": [  # number, name, country, city, time zone, language, latitude, longitude
        ("101", "Paris Cardiology Research Centre", "FR", "Paris", "Europe/Paris", "fr", "48.84930", "2.38140"),
        ("102", "Berlin Mitte Clinical Research Unit", "DE", "Berlin", "Europe/Berlin", "de", "52.52580", "13.37720"),
        ("103", "Boston Heart Institute", "US", "Boston", "America/New_York", "en", "42.36270", "-71.06900"),
        ("104", "Madrid Norte University Hospital", "ES", "Madrid", "Europe/Madrid", "es", "40.48090", "-3.68690"),
    ],
    "visits": VISITS, "forms": FORMS, "visit_forms": VISIT_FORMS,
}
# A second, small study that only the sponsor and the data manager belong to: scoping is visible.
SMALL_STUDY = {
    "protocol_id": "TRIALOPS-DEMO-002",
    "name": "A Phase I, open-label study of the pharmacokinetics of TRX-101 in healthy volunteers",
    "sponsor": "TrialOps Demo Pharma", "phase": "I", "subjects_per_site": 3,
    "sites": [("201", "Leiden Early Phase Unit", "NL", "Leiden", "Europe/Amsterdam", "nl", "52.16600", "4.47800")],
    "visits": VISITS[:2], "forms": {"F.VS": FORMS["F.VS"]},
    "visit_forms": {"SE.SCREENING": ["F.VS"], "SE.BASELINE": ["F.VS"]},
}

# The story of the main study: a few things a data manager, CRA or medical monitor would find.
SCREEN_FAILURES = {"102-004", "104-004"}
DISCONTINUED = {"103-006"}
STILL_SCREENING = {"101-010"}
LATE_CONSENT = {"102-003"}  # consent signed the day after screening procedures
LATE_ENTRY = {"103-002"}  # data pages entered more than 10 days after the visit
OUT_OF_WINDOW = {("101-003", "SE.WEEK4"): 7, ("103-005", "SE.WEEK4"): -6, ("104-002", "SE.WEEK12"): 12}
AES = {  # subject: (term, severity, serious, days before the Week 4 visit)
    "101-001": ("Headache", "MILD", "N", 10), "101-006": ("Nasopharyngitis", "MILD", "N", 6),
    "102-006": ("Dizziness", "MODERATE", "N", 12), "103-003": ("Hyperkalaemia", "SEVERE", "Y", 3),
    "104-005": ("Peripheral oedema", "MILD", "N", 15),
}
VALUE_OVERRIDES = {  # (subject, visit, item): raw value as first entered ("" = left blank)
    ("101-002", "SE.WEEK4", "I.VS.SYSBP"): "1450",
    ("101-005", "SE.SCREENING", "I.DM.AGE"): "17",
    ("102-005", "SE.SCREENING", "I.DM.HEIGHT"): "1.72",
    ("103-002", "SE.WEEK12", "I.LB.HGB"): "132",
    ("104-006", "SE.BASELINE", "I.VS.PULSE"): "210",
    ("101-001", "SE.BASELINE", "I.VS.WEIGHT"): "812",
    ("103-004", "SE.SCREENING", "I.DM.HEIGHT"): "168",
    ("104-001", "SE.SCREENING", "I.LB.K"): "5.6",
    ("102-002", "SE.WEEK4", "I.VS.DIABP"): "",
    ("103-007", "SE.SCREENING", "I.LB.ALT"): "",
    ("104-002", "SE.WEEK12", "I.VS.WEIGHT"): "",
}
CORRECTIONS = [  # (subject, visit, item, value first entered, corrected value, reason for change)
    ("101-002", "SE.WEEK4", "I.VS.SYSBP", "1450", "145",
     "Transcription error corrected against source (query answered)"),
    ("101-001", "SE.BASELINE", "I.VS.WEIGHT", "812", "81.2", "Decimal point omitted at entry; corrected by site"),
    ("102-002", "SE.WEEK4", "I.VS.DIABP", "", "88", "Value entered from the source document (query answered)"),
    ("103-004", "SE.SCREENING", "I.DM.HEIGHT", "168", "186", "Transposed digits found at source data verification"),
]
QUERIES = [  # subject, visit, item, origin, category, severity, state, author, text, thread [(day, kind, user, text)]
    ("101-002", "SE.WEEK4", "I.VS.SYSBP", "rule", "range", "major", "closed", None,
     "Signes vitaux, visite Semaine 4 : la pression artérielle systolique saisie (1450 mmHg) est en dehors de "
     "l'intervalle attendu (70-250 mmHg). Merci de vérifier la valeur par rapport au document source.",
     [(5, "answer", "site1", "Erreur de transcription : valeur corrigée selon le document source."),
      (8, "close", "dm", "Correction vérifiée. Query clôturée.")]),
    ("101-005", "SE.SCREENING", "I.DM.AGE", "rule", "range", "critical", "open", None,
     "Données démographiques, visite de sélection : l'âge saisi (17 ans) est en dehors de l'intervalle attendu "
     "(18-85 ans). Merci de vérifier la valeur par rapport au document source.", []),
    ("102-002", "SE.WEEK4", "I.VS.DIABP", "rule", "missing", "minor", "answered", None,
     "Vitalzeichen, Visite Woche 4: Der diastolische Blutdruck (Pflichtfeld) ist nicht ausgefüllt. Bitte prüfen "
     "Sie das Quelldokument und tragen Sie den Wert ein oder geben Sie an, warum er nicht erhoben wurde.",
     [(4, "answer", "site2", "Wert aus dem Quelldokument nachgetragen.")]),
    ("102-005", "SE.SCREENING", "I.DM.HEIGHT", "manual", "range", "minor", "open", "cra",
     "Demografie, Screening-Visite: Die eingetragene Körpergröße (1.72) liegt außerhalb des erwarteten Bereichs "
     "(120-220 cm). Bitte prüfen Sie den Wert anhand des Quelldokuments.",
     [(6, "answer", "site2", "Der Wert entspricht dem Quelldokument."),
      (9, "requery", "cra", "Das Feld wird in cm erfasst. Bitte prüfen Sie die im Quelldokument dokumentierte "
                            "Einheit und bestätigen oder korrigieren Sie den Eintrag.")]),
    ("104-006", "SE.BASELINE", "I.VS.PULSE", "rule", "range", "major", "candidate", None,
     "Constantes vitales, visita basal: la frecuencia cardíaca registrada (210 lpm) está fuera del rango esperado "
     "(40-150 lpm). Por favor, verifique el valor con el documento fuente.", []),
    ("103-003", "SE.WEEK4", "I.AE.SER", "manual", "safety", "major", "open", "medmon",
     "Adverse events, Week 4: the event 'Hyperkalaemia' is recorded as serious. Please provide the date the site "
     "became aware of the event and the date the SAE report was sent to safety.", []),
    ("103-006", "SE.WEEK4", "I.VS.SYSBP", "manual", "other", "minor", "cancelled", "dm",
     "Vital signs, Week 4: please verify systolic blood pressure against the source document.",
     [(1, "note", "dm", "Cancelled: raised in error; the value is within the expected range.")]),
    ("104-002", "SE.WEEK12", "I.VS.WEIGHT", "rule", "missing", "minor", "open", None,
     "Constantes vitales, visita Semana 12: el peso (campo obligatorio) no está cumplimentado. Por favor, consulte "
     "el documento fuente y registre el valor o indique el motivo por el que no se obtuvo.", []),
]
DEVIATIONS = [  # subject, visit, days after it, category, importance, status, source, reporter, term, description
    ("101-003", "SE.WEEK4", 0, "visit_window", "non_important", "closed", "manual", "cra",
     "VISIT OUT OF WINDOW", "Week 4 visit performed on study day 36 (window: days 26 to 32)."),
    ("103-003", "SE.WEEK4", 0, "safety_reporting", "important", "open", "manual", "medmon",
     "SAE NOT REPORTED WITHIN 24 HOURS",
     "Serious adverse event (hyperkalaemia) reported to safety 4 days after site awareness; the protocol "
     "requires 24 hours."),
    ("104-001", "SE.BASELINE", 0, "eligibility", "important", "under_review", "manual", "dm",
     "EXCLUSION CRITERION MET", "Subject randomised although the screening potassium (5.6 mmol/L) exceeded the "
                                "exclusion limit of 5.0 mmol/L (exclusion criterion 7)."),
    ("102-006", "SE.WEEK4", 10, "ip_dosing", "non_important", "closed", "manual", "site2",
     "STUDY DRUG DOSES MISSED", "Three consecutive daily doses of study drug missed while the subject was "
                                "travelling; documented in the dosing diary."),
    ("103-001", "SE.WEEK4", 20, "prohibited_medication", "non_important", "open", "manual", "dm",
     "PROHIBITED CONCOMITANT MEDICATION", "Ibuprofen 400 mg daily for 5 days for back pain (NSAIDs are "
                                          "prohibited by protocol section 5.8)."),
]


# The protocol number of the clindata study (data/demo/clindata, loaded by `make demo` first).
CLINDATA_DEMO_PROTOCOL = "AA-AA-000-0000"


class Command(BaseCommand):
    help = "Create (idempotently) a demo study with data, queries, deviations and one user per role."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Seed even under production settings.")

    def handle(self, *args, force=False, **options):
        if str(getattr(settings, "SETTINGS_MODULE", "")).endswith("production") and not force:
            raise CommandError("Refusing to create demo accounts under production settings (use --force).")
        with transaction.atomic():
            seed = _seed_user()
            with set_actor(seed):  # access-control audit (auditlog) names the seeding account too
                users = _users()
                main = _study(MAIN_STUDY, seed)
                small = _study(SMALL_STUDY, seed)
                _memberships(users, main, small)
                realistic = _clindata_memberships(users)
                _queries(main, seed, users)
                _corrections(main, seed)  # after the queries: the site corrects once asked
                _deviations(main, seed, users)
                _deviation_plan_and_detection(main, seed)
                demo_monitoring_seed(study=main, actor=seed)  # monitoring plan and visits (sdv.monitoring)
                sources = _source_documents(main, seed)
        self._report(main, small, *([realistic] if realistic else []))
        self.stdout.write(f"Source documents: {sources}")

    def _report(self, *studies):
        for study in studies:
            self.stdout.write(
                f"{study.protocol_id}: sites {study.sites.count()}, subjects {study.subjects.count()}, "
                f"visits {study.subject_visits.count()}, data points {study.data_points.count()}, "
                f"queries {study.queries.count()}, deviations {study.deviations.count()}"
            )
        self.stdout.write("Demo users (password from DEMO_PASSWORD):")
        for username, (first, last, role, site, _) in USERS.items():
            scope = f"site {site}" if site else ("sites " + ", ".join(CRA_SITES) if role == Role.CRA else "study")
            self.stdout.write(f"  {username:<8} {first + ' ' + last:<16} {Role(role).label} ({scope})")
        self.stderr.write(self.style.WARNING(
            f"WARNING: every demo account has the password {settings.DEMO_PASSWORD!r}. "
            "For a local demo only: never seed a system that holds real data."
        ))


def _source_documents(study, seed) -> dict:
    from sdv.demo import demo_source_documents  # noqa: PLC0415 (sdv depends on studies, not the reverse)

    return demo_source_documents(study=study, actor=seed)


# --- users and access --------------------------------------------------------------------------

def _seed_user():
    user, created = get_user_model().objects.get_or_create(
        username=SEED_USERNAME, defaults={"first_name": "Demo data", "last_name": "(seed_demo)"}
    )
    if created:
        user.set_unusable_password()  # a system account: it signs writes, it never logs in
        user.save()
    return user


def _users() -> dict:
    sponsors = Group.objects.get_or_create(name="Sponsors")[0]
    sponsors.permissions.add(*Permission.objects.filter(
        Q(codename__startswith="view_") | Q(codename__startswith="change_"), content_type__app_label__in=SPONSOR_APPS,
    ).exclude(codename__startswith="change_historical"))
    users = {}
    for username, (first, last, _role, _site, staff) in USERS.items():
        user, _ = get_user_model().objects.get_or_create(
            username=username,
            defaults={"first_name": first, "last_name": last, "email": f"{username}@demo.trialops.example"},
        )
        user.is_staff = staff
        user.set_password(settings.DEMO_PASSWORD)
        user.save()
        if staff:
            user.groups.add(sponsors)
        users[username] = user
    return users


def _grant(user, study, role, site=None):
    if not StudyMembership.objects.filter(user=user, study=study, role=role, site=site).exists():
        membership_grant(user=user, study=study, role=role, site=site)


def _memberships(users, main, small):
    sites = {site.number: site for site in main.sites.all()}
    for username, (_first, _last, role, site_number, _staff) in USERS.items():
        _grant(users[username], main, role, sites.get(site_number))
    for number in CRA_SITES:
        cra_site_assign(cra=users["cra"], site=sites[number])
    _grant(users["sponsor"], small, Role.SPONSOR)
    _grant(users["dm"], small, Role.DATA_MANAGER)


def _clindata_memberships(users) -> Study | None:
    """The demo users' roles in the clindata subset `make demo` loads first (`import_clindata
    data/demo/clindata`), so the demo also opens on a realistic study. Site roles go to its first
    two sites by number, the CRA monitors both. Nothing happens when that study is not loaded."""
    study = Study.objects.filter(protocol_id=CLINDATA_DEMO_PROTOCOL).first()
    if study is None:
        return None
    sites = sorted(study.sites.all(), key=lambda site: (len(site.number), site.number))[:2]
    if len(sites) < 2:
        return study
    for username, (_first, _last, role, site_number, _staff) in USERS.items():
        site = None
        if site_number is not None:
            site = sites[0] if site_number == USERS["site1"][3] else sites[1]
        _grant(users[username], study, role, site)
    for site in sites:
        cra_site_assign(cra=users["cra"], site=site)
    return study


# --- study metadata ----------------------------------------------------------------------------

def _saved(instance, seed):
    instance.full_clean()
    set_audit(instance, actor=seed, reason=REASON)
    instance.save()
    return instance


def _get_or_save(model, lookup: dict, fields: dict, seed):
    found = model.objects.filter(**lookup).first()
    return found if found else _saved(model(**lookup, **fields), seed)


def _study(spec, seed) -> Study:
    study = _get_or_save(Study, {"protocol_id": spec["protocol_id"]}, {
        "oid": f"S.{spec['protocol_id']}", "name": spec["name"], "sponsor": spec["sponsor"],
        "phase": spec["phase"], "status": Study.Status.ACTIVE}, seed)
    for number, name, country, city, tz, language, lat, lon in spec["sites"]:
        _get_or_save(Site, {"study": study, "number": number}, {
            "name": name, "country": country, "city": city, "timezone": tz, "language": language,
            "latitude": lat, "longitude": lon}, seed)
    for order, (oid, name, day, before, after) in enumerate(spec["visits"], start=1):
        _get_or_save(VisitDefinition, {"study": study, "oid": oid}, {
            "name": name, "order": order, "planned_day": day, "window_before": before, "window_after": after}, seed)
    for form_order, (form_oid, (form_name, repeating, items)) in enumerate(spec["forms"].items(), start=1):
        form = _get_or_save(FormDefinition, {"study": study, "oid": form_oid},
                            {"name": form_name, "order": form_order, "repeating": repeating}, seed)
        for order, (oid, label, data_type, units, low, high, mandatory, critical, codelist) in enumerate(items, 1):
            _get_or_save(ItemDefinition, {"study": study, "oid": oid}, {
                "form": form, "label": label, "data_type": data_type, "units": units, "range_low": low,
                "range_high": high, "mandatory": mandatory, "critical": critical, "codelist": codelist,
                "order": order}, seed)
    _subjects(study, spec, seed)
    _subject_visits(study, spec, seed)
    _data_points(study, spec, seed)
    return study


# --- subjects, visits and data ------------------------------------------------------------------

def _timeline(subject_id: str, site_index: int, index: int) -> dict[str, date]:
    """Visit dates of one subject, relative to today; visits still in the future are left out."""
    rng = random.Random(f"timeline-{subject_id}")
    today = timezone.localdate()
    screening = today - timedelta(days=6 if subject_id in STILL_SCREENING else 165 - 11 * index - 4 * site_index)
    if subject_id in STILL_SCREENING | SCREEN_FAILURES:
        return {"SE.SCREENING": screening}
    baseline = screening + timedelta(days=14 + rng.randint(0, 4))
    dates = {"SE.SCREENING": screening, "SE.BASELINE": baseline}
    for oid, day, spread in (("SE.WEEK4", 29, 3), ("SE.WEEK12", 85, 7)):
        offset = OUT_OF_WINDOW.get((subject_id, oid), rng.randint(-spread, spread))
        dates[oid] = baseline + timedelta(days=day - 1 + offset)
    if subject_id in DISCONTINUED:
        dates["SE.EOS"] = dates.pop("SE.WEEK12") - timedelta(days=40)
    elif dates["SE.WEEK12"] <= today:
        dates["SE.EOS"] = dates["SE.WEEK12"]
    return {oid: day for oid, day in dates.items() if day <= today}


def _subject_plan(spec):
    for site_index, site_row in enumerate(spec["sites"]):
        for index in range(spec["subjects_per_site"]):
            subject_id = f"{site_row[0]}-{index + 1:03d}"
            yield site_row[0], subject_id, _timeline(subject_id, site_index, index)


def _subjects(study, spec, seed):
    sites = {site.number: site for site in study.sites.all()}
    existing = set(study.subjects.values_list("subject_id", flat=True))
    for site_number, subject_id, dates in _subject_plan(spec):
        if subject_id in existing:
            continue
        screening = dates["SE.SCREENING"]
        consent = screening + timedelta(days=1) if subject_id in LATE_CONSENT else screening
        if subject_id in SCREEN_FAILURES:
            status = Subject.Status.SCREEN_FAILED
        elif "SE.BASELINE" not in dates:
            status = Subject.Status.SCREENING
        elif subject_id in DISCONTINUED:
            status = Subject.Status.DISCONTINUED
        else:
            status = Subject.Status.COMPLETED if "SE.EOS" in dates else Subject.Status.ENROLLED
        subject_create(site=sites[site_number], subject_id=subject_id, actor=seed, reason=REASON, status=status,
                       consent_date=consent, enrolment_date=dates.get("SE.BASELINE"),
                       first_dose_date=dates.get("SE.BASELINE"))


def _subject_visits(study, spec, seed):
    subjects = {subject.subject_id: subject for subject in study.subjects.all()}
    definitions = {definition.oid: definition for definition in study.visit_definitions.all()}
    existing = set(study.subject_visits.values_list("subject_id", "definition_id"))
    new = [
        SubjectVisit(study=study, subject=subjects[subject_id], definition=definitions[oid], actual_date=day)
        for _site, subject_id, dates in _subject_plan(spec)
        for oid, day in dates.items()
        if oid in definitions and (subjects[subject_id].pk, definitions[oid].pk) not in existing
    ]
    audited_bulk_create(new, actor=seed, reason=REASON)


def _values(subject: Subject, oid: str, visit_day: date) -> dict[str, str]:
    """Plausible values for one subject at one visit; the same every run (seeded by subject and visit)."""
    base = random.Random(f"subject-{subject.subject_id}")  # stable per subject: height, usual BP, weight
    rng = random.Random(f"values-{subject.subject_id}-{oid}")
    drop = {"SE.WEEK4": 6, "SE.WEEK12": 14}.get(oid, 0)  # the drug lowers blood pressure a little
    values = {
        "I.DM.ICDAT": subject.consent_date.isoformat(), "I.DM.AGE": str(base.randint(34, 78)),
        "I.DM.SEX": base.choice("FM"), "I.DM.HEIGHT": f"{base.gauss(170, 9):.0f}",
        "I.DM.ELIG": "N" if subject.status == Subject.Status.SCREEN_FAILED else "Y",
        "I.VS.SYSBP": str(base.randint(146, 168) - drop + rng.randint(-6, 6)),
        "I.VS.DIABP": str(base.randint(88, 99) - drop // 2 + rng.randint(-4, 4)),
        "I.VS.PULSE": str(rng.randint(58, 88)), "I.VS.WEIGHT": f"{base.gauss(82, 12) + rng.uniform(-1.5, 1.5):.1f}",
        "I.LB.HGB": f"{rng.gauss(14, 1.1):.1f}", "I.LB.CREAT": f"{rng.gauss(80, 14):.0f}",
        "I.LB.ALT": str(rng.randint(12, 46)), "I.LB.K": f"{rng.gauss(4.3, 0.3):.1f}",
    }
    if subject.subject_id in AES:
        term, severity, serious, days_before = AES[subject.subject_id]
        values.update({"I.AE.TERM": term, "I.AE.STDAT": (visit_day - timedelta(days=days_before)).isoformat(),
                       "I.AE.SEV": severity, "I.AE.SER": serious})
    return values


def _entered_at(subject_id: str, visit: SubjectVisit) -> datetime:
    rng = random.Random(f"entry-{subject_id}-{visit.definition.oid}")
    delay = 15 if subject_id in LATE_ENTRY else rng.randint(0, 4)
    when = datetime.combine(visit.actual_date + timedelta(days=delay), time(10, 30), tzinfo=UTC)
    return min(when, timezone.now())


def _data_points(study, spec, seed):
    items = {item.oid: item for item in study.item_definitions.select_related("form")}
    existing = set(study.data_points.values_list("visit_id", "item_id", "repeat_key"))
    new = []
    for visit in study.subject_visits.select_related("subject", "definition").order_by("subject__subject_id", "id"):
        subject = visit.subject
        values = _values(subject, visit.definition.oid, visit.actual_date)
        for form_oid in spec["visit_forms"].get(visit.definition.oid, []):
            for item in (item for item in items.values() if item.form.oid == form_oid):
                raw = VALUE_OVERRIDES.get((subject.subject_id, visit.definition.oid, item.oid), values.get(item.oid))
                if raw is None or (visit.pk, item.pk, "1") in existing:
                    continue  # no adverse event for this subject, or already seeded
                number, day = typed_value(item=item, raw_value=raw)
                new.append(DataPoint(
                    study=study, subject=subject, visit=visit, form=item.form, item=item, raw_value=raw,
                    value_number=number, value_date=day, entered_by=_site_user(subject.site.number),
                    entered_at=_entered_at(subject.subject_id, visit),
                    sdv_state=DataPoint.SdvState.TO_VERIFY if item.critical else DataPoint.SdvState.NOT_REQUIRED,
                ))
    audited_bulk_create(new, actor=seed, reason=REASON)


def _site_user(site_number: str) -> str:
    return {"101": "site1", "102": "site2"}.get(site_number, f"coordinator.{site_number}")


def _data_point(study, subject_id, visit_oid, item_oid):
    return study.data_points.filter(
        subject__subject_id=subject_id, visit__definition__oid=visit_oid, item__oid=item_oid
    ).first()


def _corrections(study, seed):
    for subject_id, visit_oid, item_oid, first, corrected, reason in CORRECTIONS:
        data_point = _data_point(study, subject_id, visit_oid, item_oid)
        if data_point is not None and data_point.raw_value == first and data_point.version == 1:
            data_point_update(data_point=data_point, raw_value=corrected, actor=seed, reason=reason)


# --- queries and deviations ---------------------------------------------------------------------

def _queries(study, seed, users):
    backdated = []
    for subject_id, visit_oid, item_oid, origin, category, severity, state, author, text, thread in QUERIES:
        data_point = _data_point(study, subject_id, visit_oid, item_oid)
        if data_point is None or Query.objects.filter(study=study, subject=data_point.subject, text=text).exists():
            continue
        opened = min(data_point.entered_at + timedelta(days=2), timezone.now())
        at = {kind: min(opened + timedelta(days=day), timezone.now()) for day, kind, _user, _text in thread}
        query = _saved(Query(
            study=study, site=data_point.subject.site, subject=data_point.subject, data_point=data_point,
            origin=origin, rule_code=f"{item_oid.removeprefix('I.')}.{category.upper()}" if origin == "rule" else "",
            category=category, severity=severity, state=state, recipient=Query.Recipient.SITE, text=text,
            due_date=(opened + timedelta(days=14)).date(), created_by=users.get(author),
            answered_at=at.get("answer"), closed_at=at.get("close"),
        ), seed)
        query.created_at = opened
        backdated.append(query)
        messages = [(0, "question", author, text), *thread] if state != "candidate" else []
        for day, kind, username, message_text in messages:
            message = _saved(QueryMessage(query=query, kind=kind, author=users.get(username), text=message_text), seed)
            message.created_at = min(opened + timedelta(days=day), timezone.now())
            backdated.append(message)
    # created_at is auto_now_add: put the records on the story's timeline, audited like any change.
    reason = "Demo data: creation time set to the story's timeline"
    audited_bulk_update([obj for obj in backdated if isinstance(obj, Query)], ["created_at"], actor=seed, reason=reason)
    audited_bulk_update([obj for obj in backdated if isinstance(obj, QueryMessage)], ["created_at"], actor=seed,
                        reason=reason)


def _deviations(study, seed, users):
    today = timezone.localdate()
    for subject_id, visit_oid, days_after, category, importance, status, source, reporter, term, text in DEVIATIONS:
        subject = study.subjects.filter(subject_id=subject_id).first()
        visit = subject and subject.visits.filter(definition__oid=visit_oid).first()
        if visit is None or Deviation.objects.filter(study=study, subject=subject, description=text).exists():
            continue
        occurred = min(visit.actual_date + timedelta(days=days_after), today)
        detected = min(occurred + timedelta(days=14), today)
        _saved(Deviation(
            study=study, site=subject.site, subject=subject, category=category, term=term, importance=importance,
            status=status, source=source, description=text, occurred_on=occurred, detected_on=detected,
            **code(category),  # SDTM DV coding from the shipped vocabulary, as a person's report gets it
            closed_on=min(detected + timedelta(days=10), today) if status == "closed" else None,
            reported_by=users.get(reporter),
        ), seed)


# The demo study's deviation plan (the protocol's windows, consent, eligibility and SAE reporting
# rules) and one PatternRecognition pass over its data: the late consent, the visits out of their
# window and the late SAE report are then found by the product, not seeded. Idempotent: an
# unchanged plan is no new version and a second pass writes nothing.
DEMO_PLAN = {
    "visits": {"Screening": {"day": -14, "before": 7, "after": 0}, "Baseline": {"day": 1},
               "Week 4": {"day": 29, "before": 3, "after": 3}, "Week 12": {"day": 85, "before": 7, "after": 7}},
    "consent": {"before_first_visit": True, "before_first_dose": True},
    "eligibility": {"criteria_not_met_is_deviation": True},
    "safety": {"report_within_days": 1},
    "importance": {"visit_window": "non_important"},
    "data": {"eligibility": {"item": "I.DM.ELIG", "not_met": ["N"]},
             "adverse_events": {"serious": "I.AE.SER", "onset": "I.AE.STDAT"}},
}


def _deviation_plan_and_detection(study, seed):
    from deviations.detection import detection_run  # noqa: PLC0415 (studies loads before deviations)
    from deviations.plan import plan_import  # noqa: PLC0415

    plan, _ = plan_import(study=study, content=DEMO_PLAN, actor=seed, reason="Demo deviation plan")
    detection_run(study=study, actor=seed, plan=plan)
