import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from lxml import etree

from studies.management.commands.bench_ingest import odm_write
from studies.models import DataPoint, Import, Study


@pytest.mark.django_db
def test_bench_ingest_prints_its_figures_as_a_json_last_line_and_leaves_nothing(shared_data):
    out = StringIO()
    call_command("bench_ingest", rows=2000, odm_points=1203, dir=shared_data / "clindata" / "parquet", stdout=out)
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert {"bench", "rows", "seconds", "raw_copy_seconds", "ratio", "peak_rss_mb"} <= set(result)
    assert result["bench"] == "ingest" and result["rows"] == 2000 and result["history_rows"] == 2000
    # The ODM target's figures: the generated file imported (all new) and again (all unchanged);
    # the command itself fails if the counts are not exactly the points asked for.
    assert result["odm_data_points"] == 1203
    assert result["odm_seconds"] > 0 and result["odm_reimport_seconds"] > 0
    assert not Study.objects.filter(protocol_id__startswith="BENCH-").exists()
    assert DataPoint.objects.count() == 0 and DataPoint.history.count() == 0
    assert not Import.objects.exists()
    if connection.vendor == "postgresql":  # the floor: the same audited writes into bare tables
        assert result["floor_seconds"] > 0 and result["floor_ratio"] > 0


@pytest.mark.django_db
def test_bench_ingest_refuses_a_negative_odm_size():
    with pytest.raises(CommandError, match="--odm-points"):
        call_command("bench_ingest", odm_points=-1)


def test_the_generated_odm_file_is_valid_odm_1_3_2_with_the_points_asked_for(shared_data, tmp_path):
    path = tmp_path / "bench.xml"
    odm_write(path, points=777, study_oid="BENCH-ODM-TEST")
    schema = etree.XMLSchema(etree.parse(str(shared_data / "odm" / "cdisc_odm132_schema" / "ODM1-3-2.xsd")))
    document = etree.parse(str(path))
    assert schema.validate(document), schema.error_log.last_error
    ns = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
    assert len(document.findall(".//odm:ItemData", ns)) == 777
    assert len({e.get("ItemOID") for e in document.findall(".//odm:ItemData", ns)}) == 50
    assert document.find(".//odm:RangeCheck", ns) is not None
