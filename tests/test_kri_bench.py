import json
from io import StringIO

import pytest
from django.core.management import call_command

from deviations.models import Deviation
from queries.models import Query
from sdv.models import KriResult, KriSnapshot
from studies.models import DataPoint, Study


@pytest.mark.django_db
def test_bench_kri_prints_its_figures_as_a_json_last_line_and_leaves_nothing():
    out = StringIO()
    call_command("bench_kri", sites=20, subjects=400, stdout=out)
    lines = out.getvalue().strip().splitlines()
    result = json.loads(lines[-1])
    assert list(result)[:5] == ["bench", "sites", "subjects", "seconds", "one_kri_compute_seconds"]
    assert result["bench"] == "kri" and result["sites"] == 20 and result["subjects"] == 400
    assert result["seconds"] > 0 and result["one_kri_compute_seconds"] > 0 and result["pandas_seconds"] > 0
    # Every source a KRI reads was generated: AEs and labs as data points, deviations, queries.
    assert result["data_points"] > 400 and result["deviations"] > 0 and result["queries"] > 0
    assert result["kris"] == 33 and result["results"] > 20 * 10
    assert len(lines) == 1  # no clindata study in this database: only the generated one
    assert not Study.objects.filter(protocol_id__startswith="BENCH-").exists()
    assert not (KriResult.objects.exists() or KriSnapshot.objects.exists() or DataPoint.objects.exists()
                or Deviation.objects.exists() or Query.objects.exists())
