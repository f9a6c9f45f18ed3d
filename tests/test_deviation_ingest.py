"""What the detectors need from the importers: SDTM DM's consent date, first dose (RFSTDTC) and arm
(ARMCD), the same from ODM items named by those variables; a DM the detectors could not trust is
refused with nothing stored. And the CDISC pilot, end to end: a deviation plan written here from
its TV domain, PatternRecognition on its data, compared with its 6 DS "PROTOCOL VIOLATION"."""

import datetime
from collections import Counter

import pandas as pd
import pyreadstat
import pytest

from deviations.detection import detection_run
from deviations.models import Deviation
from deviations.plan import plan_import
from studies.ingest.odm import odm_import
from studies.ingest.sdtm import sdtm_import
from studies.models import DataPoint, Import, Study, Subject, SubjectVisit
from tests.factories import UserFactory
from tests.test_ingest_odm import METADATA, subject_xml, write_odm

pytestmark = pytest.mark.django_db
DM = ("STUDYID,DOMAIN,USUBJID,SUBJID,SITEID,RFICDTC,RFSTDTC,ARMCD,COUNTRY\n"
      "T1,DM,T1-01-001,001,01,2025-01-10,2025-01-20,HI,USA\n"
      "T1,DM,T1-01-002,002,01,2025-01-11,,Scrnfail,USA\n")
SV = "STUDYID,DOMAIN,USUBJID,VISITNUM,VISIT,SVSTDTC\nT1,SV,T1-01-001,1,SCREENING,2025-01-10\n"


def write(directory, dm=DM, sv=SV):
    directory.mkdir(exist_ok=True)
    (directory / "dm.csv").write_text(dm)
    (directory / "sv.csv").write_text(sv)
    return directory


def test_sdtm_dm_gives_consent_first_dose_and_arm(tmp_path):
    record = sdtm_import(directory=write(tmp_path / "t1"), study="T1", actor=UserFactory(username="sdtm"))
    assert record.status == Import.Status.SUCCEEDED, record.errors
    dosed, failed = Subject.objects.order_by("subject_id")
    assert (dosed.consent_date, dosed.first_dose_date, dosed.arm) == (
        datetime.date(2025, 1, 10), datetime.date(2025, 1, 20), "HI")
    assert (failed.first_dose_date, failed.arm) == (None, "Scrnfail")


@pytest.mark.parametrize(("dm", "message"), [
    (DM.replace("2025-01-20", "2025-13-45"), "DM.RFSTDTC '2025-13-45' is not an ISO 8601 date"),
    (DM.replace("2025-01-20", "20/01/2025"), "DM.RFSTDTC '20/01/2025' is not an ISO 8601 date"),
    (DM.replace("2025-01-11", "yesterday"), "DM.RFICDTC 'yesterday' is not an ISO 8601 date"),
    (DM.replace("T1-01-002", "T1-01-001"), "DM has USUBJID T1-01-001 twice"),
    (DM.replace(",SITEID,", ",SITE,"), "DM lacks the required variable(s) SITEID"),
    (DM.replace("Scrnfail", "A" * 21), "longer than 20 characters"),
])
def test_a_bad_dm_is_refused_and_nothing_is_stored(tmp_path, dm, message):
    before = (Study.objects.count(), Subject.objects.count(), SubjectVisit.objects.count(),
              Subject.history.count())
    record = sdtm_import(directory=write(tmp_path / "bad", dm=dm), study="T-BAD", actor=UserFactory(username="s"))
    assert record.status == Import.Status.FAILED
    assert message in str(record.errors), record.errors
    assert (Study.objects.count(), Subject.objects.count(), SubjectVisit.objects.count(),
            Subject.history.count()) == before


def test_a_partial_reference_date_is_kept_unknown_not_made_the_first_of_the_month(tmp_path):
    record = sdtm_import(directory=write(tmp_path / "p", dm=DM.replace("2025-01-20", "2025-01")), study="T-P",
                         actor=UserFactory(username="s"))
    assert record.status == Import.Status.SUCCEEDED, record.errors
    assert Subject.objects.get(subject_id="T1-01-001").first_dose_date is None


def test_odm_items_named_by_the_dm_reference_variables_fill_the_subject(tmp_path):
    metadata = METADATA.replace(
        '<ItemRef ItemOID="I.NOTE" OrderNumber="3" Mandatory="No"/>',
        '<ItemRef ItemOID="I.NOTE" OrderNumber="3" Mandatory="No"/><ItemRef ItemOID="IT.DM.RFSTDTC" Mandatory="No"/>'
        '<ItemRef ItemOID="IT.DM.ARMCD" Mandatory="No"/><ItemRef ItemOID="IT.DM.RFICDTC" Mandatory="No"/>').replace(
        '<ItemDef OID="I.NOTE" Name="Note" DataType="string"/>',
        '<ItemDef OID="I.NOTE" Name="Note" DataType="string"/><ItemDef OID="IT.DM.RFSTDTC" Name="RFSTDTC" '
        'DataType="date"/><ItemDef OID="IT.DM.ARMCD" Name="ARMCD" DataType="text"/>'
        '<ItemDef OID="IT.DM.RFICDTC" Name="RFICDTC" DataType="date"/>')
    body = subject_xml("S-1").replace(
        '<ItemDataString ItemOID="I.SEX">F</ItemDataString>',
        '<ItemDataString ItemOID="I.SEX">F</ItemDataString><ItemData ItemOID="IT.DM.RFSTDTC" Value="2025-03-02"/>'
        '<ItemData ItemOID="IT.DM.ARMCD" Value="PBO"/><ItemData ItemOID="IT.DM.RFICDTC" Value="2025-02-20"/>')
    path = write_odm(tmp_path / "dm.xml", body)
    path.write_text(path.read_text().replace(METADATA, metadata))
    actor = UserFactory(username="odm")
    record = odm_import(path=path, actor=actor)
    assert record.status == Import.Status.SUCCEEDED, record.errors
    subject = Subject.objects.get(subject_id="S-1")
    assert (subject.first_dose_date, subject.arm, subject.consent_date) == (
        datetime.date(2025, 3, 2), "PBO", datetime.date(2025, 2, 20))
    path.write_text(path.read_text().replace('Value="PBO"', 'Value="HI"'))
    assert odm_import(path=path, actor=actor).status == Import.Status.SUCCEEDED
    subject.refresh_from_db()
    assert subject.arm == "HI"
    assert subject.history.latest("history_date").history_change_reason.endswith(
        "reference dates or arm changed in the EDC")


def pilot_plan(sdtm) -> dict:
    """A deviation plan for CDISCPILOT01 from its TV domain (TV has no windows: the ones here are
    ours). Conditional visits (AE follow-up, retrieval, rash follow-up) and unscheduled ones have no
    fixed day and are left out. The xanomeline arms' doses are the TA elements' (54 and 81 mg)."""
    tv, _ = pyreadstat.read_xport(str(sdtm / "tv.xpt"))
    visits = {}
    for row in tv.itertuples():
        if pd.isna(row.VISITDY) or row.VISITNUM > 100:
            continue
        day = int(row.VISITDY)
        if day < 1:
            visits[row.VISIT] = {"day": day, "before": 14 if row.VISITNUM == 1 else 6,
                                 "after": 6 if row.VISITNUM == 1 else 0}
        else:
            visits[row.VISIT] = {"day": day, "before": 0 if day == 1 else 3, "after": 0 if day == 1 else 3}
    return {"visits": visits,
            "dosing": {"arms": {"Pbo": {"doses": [0], "units": "mg"}, "Xan_Lo": {"doses": [54], "units": "mg"},
                                "Xan_Hi": {"doses": [54, 81], "units": "mg"}}},
            "prohibited_medications": [{"name": "DONEPEZIL HYDROCHLORIDE", "washout_days": 30}],
            "eligibility": {"criteria_not_met_is_deviation": True},
            "importance": {"visit_window": "non_important"}}


def test_the_cdisc_pilot_against_a_plan_from_its_tv_domain(shared_data):
    sdtm = shared_data / "cdiscpilot01" / "sdtm"
    actor = UserFactory(username="pilot")
    record = sdtm_import(directory=shared_data / "cdiscpilot01", study="CDISCPILOT01", actor=actor)
    assert record.status == Import.Status.SUCCEEDED, record.errors
    study = record.study
    assert Subject.objects.filter(study=study, first_dose_date__isnull=False).count() == 254
    assert Counter(Subject.objects.filter(study=study).values_list("arm", flat=True)) == {
        "Pbo": 86, "Xan_Hi": 84, "Xan_Lo": 84, "Scrnfail": 52}
    plan, _ = plan_import(study=study, content=pilot_plan(sdtm), actor=actor, reason="plan from TV")
    done = detection_run(study=study, actor=actor, plan=plan)
    found = Counter(Deviation.objects.filter(study=study).values_list("rule", flat=True))
    # What it finds (stated in the report): visits out of the windows above and planned visits
    # missed before a later one; every dose is its arm's; donepezil is only ever started after the
    # last dose of study drug; the pilot has no IE domain, so no eligibility finding.
    assert found == {"visit_window.out_of_window": 695, "visit_window.missed": 97}
    assert done.counts["detectors"]["ip_dosing"]["found"] == 0
    assert done.counts["detectors"]["prohibited_medication"]["found"] == 0
    ds, _ = pyreadstat.read_xport(str(sdtm / "ds.xpt"))
    violations = set(ds.loc[ds["DSDECOD"] == "PROTOCOL VIOLATION", "USUBJID"])
    assert len(violations) == 6
    with_deviation = set(Deviation.objects.filter(study=study, subject__subject_id__in=violations)
                         .values_list("subject__subject_id", flat=True))
    assert with_deviation == violations  # each of the 6 has at least one detected visit deviation
    again = detection_run(study=study, actor=actor, plan=plan)
    assert again.counts["totals"]["created"] == again.counts["totals"]["updated"] == 0
    assert DataPoint.objects.filter(study=study).exists()
