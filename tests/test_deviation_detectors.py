"""Every detector of PatternRecognition on its edges, through detection_run on the database: what
is stored (category, rule, coding, importance, evidence, occurrence date), and what is not."""

import datetime

import pytest

from deviations.detection import detection_run
from deviations.models import Deviation
from tests.deviation_data import PLAN, Trial, day

pytestmark = pytest.mark.django_db


def detect(trial: Trial) -> dict[str, Deviation]:
    detection_run(study=trial.study, actor=trial.actor)
    return {d.evidence_key: d for d in Deviation.objects.filter(study=trial.study, source="detected")}


def test_consent_on_the_day_of_the_first_visit_is_in_order_the_day_after_is_not():
    trial = Trial()
    same_day = trial.subject(consent=day(-14))
    late = trial.subject(consent=day(-13))
    after_dose = trial.subject(consent=day(2))
    found = detect(trial)
    assert f"informed_consent:{same_day.pk}" not in found
    deviation = found[f"informed_consent:{late.pk}"]
    assert (deviation.rule, deviation.importance) == ("informed_consent.after_first_visit", "important")
    assert deviation.dvdecod == "INFORMED CONSENT/ASSENT NOT SIGNED PRIOR TO ANY STUDY PROCEDURE"
    assert deviation.dvcat == "INFORMED CONSENT" and deviation.occurred_on == day(-14)
    both = found[f"informed_consent:{after_dose.pk}"]  # one deviation per subject, listing both rules
    assert both.evidence["broken"] == ["after_first_visit", "after_first_dose"]
    assert "after the first visit" in both.description and "after the first dose" in both.description


def test_a_subject_with_visits_and_no_consent_date_is_a_deviation_one_without_activity_is_not():
    trial = Trial()
    missing = trial.subject(consent=None)
    idle = trial.subject(consent=None, first_dose=None, visits=())
    found = detect(trial)
    deviation = found[f"informed_consent:{missing.pk}"]
    assert deviation.rule == "informed_consent.no_consent_date"
    assert deviation.dvdecod.startswith("INFORMED CONSENT/ASSENT NOT SIGNED AND/OR DATED BY SUBJECT")
    assert f"informed_consent:{idle.pk}" not in found


def test_a_visit_on_the_edge_of_its_window_is_inside_one_day_past_is_out():
    trial = Trial()
    edge = trial.subject(visits=("SCREENING", "DAY 1"))
    early_edge = trial.visit(edge, "WEEK 2", day(12))  # day 15, 3 before: day 12 is inside
    late_edge = trial.visit(edge, "WEEK 4", day(32))  # day 29, 3 after
    out = trial.subject(visits=("SCREENING", "DAY 1"))
    late = trial.visit(out, "WEEK 2", day(19))
    found = detect(trial)
    assert f"visit_window:{early_edge.pk}" not in found and f"visit_window:{late_edge.pk}" not in found
    deviation = found[f"visit_window:{late.pk}"]
    assert deviation.description == "WEEK 2 on study day 19, window 12 to 18 (planned day 15)"
    assert (deviation.rule, deviation.importance, deviation.visit_id) == ("visit_window.out_of_window",
                                                                          "non_important", late.pk)
    assert deviation.dvdecod == "OUT OF WINDOW - VISIT/PHONE CONTACT" and deviation.occurred_on == day(19)
    assert deviation.evidence["window"] == [12, 18] and deviation.epoch == "TREATMENT"


def test_study_days_have_no_day_zero_across_day_one():
    trial = Trial({"visits": {"SCREENING": {"day": -1, "before": 0, "after": 0}, "DAY 1": {"day": 1}}})
    subject = trial.subject(visits=())
    on_time = trial.visit(subject, "SCREENING", day(-1))
    trial.visit(subject, "DAY 1", day(1))
    other = trial.subject(visits=())
    late = trial.visit(other, "SCREENING", day(1))  # on day 1 instead of day -1: one day late, not two
    found = detect(trial)
    assert f"visit_window:{on_time.pk}" not in found
    assert found[f"visit_window:{late.pk}"].description == "SCREENING on study day 1, window -1 to -1 (planned day -1)"
    assert found[f"visit_window:{late.pk}"].epoch == "TREATMENT"


def test_a_planned_visit_missing_before_a_later_one_is_missed_one_after_the_last_visit_is_not():
    trial = Trial()
    skipped = trial.subject(visits=("SCREENING", "DAY 1", "WEEK 4"))
    stopped = trial.subject(visits=("SCREENING", "DAY 1", "WEEK 2"))  # left the study after week 2
    found = detect(trial)
    deviation = found[f"visit_missed:{skipped.pk}:WEEK 2"]
    assert (deviation.rule, deviation.dvdecod) == ("visit_window.missed", "MISSED VISIT/PHONE CONTACT")
    assert deviation.description == "WEEK 2 (planned day 15) not done although WEEK 4 was, on 2025-03-29"
    assert deviation.occurred_on == day(18)  # the window closed
    assert not [k for k in found if k.startswith(f"visit_missed:{stopped.pk}")]


def test_a_dose_the_arm_allows_is_in_order_another_arms_dose_or_an_unknown_one_is_not():
    trial = Trial()
    reduced = trial.subject(arm="HI")
    trial.record(reduced, "EX", "1", EXDOSE="40", EXDOSU="mg", EXSTDTC="2025-03-01")
    trial.record(reduced, "EX", "2", EXDOSE="20", EXDOSU="mg", EXSTDTC="2025-03-15")  # allowed reduction
    placebo = trial.subject(arm="PBO")
    trial.record(placebo, "EX", "1", EXDOSE="40", EXDOSU="mg", EXSTDTC="2025-03-01")  # the HI arm's dose
    trial.record(placebo, "EX", "2", EXDOSE="10", EXDOSU="MG", EXSTDTC="2025-03-15")  # no arm's dose
    trial.record(placebo, "EX", "3", EXDOSE="", EXSTDTC="2025-03-20")  # no dose: not judged
    in_grams = trial.subject(arm="PBO")
    trial.record(in_grams, "EX", "1", EXDOSE="0", EXDOSU="g", EXSTDTC="2025-03-01")
    no_arm = trial.subject(arm="")
    trial.record(no_arm, "EX", "1", EXDOSE="99", EXSTDTC="2025-03-01")
    found = detect(trial)
    log = trial.logs
    assert not [k for k in found if k.startswith(f"ip_dosing:{reduced.pk}:")]
    other = found[f"ip_dosing:{placebo.pk}:{log[placebo.pk].pk}:1"]
    assert other.rule == "ip_dosing.other_arm_dose"
    assert other.dvdecod == "WRONG STUDY TREATMENT OR ASSIGNMENT ADMINISTERED"
    assert other.description == "EX record 1: 40 mg from 2025-03-01; arm PBO allows 0 mg"
    wrong = found[f"ip_dosing:{placebo.pk}:{log[placebo.pk].pk}:2"]
    assert wrong.rule == "ip_dosing.dose_not_allowed" and wrong.occurred_on == datetime.date(2025, 3, 15)
    assert f"ip_dosing:{placebo.pk}:{log[placebo.pk].pk}:3" not in found
    assert f"ip_dosing:{in_grams.pk}:{log[in_grams.pk].pk}:1" in found  # 0 g is not the plan's 0 mg
    assert not [k for k in found if k.startswith(f"ip_dosing:{no_arm.pk}:")]


def test_a_prohibited_drug_inside_washout_or_on_treatment_is_a_deviation_one_stopped_before_is_not():
    trial = Trial()
    s = trial.subject()
    trial.record(s, "EX", "1", EXDOSE="40", EXSTDTC="2025-03-01", EXENDTC="2025-04-30")
    trial.record(s, "CM", "1", CMDECOD="RIFAMPICIN", CMSTDTC="2025-01-01", CMENDTC="2025-02-15")  # 14 days before
    trial.record(s, "CM", "2", CMDECOD="RIFAMPICIN", CMSTDTC="2025-01-01", CMENDTC="2025-02-16")  # 13 days
    trial.record(s, "CM", "3", CMDECOD="", CMTRT="rifampicin", CMSTDTC="2025-04-01")  # by CMTRT, ongoing
    trial.record(s, "CM", "4", CMDECOD="RIFAMPICIN", CMSTDTC="2025-05-10", CMENDTC="2025-05-20")  # after treatment
    trial.record(s, "CM", "5", CMDECOD="RIFAXIMIN", CMSTDTC="2025-03-10")  # a different drug
    trial.record(s, "CM", "6", CMDECOD="RIFAMPICIN")  # no dates: taken at an unknown time
    trial.record(s, "CM", "7", CMDECOD="RIFAMPICIN", CMSTDTC="2025-01", CMENDTC="2025-01")  # partial: ended Jan 31
    found = detect(trial)
    keys = {k.rsplit(":", 1)[1] for k in found if k.startswith("prohibited_medication:")}
    assert keys == {"2", "3", "6"}
    log = trial.logs[s.pk].pk
    washout = found[f"prohibited_medication:{s.pk}:{log}:2"]
    assert "within the 14-day washout before the first dose (2025-03-01)" in washout.description
    assert washout.occurred_on == datetime.date(2025, 3, 1) and washout.importance == "important"
    assert washout.dvdecod == "MEDICATION, EXCLUDED BY THE PROTOCOL, WAS ADMINISTERED"
    by_term = found[f"prohibited_medication:{s.pk}:{log}:3"]
    assert by_term.evidence["matched_on"] == "CMTRT" and "on treatment" in by_term.description
    assert "at a time not recorded" in found[f"prohibited_medication:{s.pk}:{log}:6"].description


def test_an_enrolled_subject_with_a_criterion_not_met_is_one_deviation_a_screen_failure_none():
    trial = Trial()
    enrolled = trial.subject()
    trial.record(enrolled, "IE", "1", INCL01="N")
    trial.record(enrolled, "IE", "2", EXCL02="Y")
    failure = trial.subject(status="screen_failed", first_dose=None, arm="")
    trial.record(failure, "IE", "1", INCL01="N")
    found = detect(trial)
    deviation = found[f"eligibility:{enrolled.pk}"]
    assert deviation.evidence["criteria"] == ["EXCL02", "INCL01"]
    assert deviation.dvdecod == "ELIGIBILITY CRITERIA NOT MET"
    assert f"eligibility:{failure.pk}" not in found


def test_an_sae_reported_after_its_limit_is_late_on_the_limit_it_is_not():
    trial = Trial()
    s = trial.subject()
    at = lambda d: datetime.datetime(2025, 3, d, 15, 0, tzinfo=datetime.UTC)  # noqa: E731
    trial.record(s, "AE", "1", entered_at=at(11), AESER="Y", AESTDTC="2025-03-10")  # 1 day: in time
    trial.record(s, "AE", "2", entered_at=at(13), AESER="Y", AESTDTC="2025-03-10")  # 3 days: late
    trial.record(s, "AE", "3", entered_at=at(20), AESER="N", AESTDTC="2025-03-10")  # not serious
    trial.record(s, "AE", "4", entered_at=at(20), AESER="Y", AESTDTC="")  # no onset: not judged
    found = detect(trial)
    keys = [k for k in found if k.startswith("safety_reporting:")]
    assert keys == [f"safety_reporting:{s.pk}:{trial.logs[s.pk].pk}:2"]
    late = found[keys[0]]
    assert late.description == "SAE record 2: onset 2025-03-10, reported 2025-03-13 (3 days; the protocol allows 1)"
    assert late.dvdecod == "SAE NOT REPORTED WITHIN THE EXPECTED TIME FRAME" and late.occurred_on == day(12)


def test_a_plan_without_a_section_switches_its_detector_off():
    plan = {k: v for k, v in PLAN.items() if k not in ("safety", "consent")}
    trial = Trial(plan)
    s = trial.subject(consent=None)
    trial.record(s, "AE", "1", entered_at=datetime.datetime(2025, 4, 1, tzinfo=datetime.UTC), AESER="Y",
                 AESTDTC="2025-03-10")
    done = detection_run(study=trial.study, actor=trial.actor)
    assert set(done.counts["not_run"]) == {"informed_consent", "safety_reporting"}
    assert not Deviation.objects.filter(study=trial.study, category__in=["informed_consent", "safety_reporting"])
