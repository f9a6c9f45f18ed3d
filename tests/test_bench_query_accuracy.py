"""The accuracy benchmark of the QueryAnalyzer: a generated study with known errors of every rule
type, its figures as a JSON last line, nothing left behind, the same figures for the same seed."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from queries.models import Discrepancy, EditCheck, Query
from studies.models import DataPoint, Study

pytestmark = pytest.mark.django_db
RULE_FIGURES = {"injected", "found", "true_positive", "precision", "recall"}


def bench(**options) -> dict:
    out = StringIO()
    call_command("bench_query_accuracy", stdout=out, **options)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) > 1  # human-readable lines first
    return json.loads(lines[-1])


def test_the_analyzer_finds_the_injected_errors_of_every_rule_type_and_the_bench_leaves_nothing():
    before = {model: model.objects.count() for model in (Study, DataPoint, Discrepancy, Query, get_user_model())}

    result = bench(seed=5, subjects=80)

    assert {"bench", "seed", "subjects", "data_points", "injected", "found", "precision", "recall", "per_rule",
            "medical_review", "seconds"} <= set(result)
    assert (result["bench"], result["seed"], result["subjects"]) == ("query_accuracy", 5, 80)
    assert set(result["per_rule"]) == set(EditCheck.RuleType.values)
    for rule_type, figures in result["per_rule"].items():
        assert set(figures) == RULE_FIGURES
        assert figures["injected"] > 0, rule_type
    assert result["injected"] == sum(f["injected"] for f in result["per_rule"].values())
    assert result["recall"] >= 0.99 and result["precision"] >= 0.98
    # Abnormal but plausible lab values are clinical signals, not findings: all go to medical review
    review = result["medical_review"]
    assert review["abnormal_plausible_labs"] > 0 and review["all_routed"] and review["unexpected"] == 0
    # Rolled back: no study, data, finding, query or system account of the bench remains
    assert not Study.objects.filter(protocol_id__startswith="BENCH-ACC-").exists()
    assert {model: model.objects.count() for model in before} == before


def test_the_same_seed_builds_the_same_study_and_gives_the_same_figures():
    first, again, other = bench(seed=3, subjects=40), bench(seed=3, subjects=40), bench(seed=4, subjects=40)

    timings = ("seconds", "build_seconds")
    assert {k: v for k, v in first.items() if k not in timings} == {k: v for k, v in again.items() if k not in timings}
    assert (other["data_points"], other["injected"]) != (first["data_points"], first["injected"])
