"""bench_sdv on three pages (one PNG, one JPEG, one image-only PDF): the figures of its last JSON
line are consistent with each other, and it leaves the database and the file store as they were."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from sdv.models import SourceDocument, SourceVerification
from studies.models import Study
from tests.sdv_helpers import require_tesseract, stored_files

pytestmark = pytest.mark.django_db


def test_bench_sdv_reports_detection_and_time_and_rolls_back(media):
    require_tesseract()
    out = StringIO()
    call_command("bench_sdv", "--pages", "3", "--seed", "5", stdout=out)
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert result["bench"] == "sdv" and result["pages"] == 3
    assert result["kinds"] == {"png": 1, "jpeg": 1, "pdf": 1}
    assert result["planted_errors"] == result["true_positives"] + result["false_negatives"]
    assert sum(result["verdicts"].values()) == result["values"]
    for figure in ("precision", "recall", "f1", "verified_share", "absent_not_found_share"):
        assert 0 <= result[figure] <= 1, figure
    assert result["verified_share"] > 0.8  # a seed-5 run of three pages: most clean values are verified
    assert result["agent_seconds"] > 0 and result["tesseract_seconds"] > 0
    assert result["time_ratio"] == pytest.approx(result["agent_seconds"] / result["tesseract_seconds"], rel=0.01)
    assert not Study.objects.filter(protocol_id__startswith="BENCH-SDV").exists()
    assert not SourceDocument.objects.exists() and not SourceVerification.objects.exists()
    assert stored_files(media) == []
