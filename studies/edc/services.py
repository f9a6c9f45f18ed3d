"""Pulling a study's data from its vendor EDC: one service the schedule, the webhook and the
command all call. What is pulled goes through the importers (ODM importer for ODM, the flat-value
loader below for REDCap / Vault JSON), so a pull is an Import like any file: atomic, audited,
idempotent (unchanged values write nothing)."""

from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from studies.audit import set_audit, system_account
from studies.edc.base import EdcAdapter, FieldDef, FlatValue, adapter_for
from studies.ingest.base import ImportFailed, ImportRun, import_create, import_execute
from studies.ingest.writer import DataPointWriter, IncomingValue
from studies.models import (
    EdcConnection,
    FormDefinition,
    Import,
    ItemDefinition,
    Site,
    Subject,
    SubjectVisit,
    VisitDefinition,
)

SERVICE_ACCOUNT = "system.edc"
DEFAULT_SITE = "EDC"
# Sent with `connection`, `actor` and `adapter` after each sync's pull (queries builds on
# studies, not the reverse: the queries app pushes and pulls its queries from here).
edc_synced = Signal()
PLACEHOLDER_COUNTRY = "XX"  # as the ODM importer: ISO 3166 user-assigned, "not known"


def edc_service_actor():
    """The account vendor pulls are attributed to (Part 11: every write has an actor)."""
    return system_account(SERVICE_ACCOUNT)


def edc_connections_due(*, now: datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return [c.pk for c in EdcConnection.objects.filter(enabled=True)
            if c.last_synced_at is None or c.last_synced_at + timedelta(minutes=c.sync_interval_minutes) <= now]


def edc_sync_claim(*, connection_id: int) -> bool:
    """Compare-and-set: only one worker pulls a connection at a time; a dead worker's lease runs out."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
    free = Q(sync_lease_until__isnull=True) | Q(sync_lease_until__lt=now)
    return EdcConnection.objects.filter(free, pk=connection_id).update(sync_lease_until=lease) == 1


def edc_sync_release(*, connection_id: int) -> None:
    EdcConnection.objects.filter(pk=connection_id).update(sync_lease_until=None)


def edc_sync(*, connection: EdcConnection, actor=None, full: bool = False) -> list[Import]:
    """Pull metadata and the clinical data changed since the last successful pull (everything when
    `full` or never pulled). The next pull starts from this one's start time only if all succeeded.
    Then `edc_synced` lets other apps exchange with the EDC (queries.edc: released queries pushed,
    their states pulled back)."""
    actor = actor or edc_service_actor()
    started = timezone.now()
    since = None if full else connection.last_synced_at
    adapter = adapter_for(connection)
    metadata = adapter.pull_metadata()
    if isinstance(metadata, bytes):
        records = [_odm_import(adapter, metadata, "metadata", actor)]
        records.append(_odm_import(adapter, adapter.pull_clinical_data(since), "data", actor))
    else:
        records = [edc_values_import(connection=connection, actor=actor, source=adapter.source, fields=metadata,
                                     values=adapter.pull_clinical_data(since))]
    if all(r.status == Import.Status.SUCCEEDED for r in records):
        EdcConnection.objects.filter(pk=connection.pk).update(last_synced_at=started)
        connection.last_synced_at = started
    edc_synced.send(sender=EdcConnection, connection=connection, actor=actor, adapter=adapter)
    return records


def _odm_import(adapter: EdcAdapter, payload: bytes, kind: str, actor) -> Import:
    """Keep what the vendor sent (ALCOA+: original) and import it with the ODM importer."""
    from studies.ingest.odm import odm_import  # noqa: PLC0415 (the ODM importer is loaded on use)

    connection = adapter.connection
    directory = Path(settings.MEDIA_ROOT) / "edc" / str(connection.pk)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{timezone.now():%Y%m%dT%H%M%S%f}-{kind}.xml"
    path.write_bytes(payload)
    record = import_create(source=adapter.source, actor=actor, study=connection.study, path=path,
                           filename=f"{connection.get_vendor_display()} {kind} ({path.name})")
    return odm_import(path=path, actor=actor, study=connection.study, record=record)


_DATA_TYPES = set(ItemDefinition.DataType.values)


def edc_values_import(*, connection: EdcConnection, actor, source: str, fields: list[FieldDef],
                      values: list[FlatValue]) -> Import:
    """Load a vendor's non-ODM export (REDCap records, Vault data) as one atomic import. Subjects,
    sites and visits come from the EDC, the source of truth for enrolment, so they are created."""
    record = import_create(source=source, actor=actor, study=connection.study,
                           filename=f"{connection.get_vendor_display()} pull")
    return import_execute(record=record, actor=actor, load=lambda run: _FlatLoader(run).load(fields, values))


class _FlatLoader:
    def __init__(self, run: ImportRun):
        self.run, self.study = run, run.study
        self.cache: dict[tuple, object] = {}

    def _get_or_create(self, model, lookup: dict, defaults: dict):
        key = (model.__name__, *sorted(lookup.items()))
        if key not in self.cache:
            found = model.objects.filter(**lookup).first()
            if found is None:
                found = model(**lookup, **defaults)
                set_audit(found, actor=self.run.actor, reason=self.run.reason)
                found.save()
                self.run.counts[f"{model._meta.model_name}s_created"] += 1
            self.cache[key] = found
        return self.cache[key]

    def load(self, fields: list[FieldDef], values: list[FlatValue]) -> None:
        items = {}
        for order, field in enumerate(fields):
            form = self._get_or_create(FormDefinition, {"study": self.study, "oid": field.form_oid[:128]},
                                       {"name": field.form_name[:255]})
            data_type = field.data_type if field.data_type in _DATA_TYPES else ItemDefinition.DataType.TEXT
            items[field.item_oid] = self._get_or_create(
                ItemDefinition, {"study": self.study, "oid": field.item_oid[:128]},
                {"form": form, "label": field.label[:255], "data_type": data_type, "units": field.units[:64],
                 "order": order})
        writer = DataPointWriter(self.run)
        for value in values:
            item = items.get(value.item_oid)
            if item is None:
                raise ImportFailed(f"Unknown item {value.item_oid!r}: not in the EDC's metadata.",
                                   where=f"subject {value.subject_key}, {value.visit_oid}/{value.form_oid}")
            site = self._get_or_create(Site, {"study": self.study, "number": (value.site or DEFAULT_SITE)[:32]},
                                       {"name": value.site or "Site not given by the EDC",
                                        "country": PLACEHOLDER_COUNTRY})
            subject = self._get_or_create(Subject, {"study": self.study, "subject_id": value.subject_key[:64]},
                                          {"site": site})
            definition = self._get_or_create(VisitDefinition, {"study": self.study, "oid": value.visit_oid[:128]},
                                             {"name": value.visit_name[:255]})
            visit = self._get_or_create(SubjectVisit, {"subject": subject, "definition": definition,
                                                       "repeat_key": "1"}, {"study": self.study})
            writer.add(IncomingValue(subject_id=subject.pk, visit_id=visit.pk, form_id=item.form_id, item=item,
                                     raw_value=value.value, repeat_key=value.repeat_key[:32],
                                     entered_at=value.entered_at))
        writer.finish()
