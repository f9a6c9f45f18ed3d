"""clindata: the demo subset shipped in data/demo (always), the full study from ../shared/data.

The full load (1.28 M data points) runs on PostgreSQL only: through the ORM bulk path SQLite
takes many minutes and gigabytes for it, while the demo subset exercises the same code on both."""

import datetime
from pathlib import Path

import pandas as pd
import pytest
from django.conf import settings
from django.db import connection

from deviations.models import Deviation
from queries.models import Query
from studies.ingest.base import import_create, import_execute
from studies.ingest.clindata import clindata_import
from studies.ingest.writer import DataPointWriter
from studies.models import DataPoint, Import, ItemDefinition, Site, Subject, SubjectVisit
from tests.factories import ItemDefinitionFactory, SubjectVisitFactory, UserFactory

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
    assert DataPoint.objects.filter(study=study, item__oid="AE.AEDECOD", raw_value="Headache").count() == 293
    assert DataPoint.objects.filter(study=study, form__oid="IE", item__oid="IE.IEORRES").count() == 30168
    assert DataPoint.objects.filter(study=study, item__oid="EX.EXTRT").count() == 4876
    queries = Query.objects.filter(study=study, origin=Query.Origin.IMPORTED)
    assert queries.count() == 42259
    assert queries.filter(state=Query.State.CLOSED).count() == 42095
    assert queries.filter(state=Query.State.ANSWERED).count() == 97
    deviations = Deviation.objects.filter(study=study, source=Deviation.Source.IMPORTED)
    assert deviations.count() == 4473 and record.counts["deviations_skipped"] == 173  # 4,646 in the file
    assert DataPoint.history.filter(study_id=study.pk).count() == DataPoint.objects.filter(study=study).count()


@pytest.mark.django_db
def test_a_frame_of_values_is_stored_exactly_and_each_value_has_its_history_row():
    """The frame path (COPY of vectorised CSV on PostgreSQL, the ORM elsewhere): NULL stays NULL,
    an empty string stays empty, awkward text arrives intact, and every new data point has its
    "+" history row naming the actor and the reason, with the same values."""
    visit = SubjectVisitFactory()
    number = ItemDefinitionFactory(study=visit.study, oid="I.NUM")
    day = ItemDefinitionFactory(study=visit.study, form=number.form, oid="I.DAY",
                                data_type=ItemDefinition.DataType.DATE)
    text = ItemDefinitionFactory(study=visit.study, form=number.form, oid="I.TEXT",
                                 data_type=ItemDefinition.DataType.TEXT)
    awkward = 'say "no",\ttab\nnew line \\N'
    frame = pd.DataFrame({
        "subject_id": visit.subject_id, "visit_id": visit.pk, "form_id": number.form_id,
        "item_id": [number.pk, number.pk, day.pk, text.pk, text.pk],
        "repeat_key": ["1", "2", "1", "1", "2"],
        "raw_value": ["4.5", "", "2024-02-29", awkward, "\\N"],
        "normal_low": [1.0, float("nan"), float("nan"), float("nan"), float("nan")],
        "toxicity_grade": pd.array([2, None, None, None, None], dtype="Int64"),
        "abnormal_flag": ["H", None, "", "", ""],
        "collected_at": pd.to_datetime(["2024-02-29T10:30:00Z", None, None, None, None], utc=True),
    })
    actor = UserFactory(username="loader")
    record = import_create(source=Import.Source.CLINDATA, actor=actor, study=visit.study)

    def load(run):
        writer = DataPointWriter(run)
        writer.add_frame(frame)
        writer.finish()

    record = import_execute(record=record, actor=actor, load=load)
    assert record.status == Import.Status.SUCCEEDED, record.errors
    assert record.counts["data_points_created"] == 5
    stored = {(p.item_id, p.repeat_key): p for p in DataPoint.objects.filter(study=visit.study)}
    first = stored[(number.pk, "1")]
    assert (first.raw_value, first.value_number, first.normal_low, first.toxicity_grade, first.abnormal_flag) == (
        "4.5", 4.5, 1.0, 2, "H")
    assert first.collected_at == datetime.datetime(2024, 2, 29, 10, 30, tzinfo=datetime.UTC)
    blank = stored[(number.pk, "2")]
    assert (blank.raw_value, blank.value_number, blank.normal_low, blank.toxicity_grade, blank.abnormal_flag,
            blank.collected_at, blank.entered_at, blank.version) == ("", None, None, None, "", None, None, 1)
    assert stored[(day.pk, "1")].value_date == datetime.date(2024, 2, 29)
    assert stored[(text.pk, "1")].raw_value == awkward
    assert stored[(text.pk, "2")].raw_value == "\\N"
    for point in stored.values():
        history = DataPoint.history.get(id=point.pk)
        assert (history.history_type, history.history_user, history.history_change_reason) == (
            "+", actor, f"EDC sync {record.pk}")
        assert (history.raw_value, history.value_number, history.value_date, history.normal_low,
                history.toxicity_grade, history.abnormal_flag, history.collected_at, history.study_id) == (
            point.raw_value, point.value_number, point.value_date, point.normal_low, point.toxicity_grade,
            point.abnormal_flag, point.collected_at, point.study_id)


@pytest.mark.django_db
def test_clindata_subjects_keep_their_randomised_arm_for_the_dosing_detector(shared_data):
    """Issue 16: clindata fills the subject's arm where its data has it (rawplus_ixrsrand's
    treatment group code, early-terminated subjects included); screen failures have none."""
    directory = shared_data / "clindata" / "parquet"
    record = clindata_import(directory=directory, actor=UserFactory(), limit_subjects=40)
    assert record.status == Import.Status.SUCCEEDED, record.errors
    rand = pd.read_parquet(directory / "rawplus_ixrsrand.parquet")
    stored = dict(Subject.objects.filter(study=record.study).exclude(status=Subject.Status.SCREEN_FAILED)
                  .values_list("subject_id", "arm"))
    assert len(stored) == 40
    assert stored == {s: str(g) for s, g in zip(rand["subjid"], rand["trtgrpc"], strict=True) if s in stored}
    assert set(stored.values()) <= {"1", "2"}
    assert not Subject.objects.filter(study=record.study, status=Subject.Status.SCREEN_FAILED).exclude(arm="").exists()
