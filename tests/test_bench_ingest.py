import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from studies.models import DataPoint, Study


@pytest.mark.django_db
def test_bench_ingest_prints_its_figures_as_a_json_last_line_and_leaves_nothing(shared_data):
    out = StringIO()
    call_command("bench_ingest", rows=2000, dir=shared_data / "clindata" / "parquet", stdout=out)
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert {"bench", "rows", "seconds", "raw_copy_seconds", "ratio", "peak_rss_mb"} <= set(result)
    assert result["bench"] == "ingest" and result["rows"] == 2000 and result["history_rows"] == 2000
    assert not Study.objects.filter(protocol_id__startswith="BENCH-").exists()
    assert DataPoint.objects.count() == 0
    if connection.vendor == "postgresql":  # the floor: the same audited writes into bare tables
        assert result["floor_seconds"] > 0 and result["floor_ratio"] > 0
