"""Detection over time: a re-run adds and changes nothing; data that no longer breaks the rule
closes the deviation (withdrawn, audited, with the reason) and data that breaks it again reopens
it; a person's coding and importance are kept by the detector; a deviation a person reported is
not detected a second time; the deviation plan is validated, versioned and audited."""

import datetime
import json

import pytest
from django.core.management import CommandError, call_command

from deviations.detection import NoPlan, detection_run
from deviations.models import DetectionPass, Deviation, DeviationPlan
from deviations.plan import PlanInvalid, plan_import
from deviations.services import deviation_recode, deviation_transition
from studies.audit import set_audit
from studies.models import Role
from studies.services import membership_grant
from tests.deviation_data import PLAN, Trial, day
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def late_visit_trial():
    trial = Trial()
    subject = trial.subject()
    visit = trial.visit(subject, "WEEK 2", day(20))
    return trial, subject, visit


def test_a_second_pass_adds_nothing_and_changes_nothing():
    trial, _, visit = late_visit_trial()
    first = detection_run(study=trial.study, actor=trial.actor)
    deviation = Deviation.objects.get(evidence_key=f"visit_window:{visit.pk}")
    history = deviation.history.count()
    second = detection_run(study=trial.study, actor=trial.actor)
    assert first.counts["totals"]["created"] == 1
    assert {k: v for k, v in second.counts["totals"].items() if k != "found"} == {
        "created": 0, "updated": 0, "closed": 0, "reopened": 0, "already_reported": 0}
    assert Deviation.objects.filter(study=trial.study).count() == 1 and deviation.history.count() == history
    created = deviation.history.earliest("history_date")
    assert created.history_user == trial.actor
    assert created.history_change_reason == "Detected by PatternRecognition (plan v1)"
    assert DetectionPass.objects.filter(study=trial.study).count() == 2


def test_corrected_data_closes_the_deviation_and_breaking_the_rule_again_reopens_it():
    trial, _, visit = late_visit_trial()
    detection_run(study=trial.study, actor=trial.actor)
    visit.actual_date = day(16)
    set_audit(visit, actor=trial.actor, reason="Visit date corrected against source")
    visit.save()
    done = detection_run(study=trial.study, actor=trial.actor)
    deviation = Deviation.objects.get(evidence_key=f"visit_window:{visit.pk}")
    assert done.counts["detectors"]["visit_window"]["closed"] == 1
    assert (deviation.status, deviation.resolution) == ("closed", "withdrawn")
    assert deviation.closed_on == datetime.date.today()
    last = deviation.history.latest("history_date")
    assert last.history_change_reason == "PatternRecognition (plan v1): the data no longer breaks the rule"
    assert last.history_user == trial.actor
    visit.actual_date = day(22)
    set_audit(visit, actor=trial.actor, reason="Visit date corrected again")
    visit.save()
    detection_run(study=trial.study, actor=trial.actor)
    deviation.refresh_from_db()
    assert (deviation.status, deviation.resolution) == ("open", "")
    assert "study day 22" in deviation.description  # the evidence follows the data
    assert deviation.history.latest("history_date").history_change_reason.endswith("the data breaks the rule again")


def test_a_persons_coding_and_importance_are_kept_by_the_detector():
    trial, _, visit = late_visit_trial()
    reviewer = UserFactory(username=f"dm{trial.study.pk}")
    membership_grant(user=reviewer, study=trial.study, role=Role.DATA_MANAGER)
    detection_run(study=trial.study, actor=trial.actor)
    deviation = Deviation.objects.get(evidence_key=f"visit_window:{visit.pk}")
    deviation_recode(deviation=deviation, actor=reviewer, reason="Efficacy visit: important for this study",
                     dvdecod="OUT OF WINDOW - EFFICACY ASSESSMENT", importance="important")
    changed = {**PLAN, "importance": {"visit_window": "non_important", "other": "important"}}
    plan_import(study=trial.study, content=changed, actor=trial.actor, reason="v2")
    visit.actual_date = day(21)  # new evidence: the detector updates it, not the person's decisions
    set_audit(visit, actor=trial.actor, reason="Date corrected")
    visit.save()
    detection_run(study=trial.study, actor=trial.actor)
    deviation.refresh_from_db()
    assert (deviation.dvdecod, deviation.dvcat) == ("OUT OF WINDOW - EFFICACY ASSESSMENT",
                                                    "ASSESSMENT OR TIME POINT COMPLETION")
    assert deviation.importance == "important" and deviation.coding_by_person and deviation.importance_by_person
    assert "study day 21" in deviation.description
    recoded = deviation.history.filter(history_user=reviewer).get()
    assert recoded.history_change_reason == "Efficacy visit: important for this study"


def test_a_deviation_a_person_reported_is_not_detected_again():
    trial, subject, visit = late_visit_trial()
    reported = Deviation(study=trial.study, site=subject.site, subject=subject, visit=visit, category="visit_window",
                         description="Week 2 late (CRA)", source="manual", occurred_on=visit.actual_date)
    set_audit(reported, actor=trial.actor, reason="reported")
    reported.save()
    done = detection_run(study=trial.study, actor=trial.actor)
    assert done.counts["detectors"]["visit_window"]["already_reported"] == 1
    assert list(Deviation.objects.filter(study=trial.study)) == [reported]


def test_without_a_plan_there_is_nothing_to_detect():
    trial = Trial(plan=None)
    with pytest.raises(NoPlan, match="has no deviation plan"):
        detection_run(study=trial.study, actor=trial.actor)


def test_the_plan_is_versioned_an_unchanged_file_is_no_new_version(tmp_path):
    trial = Trial(plan=None)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    call_command("import_deviation_plan", str(path), "--study", trial.study.protocol_id)
    path.write_text(json.dumps(PLAN, indent=4, sort_keys=True))  # same content, other layout
    call_command("import_deviation_plan", str(path), "--study", trial.study.protocol_id)
    assert DeviationPlan.objects.filter(study=trial.study).count() == 1
    path.write_text(json.dumps({**PLAN, "safety": {"report_within_days": 2}}))
    call_command("import_deviation_plan", str(path), "--study", trial.study.protocol_id, "--reason", "Amendment 2")
    plans = DeviationPlan.objects.filter(study=trial.study).order_by("version")
    assert [p.version for p in plans] == [1, 2] and plans[1].content["safety"] == {"report_within_days": 2}
    history = plans[1].history.get()
    assert history.history_change_reason == "Amendment 2" and history.history_user.username == "system.import"


@pytest.mark.parametrize(("plan", "message"), [
    ({"visits": {"WEEK 2": {"day": 15, "before": -1}}}, "visits.WEEK 2.before: -1 is less than the minimum of 0"),
    ({"visits": {"WEEK 2": {"day": 0}}}, "visits.WEEK 2.day: there is no study day 0"),
    ({"visits": {"WEEK 2": {"before": 2}}}, "visits.WEEK 2: 'day' is a required property"),
    ({"dosing": {"arms": {"HI": {"doses": ["forty"]}}}}, "dosing.arms.HI.doses.0: 'forty' is not of type 'number'"),
    ({"importance": {"consent": "important"}}, "importance: 'consent' is not one of ['informed_consent'"),
    ({"importance": {"eligibility": "major"}}, "importance.eligibility: 'major' is not one of"),
    ({"safety": {"report_in_days": 1}}, "safety: 'report_within_days' is a required property"),
    ({"prohibited_medications": [{"name": "X"}, {"name": "x"}]}, "prohibited_medications: a drug is listed twice"),
    ([1, 2], "a deviation plan is a JSON object"),
])
def test_a_bad_plan_is_refused_naming_the_key_and_nothing_is_stored(plan, message, tmp_path):
    trial = Trial(plan=None)
    with pytest.raises(PlanInvalid) as refused:
        plan_import(study=trial.study, content=plan, actor=trial.actor, reason="test")
    assert any(message in problem for problem in refused.value.problems), refused.value.problems
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(CommandError, match="not valid"):
        call_command("import_deviation_plan", str(path), "--study", trial.study.protocol_id)
    path.write_text("{not json")
    with pytest.raises(CommandError, match="not JSON"):
        call_command("import_deviation_plan", str(path), "--study", trial.study.protocol_id)
    assert not DeviationPlan.objects.filter(study=trial.study).exists()
    assert not DeviationPlan.history.filter(study_id=trial.study.pk).exists()


def test_keys_beyond_the_documented_ones_are_allowed_at_the_top_level_and_inside_every_section():
    """The issue's shape: "keys beyond these allowed". They are stored and change no rule."""
    trial = Trial(plan=None)
    extended = {**PLAN, "sponsor_notes": "amendment 3",
                "visits": {name: {**spec, "visitnum": n} for n, (name, spec) in enumerate(PLAN["visits"].items())},
                "consent": {**PLAN["consent"], "note": "re-consent after amendment 3"},
                "dosing": {"arms": {arm: {**spec, "label": arm.title()}
                                    for arm, spec in PLAN["dosing"]["arms"].items()}, "route": "oral"},
                "prohibited_medications": [{**m, "atc": "J04AB02"} for m in PLAN["prohibited_medications"]],
                "eligibility": {**PLAN["eligibility"], "version": "3.0"},
                "safety": {**PLAN["safety"], "contact": "pv@example.org"}}
    plan, created = plan_import(study=trial.study, content=extended, actor=trial.actor, reason="test")
    assert created and plan.content["sponsor_notes"] == "amendment 3"
    assert plan.content["visits"]["WEEK 2"]["visitnum"] == 2 and plan.content["dosing"]["route"] == "oral"
    subject = trial.subject()
    late = trial.visit(subject, "WEEK 2", day(20))
    done = detection_run(study=trial.study, actor=trial.actor, plan=plan)
    assert Deviation.objects.filter(study=trial.study, evidence_key=f"visit_window:{late.pk}").exists()
    assert done.counts["not_run"] == []


def _reviewer(trial):
    reviewer = UserFactory(username=f"mm{trial.study.pk}")
    membership_grant(user=reviewer, study=trial.study, role=Role.MEDICAL_MONITOR)
    return reviewer


def test_a_deviation_a_person_withdrew_is_not_reopened_by_the_detector():
    """The data still breaks the rule, but a person judged it no deviation (raised in error): the
    next pass leaves their decision as it is."""
    trial, _, visit = late_visit_trial()
    detection_run(study=trial.study, actor=trial.actor)
    deviation = Deviation.objects.get(evidence_key=f"visit_window:{visit.pk}")
    deviation_transition(deviation=deviation, actor=_reviewer(trial), transition="close",
                         reason="Visit moved with the sponsor's written approval", resolution="withdrawn")
    history = deviation.history.count()
    done = detection_run(study=trial.study, actor=trial.actor)
    deviation.refresh_from_db()
    assert (deviation.status, deviation.resolution) == ("closed", "withdrawn")
    assert done.counts["totals"]["reopened"] == 0 and deviation.history.count() == history


def test_a_deviation_a_person_reopened_is_not_closed_again_by_the_detector():
    """The detector withdrew it (data corrected), a person reopened it (the correction does not
    undo the deviation): the next pass keeps it open."""
    trial, _, visit = late_visit_trial()
    detection_run(study=trial.study, actor=trial.actor)
    visit.actual_date = day(16)
    set_audit(visit, actor=trial.actor, reason="Visit date corrected")
    visit.save()
    detection_run(study=trial.study, actor=trial.actor)
    deviation = Deviation.objects.get(evidence_key=f"visit_window:{visit.pk}")
    assert deviation.resolution == "withdrawn"
    deviation_transition(deviation=deviation, actor=_reviewer(trial), transition="reopen",
                         reason="The correction was back-dated: the visit was late")
    done = detection_run(study=trial.study, actor=trial.actor)
    deviation.refresh_from_db()
    assert (deviation.status, deviation.resolution) == ("open", "")
    assert done.counts["totals"]["closed"] == 0
