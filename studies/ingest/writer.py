"""The one path by which importers write data points: buffered, set-based, audited, idempotent.

Importers `add()` incoming values; every batch is compared with what is stored (one query per
batch) and split into new values (bulk-created with their history rows), changed values (bulk-
updated, version + 1, history reason `EDC sync <import id>`), and unchanged values (nothing
written). With a full snapshot, `finish()` flags stored values the snapshot no longer contains
(never deletes them)."""

from dataclasses import dataclass, fields
from datetime import datetime

from django.core.exceptions import ValidationError

from studies.audit import audited_bulk_create, audited_bulk_update
from studies.ingest.base import ImportFailed, ImportRun
from studies.models import DataPoint, ItemDefinition
from studies.services import typed_value

# Attributes of a value that an import may change besides the value itself.
_EXTRA = ("entered_by", "entered_at", "units", "normal_low", "normal_high", "abnormal_flag", "toxicity_grade",
          "collected_at")
# Of those, the ones whose change is a change of the data (the rest is provenance).
_COMPARED = ("raw_value", "units", "normal_low", "normal_high", "abnormal_flag", "toxicity_grade", "collected_at")


@dataclass(frozen=True, slots=True)
class IncomingValue:
    subject_id: int
    visit_id: int
    form_id: int
    item: ItemDefinition
    raw_value: str
    repeat_key: str = "1"
    entered_by: str = ""
    entered_at: datetime | None = None
    units: str = ""
    normal_low: float | None = None
    normal_high: float | None = None
    abnormal_flag: str = ""
    toxicity_grade: int | None = None
    collected_at: datetime | None = None

    @property
    def key(self) -> tuple:
        return (self.subject_id, self.visit_id, self.form_id, self.item.pk, self.repeat_key)


def _key(point: DataPoint) -> tuple:
    return (point.subject_id, point.visit_id, point.form_id, point.item_id, point.repeat_key)


class DataPointWriter:
    def __init__(self, run: ImportRun, *, batch_size: int = 5000):
        self.run = run
        self.batch_size = batch_size
        self._buffer: dict[tuple, IncomingValue] = {}
        self._seen_subjects: set[int] = set()
        self._seen_keys: set[tuple] = set()

    def add(self, value: IncomingValue) -> None:
        # A repeated key within one import: the later value wins, as in the source EDC's own order.
        self._buffer[value.key] = value
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, {}
        existing = {
            _key(point): point
            for point in DataPoint.objects.filter(
                subject_id__in={v.subject_id for v in batch.values()},
                item_id__in={v.item.pk for v in batch.values()},
            )
        }
        new, changed, unchanged = [], [], 0
        for key, value in batch.items():
            self._seen_keys.add(key)
            self._seen_subjects.add(value.subject_id)
            point = existing.get(key)
            if point is None:
                new.append(self._build(value))
            elif self._differs(point, value):
                changed.append(self._apply(point, value))
            else:
                unchanged += 1
        audited_bulk_create(new, actor=self.run.actor, reason=self.run.reason)
        if changed:
            audited_bulk_update(changed, ["raw_value", "value_number", "value_date", "version", "sdv_state",
                                          "missing_in_source", *_EXTRA], actor=self.run.actor, reason=self.run.reason)
        self.run.counts["data_points_created"] += len(new)
        self.run.counts["data_points_changed"] += len(changed)
        self.run.counts["data_points_unchanged"] += unchanged

    def finish(self) -> None:
        """Flush, and with a full snapshot flag what the snapshot no longer holds."""
        self.flush()
        if not self.run.record.full_snapshot or self.run.study is None:
            return
        gone = [
            point
            for point in DataPoint.objects.filter(study=self.run.study, missing_in_source=False)
            if _key(point) not in self._seen_keys
        ]
        for point in gone:
            point.missing_in_source = True
        audited_bulk_update(gone, ["missing_in_source"], actor=self.run.actor,
                            reason=f"{self.run.reason}: absent from the full snapshot")
        self.run.counts["data_points_missing_in_source"] += len(gone)

    def _typed(self, value: IncomingValue):
        try:
            return typed_value(item=value.item, raw_value=value.raw_value)
        except ValidationError:
            # The EDC holds what it holds: keep the raw value, leave the typed one empty, and say so.
            self.run.warn(f"{value.raw_value!r} does not fit {value.item.oid} ({value.item.data_type})",
                          where=f"item {value.item.oid}")
            return None, None

    def _build(self, value: IncomingValue) -> DataPoint:
        number, day = self._typed(value)
        if self.run.study is None:
            raise ImportFailed("Data points need a study; the import has none.")
        return DataPoint(
            study_id=self.run.study.pk, subject_id=value.subject_id, visit_id=value.visit_id,
            form_id=value.form_id, item=value.item, repeat_key=value.repeat_key, raw_value=value.raw_value,
            value_number=number, value_date=day, **{name: getattr(value, name) for name in _EXTRA},
        )

    @staticmethod
    def _differs(point: DataPoint, value: IncomingValue) -> bool:
        return point.missing_in_source or any(getattr(point, name) != getattr(value, name) for name in _COMPARED)

    def _apply(self, point: DataPoint, value: IncomingValue) -> DataPoint:
        point.value_number, point.value_date = self._typed(value)
        point.raw_value = value.raw_value
        for name in _EXTRA:
            setattr(point, name, getattr(value, name))
        point.version += 1
        point.missing_in_source = False
        if point.sdv_state in (DataPoint.SdvState.VERIFIED, DataPoint.SdvState.DISCREPANCY):
            point.sdv_state = DataPoint.SdvState.TO_VERIFY
        return point


assert {f.name for f in fields(IncomingValue)} >= set(_EXTRA)
