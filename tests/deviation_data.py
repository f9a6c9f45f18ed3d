"""A small study for the deviation tests, built with the factories: subjects with consent, first
dose and arm, visits of a schedule, and log-form records (EX, CM, AE, IE) stored as the SDTM
importer stores them (one data point per variable, the record kept apart by its repeat key)."""

import datetime

from deviations.plan import plan_import
from studies.models import ItemDefinition
from tests.factories import (
    DataPointFactory,
    FormDefinitionFactory,
    ItemDefinitionFactory,
    SiteFactory,
    StudyFactory,
    SubjectFactory,
    SubjectVisitFactory,
    UserFactory,
    VisitDefinitionFactory,
)

D1 = datetime.date(2025, 3, 1)  # day 1 (RFSTDTC) of every subject here
SCREENED = datetime.date(2025, 2, 15)  # study day -14
PLAN = {
    "visits": {"SCREENING": {"day": -14, "before": 7, "after": 0}, "DAY 1": {"day": 1},
               "WEEK 2": {"day": 15, "before": 3, "after": 3}, "WEEK 4": {"day": 29, "before": 3, "after": 3}},
    "consent": {"before_first_visit": True, "before_first_dose": True},
    "dosing": {"arms": {"PBO": {"doses": [0], "units": "mg"}, "HI": {"doses": [40, 20], "units": "mg"}}},
    "prohibited_medications": [{"name": "RIFAMPICIN", "washout_days": 14}],
    "eligibility": {"criteria_not_met_is_deviation": True},
    "safety": {"report_within_days": 1},
    "importance": {"visit_window": "non_important"},
}
ITEMS = {"EX": ["EXDOSE", "EXDOSU", "EXSTDTC", "EXENDTC"], "CM": ["CMDECOD", "CMTRT", "CMSTDTC", "CMENDTC"],
         "AE": ["AESER", "AESTDTC"], "IE": ["INCL01", "EXCL02"]}


def day(n: int) -> datetime.date:
    """The date of study day n (no day 0)."""
    return D1 + datetime.timedelta(days=n - 1 if n > 0 else n)


class Trial:
    def __init__(self, plan: dict | None = PLAN):
        self.study = StudyFactory()
        self.site = SiteFactory(study=self.study, number=f"{self.study.pk}-1")
        self.actor = UserFactory(username=f"planner{self.study.pk}")
        self.definitions = {name: VisitDefinitionFactory(study=self.study, oid=f"V{order}", name=name, order=order,
                                                         planned_day=None)
                            for order, name in enumerate([*PLAN["visits"], "LOG"])}
        self.forms, self.items = {}, {}
        for oid, names in ITEMS.items():
            form = FormDefinitionFactory(study=self.study, oid=oid)
            self.forms[oid] = form
            for name in names:
                self.items[f"{oid}.{name}"] = ItemDefinitionFactory(
                    study=self.study, form=form, oid=f"{oid}.{name}", data_type=ItemDefinition.DataType.TEXT,
                    units="", range_low=None, range_high=None)
        self.logs = {}
        self.plan = None
        if plan:
            self.plan = plan_import(study=self.study, content=plan, actor=self.actor, reason="test plan")[0]

    def subject(self, *, consent=SCREENED, first_dose=D1, arm="HI", status="enrolled", visits=("SCREENING", "DAY 1")):
        subject = SubjectFactory(site=self.site, consent_date=consent, first_dose_date=first_dose, arm=arm,
                                 status=status, enrolment_date=first_dose)
        self.logs[subject.pk] = SubjectVisitFactory(subject=subject, definition=self.definitions["LOG"],
                                                    actual_date=None)
        planned = {"SCREENING": -14, "DAY 1": 1, "WEEK 2": 15, "WEEK 4": 29}
        for name in visits:
            self.visit(subject, name, day(planned[name]))
        return subject

    def visit(self, subject, name: str, on: datetime.date, repeat: str = "1"):
        return SubjectVisitFactory(subject=subject, definition=self.definitions[name], actual_date=on,
                                   repeat_key=repeat)

    def record(self, subject, form: str, repeat: str, entered_at=None, **values):
        for name, value in values.items():
            DataPointFactory(visit=self.logs[subject.pk], item=self.items[f"{form}.{name}"],
                             form=self.forms[form], raw_value=str(value), value_number=None, repeat_key=repeat,
                             entered_at=entered_at)
