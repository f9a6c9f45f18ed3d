"""The KRI engine against gsm's published outputs: gsm.core 1.1.3's subject-level
analyticsInput.csv to site-level analyticsSummary.csv, every row of reportingResults.csv (13 site
KRIs and their country twins x 3 snapshots) from its own numerator and denominator, and every
funnel bound of reportingBounds.csv: same scores and bounds to 1e-9, the same flags, the same
masked groups. And gsm 1.8.4's quality tolerance limits (exact binomial intervals) on clindata."""

import numpy as np
import pandas as pd
import pytest

from sdv.kri import KriMethod, binomial_interval, funnel_bounds, kri_from_groups, kri_from_subjects
from sdv.services import gsm_definitions

ANALYSIS = {"rate": "normal_rate", "binary": "normal_binary", "identity": "identity"}


def method_of(metric: pd.Series) -> KriMethod:
    """A KRI method from a row of gsm's reportingMetrics.csv."""
    flags = () if pd.isna(metric.Flag) else tuple(int(f) for f in metric.Flag.split(","))
    return KriMethod(analysis=ANALYSIS[metric.AnalysisType],
                     thresholds=tuple(float(t) for t in str(metric.Threshold).split(",")), flags=flags,
                     accrual_threshold=float(metric.AccrualThreshold),
                     accrual_metric=metric.AccrualMetric.lower())


def assert_same(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    joined = ours.set_index("group").join(theirs.set_index("GroupID"), how="outer")
    assert len(joined) == len(ours) == len(theirs)
    assert (joined["numerator"] == joined["Numerator"]).all() and (joined["denominator"] == joined["Denominator"]).all()
    score = joined["score"].astype("float64")
    assert (score.isna() == joined["Score"].isna()).all(), "the same groups masked by accrual"
    assert (score - joined["Score"]).abs().fillna(0).max() < 1e-9
    assert (joined["flag"].astype("float64").fillna(99) == joined["Flag"].fillna(99)).all()


def test_analytics_input_gives_gsm_analytics_summary(shared_data):
    core = shared_data / "gsm-core-1.1.3"
    subjects = pd.read_csv(core / "analyticsInput.csv")
    metrics = pd.read_csv(core / "reportingMetrics.csv").set_index("ID")
    codes, groups = pd.factorize(subjects["GroupID"])
    result = kri_from_subjects(codes=codes, groups=groups, numerator=subjects["Numerator"].to_numpy(),
                               denominator=subjects["Denominator"].to_numpy(), method=method_of(metrics.loc["kri0001"]))
    summary = pd.read_csv(core / "analyticsSummary.csv")
    assert_same(pd.DataFrame(result.as_rows()), summary)
    assert summary["Flag"].isna().sum() == 20  # sites under 30 days on study: no score, no flag


@pytest.mark.parametrize("suffix", ["", "_country"])
def test_every_reporting_result_is_reproduced_from_its_numerator_and_denominator(shared_data, suffix):
    core = shared_data / "gsm-core-1.1.3"
    results = pd.read_csv(core / f"reportingResults{suffix}.csv")
    metrics = pd.read_csv(core / f"reportingMetrics{suffix}.csv").set_index("MetricID")
    checked = 0
    for (metric_id, _snapshot), rows in results.groupby(["MetricID", "SnapshotDate"]):
        result = kri_from_groups(groups=rows["GroupID"].to_numpy(), numerator=rows["Numerator"].to_numpy(),
                                 denominator=rows["Denominator"].to_numpy(), method=method_of(metrics.loc[metric_id]))
        assert_same(pd.DataFrame(result.as_rows()), rows)
        checked += len(rows)
    assert checked == len(results) == {"": 3369, "_country": 116}[suffix]


def test_the_seeded_definitions_carry_gsm_metric_settings(shared_data):
    metrics = pd.read_csv(shared_data / "gsm-core-1.1.3" / "reportingMetrics.csv").set_index("ID")
    seeded = {d["kri_id"]: d for d in gsm_definitions()}
    levels = [d["level"] for d in seeded.values()]
    assert (levels.count("site"), levels.count("country"), levels.count("study")) == (15, 15, 3)
    for kri_id, metric in metrics.iterrows():
        ours = seeded[kri_id]
        assert ANALYSIS[metric.AnalysisType] == ours["analysis"]
        assert [float(t) for t in metric.Threshold.split(",")] == [float(t) for t in ours["thresholds"]]
        assert (metric.AccrualThreshold, metric.AccrualMetric.lower()) == (ours["accrual_threshold"],
                                                                            ours["accrual_metric"])


@pytest.mark.parametrize("suffix", ["", "_country"])
def test_every_funnel_bound_is_reproduced(shared_data, suffix):
    """reportingBounds: for each KRI of the normal approximation and each snapshot, the expected
    metric and the bounds at each threshold over gsm's grid of denominators, from the groups'
    own numerators and denominators (p and phi as the engine computes them)."""
    core = shared_data / "gsm-core-1.1.3"
    bounds = pd.read_csv(core / f"reportingBounds{suffix}.csv")
    results = pd.read_csv(core / f"reportingResults{suffix}.csv")
    metrics = pd.read_csv(core / f"reportingMetrics{suffix}.csv").set_index("MetricID")
    checked = 0
    for (metric_id, snapshot), theirs in bounds.groupby(["MetricID", "SnapshotDate"]):
        metric = metrics.loc[metric_id]
        rows = results[(results["MetricID"] == metric_id) & (results["SnapshotDate"] == snapshot)]
        result = kri_from_groups(groups=rows["GroupID"].to_numpy(), numerator=rows["Numerator"].to_numpy(),
                                 denominator=rows["Denominator"].to_numpy(), method=method_of(metric))
        ours = pd.DataFrame(funnel_bounds(denominator=result.denominator, overall=result.overall,
                                          factor=result.factor, binary=metric.AnalysisType == "binary",
                                          thresholds=[float(t) for t in str(metric.Threshold).split(",")]))
        ours = ours.sort_values(["threshold", "denominator"], ignore_index=True)
        theirs = theirs.sort_values(["Threshold", "Denominator"], ignore_index=True)
        assert len(ours) == len(theirs), (metric_id, snapshot)
        assert (ours["threshold"] == theirs["Threshold"]).all()
        assert np.allclose(ours["denominator"], theirs["Denominator"], rtol=1e-12, atol=0)
        assert np.abs(ours["metric"] - theirs["Metric"]).max() < 1e-9
        assert np.allclose(ours["numerator"], theirs["Numerator"], rtol=1e-9, atol=1e-9)
        checked += len(theirs)
    assert checked == len(bounds) == {"": 31534, "_country": 34914}[suffix]


def test_quality_tolerance_limits_match_gsm_1_8_4(shared_data):
    """gsm 1.8.4's QTLs on clindata (rpt_qtl_analysis): the estimate and the exact 95% binomial
    interval of participants with an important deviation (344 of 1,301) and of study
    discontinuations (84 of 1,301 in gsm's input), and the flag: the lower bound over the limit."""
    results = pd.read_parquet(shared_data / "clindata" / "gsm-1.8.4-results" / "rpt_qtl_analysis.parquet")
    details = pd.read_parquet(shared_data / "clindata" / "gsm-1.8.4-results" / "rpt_qtl_details.parquet")
    for row in details.itertuples():
        theirs = results[results["workflowid"] == row.workflowid].set_index("param")["value"]
        low, high = binomial_interval(row.numerator_value, row.denominator_value)
        assert abs(low - theirs["LowCI"]) < 1e-9 and abs(high - theirs["UpCI"]) < 1e-9
        assert abs(row.numerator_value / row.denominator_value - theirs["Estimate"]) < 1e-12
        assert (2 if low > row.threshold else 0) == int(row.flag)
