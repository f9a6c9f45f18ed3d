"""End to end from the raw clindata tables, through the clindata importer and the database, to
gsm 1.8.4's published results (gsm-1.8.4-results, snapshot 2018-01-01) on all 176 sites, with
gsm 1.8.4's settings (thresholds -3, -2, 2, 3; accrual of 30 on the denominator). Dated records are
cut at the snapshot date (on or before 2018-01-01, as gsm's snapshot did).

What is identical today: the AE, SAE and both deviation KRIs' numerators; the lab abnormality KRI
entirely (numerators, denominators, scores to 1e-9, flags); the query rate's numerators; the
important-deviation QTL. The AE/SAE/deviation denominators (days on study) need each subject's
first and last participation dates, which the importer does not store yet: that test is an
expected failure until it does, and shows meanwhile that gsm's own days on study, summed per
site, give gsm's scores and flags from our numerators."""

import datetime

import numpy as np
import pandas as pd
import pytest
from django.db import connection

from sdv.kri import KriMethod, binomial_interval, kri_from_groups
from sdv.models import KriDefinition, KriResult, SiteRiskAssessment
from sdv.services import kri_definition_update, kri_definitions_seed, kri_snapshot_compute
from studies.ingest.clindata import TABLES, clindata_import, read_tables
from studies.models import Import
from tests.factories import UserFactory

SNAPSHOT = datetime.date(2018, 1, 1)
GSM_1_8_4 = {"thresholds": [-3, -2, 2, 3], "flags": [-2, -1, 0, 1, 2], "accrual_threshold": 30,
             "accrual_metric": "denominator"}
DAYS_KRIS = ("kri0001", "kri0002", "kri0003", "kri0004")


def load(shared_data, tmp_path, emptied: tuple[str, ...]):
    if connection.vendor != "postgresql":
        pytest.skip("the clindata load runs on PostgreSQL in CI; SQLite takes minutes for it")
    tables = read_tables(shared_data / "clindata" / "parquet", all_columns=True)
    for name in TABLES:
        frame = tables[name].iloc[0:0] if name in emptied else tables[name]
        frame.reset_index(drop=True).to_parquet(tmp_path / f"{name}.parquet", index=False)
    record = clindata_import(directory=tmp_path, actor=UserFactory(username="importer"))
    assert record.status == Import.Status.SUCCEEDED, record.errors
    return record.study


def snapshot_with_gsm_1_8_4_settings(study, kris):
    actor = UserFactory(username="rbm-lead")
    kri_definitions_seed(study=study, actor=actor)
    for kri in kris:  # gsm 1.8.4's settings (rpt_kri_threshold_param), not gsm.kri's newer ones
        definition = KriDefinition.objects.get(study=study, kri_id=kri)
        # Five flags need five risk-score weights (gsm.kri gives the two-sided KRIs theirs).
        weights = definition.weights if len(definition.weights) == 5 else [2, 1, 0, 1, 2]
        kri_definition_update(definition=definition, actor=actor, reason="gsm 1.8.4 settings", weights=weights,
                              **GSM_1_8_4)
    snapshot = kri_snapshot_compute(study=study, snapshot_date=SNAPSHOT, actor=actor)
    assert not [p for p in snapshot.problems if p["kri"] in kris], snapshot.problems
    assert SiteRiskAssessment.objects.filter(snapshot=snapshot).count() == 176
    return snapshot


def joined(shared_data, snapshot, kri: str) -> pd.DataFrame:
    ours = pd.DataFrame.from_records(KriResult.objects.filter(snapshot=snapshot, kri_id=kri).values(
        "group", "numerator", "denominator", "score", "flag")).set_index("group")
    theirs = pd.read_parquet(shared_data / "clindata" / "gsm-1.8.4-results" / "rpt_site_kri_details.parquet")
    theirs = theirs[theirs["workflowid"] == kri].set_index("siteid")
    assert len(ours) == len(theirs) == 176, kri
    return ours.join(theirs.rename(columns={"score": "score_gsm"}))


def _assert_the_ctms_deviations_are_coded(study):
    """The CTMS deviations of clindata's subjects (4,473 of its 4,646; 173 are of subject numbers the
    study does not have) coded with the SDTM DV vocabulary from the CTMS category, importance as
    the CTMS deemed it; a blank or unreadable category is left for a person to code."""
    from collections import Counter  # noqa: PLC0415

    from deviations.models import Deviation  # noqa: PLC0415

    rows = Deviation.objects.filter(study=study)
    assert rows.count() == 4473 and set(rows.values_list("source", flat=True)) == {"imported"}
    # Counted from ctms_protdev's companycategory for those subjects (4 blank or unreadable)
    assert Counter(rows.values_list("dvcat", flat=True)) == {
        "STUDY PROCEDURE": 2993, "WRONG STUDY TREATMENT/ADMINISTRATION/DOSE": 1272, "INFORMED CONSENT": 90,
        "ELIGIBILITY CRITERIA NOT MET": 51, "EXCLUDED MEDICATION, VACCINE OR DEVICE": 39,
        "ASSESSMENT OR TIME POINT COMPLETION": 24, "": 4}
    assert rows.filter(dvdecod="ELIGIBILITY CRITERIA NOT MET", category="eligibility").count() == 51
    assert rows.filter(importance="important").count() == 483  # deemedimportant "Yes"
    assert not rows.filter(dvdecod="").exclude(dvcat="").exists()


@pytest.mark.django_db
def test_kris_from_the_raw_clindata_tables_match_gsm_1_8_4_on_all_176_sites(shared_data, tmp_path):
    study = load(shared_data, tmp_path, emptied=("rawplus_ie", "rawplus_ex"))
    _assert_the_ctms_deviations_are_coded(study)
    snapshot = snapshot_with_gsm_1_8_4_settings(study, (*DAYS_KRIS, "kri0005", "kri0008"))
    for kri in (*DAYS_KRIS, "kri0008"):
        both = joined(shared_data, snapshot, kri)
        assert (both["numerator"] == both["numerator_value"]).all(), kri
    labs = joined(shared_data, snapshot, "kri0005")  # grade 3+ lab results of graded ones, 1.13 M results
    assert (labs["numerator"] == labs["numerator_value"]).all() and labs["numerator"].sum() == 1497
    assert (labs["denominator"] == labs["denominator_value"]).all() and labs["denominator"].sum() == 536634
    assert np.abs(labs["score"] - labs["score_gsm"]).max() < 1e-9
    assert (labs["flag"].astype("float64") == labs["flag_value"].astype("float64")).all()
    qtl = {q["kri"]: q for q in snapshot.qtl}["qtl0004"]
    theirs = pd.read_parquet(shared_data / "clindata" / "gsm-1.8.4-results" / "rpt_qtl_analysis.parquet")
    theirs = theirs[theirs["workflowid"] == "qtl0004"].set_index("param")["value"]
    assert (qtl["numerator"], qtl["denominator"]) == (344, 1301)
    assert abs(qtl["ci_low"] - theirs["LowCI"]) < 1e-9 and abs(qtl["ci_high"] - theirs["UpCI"]) < 1e-9
    assert qtl["status"] == "breached"  # gsm's flag 2: the interval lies above the 1% limit
    assert binomial_interval(344, 1301)[0] == qtl["ci_low"]


@pytest.mark.django_db
def test_days_on_study_kris_match_gsm_1_8_4_scores_and_flags(shared_data, tmp_path):
    study = load(shared_data, tmp_path, emptied=("rawplus_lb", "rawplus_ie", "rawplus_ex", "edc_queries"))
    snapshot = snapshot_with_gsm_1_8_4_settings(study, DAYS_KRIS)
    # gsm's own days on study per subject (timeonstudy = last - first participation date + 1),
    # summed per site: with our numerators they give gsm's denominators, scores and flags exactly.
    dm = pd.read_parquet(shared_data / "clindata" / "parquet" / "rawplus_dm.parquet")
    days = dm.assign(siteid=dm["siteid"].astype(str)).groupby("siteid")["timeonstudy"].sum().astype("float64")
    method = KriMethod(analysis="normal_rate", thresholds=tuple(GSM_1_8_4["thresholds"]),
                       flags=tuple(GSM_1_8_4["flags"]), accrual_threshold=30, accrual_metric="denominator")
    for kri in DAYS_KRIS:
        both = joined(shared_data, snapshot, kri)
        assert (both["numerator"] == both["numerator_value"]).all(), kri
        result = kri_from_groups(groups=both.index.to_numpy(), numerator=both["numerator"].to_numpy(),
                                 denominator=days.reindex(both.index).to_numpy(), method=method)
        assert (result.denominator == both["denominator_value"].to_numpy()).all(), kri
        assert np.nanmax(np.abs(result.score - both["score_gsm"].to_numpy())) < 1e-9, kri
        assert (result.flag == both["flag_value"].astype("float64").to_numpy()).all(), kri
    for kri in DAYS_KRIS:
        both = joined(shared_data, snapshot, kri)
        assert (both["denominator"] == both["denominator_value"]).all(), kri
        assert np.abs(both["score"] - both["score_gsm"]).max() < 1e-9, kri
        assert (both["flag"].astype("float64") == both["flag_value"].astype("float64")).all(), kri
