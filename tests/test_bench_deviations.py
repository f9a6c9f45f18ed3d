"""bench_deviations at a small size: it runs, its last line is one JSON object, it finds every
planted deviation and no decoy, its second pass writes nothing, and it leaves nothing behind."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from deviations.models import Deviation
from studies.models import Study

pytestmark = pytest.mark.django_db


def test_bench_deviations_reports_recall_precision_and_times_as_its_last_json_line():
    out = StringIO()
    call_command("bench_deviations", "--sites", "10", "--subjects", "60", stdout=out)
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert result["subjects"] == 600 and result["planted"] > 20 and result["decoys"] > 100
    assert result["recall"] == 1.0 and result["precision"] == 1.0
    assert set(result["per_kind"]) == {"informed_consent", "visit_window", "ip_dosing", "prohibited_medication",
                                       "eligibility", "safety_reporting"}
    assert result["second_pass_writes"] == {}
    assert result["detection_seconds"] > 0 and result["baseline_visit_scan_seconds"] > 0
    assert not Study.objects.filter(protocol_id__startswith="BENCH-DEV").exists()  # rolled back
    assert not Deviation.objects.exists()
