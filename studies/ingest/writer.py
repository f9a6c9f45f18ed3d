"""The one path by which importers write data points: buffered, set-based, audited, idempotent.

Importers `add()` incoming values; every batch is compared with what is stored (one query per
batch) and split into new values (bulk-created with their history rows), changed values (bulk-
updated, version + 1, history reason `EDC sync <import id>`), and unchanged values (nothing
written). With a full snapshot, `finish()` flags stored values the snapshot no longer contains
(never deletes them).

Two ways in: `add(IncomingValue)` one value at a time (ODM, HL7), and `add_frame(DataFrame)` for
set-based loaders (clindata, SDTM) that already hold a table. On PostgreSQL new values and their
history rows are written by COPY (`audited_copy_create`); elsewhere by the ORM bulk path."""

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from django.core.exceptions import ValidationError

from studies.audit import audited_bulk_create, audited_bulk_update, audited_copy_create
from studies.ingest.base import ImportFailed, ImportRun
from studies.ingest.copy import is_postgresql
from studies.models import DataPoint, ItemDefinition
from studies.services import sdv_state_after_change, typed_value

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


_KEY = ("subject_id", "visit_id", "form_id", "item_id", "repeat_key")
# The columns a new data point is written with (COPY path); the rest take their model defaults.
_NEW_COLUMNS = ("study_id", *_KEY, "raw_value", "value_number", "value_date", *_EXTRA)
_TEXT = ("entered_by", "units", "abnormal_flag")  # blank, never null
_NUMERIC_TYPES = {ItemDefinition.DataType.INTEGER, ItemDefinition.DataType.FLOAT}
_DATE_TYPES = {ItemDefinition.DataType.DATE, ItemDefinition.DataType.DATETIME}


def _same(incoming: pd.Series, stored: pd.Series) -> pd.Series:
    """Element-wise equality of an incoming and a stored column, missing equal to missing."""
    both_missing = incoming.isna() & stored.isna()
    if pd.api.types.is_datetime64_any_dtype(incoming):
        incoming, stored = pd.to_datetime(incoming, utc=True), pd.to_datetime(stored, utc=True)
    elif pd.api.types.is_numeric_dtype(incoming):
        incoming, stored = incoming.astype("float64"), pd.to_numeric(stored, errors="coerce").astype("float64")
    else:
        incoming, stored = incoming.astype(object), stored.astype(object)
    return both_missing | (incoming == stored).fillna(False).astype(bool)


class DataPointWriter:
    def __init__(self, run: ImportRun, *, batch_size: int = 5000, use_copy: bool | None = None):
        self.run = run
        self.batch_size = batch_size
        self.use_copy = is_postgresql() if use_copy is None else use_copy
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
        # Locked (in a stable order, against deadlocks) until the import commits: a site's edit made
        # meanwhile waits instead of being overwritten by a value compared with a stale version.
        # Read as tuples (key -> pk, missing_in_source, compared values): model instances are built
        # only for the values that changed.
        stored = {
            row[:5]: row[5:]
            for row in DataPoint.objects.select_for_update().filter(
                subject_id__in={v.subject_id for v in batch.values()},
                item_id__in={v.item.pk for v in batch.values()},
            ).order_by("pk").values_list(*_KEY, "pk", "missing_in_source", *_COMPARED)
        }
        new, changed, unchanged = [], {}, 0
        for key, value in batch.items():
            self._seen_keys.add(key)
            self._seen_subjects.add(value.subject_id)
            row = stored.get(key)
            if row is None:
                new.append(self._build(value))
            elif row[1] or row[2:] != tuple(getattr(value, name) for name in _COMPARED):
                changed[row[0]] = value
            else:
                unchanged += 1
        self._create(new)
        if changed:
            points = [self._apply(point, changed[point.pk])
                      for point in DataPoint.objects.filter(pk__in=list(changed)).order_by("pk")]
            audited_bulk_update(points, ["raw_value", "value_number", "value_date", "version", "sdv_state",
                                         "missing_in_source", *_EXTRA], actor=self.run.actor, reason=self.run.reason)
        self.run.counts["data_points_created"] += len(new)
        self.run.counts["data_points_changed"] += len(changed)
        self.run.counts["data_points_unchanged"] += unchanged

    def add_frame(self, frame: pd.DataFrame, *, chunk_rows: int = 100_000) -> None:
        """Set-based add: `frame` has the key columns (subject_id, visit_id, form_id, item_id,
        repeat_key), raw_value, and any of the extra attributes. New values are written in bulk;
        values already stored are compared column-wise and only those that differ go through the
        per-value path (update with version + 1). Chunks hold whole subjects, so each chunk's
        lookup of stored values reads only that chunk's subjects."""
        self.flush()
        if frame.empty:
            return
        if self.run.study is None:
            raise ImportFailed("Data points need a study; the import has none.")
        frame = frame.drop_duplicates(list(_KEY), keep="last").sort_values("subject_id", kind="stable")
        # Chunks hold disjoint keys (whole subjects), so if the study has no value of these items
        # yet, no chunk can find a stored one, not even one an earlier chunk wrote: skip the lookups.
        anything_stored = DataPoint.objects.filter(
            study_id=self.run.study.pk, item_id__in=[int(i) for i in frame["item_id"].unique()]).exists()
        subjects = frame["subject_id"].to_numpy()
        start = 0
        while start < len(frame):
            stop = min(start + chunk_rows, len(frame))
            while stop < len(frame) and subjects[stop] == subjects[stop - 1]:
                stop += 1
            self._write_frame(frame.iloc[start:stop], lookup=anything_stored)
            start = stop

    def _write_frame(self, chunk: pd.DataFrame, *, lookup: bool = True) -> None:
        chunk = chunk.reset_index(drop=True)
        if self.run.record.full_snapshot:
            self._seen_keys.update(chunk[list(_KEY)].itertuples(index=False, name=None))
        if lookup:
            chunk = self._write_stored(chunk)
        if chunk.empty:
            return
        new = self.new_rows_frame(chunk)
        if self.use_copy:
            audited_copy_create(DataPoint, list(_NEW_COLUMNS), new, actor=self.run.actor, reason=self.run.reason)
        else:
            new["value_date"] = new["value_date"].dt.date
            columns = [new[name].astype(object).where(new[name].notna(), None).tolist() for name in _NEW_COLUMNS]
            points = [DataPoint(**dict(zip(_NEW_COLUMNS, row, strict=True))) for row in zip(*columns, strict=True)]
            audited_bulk_create(points, actor=self.run.actor, reason=self.run.reason, batch_size=2000)
        self.run.counts["data_points_created"] += len(new)

    def _write_stored(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """Compare the chunk with the stored values of its subjects and items; count the unchanged,
        update the changed (per-value path) and return the rows not stored yet."""
        compared = [name for name in _COMPARED if name in chunk.columns]
        stored = pd.DataFrame.from_records(
            DataPoint.objects.filter(
                study_id=self.run.study.pk,
                subject_id__in=[int(s) for s in chunk["subject_id"].unique()],
                item_id__in=[int(i) for i in chunk["item_id"].unique()],
            ).values_list(*_KEY, "missing_in_source", *compared),
            columns=[*_KEY, "missing_in_source", *[f"stored_{name}" for name in compared]],
        )
        if stored.empty:
            return chunk
        merged = chunk.merge(stored, on=list(_KEY), how="left", indicator=True)
        is_stored = (merged["_merge"] == "both").to_numpy()
        differs = merged["missing_in_source"].fillna(False).astype(bool).to_numpy().copy()
        for name in compared:
            differs |= ~_same(merged[name], merged[f"stored_{name}"]).to_numpy()
        self.run.counts["data_points_unchanged"] += int((is_stored & ~differs).sum())
        items = ItemDefinition.objects.in_bulk(chunk["item_id"].unique().tolist())
        for row in chunk[is_stored & differs].to_dict("records"):
            self.add(self._incoming(row, items))
        self.flush()
        return chunk[~is_stored]

    def new_rows_frame(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """The chunk as new data point rows: exactly the `_NEW_COLUMNS`, typed, text never null."""
        new = self._typed_frame(chunk)
        new["study_id"] = self.run.study.pk
        for name in _EXTRA:
            if name not in new.columns:
                new[name] = "" if name in _TEXT else None
            elif name in _TEXT:
                new[name] = new[name].fillna("")
        return new[list(_NEW_COLUMNS)]

    def _typed_frame(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """value_number and value_date (datetime64, midnight) from raw_value by each item's data
        type, vectorised."""
        types = dict(ItemDefinition.objects.filter(pk__in=chunk["item_id"].unique().tolist())
                     .values_list("pk", "data_type"))
        data_type = chunk["item_id"].map(types)
        raw = chunk["raw_value"].fillna("").astype(str)
        stripped = raw.str.strip()
        numeric = data_type.isin(_NUMERIC_TYPES) & (stripped != "")
        dated = data_type.isin(_DATE_TYPES) & (stripped != "")
        number = pd.to_numeric(stripped.where(numeric), errors="coerce")
        day = pd.to_datetime(stripped.where(dated), errors="coerce", format="ISO8601")
        if getattr(day.dt, "tz", None) is not None:
            day = day.dt.tz_localize(None)  # the date as written, not as in UTC
        bad = (numeric & number.isna()) | (dated & day.isna())
        for _, row in chunk[bad].head(20).iterrows():
            self.run.warn(f"{row['raw_value']!r} does not fit item {row['item_id']} ({types[row['item_id']]})",
                          where=f"item {row['item_id']}")
        if bad.sum() > 20:
            self.run.counts["warnings"] += int(bad.sum()) - 20
        return chunk.assign(raw_value=raw, value_number=number, value_date=day.dt.normalize())

    def _incoming(self, row: dict, items: dict) -> IncomingValue:
        extra = {name: (None if pd.isna(row[name]) else row[name]) for name in _EXTRA if name in row}
        for name in ("entered_by", "units", "abnormal_flag"):
            if name in extra and extra[name] is None:
                extra[name] = ""
        return IncomingValue(subject_id=int(row["subject_id"]), visit_id=int(row["visit_id"]),
                             form_id=int(row["form_id"]), item=items[int(row["item_id"])],
                             raw_value="" if pd.isna(row["raw_value"]) else str(row["raw_value"]),
                             repeat_key=str(row["repeat_key"]), **extra)

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

    def _create(self, new: list) -> None:
        if not new:
            return
        if self.use_copy:
            audited_copy_create(DataPoint, list(_NEW_COLUMNS), new, actor=self.run.actor, reason=self.run.reason)
        else:
            audited_bulk_create(new, actor=self.run.actor, reason=self.run.reason, batch_size=2000)

    def _build(self, value: IncomingValue) -> DataPoint | tuple:
        number, day = self._typed(value)
        if self.run.study is None:
            raise ImportFailed("Data points need a study; the import has none.")
        if self.use_copy:
            return (self.run.study.pk, value.subject_id, value.visit_id, value.form_id, value.item.pk,
                    value.repeat_key, value.raw_value, number, day, *(getattr(value, name) for name in _EXTRA))
        return DataPoint(
            study_id=self.run.study.pk, subject_id=value.subject_id, visit_id=value.visit_id,
            form_id=value.form_id, item=value.item, repeat_key=value.repeat_key, raw_value=value.raw_value,
            value_number=number, value_date=day, **{name: getattr(value, name) for name in _EXTRA},
        )

    def _apply(self, point: DataPoint, value: IncomingValue) -> DataPoint:
        point.value_number, point.value_date = self._typed(value)
        point.raw_value = value.raw_value
        for name in _EXTRA:
            setattr(point, name, getattr(value, name))
        point.version += 1
        point.missing_in_source = False
        point.sdv_state = sdv_state_after_change(point.sdv_state)
        return point

