"""SDTM import of the CDISC pilot, read in place from ../shared/data (its licence forbids copying)."""

import pytest
from django.core.management import call_command

from studies.ingest.sdtm import DEFAULT_WINDOW_DAYS, sdtm_import
from studies.models import DataPoint, Import, ItemDefinition, Site, Study, Subject, SubjectVisit, VisitDefinition
from tests.factories import UserFactory


@pytest.mark.django_db
def test_the_cdisc_pilot_imports_with_its_counts_and_a_second_import_writes_nothing(shared_data):
    actor = UserFactory(username="importer")
    record = sdtm_import(directory=shared_data / "cdiscpilot01", study="CDISCPILOT01", actor=actor)
    assert record.status == Import.Status.SUCCEEDED, record.errors
    study = Study.objects.get(protocol_id="CDISCPILOT01")
    assert Site.objects.filter(study=study).count() == 17
    assert Subject.objects.filter(study=study).count() == 306
    assert Subject.objects.filter(study=study, status=Subject.Status.SCREEN_FAILED).count() == 52
    assert Subject.objects.filter(study=study, status=Subject.Status.COMPLETED).count() == 110
    assert SubjectVisit.objects.filter(study=study).exclude(definition__oid="LOG").count() == 3559
    planned = VisitDefinition.objects.filter(study=study, planned_day__isnull=False)
    assert record.counts["planned_visits"] == 21  # TV rows; two of them have no planned study day
    assert planned.count() == 19
    week_2 = planned.get(name="WEEK 2")
    window = DEFAULT_WINDOW_DAYS
    assert (week_2.planned_day, week_2.window_before, week_2.window_after) == (14, window, window)
    assert DataPoint.objects.filter(study=study, form__oid="LB").count() == 59580
    assert DataPoint.objects.filter(study=study, form__oid="VS").count() == 29643
    assert DataPoint.objects.filter(study=study, item__oid="AE.AETERM").count() == 1191
    # lb.csv writes VISITNUM as 1.0 where sv.xpt has 1: each value still goes to its visit
    on_log = DataPoint.objects.filter(study=study, visit__definition__oid="LOG")
    assert (on_log.filter(form__oid="LB").count(), on_log.filter(form__oid="VS").count()) == (0, 0)
    assert ItemDefinition.objects.filter(study=study, form__oid="IE", critical=True).count() == 31  # TI
    albumin = DataPoint.objects.filter(study=study, item__oid="LB.ALB").first()
    assert albumin.units and albumin.normal_low is not None and albumin.abnormal_flag in {"N", "L", "H", "A"}
    assert DataPoint.history.filter(study_id=study.pk, history_user=actor).count() == \
        DataPoint.objects.filter(study=study).count()

    again = sdtm_import(directory=shared_data / "cdiscpilot01", study=study, actor=actor)
    assert again.counts.get("data_points_created", 0) == 0 and again.counts.get("subjects_created", 0) == 0
    assert again.counts["data_points_unchanged"] == DataPoint.objects.filter(study=study).count()


@pytest.mark.django_db
def test_the_command_creates_the_named_study_and_fails_loudly_without_dm(tmp_path, capsys):
    with pytest.raises(Exception, match="No DM domain"):
        call_command("import_sdtm", str(tmp_path), "--study", "EMPTY-1")
    assert Import.objects.get(source=Import.Source.SDTM).status == Import.Status.FAILED
