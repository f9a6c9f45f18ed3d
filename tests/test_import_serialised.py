"""Two imports of one study at the same time run one after the other, never interleaved: each holds
a lock on the study row for its whole transaction (PostgreSQL; SQLite serialises every writer)."""

import threading
import time

import pytest
from django.db import connection

from studies.ingest.base import import_create, import_execute
from studies.models import Import
from tests.conftest import skip_or_fail
from tests.factories import StudyFactory, UserFactory


@pytest.mark.django_db(transaction=True)
def test_a_second_import_of_a_study_waits_for_the_first():
    if connection.vendor != "postgresql":
        skip_or_fail("row locks need PostgreSQL", required_by="TRIALOPS_REQUIRE_SERVICES")
    study = StudyFactory()
    actor = UserFactory(username="importer")
    events: list[str] = []
    first_has_lock = threading.Event()

    def slow(run):
        events.append("first: start")
        first_has_lock.set()
        time.sleep(1.0)
        events.append("first: end")

    def quick(run):
        events.append("second: start")
        events.append("second: end")

    def run_import(load):
        try:
            record = import_create(source=Import.Source.ODM, actor=actor, study=study)
            import_execute(record=record, actor=actor, load=load)
        finally:
            connection.close()

    first = threading.Thread(target=run_import, args=(slow,))
    first.start()
    assert first_has_lock.wait(10)
    second = threading.Thread(target=run_import, args=(quick,))
    second.start()
    first.join(20)
    second.join(20)

    assert events == ["first: start", "first: end", "second: start", "second: end"]
    assert list(Import.objects.values_list("status", flat=True)) == ["succeeded", "succeeded"]
