"""Reporting and follow-up: `export_dv` read back with pyreadstat (variables, labels, values, CSV),
the RootCauseAnalysis pattern and a person's decision, CAPA effectiveness measured from the site's
rate, and the periodic summary stored with its inputs."""

import datetime

import pandas as pd
import pyreadstat
import pytest
from django.core.management import CommandError, call_command

from deviations.capa import capa_create, capa_effectiveness_check, capa_update
from deviations.detection import detection_run
from deviations.models import Capa, ComplianceReport, Deviation, RootCauseAnalysis
from deviations.reporting import DV_VARIABLES, compliance_report_create
from deviations.rootcause import root_cause_analyse, root_cause_decide
from studies.audit import set_audit
from studies.models import Role
from studies.services import membership_grant
from tests.deviation_data import Trial, day
from tests.factories import SiteFactory, SubjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_export_dv_writes_sas_transport_v5_that_reads_back(tmp_path):
    trial = Trial()
    late = trial.subject(consent=day(-13))  # consent after the screening visit
    trial.visit(late, "WEEK 2", day(20))
    reported = Deviation(study=trial.study, site=late.site, subject=late, category="other", source="imported",
                         description="Lab kit expired", term="Expired kit", external_id="CTMS-7", occurred_on=day(40))
    set_audit(reported, actor=trial.actor, reason="import")
    reported.save()
    detection_run(study=trial.study, actor=trial.actor)
    withdrawn = Deviation.objects.get(study=trial.study, category="visit_window")
    withdrawn.status, withdrawn.resolution = "closed", "withdrawn"
    set_audit(withdrawn, actor=trial.actor, reason="raised in error")
    withdrawn.save()
    out = tmp_path / "dv.xpt"
    call_command("export_dv", "--study", trial.study.protocol_id, str(out), "--csv")
    frame, meta = pyreadstat.read_xport(str(out))
    assert list(frame.columns) == list(DV_VARIABLES)
    assert dict(zip(meta.column_names, meta.column_labels, strict=True)) == DV_VARIABLES
    assert meta.table_name == "DV" and meta.file_label == "Protocol Deviations"
    assert len(frame) == 2  # the withdrawn deviation is not one
    consent, other = frame.iloc[0], frame.iloc[1]
    assert (consent["STUDYID"], consent["DOMAIN"], consent["USUBJID"], consent["DVSEQ"]) == (
        trial.study.protocol_id, "DV", late.subject_id, 1.0)
    assert consent["DVCAT"] == "INFORMED CONSENT" and consent["DVSCAT"] == "IMPORTANT"
    assert consent["DVDECOD"] == "INFORMED CONSENT/ASSENT NOT SIGNED PRIOR TO ANY STUDY PROCEDURE"
    assert consent["DVTERM"].startswith("PROTOCOL DEVIATION WHERE THE SUBJECT'S INFORMED CONSENT")
    assert (consent["DVSTDTC"], consent["DVSTDY"], consent["EPOCH"]) == ("2025-02-15", -14.0, "SCREENING")
    assert consent["DVREFID"].startswith("TRIALOPS-")
    assert (other["DVSEQ"], other["DVREFID"], other["DVDECOD"], other["DVSTDY"]) == (
        2.0, "CTMS-7", "", 40.0)
    assert other["DVTERM"] == "Expired kit" and other["DVSCAT"] == "NON-IMPORTANT"
    assert other["EPOCH"] == "TREATMENT"  # a source's deviation: EPOCH from its date and the first dose
    widths = dict(zip(meta.column_names, [meta.variable_storage_width[c] for c in meta.column_names], strict=True))
    assert widths["DOMAIN"] == 2 and all(w <= 200 for w in widths.values())
    csv = pd.read_csv(tmp_path / "dv.csv", keep_default_na=False)
    assert list(csv["DVDECOD"]) == list(frame["DVDECOD"])
    with pytest.raises(CommandError, match="name it .xpt"):
        call_command("export_dv", "--study", trial.study.protocol_id, str(tmp_path / "dv.txt"))


def _site_with(trial, n_subjects: int, deviations: int, category: str, on: datetime.date, subject_ids=None):
    site = SiteFactory(study=trial.study, number=f"{trial.study.pk}-{trial.study.sites.count() + 1}")
    subjects = [SubjectFactory(site=site, first_participation_date=datetime.date(2024, 1, 1),
                               last_participation_date=None) for _ in range(n_subjects)]
    for i in range(deviations):
        subject = subjects[0] if subject_ids == "one" else subjects[i % n_subjects]
        deviation = Deviation(study=trial.study, site=site, subject=subject, category=category, source="manual",
                              description=f"{category} {i}", occurred_on=on + datetime.timedelta(days=i * 3),
                              importance="important")
        set_audit(deviation, actor=trial.actor, reason="test")
        deviation.save()
    return site


def test_root_cause_analysis_flags_a_site_far_above_the_study_and_a_person_decides():
    trial = Trial(plan=None)
    start = datetime.date(2025, 1, 1)
    quiet = [_site_with(trial, 10, 1, "informed_consent", start + datetime.timedelta(days=9 * i)) for i in range(8)]
    busy = _site_with(trial, 10, 12, "informed_consent", start)
    end = datetime.date(2025, 3, 31)
    found = root_cause_analyse(study=trial.study, actor=trial.actor, end=end, period_days=90)
    flagged = {(a.site_id, a.category) for a, _ in found}
    assert (busy.pk, "informed_consent") in flagged and not {s.pk for s in quiet} & {s for s, _ in flagged}
    analysis = RootCauseAnalysis.objects.get(site=busy, category="informed_consent")
    assert analysis.proposed_root_cause == "training" and analysis.figures["deviations"] == 12
    assert analysis.figures["flag"] >= 1 and analysis.figures["score"] >= 2  # gsm: flag 1 from z 2, 2 from z 3
    assert analysis.figures["site_rate_per_1000_days"] > analysis.figures["study_rate_per_1000_days"]
    assert (busy.pk, "importance:important") in flagged  # kri0004's rate over the period, too
    assert analysis.deviations.count() == 12
    again = root_cause_analyse(study=trial.study, actor=trial.actor, end=end, period_days=90)
    assert not [a for a, created in again if created] and RootCauseAnalysis.objects.count() == len(found)
    dm = UserFactory(username=f"dm-rca{trial.study.pk}")
    membership_grant(user=dm, study=trial.study, role=Role.DATA_MANAGER)
    root_cause_decide(analysis=analysis, actor=dm, accept=True, root_cause="process", reason="Consent workflow at "
                      "the site skips the re-consent step", note="site SOP")
    analysis.refresh_from_db()
    assert (analysis.status, analysis.root_cause, analysis.decided_by) == ("edited", "process", dm)
    assert set(analysis.deviations.values_list("root_cause", flat=True)) == {"process"}
    deviation = analysis.deviations.first()
    assert deviation.history.latest("history_date").history_user == dm


def test_a_subject_cause_is_proposed_when_one_subject_makes_the_pattern():
    trial = Trial(plan=None)
    start = datetime.date(2025, 1, 1)
    for i in range(8):
        _site_with(trial, 10, 1, "ip_dosing", start + datetime.timedelta(days=9 * i))
    busy = _site_with(trial, 10, 10, "ip_dosing", start, subject_ids="one")
    root_cause_analyse(study=trial.study, actor=trial.actor, end=datetime.date(2025, 3, 31), period_days=90)
    analysis = RootCauseAnalysis.objects.get(site=busy, category="ip_dosing")
    assert analysis.proposed_root_cause == "subject" and analysis.figures["top_subject_share"] == 1.0


def test_capa_effectiveness_is_measured_from_the_sites_rate_before_and_after():
    trial = Trial(plan=None)
    site = _site_with(trial, 10, 6, "visit_window", datetime.date(2025, 1, 5))  # 6 in the 90 days before
    dm = UserFactory(username=f"dm-capa{trial.study.pk}")
    membership_grant(user=dm, study=trial.study, role=Role.DATA_MANAGER)
    capa = capa_create(actor=dm, site=site, category="visit_window", title="Visit scheduling", owner=dm,
                       corrective_action="Reschedule overdue visits", preventive_action="Calendar reminders",
                       due_on=datetime.date(2025, 4, 15), reason="Pattern at the site")
    with pytest.raises(Exception, match="completed"):
        capa_effectiveness_check(capa=capa, actor=dm)
    capa = capa_update(capa=capa, actor=dm, reason="Done", status=Capa.Status.COMPLETED)
    capa.completed_on = datetime.date(2025, 4, 1)
    set_audit(capa, actor=dm, reason="Completion date as recorded at the site")
    capa.save()
    early = capa_effectiveness_check(capa=capa, actor=dm, today=datetime.date(2025, 5, 1))
    assert early.effectiveness == "too_early"
    checked = capa_effectiveness_check(capa=capa, actor=dm, today=datetime.date(2025, 8, 1))
    assert checked.effectiveness == "effective"
    assert checked.effectiveness_figures["before"]["deviations"] == 6
    assert checked.effectiveness_figures["after"]["deviations"] == 0
    assert checked.history.latest("history_date").history_change_reason == "Effectiveness measured: Effective"
    outsider = UserFactory(username=f"site-capa{trial.study.pk}")
    membership_grant(user=outsider, study=trial.study, role=Role.SITE_COORDINATOR, site=site)
    with pytest.raises(Exception, match="may not manage CAPAs"):
        capa_create(actor=outsider, site=site, category="visit_window", title="x", owner=dm, corrective_action="x",
                    preventive_action="x", due_on=datetime.date(2025, 4, 15), reason="x")


def test_the_periodic_summary_is_stored_once_per_period_with_its_inputs():
    trial = Trial()
    subject = trial.subject(consent=day(-13))
    trial.visit(subject, "WEEK 2", day(20))
    detection_run(study=trial.study, actor=trial.actor)
    report, created = compliance_report_create(study=trial.study, actor=trial.actor,
                                               period_start=datetime.date(2025, 1, 1),
                                               period_end=datetime.date(2025, 3, 31), review_within_days=30)
    assert created and report.summary["total"] == 2
    assert report.summary["by_category"] == {"informed_consent": 1, "visit_window": 1}
    assert report.summary["by_importance"] == {"important": 1, "non_important": 1}
    assert report.summary["trend"] == {"2025-02": 1, "2025-03": 1} and report.inputs["plan_version"] == 1
    again, created = compliance_report_create(study=trial.study, actor=trial.actor,
                                              period_start=datetime.date(2025, 1, 1),
                                              period_end=datetime.date(2025, 3, 31), review_within_days=30)
    assert not created and again.pk == report.pk and ComplianceReport.objects.count() == 1
    assert report.history.get().history_user == trial.actor


def test_detected_deviations_feed_kri0003_and_kri0004_and_withdrawn_ones_do_not():
    from sdv.models import KriResult  # noqa: PLC0415
    from sdv.services import kri_snapshot_compute  # noqa: PLC0415

    trial = Trial()
    late_consent = trial.subject(consent=day(-13))  # after the screening visit: important
    late_visit = trial.visit(trial.subject(), "WEEK 2", day(20))  # out of window: non-important
    detection_run(study=trial.study, actor=trial.actor)
    assert set(Deviation.objects.filter(study=trial.study).values_list("category", "importance")) == {
        ("informed_consent", "important"), ("visit_window", "non_important")}

    def numerators(on):
        snapshot = kri_snapshot_compute(study=trial.study, snapshot_date=on, actor=trial.actor)
        return {r.kri_id: r.numerator for r in KriResult.objects.filter(
            snapshot=snapshot, kri_id__in=["kri0003", "kri0004"], group=trial.site.number)}

    assert numerators(datetime.date(2025, 6, 1)) == {"kri0003": 1, "kri0004": 1}
    late_visit.actual_date = day(16)  # corrected: the detector withdraws it, the KRI no longer counts it
    set_audit(late_visit, actor=trial.actor, reason="Visit date corrected against source")
    late_visit.save()
    detection_run(study=trial.study, actor=trial.actor)
    assert numerators(datetime.date(2025, 6, 2)) == {"kri0003": 0, "kri0004": 1}
    assert Deviation.objects.get(subject=late_consent).resolution == ""


def test_dv_epoch_of_a_persons_deviation_follows_its_date_against_first_and_last_dose(tmp_path):
    trial = Trial()
    subject = trial.subject()
    trial.record(subject, "EX", "1", EXDOSE="40", EXDOSU="mg", EXSTDTC="2025-03-01", EXENDTC="2025-04-30")
    for on, text in ((day(-5), "Screening lab drawn twice"), (day(30), "Diary not returned"),
                     (datetime.date(2025, 6, 15), "Follow-up call missed"), (None, "Date not known")):
        deviation = Deviation(study=trial.study, site=subject.site, subject=subject, category="other",
                              source="manual", description=text, occurred_on=on)
        set_audit(deviation, actor=trial.actor, reason="reported")
        deviation.save()
    out = tmp_path / "dv.xpt"
    call_command("export_dv", "--study", trial.study.protocol_id, str(out))
    frame, _ = pyreadstat.read_xport(str(out))
    assert list(zip(frame["DVSTDTC"], frame["EPOCH"], strict=True)) == [
        ("2025-02-24", "SCREENING"), ("2025-03-30", "TREATMENT"), ("2025-06-15", "FOLLOW-UP"), ("", "")]
