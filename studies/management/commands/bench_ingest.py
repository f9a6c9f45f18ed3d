"""Benchmark: load the clindata lab results into a fresh study, and in the same run COPY the same
rows into a bare table; print the figures as one JSON line (the last line).

Also measured in the same run, on PostgreSQL: the floor of any loader that writes a history row per
value, i.e. the same `audited_copy_create` writes (ids, data point rows, history rows) into two bare
tables. `seconds - floor_seconds` is what indexes, integrity checks and the frame preparation add.

Before that, in the same run, the ODM target: an ODM 1.3.2 file of `--odm-points` data points
(generated, schema-valid: sites, subjects, visits, two forms of typed items with units and range
checks) imported through the same service as `import_odm`, once (all new) and again (all unchanged).

Each part runs in a transaction that is rolled back at its end, so the bench studies, their audit
trail and the Import records vanish without any audited delete and regular data is untouched."""

import json
import resource
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from lxml import etree

from studies.audit import audited_copy_create
from studies.ingest import clindata
from studies.ingest.base import ImportRun, import_create
from studies.ingest.copy import copy_frame, is_postgresql
from studies.ingest.odm import odm_import
from studies.ingest.writer import DataPointWriter
from studies.models import DataPoint, Import, Study


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


class Command(BaseCommand):
    help = "Time the audited bulk load of the clindata lab results against a raw COPY of the same rows."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=None, help="Load only the first N lab results")
        parser.add_argument("--dir", type=Path, default=None, help="clindata parquet directory")
        parser.add_argument("--odm-points", type=int, default=100_000,
                            help="Data points in the generated ODM file (0: skip the ODM import)")

    def handle(self, *args, rows, dir, odm_points, **options):
        if odm_points < 0:
            raise CommandError("--odm-points must be 0 or more.")
        directory = dir or Path(settings.SHARED_DATA_DIR) / "clindata" / "parquet"
        if not directory.is_dir():
            raise CommandError(f"clindata not found at {directory}")
        tables = clindata.read_tables(directory)
        if rows is not None:
            tables["rawplus_lb"] = tables["rawplus_lb"].head(rows)
            tables = clindata.restrict_to_subjects(tables, set(tables["rawplus_lb"]["subjid"]))
        odm = {}
        if odm_points:  # first, in a transaction of its own: a fresh study, as an EDC's first export
            with transaction.atomic():
                odm = self._odm(odm_points)
                transaction.set_rollback(True)
        with transaction.atomic():  # everything written is rolled back at the end
            result = self._measure(tables)
            transaction.set_rollback(True)
        result.update(odm, peak_rss_mb=_peak_rss_mb())
        self.stdout.write(f"database: {connection.vendor}; setup (sites, subjects, visits) "
                          f"{result.pop('setup_seconds')} s; rolled back")
        self.stdout.write(json.dumps({"bench": "ingest", **result}))

    def _measure(self, tables: dict) -> dict:
        actor, _ = get_user_model().objects.get_or_create(username="bench-ingest")
        record = import_create(source=Import.Source.CLINDATA, actor=actor, filename="bench_ingest")
        study = Study(protocol_id=f"BENCH-{uuid.uuid4().hex[:12]}", name="bench_ingest (rolled back)")
        study.save()
        run = ImportRun(record=record, actor=actor)
        run.attach_study(study)

        started = time.perf_counter()
        sites = clindata._sites(run, tables["ctms_site"])
        subjects = clindata._subjects(run, tables, sites)
        visits = clindata._visits(run, tables["rawplus_visdt"], subjects)
        lb = tables["rawplus_lb"]
        tests = sorted(lb[["battrnam", "lbtstnam"]].drop_duplicates().itertuples(index=False, name=None))
        form_ids, item_ids = clindata._forms_and_items(run, tests)
        setup = time.perf_counter() - started

        started = time.perf_counter()
        lab = clindata._lab_frame(run, lb, subjects, visits, form_ids["LB"], item_ids)
        writer = DataPointWriter(run)
        writer.add_frame(lab)
        writer.finish()
        seconds = time.perf_counter() - started
        written = DataPoint.objects.filter(study=study).count()
        audited = DataPoint.history.filter(study_id=study.pk, history_type="+").count()
        if written != len(lab) or audited != written:
            raise CommandError(f"expected {len(lab)} data points with history, got {written} / {audited}")
        figures = {"load_seconds": round(seconds, 2)}
        if is_postgresql():
            # Foreign keys still deferred to commit (the setup's sites, subjects and visits; a data
            # point's references are checked as it is written): this run rolls back, so fire those
            # checks now and count them, since a committing import pays them too.
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            checks = time.perf_counter() - started
            figures["commit_fk_check_seconds"] = round(checks, 2)
            seconds += checks

        new_rows = writer.new_rows_frame(lab)
        raw = self._raw_copy(new_rows)
        if is_postgresql():
            floor = self._audited_floor(new_rows, actor)
            figures.update(floor_seconds=round(floor, 2), floor_ratio=round(floor / raw, 2))
        return {"rows": written, "seconds": round(seconds, 2), "raw_copy_seconds": round(raw, 2),
                "ratio": round(seconds / raw, 2), "history_rows": audited, "database": connection.vendor,
                **figures, "setup_seconds": round(setup, 2)}

    def _odm(self, points: int) -> dict:
        """Generate an ODM file of `points` data points and import it twice (new, then unchanged)."""
        actor, _ = get_user_model().objects.get_or_create(username="bench-ingest")
        with tempfile.TemporaryDirectory(prefix="bench_ingest_") as directory:
            path = Path(directory) / "bench.xml"
            odm_write(path, points=points, study_oid=f"BENCH-ODM-{uuid.uuid4().hex[:12]}")
            figures = {"odm_data_points": points, "odm_file_mb": round(path.stat().st_size / 2**20, 1)}
            for label, expected in (("odm_seconds", "data_points_created"),
                                    ("odm_reimport_seconds", "data_points_unchanged")):
                started = time.perf_counter()
                record = odm_import(path=path, actor=actor)
                seconds = time.perf_counter() - started
                if record.status != Import.Status.SUCCEEDED:
                    raise CommandError(f"the generated ODM file failed to import: {record.errors[:1]}")
                if record.counts.get(expected) != points:
                    raise CommandError(f"expected {points} {expected}, got {record.counts.get(expected)}")
                figures[label] = round(seconds, 2)
        return figures

    def _audited_floor(self, frame: pd.DataFrame, actor, *, chunk_rows: int = 100_000) -> float:
        """The audited load's own writes (`audited_copy_create`, in the writer's chunks) into two
        tables of the same columns without index, constraint or trigger."""
        suffix = uuid.uuid4().hex[:8]
        tables = (f"bench_floor_{suffix}", f"bench_floor_history_{suffix}")
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {tables[0]} (LIKE {DataPoint._meta.db_table})")
            history = DataPoint.history.model._meta.db_table
            cursor.execute(f"CREATE TABLE {tables[1]} (LIKE {history} INCLUDING IDENTITY)")
        started = time.perf_counter()
        for start in range(0, len(frame), chunk_rows):
            audited_copy_create(DataPoint, list(frame.columns), frame.iloc[start:start + chunk_rows], actor=actor,
                                reason="bench_ingest floor", into=tables)
        return time.perf_counter() - started

    def _raw_copy(self, frame: pd.DataFrame) -> float:
        """The same data point rows (same columns and values, formatted and sent the same way as
        the audited load's) into a bare table: no index, no constraint, no history; the floor any
        loader is measured against. A regular (WAL-logged) table like ours, not a temporary one, so
        the two pay the same durability; the surrounding rollback drops it."""
        table = f"bench_raw_{uuid.uuid4().hex[:8]}"
        fields = {f.attname: f for f in DataPoint._meta.concrete_fields}
        columns = list(frame.columns)
        with connection.cursor() as cursor:
            types = ", ".join(f"{connection.ops.quote_name(name)} {fields[name].db_type(connection)}"
                              for name in columns)
            cursor.execute(f"CREATE TABLE {table} ({types})")
        started = time.perf_counter()
        if is_postgresql():
            copy_frame(table, frame)
        else:
            frame = frame.assign(value_date=frame["value_date"].dt.date)
            values = [frame[name].astype(object).where(frame[name].notna(), None).tolist() for name in columns]
            plain = [tuple(v.to_pydatetime() if isinstance(v, pd.Timestamp) else v for v in row)
                     for row in zip(*values, strict=True)]
            with connection.cursor() as cursor:
                cursor.executemany(f"INSERT INTO {table} VALUES ({', '.join(['%s'] * len(columns))})", plain)
        return time.perf_counter() - started


# The generated ODM file: each subject has _VISITS visits of the two forms, each form _ITEMS items.
_VISITS = 5
_ITEMS = 25
_ODM = "http://www.cdisc.org/ns/odm/v1.3"


def _items(form: str) -> list[tuple[str, str, str, tuple | None]]:
    """(OID, data type, units, (low, high) range check or None) of a form's items."""
    out = []
    for number in range(_ITEMS):
        kind = ("float", "integer", "text", "date", "float")[number % 5]
        units, limits = {"float": ("mmol/L", (0.1, 500.0)), "integer": ("mmHg", (20, 300))}.get(kind, ("", None))
        out.append((f"I.{form}.{kind.upper()}{number:02d}", kind, units, limits))
    return out


def _value(kind: str, day: date, rng: np.random.Generator) -> str:
    if kind == "float":
        return f"{rng.normal(5, 1.5):.2f}"
    if kind == "integer":
        return str(int(rng.normal(120, 15)))
    if kind == "date":
        return day.isoformat()
    return ("normal", "abnormal, not clinically significant", "not done")[int(rng.integers(3))]


def odm_write(path: Path, *, points: int, study_oid: str, sites: int = 10) -> None:
    """Write an ODM 1.3.2 snapshot of `points` data points to `path`, streamed (lxml xmlfile), as an
    EDC exports one: metadata with units and range checks, sites as Locations, subjects by site."""
    forms = {"F.VS": _items("VS"), "F.LB": _items("LB")}
    rng = np.random.default_rng(1)
    per_subject = _VISITS * len(forms) * _ITEMS
    subjects = -(-points // per_subject)
    created = datetime(2026, 1, 5, tzinfo=UTC)

    def sub(tag, attrib=None, text=None, children=()):
        node = etree.Element(f"{{{_ODM}}}{tag}", attrib or {}, nsmap={None: _ODM})
        node.text = text
        for child in children:
            node.append(child)
        return node

    with etree.xmlfile(str(path), encoding="utf-8") as xf:
        xf.write_declaration()
        with xf.element(f"{{{_ODM}}}ODM", {"FileOID": f"{study_oid}.SNAPSHOT", "FileType": "Snapshot",
                                           "ODMVersion": "1.3.2", "CreationDateTime": created.isoformat()},
                        nsmap={None: _ODM}):
            definitions = [sub("Protocol", children=[
                sub("StudyEventRef", {"StudyEventOID": f"SE.V{v}", "OrderNumber": str(v), "Mandatory": "Yes"})
                for v in range(1, _VISITS + 1)])]
            definitions += [sub("StudyEventDef", {"OID": f"SE.V{v}", "Name": f"Visit {v}", "Repeating": "No",
                                                  "Type": "Scheduled"},
                                children=[sub("FormRef", {"FormOID": form, "Mandatory": "Yes"}) for form in forms])
                            for v in range(1, _VISITS + 1)]
            definitions += [sub("FormDef", {"OID": form, "Name": form[2:], "Repeating": "No"},
                                children=[sub("ItemGroupRef", {"ItemGroupOID": f"IG.{form[2:]}", "Mandatory": "Yes"})])
                            for form in forms]
            definitions += [sub("ItemGroupDef", {"OID": f"IG.{form[2:]}", "Name": form[2:], "Repeating": "No"},
                                children=[sub("ItemRef", {"ItemOID": oid, "Mandatory": "No"}) for oid, *_ in items])
                            for form, items in forms.items()]
            for items in forms.values():
                for oid, kind, units, limits in items:
                    children = [sub("Question", children=[sub("TranslatedText", {}, oid)])]
                    if units:
                        children.append(sub("MeasurementUnitRef", {"MeasurementUnitOID": f"MU.{units}"}))
                    if limits:
                        children += [sub("RangeCheck", {"Comparator": comparator, "SoftHard": "Soft"},
                                         children=[sub("CheckValue", {}, str(limit))])
                                     for comparator, limit in (("GE", limits[0]), ("LE", limits[1]))]
                    definitions.append(sub("ItemDef", {"OID": oid, "Name": oid, "DataType": kind,
                                                       **({"Length": "200"} if kind == "text" else {})},
                                           children=children))
            xf.write(sub("Study", {"OID": study_oid}, children=[
                sub("GlobalVariables", children=[sub("StudyName", {}, "bench_ingest ODM"),
                                                 sub("StudyDescription", {}, "generated, rolled back"),
                                                 sub("ProtocolName", {}, study_oid)]),
                sub("BasicDefinitions", children=[
                    sub("MeasurementUnit", {"OID": f"MU.{units}", "Name": units},
                        children=[sub("Symbol", children=[sub("TranslatedText", {}, units)])])
                    for units in sorted({units for items in forms.values() for _, _, units, _ in items if units})]),
                sub("MetaDataVersion", {"OID": "MDV.1", "Name": "v1"}, children=definitions)]))
            version = {"StudyOID": study_oid, "MetaDataVersionOID": "MDV.1", "EffectiveDate": "2026-01-01"}
            xf.write(sub("AdminData", children=[
                sub("Location", {"OID": f"LOC.{s:03d}", "Name": f"Site {s:03d}", "LocationType": "Site"},
                    children=[sub("MetaDataVersionRef", version)]) for s in range(1, sites + 1)]))
            written = 0
            with xf.element(f"{{{_ODM}}}ClinicalData", {"StudyOID": study_oid, "MetaDataVersionOID": "MDV.1"}):
                for number in range(subjects):
                    visits = []
                    for visit in range(1, _VISITS + 1):
                        day = date(2026, 1, 5) + timedelta(days=number % 90 + 14 * (visit - 1))
                        form_nodes = []
                        for form, items in forms.items():
                            values = []
                            for oid, kind, _, _ in items:
                                if written == points:
                                    break
                                values.append(sub("ItemData", {"ItemOID": oid, "Value": _value(kind, day, rng)}))
                                written += 1
                            if values:
                                form_nodes.append(sub("FormData", {"FormOID": form}, children=[
                                    sub("ItemGroupData", {"ItemGroupOID": f"IG.{form[2:]}"}, children=values)]))
                        if form_nodes:
                            visits.append(sub("StudyEventData", {"StudyEventOID": f"SE.V{visit}"},
                                              children=form_nodes))
                    site = f"{number % sites + 1:03d}"
                    xf.write(sub("SubjectData", {"SubjectKey": f"{site}-{number + 1:05d}"},
                                 children=[sub("SiteRef", {"LocationOID": f"LOC.{site}"}), *visits]))
