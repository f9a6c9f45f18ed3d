"""The QueryAnalyzer's edit checks, one rule type at a time on a small study, then its memory
across passes: deduplication, confirmed-correct values, confidence from history, incremental
passes, and a rule that fails at run time."""

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from agents.services import agent_config_set
from queries.checks.engine import analyzer_pass
from queries.lifecycle import query_close, query_release
from queries.models import AnalyzerPass, Discrepancy, EditCheck, Query
from queries.services import edit_check_save, edit_checks_generate
from studies.audit import system_account
from studies.models import DataPoint, ItemDefinition, Role
from studies.services import data_point_update, membership_grant
from tests.factories import (
    FormDefinitionFactory,
    ItemDefinitionFactory,
    SiteFactory,
    StudyFactory,
    SubjectFactory,
    SubjectVisitFactory,
    UserFactory,
    VisitDefinitionFactory,
)

pytestmark = pytest.mark.django_db
TODAY = datetime.date(2025, 6, 1)
F = ItemDefinition.DataType


class World:
    """A study with vitals, adverse events, SAE and disposition forms and a lab panel."""

    def __init__(self):
        self.actor = system_account("agent.QueryAnalyzer")
        self.study = StudyFactory()
        self.site = SiteFactory(study=self.study)
        self.day1 = VisitDefinitionFactory(study=self.study, oid="SE.DAY1", name="Day 1", planned_day=1,
                                           window_before=0, window_after=0)
        self.week2 = VisitDefinitionFactory(study=self.study, oid="SE.WEEK2", name="Week 2", planned_day=15,
                                            window_before=2, window_after=2)
        self.log = VisitDefinitionFactory(study=self.study, oid="SE.LOG", name="Logs", planned_day=None)
        forms = {oid: FormDefinitionFactory(study=self.study, oid=oid, name=oid) for oid in ("VS", "AE", "SAE", "LB")}
        self.items = {}
        for form, oid, data_type, extra in (
            ("VS", "VS.SYSBP", F.FLOAT, {"range_low": 60, "range_high": 250, "units": "mmHg"}),
            ("VS", "VS.DIABP", F.FLOAT, {"range_low": None, "range_high": None, "units": "mmHg"}),
            ("VS", "VS.VSDAT", F.DATE, {}),
            ("AE", "AE.AETERM", F.TEXT, {}),
            ("AE", "AE.AESTDAT", F.DATE, {}),
            ("AE", "AE.AEENDAT", F.DATE, {}),
            ("AE", "AE.AESER", F.TEXT, {"codelist": [{"code": "Y", "decode": "Yes"}, {"code": "N", "decode": "No"}]}),
            ("SAE", "SAE.SAEDAT", F.DATE, {}),
            ("LB", "LB.K", F.FLOAT, {"label": "Serum Potassium", "units": "mmol/L"}),
        ):
            defaults = {"range_low": None, "range_high": None, "units": "", "label": oid, **extra}
            self.items[oid] = ItemDefinitionFactory(study=self.study, form=forms[form], oid=oid, data_type=data_type,
                                                    **defaults)

    def subject(self, **kwargs):
        subject = SubjectFactory(site=self.site, study=self.study, **kwargs)
        self.visits = {
            "day1": SubjectVisitFactory(subject=subject, study=self.study, definition=self.day1,
                                        actual_date=subject.enrolment_date),
            "log": SubjectVisitFactory(subject=subject, study=self.study, definition=self.log, actual_date=None),
        }
        return subject

    def value(self, subject, oid: str, raw: str, *, visit="day1", repeat="1", **extra) -> DataPoint:
        item = self.items[oid]
        point = DataPoint(study=self.study, subject=subject, visit=self.visits[visit] if isinstance(visit, str)
                          else visit, form=item.form, item=item, repeat_key=repeat, raw_value=raw, **extra)
        if raw and item.data_type == F.FLOAT:
            point.value_number = float(raw)
        if raw and item.data_type == F.DATE:
            point.value_date = datetime.date.fromisoformat(raw)
        point._history_user, point._change_reason = self.actor, "test data"
        point.save()
        return point

    def check(self, code: str, rule_type: str, item: str | None = None, **params) -> EditCheck:
        check = EditCheck(study=self.study, code=code, name=code, rule_type=rule_type,
                          item=self.items[item] if item else None, params=params)
        return edit_check_save(check=check, actor=self.actor, reason="written for the test")

    def run(self, **kwargs) -> AnalyzerPass:
        return analyzer_pass(study=self.study, actor=self.actor, today=TODAY, **kwargs)

    def found(self, code: str, **filters):
        return list(Discrepancy.objects.filter(edit_check__code=code, status=Discrepancy.Status.OPEN, **filters)
                    .order_by("subject_id", "id"))


@pytest.fixture
def world():
    return World()


def test_required_finds_a_missing_item_in_a_started_form_and_a_blank_one(world):
    world.check("REQ-DIABP", "required", "VS.DIABP")
    started = world.subject()
    started_visit = world.visits["day1"]
    world.value(started, "VS.SYSBP", "120")  # VS started at Day 1, DIABP absent
    blank = world.subject()
    world.value(blank, "VS.SYSBP", "120")
    blank_point = world.value(blank, "VS.DIABP", "")
    complete = world.subject()
    world.value(complete, "VS.SYSBP", "120")
    world.value(complete, "VS.DIABP", "80")
    world.subject()  # VS not started: nothing is missing yet

    world.run()

    found = world.found("REQ-DIABP")
    assert [(d.subject_id, d.data_point_id, d.category) for d in found] == [
        (started.pk, None, "missing"), (blank.pk, blank_point.pk, "missing")]
    assert found[0].key.startswith("missing:") and found[0].visit_id == started_visit.pk


def test_range_is_hard_or_soft_and_ten_times_a_limit_is_critical(world):
    subject = world.subject()
    high = world.value(subject, "VS.SYSBP", "260")
    world.value(subject, "VS.SYSBP", "120", repeat="2")
    unit_error = world.value(subject, "VS.SYSBP", "2600", repeat="3")
    world.check("SOFT-DIABP", "range", "VS.DIABP", low=40, high=110, kind="soft")
    soft = world.value(subject, "VS.DIABP", "115")
    edit_checks_generate(study=world.study, actor=world.actor, reason="metadata")  # RNG-VS.SYSBP from range

    world.run(threshold=0.8)

    by_point = {d.data_point_id: d for d in world.found("RNG-VS.SYSBP")}
    assert set(by_point) == {high.pk, unit_error.pk}
    assert by_point[high.pk].severity == "major" and by_point[high.pk].expected == "60 to 250 mmHg"
    assert by_point[unit_error.pk].severity == "critical"
    assert by_point[high.pk].disposition == "query" and by_point[high.pk].query is not None
    (soft_found,) = world.found("SOFT-DIABP")
    assert soft_found.data_point_id == soft.pk and soft_found.confidence == 0.75
    assert soft_found.disposition == "held_back" and soft_found.query is None  # below the 0.8 threshold


def test_codelist_refuses_a_code_outside_the_list(world):
    subject = world.subject()
    world.value(subject, "AE.AESER", "Y", visit="log")
    bad = world.value(subject, "AE.AESER", "maybe", visit="log", repeat="2")
    edit_checks_generate(study=world.study, actor=world.actor, reason="metadata")

    world.run()

    (found,) = world.found("CL-AE.AESER")
    assert (found.data_point_id, found.observed, found.expected) == (bad.pk, "maybe", "one of Y, N")


def test_date_order_against_consent_and_against_another_item_of_the_same_record(world):
    world.check("AE-AFTER-CONSENT", "date_order", "AE.AESTDAT", anchor="consent")
    world.check("AE-END-AFTER-START", "date_order", "AE.AEENDAT", anchor="item", anchor_item="AE.AESTDAT")
    subject = world.subject(consent_date=datetime.date(2025, 1, 10))
    early = world.value(subject, "AE.AESTDAT", "2025-01-05", visit="log")
    world.value(subject, "AE.AEENDAT", "2025-01-20", visit="log")
    world.value(subject, "AE.AESTDAT", "2025-02-01", visit="log", repeat="2")
    reversed_end = world.value(subject, "AE.AEENDAT", "2025-01-30", visit="log", repeat="2")

    world.run()

    (before_consent,) = world.found("AE-AFTER-CONSENT")
    assert before_consent.data_point_id == early.pk and before_consent.expected == "on or after the consent date"
    (end_first,) = world.found("AE-END-AFTER-START")
    assert end_first.data_point_id == reversed_end.pk
    assert end_first.observed == "2025-01-30 (AE.AESTDAT: 2025-02-01)"


def test_date_window_relative_to_enrolment(world):
    world.check("VS-WITHIN-30", "date_window", "VS.VSDAT", anchor="enrolment", min_days=0, max_days=30)
    subject = world.subject(enrolment_date=datetime.date(2025, 1, 12))
    world.value(subject, "VS.VSDAT", "2025-02-11")  # day 30 after: inside
    late = world.value(subject, "VS.VSDAT", "2025-02-12", repeat="2")

    world.run()

    assert [d.data_point_id for d in world.found("VS-WITHIN-30")] == [late.pk]


def test_visit_window_counts_study_days_from_day_1(world):
    world.check("VISIT-WINDOW", "visit_window", reference="day1")
    subject = world.subject(enrolment_date=datetime.date(2025, 1, 1))
    world.visits["week2"] = SubjectVisitFactory(subject=subject, study=world.study, definition=world.week2,
                                                actual_date=datetime.date(2025, 1, 17))  # study day 17: 15 + 2
    other = world.subject(enrolment_date=datetime.date(2025, 1, 1))
    late = SubjectVisitFactory(subject=other, study=world.study, definition=world.week2,
                               actual_date=datetime.date(2025, 1, 18))  # day 18: outside

    world.run()

    (found,) = world.found("VISIT-WINDOW")
    assert (found.visit_id, found.observed, found.expected) == (late.pk, "study day 18 (2025-01-18)",
                                                                "study day 15 (-2/+2)")
    assert found.category == "visit_protocol" and found.data_point_id is None


def test_future_dates(world):
    subject = world.subject()
    world.value(subject, "AE.AESTDAT", "2025-06-01", visit="log")  # today: fine
    future = world.value(subject, "AE.AESTDAT", "2025-06-02", visit="log", repeat="2")
    edit_checks_generate(study=world.study, actor=world.actor, reason="metadata")

    world.run()

    assert [d.data_point_id for d in world.found("FUT-AE.AESTDAT")] == [future.pk]


def test_a_serious_ae_needs_sae_data(world):
    world.check("SAE-FORM", "consistency", when={"item": "AE.AESER", "in": ["Y"]}, require={"form": "SAE"},
                category="safety")
    reported = world.subject()
    world.value(reported, "AE.AESER", "Y", visit="log")
    world.value(reported, "SAE.SAEDAT", "2025-02-01", visit="log")
    missing = world.subject()
    serious = world.value(missing, "AE.AESER", "y ", visit="log")
    world.value(missing, "AE.AESER", "N", visit="log", repeat="2")

    world.run()

    (found,) = world.found("SAE-FORM")
    assert (found.data_point_id, found.category) == (serious.pk, "safety")


def test_a_serious_ae_needs_its_own_sae_record_with_record_scope(world):
    world.check("SAE-RECORD", "consistency", when={"item": "AE.AESER", "in": ["Y"]}, require={"form": "SAE"},
                scope="record")
    subject = world.subject()
    world.value(subject, "AE.AESER", "Y", visit="log")
    world.value(subject, "SAE.SAEDAT", "2025-02-01", visit="log")  # the SAE form of AE 1
    second = world.value(subject, "AE.AESER", "Y", visit="log", repeat="2")  # AE 2 has none

    world.run()

    assert [d.data_point_id for d in world.found("SAE-RECORD")] == [second.pk]


def test_metadata_that_implies_no_checkable_rule_is_skipped_with_its_reason(world):
    world.items["AE.AETERM"].range_low = 1  # ODM allows a RangeCheck on text: not a range of values
    world.items["AE.AETERM"].save()
    world.items["SAE.SAEDAT"].codelist = [{"decode": "no code"}]  # a codelist without codes
    world.items["SAE.SAEDAT"].save()

    counts = edit_checks_generate(study=world.study, actor=world.actor, reason="metadata")

    assert not EditCheck.objects.filter(code__in=["RNG-AE.AETERM", "CL-SAE.SAEDAT"]).exists()
    assert [s["code"] for s in counts["skipped"]] == ["CL-SAE.SAEDAT"]
    assert "no codelist" in counts["skipped"][0]["reason"]
    assert EditCheck.objects.filter(code="RNG-VS.SYSBP").exists()  # the rest is generated


def test_lab_values_impossible_unit_error_or_clinical_signal(world):
    edit_checks_generate(study=world.study, actor=world.actor, reason="metadata")
    assert EditCheck.objects.get(code="LAB-LB.K").params["analyte"]
    subject = world.subject()
    normal = {"normal_low": 3.5, "normal_high": 5.1}
    world.value(subject, "LB.K", "4.2", **normal)
    signal = world.value(subject, "LB.K", "6.3", repeat="2", **normal)
    impossible = world.value(subject, "LB.K", "45", repeat="3", **normal)

    world.run()

    by_point = {d.data_point_id: d for d in world.found("LAB-LB.K")}
    assert set(by_point) == {signal.pk, impossible.pk}
    assert by_point[signal.pk].disposition == "medical_review" and by_point[signal.pk].query is None
    assert by_point[signal.pk].category == "safety"
    assert by_point[impossible.pk].disposition == "query" and by_point[impossible.pk].severity == "critical"
    # A candidate for data-manager review (no auto-release policy), in the site's language
    (query,) = Query.objects.filter(data_point=impossible, rule_code="LAB-LB.K")
    assert (query.state, query.language, query.text_origin) == ("candidate", world.site.language, "template")
    assert "45" in query.text and not query.messages.exists()  # its question enters the thread on release
    assert not Query.objects.filter(data_point=signal).exists()


def test_the_same_ae_twice_and_the_same_item_twice_in_a_visit(world):
    world.check("AE-DUP", "duplicate", form="AE", keys=["AE.AETERM", "AE.AESTDAT"])
    world.check("SYSBP-ONCE", "duplicate", "VS.SYSBP")
    subject = world.subject()
    world.value(subject, "AE.AETERM", "Headache", visit="log")
    world.value(subject, "AE.AESTDAT", "2025-02-01", visit="log")
    again = world.value(subject, "AE.AETERM", "headache ", visit="log", repeat="2")
    world.value(subject, "AE.AESTDAT", "2025-02-01", visit="log", repeat="2")
    world.value(subject, "AE.AETERM", "Headache", visit="log", repeat="3")
    world.value(subject, "AE.AESTDAT", "2025-03-01", visit="log", repeat="3")  # another episode
    world.value(subject, "VS.SYSBP", "120")
    twice = world.value(subject, "VS.SYSBP", "122", repeat="2")
    other = world.subject()  # the same AE in another participant is not a duplicate
    world.value(other, "AE.AETERM", "Headache", visit="log")
    world.value(other, "AE.AESTDAT", "2025-02-01", visit="log")
    world.value(other, "VS.SYSBP", "120")

    world.run()

    assert [d.data_point_id for d in world.found("AE-DUP")] == [again.pk]
    assert [d.data_point_id for d in world.found("SYSBP-ONCE")] == [twice.pk]


def test_the_same_ae_entered_at_two_visits_is_a_duplicate_and_no_ae_at_all_is_not_an_error(world):
    world.check("AE-DUP", "duplicate", form="AE", keys=["AE.AETERM", "AE.AESTDAT"])
    quiet = world.subject()
    world.value(quiet, "VS.SYSBP", "120")  # no AE in the study yet: nothing to compare, no failure
    assert world.run(full=True).errors == []

    subject = world.subject()
    week2 = SubjectVisitFactory(subject=subject, study=world.study, definition=world.week2)
    world.value(subject, "AE.AETERM", "Nausea")  # AEs entered per visit, each as repeat 1
    world.value(subject, "AE.AESTDAT", "2025-02-01")
    again = world.value(subject, "AE.AETERM", "Nausea", visit=week2)
    world.value(subject, "AE.AESTDAT", "2025-02-01", visit=week2)

    record = world.run(full=True)

    assert record.errors == []
    assert [(d.data_point_id, d.visit_id) for d in world.found("AE-DUP")] == [(again.pk, week2.pk)]


def test_an_expression_rule_skips_missing_values(world):
    world.check("SYS-GT-DIA", "expression", "VS.DIABP", expression="[VS.SYSBP] > [VS.DIABP]")
    wrong = world.subject()
    world.value(wrong, "VS.SYSBP", "80")
    inverted = world.value(wrong, "VS.DIABP", "90")
    fine = world.subject()
    world.value(fine, "VS.SYSBP", "120")
    world.value(fine, "VS.DIABP", "80")
    unknown = world.subject()
    world.value(unknown, "VS.DIABP", "80")

    world.run()

    (found,) = world.found("SYS-GT-DIA")
    assert found.data_point_id == inverted.pk and "VS.SYSBP = 80" in found.observed


@pytest.mark.parametrize(("rule_type", "item", "params", "reason"), [
    ("expression", "VS.SYSBP", {"expression": "[VS.SYSBP] > [VS.NOPE]"}, "no item VS.NOPE"),
    ("expression", "VS.SYSBP", {"expression": "[VS.SYSBP].__class__ > 1"}, "Bad expression"),
    ("date_window", "VS.VSDAT", {"anchor": "consent", "min_days": 10, "max_days": 5}, "Impossible window"),
    ("range", "VS.SYSBP", {"low": 10, "high": 5}, "Impossible range"),
    ("range", "VS.VSDAT", {"low": 1}, "needs integer or float"),
    ("date_order", "VS.VSDAT", {"anchor": "item", "anchor_item": "LB.NOPE"}, "no item 'LB.NOPE'"),
    ("consistency", None, {"when": {"item": "AE.AESER", "in": ["Y"]}, "require": {"form": "NOPE"}}, "no form"),
    ("required", None, {}, "needs an item"),
])
def test_an_invalid_rule_is_refused_with_the_reason(world, rule_type, item, params, reason):
    with pytest.raises(ValidationError) as refused:
        world.check("BAD", rule_type, item, **params)
    assert reason in str(refused.value)
    assert not EditCheck.objects.filter(code="BAD").exists()


def test_a_rule_failing_at_run_time_is_reported_and_the_others_still_run(world):
    broken = world.check("BROKEN", "expression", "VS.DIABP", expression="[VS.SYSBP] > [VS.DIABP]")
    world.check("SOFT", "range", "VS.DIABP", high=100)
    with connection.cursor() as cursor:  # damage the stored rule behind the service's back
        cursor.execute("UPDATE queries_editcheck SET params = %s WHERE id = %s",
                       ['{"expression": "[VS.SYSBP] >", "scope": "visit"}', broken.pk])
    subject = world.subject()
    world.value(subject, "VS.DIABP", "120")

    done = world.run()

    assert [e["check"] for e in done.errors] == ["BROKEN"]
    assert len(world.found("SOFT")) == 1


def test_two_passes_raise_one_query_and_a_confirmed_value_stays_quiet_until_it_changes(world):
    dm = UserFactory()
    membership_grant(user=dm, study=world.study, role=Role.DATA_MANAGER)
    world.check("DIA-MAX", "range", "VS.DIABP", high=100)
    subject = world.subject()
    point = world.value(subject, "VS.DIABP", "120")

    first = world.run()
    second = world.run(full=True)

    (found,) = world.found("DIA-MAX")
    query = found.query
    assert (first.counts["queries_raised"], second.counts["queries_raised"], second.counts["new"]) == (1, 0, 0)
    assert query.state == "candidate" and query.history.first().history_user == world.actor
    assert "120" in query.text and subject.subject_id not in query.text
    query = query_release(query=query, actor=dm)

    point = data_point_update(data_point=point, actor=dm, raw_value="130", reason="typo", expected_version=1)
    world.run()
    assert Query.objects.filter(rule_code="DIA-MAX").count() == 1  # the open query covers the new value too

    query_close(query=query, actor=dm, reason="source says 130", resolution=Query.Resolution.CONFIRMED_CORRECT)
    world.run(full=True)
    found.refresh_from_db()
    assert found.disposition == "confirmed" and Query.objects.filter(rule_code="DIA-MAX").count() == 1

    data_point_update(data_point=point, actor=dm, raw_value="140", reason="re-measured", expected_version=2)
    world.run()
    found.refresh_from_db()
    assert found.disposition == "query" and found.query_id != query.pk
    assert Query.objects.filter(rule_code="DIA-MAX", state="candidate").count() == 1


def test_a_policy_releases_confident_findings_to_the_site_with_a_due_date(world):
    agent_config_set(agent="QueryGenerator", study_id=world.study.pk, enabled=True, actor=world.actor,
                     config={"auto_release": [{"category": "range", "min_confidence": 0.95}]})
    world.check("DIA-MAX", "range", "VS.DIABP", high=100)  # hard range: confidence 0.99
    world.check("DIA-LOW", "range", "VS.SYSBP", low=130, kind="soft")  # soft: 0.75, stays a candidate
    subject = world.subject()
    world.value(subject, "VS.DIABP", "120")
    world.value(subject, "VS.SYSBP", "110")

    world.run()

    released, candidate = (Discrepancy.objects.get(edit_check__code=code).query for code in ("DIA-MAX", "DIA-LOW"))
    assert (released.state, candidate.state) == ("open", "candidate")
    assert released.due_date is not None and released.released_at is not None and candidate.due_date is None
    assert list(released.messages.values_list("kind", flat=True)) == ["question"]


def test_a_corrected_value_resolves_its_discrepancy_and_closes_its_query(world):
    agent_config_set(agent="QueryGenerator", study_id=world.study.pk, enabled=True, actor=world.actor,
                     config={"auto_release": [{"category": "range", "min_confidence": 0.9}]})
    world.check("DIA-MAX", "range", "VS.DIABP", high=100)
    subject = world.subject()
    point = world.value(subject, "VS.DIABP", "120")
    world.run()
    query = Discrepancy.objects.get(edit_check__code="DIA-MAX").query

    data_point_update(data_point=point, actor=UserFactory(), raw_value="80", reason="typo", expected_version=1)
    done = world.run()

    assert not done.full and done.counts["resolved"] == 1 and done.counts["queries_auto_closed"] == 1
    assert Discrepancy.objects.get(edit_check__code="DIA-MAX").status == "resolved"
    query.refresh_from_db()
    assert (query.state, query.resolution) == (Query.State.CLOSED, Query.Resolution.CORRECTED)
    audit = query.history.first()
    assert audit.history_user == world.actor and "DIA-MAX passes" in audit.history_change_reason


def test_confirmed_correct_history_at_a_site_lowers_confidence_below_the_threshold(world):
    world.check("DIA-MAX", "range", "VS.DIABP", high=100)
    subject = world.subject()
    dm = UserFactory()
    membership_grant(user=dm, study=world.study, role=Role.DATA_MANAGER)
    for n in range(4):  # four earlier queries of this rule at this site, all false alarms
        query = Query(study=world.study, site=world.site, subject=subject, rule_code="DIA-MAX", text=f"old {n}",
                      origin=Query.Origin.RULE)
        query._history_user, query._change_reason = dm, "history"
        query.save()
        query_close(query=query, actor=dm, reason="checked", resolution=Query.Resolution.CONFIRMED_CORRECT)
    world.value(subject, "VS.DIABP", "120")

    world.run()

    (found,) = world.found("DIA-MAX")
    assert found.confidence == pytest.approx(0.99 * (1 - 4 / 7), abs=1e-3)
    assert found.disposition == "held_back" and found.query is None


def test_incremental_passes_read_only_what_changed(world):
    world.check("DIA-MAX", "range", "VS.DIABP", high=100)
    subjects = [world.subject() for _ in range(3)]
    points = [world.value(s, "VS.DIABP", "120") for s in subjects]
    full = world.run()
    assert full.full and len(world.found("DIA-MAX")) == 3

    idle = world.run()
    assert not idle.full and idle.counts == {"changed_data_points": 0}

    data_point_update(data_point=points[0], actor=UserFactory(), raw_value="90", reason="typo", expected_version=1)
    changed = world.run()
    assert changed.counts["data_points_checked"] == 1 and changed.counts["resolved"] == 1
    assert len(world.found("DIA-MAX")) == 2  # the others were not re-read and stay open

    world.check("DIA-MAX-2", "range", "VS.DIABP", high=110)  # a new rule: the next pass is full
    assert world.run().full
