"""The data point table's references, enforced by set-based triggers (studies/integrity.py) instead
of per-row foreign keys: what the foreign keys refused is still refused, by the database itself."""

from types import SimpleNamespace

import pandas as pd
import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction

from studies import integrity
from studies.audit import audited_bulk_create, audited_bulk_update, audited_copy_create
from studies.models import DataPoint, FormDefinition, ItemDefinition, Subject, SubjectVisit
from studies.services import data_point_update
from tests.factories import (
    DataPointFactory,
    FormDefinitionFactory,
    ItemDefinitionFactory,
    SubjectVisitFactory,
    UserFactory,
)


def _is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def _sql(statement: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@pytest.fixture
def point(db):
    return DataPointFactory(raw_value="5")


def test_the_triggers_exist(db):
    """On SQLite a migration that rebuilds one of these tables drops its triggers silently: this
    test is what notices."""
    with connection.cursor() as cursor:
        if _is_postgresql():
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'trialops_ref_%%' AND NOT tgisinternal")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'trialops_ref_%'")
        installed = {row[0] for row in cursor.fetchall()}
    assert installed == integrity.trigger_names(connection.vendor)
    assert len(installed) == (19 if _is_postgresql() else 4)


@pytest.mark.parametrize("column", ["subject_id", "visit_id", "form_id", "item_id"])
def test_a_data_point_naming_a_missing_row_is_refused(point, column):
    before = DataPoint.objects.count()
    fields = {"study_id": point.study_id, "subject_id": point.subject_id, "visit_id": point.visit_id,
              "form_id": point.form_id, "item_id": point.item_id, "repeat_key": "2", "raw_value": "7"}
    fields[column] = 987_654_321
    with pytest.raises(IntegrityError, match="987654321" if _is_postgresql() else "FOREIGN KEY"):
        with transaction.atomic():
            audited_bulk_create([DataPoint(**{**fields, "repeat_key": "3"}), DataPoint(**fields)],
                                actor=UserFactory(), reason="test")
    assert DataPoint.objects.count() == before  # the whole statement failed, the good row too


def test_a_copy_naming_a_missing_visit_fails_whole(point):
    if not _is_postgresql():
        pytest.skip("COPY is PostgreSQL's")
    actor = UserFactory()
    frame = pd.DataFrame({"study_id": [point.study_id] * 3, "subject_id": [point.subject_id] * 3,
                          "visit_id": [point.visit_id, point.visit_id, 987_654_321],
                          "form_id": [point.form_id] * 3, "item_id": [point.item_id] * 3,
                          "repeat_key": ["2", "3", "4"], "raw_value": ["1", "2", "3"]})
    history_before = DataPoint.history.count()
    with pytest.raises(IntegrityError, match='987654321 is not present in table "studies_subjectvisit"'):
        with transaction.atomic():
            audited_copy_create(DataPoint, list(frame.columns), frame, actor=actor, reason="test")
    assert DataPoint.objects.count() == 1
    assert DataPoint.history.count() == history_before


def test_a_copy_of_good_rows_passes_and_is_audited(point):
    if not _is_postgresql():
        pytest.skip("COPY is PostgreSQL's")
    actor = UserFactory()
    frame = pd.DataFrame({"study_id": [point.study_id] * 2, "subject_id": [point.subject_id] * 2,
                          "visit_id": [point.visit_id] * 2, "form_id": [point.form_id] * 2,
                          "item_id": [point.item_id] * 2, "repeat_key": ["2", "3"], "raw_value": ["1", "2"]})
    ids = audited_copy_create(DataPoint, list(frame.columns), frame, actor=actor, reason="test")
    assert set(DataPoint.objects.filter(pk__in=ids).values_list("raw_value", flat=True)) == {"1", "2"}
    assert DataPoint.history.filter(id__in=ids, history_user=actor, history_type="+").count() == 2


def test_moving_a_data_point_to_a_missing_visit_is_refused_and_to_a_real_one_allowed(point):
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            _sql("UPDATE studies_datapoint SET visit_id = 987654321 WHERE id = %s", [point.pk])
    other = SubjectVisitFactory(subject=point.subject, study=point.study)
    _sql("UPDATE studies_datapoint SET visit_id = %s WHERE id = %s", [other.pk, point.pk])
    assert DataPoint.objects.get(pk=point.pk).visit_id == other.pk


def test_a_bulk_update_moving_data_points_to_a_missing_item_is_refused(point):
    point.item_id = 987_654_321
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            audited_bulk_update([point], ["item_id"], actor=UserFactory(), reason="test")
    assert DataPoint.objects.get(pk=point.pk).item_id != 987_654_321


def test_history_rows_naming_a_missing_user_fail_with_their_data_points(point):
    if not _is_postgresql():
        pytest.skip("COPY is PostgreSQL's")
    frame = pd.DataFrame({"study_id": [point.study_id], "subject_id": [point.subject_id],
                          "visit_id": [point.visit_id], "form_id": [point.form_id], "item_id": [point.item_id],
                          "repeat_key": ["2"], "raw_value": ["1"]})
    history_before = DataPoint.history.count()
    with pytest.raises(IntegrityError, match='987654321 is not present in table "auth_user"'):
        with transaction.atomic():
            audited_copy_create(DataPoint, list(frame.columns), frame, actor=SimpleNamespace(pk=987_654_321),
                                reason="test")
    assert DataPoint.objects.count() == 1
    assert DataPoint.history.count() == history_before


def test_migrate_drops_the_triggers_before_and_installs_them_after(db):
    """SQLite rebuilds a table to alter it and refuses while a trigger names it; PostgreSQL refuses
    to change the type of a column a trigger names: so migrations run without them."""
    def installed() -> set[str]:
        with connection.cursor() as cursor:
            if _is_postgresql():
                cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'trialops_ref_%%'")
            else:
                cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'trialops_ref_%'")
            return {row[0] for row in cursor.fetchall()}

    expected = integrity.trigger_names(connection.vendor)
    integrity.before_migrate(sender=None, using="default", plan=[])  # nothing to migrate: left alone
    assert installed() == expected
    integrity.before_migrate(sender=None, using="default", plan=[("a migration", False)])
    assert installed() == set()
    integrity.after_migrate(sender=None, using="default")
    integrity.after_migrate(sender=None, using="default")  # twice: harmless
    assert installed() == expected


@pytest.mark.parametrize("model", [Subject, SubjectVisit, FormDefinition, ItemDefinition])
def test_a_referenced_row_cannot_be_deleted_behind_the_orm(point, model):
    if not _is_postgresql():
        pytest.skip("on SQLite deletes are guarded by the ORM's PROTECT only")
    parent = {Subject: point.subject_id, SubjectVisit: point.visit_id, FormDefinition: point.form_id,
              ItemDefinition: point.item_id}[model]
    table = model._meta.db_table
    # Other real foreign keys point at these rows too (visits at subjects, items at forms): the
    # statement is cut to the data point's reference by clearing those first, in the same savepoint.
    with pytest.raises(IntegrityError, match="is still referenced"):
        with transaction.atomic():
            _sql("SET CONSTRAINTS ALL DEFERRED")
            _sql(f"DELETE FROM {table} WHERE id = %s", [parent])
    assert model.objects.filter(pk=parent).exists()
    with pytest.raises(IntegrityError, match="is still referenced"):
        with transaction.atomic():
            _sql(f"UPDATE {table} SET id = id + 1000000 WHERE id = %s", [parent])


def test_an_unreferenced_row_can_be_deleted(point):
    if not _is_postgresql():
        pytest.skip("the guard is PostgreSQL's")
    spare = ItemDefinitionFactory(study=point.study, form=FormDefinitionFactory(study=point.study))
    _sql("DELETE FROM studies_itemdefinition WHERE id = %s", [spare.pk])
    assert not ItemDefinition.objects.filter(pk=spare.pk).exists()


def test_truncating_a_parent_alone_is_refused_but_together_passes(point):
    if not _is_postgresql():
        pytest.skip("TRUNCATE is PostgreSQL's")
    _sql("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE refuses while the factories' FK checks are pending
    with pytest.raises(IntegrityError, match='cannot truncate table "studies_formdefinition"'):
        with transaction.atomic():
            _sql("TRUNCATE studies_formdefinition CASCADE")
    with transaction.atomic():
        _sql("TRUNCATE studies_formdefinition, studies_datapoint, studies_historicaldatapoint CASCADE")
        assert not DataPoint.objects.exists()
        transaction.set_rollback(True)
    assert DataPoint.objects.filter(pk=point.pk).exists()


def test_a_history_row_keeps_its_user(point):
    """Deleting the user who made a change would null it in the audit trail (simple-history's
    SET_NULL): refused, in the ORM and behind it. The account is deactivated instead."""
    author = UserFactory(username="author")
    point.raw_value = "9"
    point._change_reason = "corrected"
    point._history_user = author
    point.save()
    assert DataPoint.history.filter(id=point.pk, history_user=author).count() == 1
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            author.delete()
    assert get_user_model().objects.filter(pk=author.pk).exists()
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            _sql("UPDATE studies_historicaldatapoint SET history_user_id = NULL WHERE id = %s", [point.pk])
    if _is_postgresql():
        with pytest.raises(IntegrityError, match="is still referenced"):
            with transaction.atomic():
                _sql("SET CONSTRAINTS ALL DEFERRED")
                _sql("DELETE FROM auth_user WHERE id = %s", [author.pk])
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            _sql("INSERT INTO studies_historicaldatapoint (id, study_id, subject_id, visit_id, form_id, item_id, "
                 "repeat_key, raw_value, entered_by, version, sdv_state, missing_in_source, units, abnormal_flag, "
                 "history_date, history_type, history_user_id) VALUES (%s, %s, %s, %s, %s, %s, '1', '', '', 1, "
                 "'not_required', false, '', '', CURRENT_TIMESTAMP, '~', 987654321)",
                 [point.pk, point.study_id, point.subject_id, point.visit_id, point.form_id, point.item_id])
    assert DataPoint.history.filter(id=point.pk, history_user=author).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_new_data_point_locks_its_subject_against_a_concurrent_delete():
    """As a foreign key check does: while an insert's transaction is open, another transaction
    cannot delete the subject it names (it waits), and once the insert commits, the delete fails."""
    if not _is_postgresql():
        pytest.skip("two sessions need PostgreSQL")
    point = DataPointFactory(raw_value="1")
    settings = connection.settings_dict
    dsn = {"dbname": settings["NAME"], "user": settings["USER"], "host": settings["HOST"] or None,
           "port": settings["PORT"] or None, "password": settings["PASSWORD"] or None}
    row = (point.study_id, point.subject_id, point.visit_id, point.form_id, point.item_id)
    with psycopg.connect(**dsn) as inserting, psycopg.connect(**dsn, autocommit=True) as deleting:
        inserting.execute(
            "INSERT INTO studies_datapoint (study_id, subject_id, visit_id, form_id, item_id, repeat_key, raw_value,"
            " entered_by, version, sdv_state, missing_in_source, units, abnormal_flag) VALUES (%s, %s, %s, %s, %s,"
            " '2', '3', '', 1, 'not_required', false, '', '')", row)
        deleting.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            # Only this data point's reference stands in the way: the others are cleared first.
            with deleting.transaction():
                deleting.execute("SET CONSTRAINTS ALL DEFERRED")
                deleting.execute("DELETE FROM studies_datapoint WHERE subject_id = %s", [point.subject_id])
                deleting.execute("DELETE FROM studies_subject WHERE id = %s", [point.subject_id])
        # An edit of another value of the same item does not wait for the insert to commit: the
        # edit locks its data point, not the item the insert holds.
        other = DataPointFactory(raw_value="4", item=point.item, form=point.form)
        with transaction.atomic():
            _sql("SET LOCAL lock_timeout = '300ms'")
            data_point_update(data_point=other, raw_value="5", actor=UserFactory(), reason="typo")
        assert DataPoint.objects.get(pk=other.pk).raw_value == "5"
        inserting.commit()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            with deleting.transaction():
                deleting.execute("SET CONSTRAINTS ALL DEFERRED")
                deleting.execute("DELETE FROM studies_datapoint WHERE subject_id = %s AND repeat_key = '1'",
                                 [point.subject_id])
                deleting.execute("DELETE FROM studies_subject WHERE id = %s", [point.subject_id])
    assert DataPoint.objects.filter(subject_id=point.subject_id).count() == 2
    assert DataPoint.objects.filter(pk=other.pk).exists()
    assert Subject.objects.filter(pk=point.subject_id).exists()
