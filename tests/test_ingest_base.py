"""The machinery every importer shares: atomic runs, the Import record, idempotent writes."""

import pytest

from studies.ingest.base import ImportFailed, import_create, import_execute
from studies.ingest.writer import DataPointWriter, IncomingValue
from studies.models import DataPoint, Import
from tests.factories import ItemDefinitionFactory, SubjectVisitFactory, UserFactory


@pytest.fixture
def visit(db):
    return SubjectVisitFactory()


@pytest.fixture
def items(visit):
    return [ItemDefinitionFactory(study=visit.study, oid=f"I.X{n}") for n in range(3)]


def load_values(values: dict[str, str], *, visit, items, full_snapshot=False, fail_after=False):
    actor = UserFactory(username="importer")
    record = import_create(source=Import.Source.ODM, actor=actor, study=visit.study, full_snapshot=full_snapshot)

    def load(run):
        writer = DataPointWriter(run, batch_size=2)
        by_oid = {item.oid: item for item in items}
        for oid, raw in values.items():
            item = by_oid[oid]
            writer.add(IncomingValue(subject_id=visit.subject_id, visit_id=visit.pk, form_id=item.form_id,
                                     item=item, raw_value=raw, entered_by="edc.user"))
        writer.finish()
        if fail_after:
            raise ImportFailed("Unknown OID I.NOPE", where="line 12, column 4")

    return import_execute(record=record, actor=actor, load=load)


def test_a_first_import_creates_and_a_second_changes_nothing(visit, items):
    first = load_values({"I.X0": "1", "I.X1": "2", "I.X2": "3"}, visit=visit, items=items)
    assert first.status == Import.Status.SUCCEEDED
    assert first.counts == {"data_points_created": 3, "data_points_changed": 0, "data_points_unchanged": 0}
    assert DataPoint.history.filter(history_change_reason=f"EDC sync {first.pk}").count() == 3

    second = load_values({"I.X0": "1", "I.X1": "2", "I.X2": "3"}, visit=visit, items=items)
    assert second.counts == {"data_points_created": 0, "data_points_changed": 0, "data_points_unchanged": 3}
    assert DataPoint.history.count() == 3


def test_a_changed_value_is_updated_with_the_sync_reason(visit, items):
    load_values({"I.X0": "1", "I.X1": "2"}, visit=visit, items=items)
    second = load_values({"I.X0": "1", "I.X1": "5"}, visit=visit, items=items)
    assert second.counts == {"data_points_created": 0, "data_points_changed": 1, "data_points_unchanged": 1}
    point = DataPoint.objects.get(item__oid="I.X1")
    assert (point.raw_value, point.value_number, point.version) == ("5", 5.0, 2)
    assert point.history.latest().history_change_reason == f"EDC sync {second.pk}"
    assert point.history.latest().history_user.username == "importer"


def test_a_value_missing_from_a_full_snapshot_is_flagged_not_deleted(visit, items):
    load_values({"I.X0": "1", "I.X1": "2"}, visit=visit, items=items)
    snapshot = load_values({"I.X0": "1"}, visit=visit, items=items, full_snapshot=True)
    assert snapshot.counts["data_points_missing_in_source"] == 1
    gone = DataPoint.objects.get(item__oid="I.X1")
    assert gone.missing_in_source and gone.raw_value == "2"


def test_a_failure_leaves_the_study_as_it_was_and_is_recorded(visit, items):
    load_values({"I.X0": "1"}, visit=visit, items=items)
    before = (DataPoint.objects.count(), DataPoint.history.count())
    failed = load_values({"I.X0": "9", "I.X1": "2"}, visit=visit, items=items, fail_after=True)

    assert failed.status == Import.Status.FAILED
    assert failed.errors == [{"message": "Unknown OID I.NOPE", "where": "line 12, column 4"}]
    assert (DataPoint.objects.count(), DataPoint.history.count()) == before
    assert DataPoint.objects.get(item__oid="I.X0").raw_value == "1"
    assert failed.finished_at is not None


def test_a_value_that_does_not_fit_its_type_is_kept_raw_with_a_warning(visit, items):
    record = load_values({"I.X0": "n/a"}, visit=visit, items=items)
    point = DataPoint.objects.get(item__oid="I.X0")
    assert (point.raw_value, point.value_number) == ("n/a", None)
    assert record.counts["warnings"] == 1
    assert "does not fit I.X0" in record.errors[0]["message"]


def test_a_bug_in_an_importer_is_recorded_and_raised(visit):
    actor = UserFactory(username="importer")
    record = import_create(source=Import.Source.ODM, actor=actor, study=visit.study)

    def load(run):
        raise ZeroDivisionError("oops")

    with pytest.raises(ZeroDivisionError):
        import_execute(record=record, actor=actor, load=load)
    record.refresh_from_db()
    assert record.status == Import.Status.FAILED
    assert "ZeroDivisionError" in record.errors[0]["message"]
