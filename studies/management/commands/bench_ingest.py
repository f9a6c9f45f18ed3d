"""Benchmark: load the clindata lab results into a fresh study, and in the same run COPY the same
rows into a bare table; print the figures as one JSON line (the last line).

Also measured in the same run, on PostgreSQL: the floor of any loader that writes a history row per
value, i.e. the same `audited_copy_create` writes (ids, data point rows, history rows) into two bare
tables. `seconds - floor_seconds` is what indexes, integrity checks and the frame preparation add.

Everything runs in one transaction that is rolled back at the end, so the bench study, its audit
trail and the Import record vanish without any audited delete and regular data is untouched."""

import json
import resource
import time
import uuid
from pathlib import Path

import pandas as pd
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from studies.audit import audited_copy_create
from studies.ingest import clindata
from studies.ingest.base import ImportRun, import_create
from studies.ingest.copy import copy_frame, is_postgresql
from studies.ingest.writer import DataPointWriter
from studies.models import DataPoint, Import, Study


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


class Command(BaseCommand):
    help = "Time the audited bulk load of the clindata lab results against a raw COPY of the same rows."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=None, help="Load only the first N lab results")
        parser.add_argument("--dir", type=Path, default=None, help="clindata parquet directory")

    def handle(self, *args, rows, dir, **options):
        directory = dir or Path(settings.SHARED_DATA_DIR) / "clindata" / "parquet"
        if not directory.is_dir():
            raise CommandError(f"clindata not found at {directory}")
        tables = clindata.read_tables(directory)
        if rows is not None:
            tables["rawplus_lb"] = tables["rawplus_lb"].head(rows)
            tables = clindata.restrict_to_subjects(tables, set(tables["rawplus_lb"]["subjid"]))
        with transaction.atomic():  # everything written is rolled back at the end
            result = self._measure(tables)
            transaction.set_rollback(True)
        result["peak_rss_mb"] = _peak_rss_mb()
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
