"""clindata: the demo subset shipped in data/demo (always), the full study from ../shared/data.

The full load (1.28 M data points) runs on PostgreSQL only: through the ORM bulk path SQLite
takes many minutes and gigabytes for it, while the demo subset exercises the same code on both."""

from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from deviations.models import Deviation
from queries.models import Query
from studies.ingest.clindata import clindata_import
from studies.models import DataPoint, Import, Site, Subject, SubjectVisit
from tests.factories import UserFactory

DEMO = Path(settings.BASE_DIR) / "data" / "demo" / "clindata"


def scheduled_visits(study):
    return SubjectVisit.objects.filter(study=study).exclude(definition__oid="LOG").exclude(repeat_key__startswith="LB ")


@pytest.mark.django_db
def test_the_demo_subset_loads_with_its_audit_trail_and_a_second_load_writes_nothing():
    actor = UserFactory(username="importer")
    first = clindata_import(directory=DEMO, actor=actor)
    assert first.status == Import.Status.SUCCEEDED, first.errors
    study = first.study
    assert Site.objects.filter(study=study).count() == 10
    assert Subject.objects.filter(study=study).exclude(status=Subject.Status.SCREEN_FAILED).count() == 80
    assert scheduled_visits(study).count() == 1758
    assert DataPoint.objects.filter(study=study, form__oid="LB").count() == 71048
    assert Query.objects.filter(study=study, origin=Query.Origin.IMPORTED).count() == 2627
    assert Deviation.objects.filter(study=study, source=Deviation.Source.IMPORTED).count() == 187
    # Every data point (COPY-written on PostgreSQL) has its "+" history row with actor and reason.
    points = DataPoint.objects.filter(study=study).count()
    assert DataPoint.history.filter(study_id=study.pk, history_type="+", history_user=actor,
                                    history_change_reason=f"EDC sync {first.pk}").count() == points
    lab = DataPoint.objects.filter(study=study, form__oid="LB", toxicity_grade__isnull=False).first()
    assert lab.normal_low is not None and lab.collected_at is not None and lab.value_number is not None

    history_before = (DataPoint.history.count(), Query.history.count(), Subject.history.count())
    second = clindata_import(directory=DEMO, actor=actor)
    assert second.status == Import.Status.SUCCEEDED
    assert second.counts["data_points_unchanged"] == points
    assert second.counts.get("data_points_created", 0) == 0 and second.counts["queries_created"] == 0
    assert (DataPoint.history.count(), Query.history.count(), Subject.history.count()) == history_before


@pytest.mark.django_db
def test_the_full_clindata_study_loads_with_its_counts(shared_data):
    if connection.vendor != "postgresql":
        pytest.skip("the full 1.28 M data point load runs on PostgreSQL (COPY); the demo subset covers SQLite")
    record = clindata_import(directory=shared_data / "clindata" / "parquet", actor=UserFactory())
    assert record.status == Import.Status.SUCCEEDED, record.errors
    study = record.study
    assert Site.objects.filter(study=study).count() == 176
    assert set(Site.objects.filter(study=study).values_list("country", flat=True)) == {"US", "CN", "JP"}
    subjects = Subject.objects.filter(study=study)
    assert subjects.exclude(status=Subject.Status.SCREEN_FAILED).count() == 1301
    assert subjects.filter(status=Subject.Status.SCREEN_FAILED).count() == 1057  # + 29 at unlisted sites, skipped
    assert scheduled_visits(study).count() == 28093
    assert DataPoint.objects.filter(study=study, form__oid="LB").count() == 1132070
    assert DataPoint.objects.filter(study=study, item__oid="AE.AETERM").count() == 4854
    assert DataPoint.objects.filter(study=study, form__oid="IE", item__oid="IE.IEORRES").count() == 30168
    assert DataPoint.objects.filter(study=study, item__oid="EX.EXTRT").count() == 4876
    queries = Query.objects.filter(study=study, origin=Query.Origin.IMPORTED)
    assert queries.count() == 42259
    assert queries.filter(state=Query.State.CLOSED).count() == 42095
    assert queries.filter(state=Query.State.ANSWERED).count() == 97
    deviations = Deviation.objects.filter(study=study, source=Deviation.Source.IMPORTED)
    assert deviations.count() == 4473 and record.counts["deviations_skipped"] == 173  # 4,646 in the file
    assert DataPoint.history.filter(study_id=study.pk).count() == DataPoint.objects.filter(study=study).count()
