"""`python manage.py bench_deviations [--sites 2000] [--subjects 100] [--seed 16] [--keep]`

Generates a study of sites x subjects (_deviation_bench_study: planted deviations of every kind and
decoys), runs one full PatternRecognition pass (detection_run: read, detect, code, store), then a
second one (must write nothing), and measures in the same run the baseline: a plain SQL scan of
the study's visits (every row fetched by the cursor). Reports recall and precision against the
planted evidence keys, per kind and overall; the last line of output is one JSON object. The
generated study is rolled back at the end unless --keep."""

import json
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from deviations.detection import detection_run
from deviations.models import Deviation
from deviations.plan import plan_import
from studies.audit import system_account
from studies.models import SubjectVisit

from ._deviation_bench_study import PLAN, generate


class _RollBack(Exception):
    pass


class Command(BaseCommand):
    help = "Benchmark PatternRecognition on a generated study: recall, precision and the time of a full pass."

    def add_arguments(self, parser):
        parser.add_argument("--sites", type=int, default=2000)
        parser.add_argument("--subjects", type=int, default=100, help="subjects per site")
        parser.add_argument("--seed", type=int, default=16)
        parser.add_argument("--keep", action="store_true", help="commit the generated study instead of rolling back")

    def handle(self, *args, sites: int, subjects: int, seed: int, keep: bool, **options):
        if sites < 1 or subjects < 1:
            raise CommandError("--sites and --subjects must be at least 1")
        self.result = None
        try:
            with transaction.atomic():
                self.result = self._run(sites, subjects, seed)
                if not keep:
                    raise _RollBack
        except _RollBack:
            pass
        self.stdout.write(json.dumps(self.result))

    def _say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def _run(self, sites: int, subjects: int, seed: int) -> dict:
        actor = system_account("system.bench")
        started = time.perf_counter()
        generated = generate(sites=sites, subjects_per_site=subjects, seed=seed, actor=actor)
        study = generated.study
        plan, _ = plan_import(study=study, content=PLAN, actor=actor, reason="bench_deviations plan")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                for table in ("studies_subject", "studies_subjectvisit", "studies_datapoint", "deviations_deviation"):
                    cursor.execute(f"ANALYZE {table}")
        generate_seconds = time.perf_counter() - started
        self._say(f"generated {generated.counts} in {generate_seconds:.1f}s")

        baseline = self._baseline(study)
        first = time.perf_counter()
        done = detection_run(study=study, actor=actor, plan=plan)
        detection_seconds = time.perf_counter() - first
        self._say(f"first pass {detection_seconds:.2f}s: {done.counts['totals']}")
        second = time.perf_counter()
        again = detection_run(study=study, actor=actor, plan=plan)
        second_seconds = time.perf_counter() - second
        self._say(f"second pass {second_seconds:.2f}s: {again.counts['totals']}")

        found = set(Deviation.objects.filter(study=study, source=Deviation.Source.DETECTED).exclude(
            status=Deviation.Status.CLOSED).values_list("evidence_key", flat=True))
        planted = set().union(*generated.expected.values())
        hits = found & planted
        per_kind = {}
        for kind, keys in generated.expected.items():
            mine = {k for k in found if _kind(k) == kind}
            per_kind[kind] = {"planted": len(keys), "found": len(mine), "true_positive": len(mine & keys),
                              "recall": _ratio(len(mine & keys), len(keys)),
                              "precision": _ratio(len(mine & keys), len(mine))}
        writes = {k: v for k, v in again.counts["totals"].items() if k != "found" and v}
        return {
            "bench": "bench_deviations", "database": connection.vendor, "sites": sites,
            "subjects": generated.counts["subjects"], "visits": generated.counts["visits"],
            "data_points": generated.counts["data_points"], "planted": len(planted),
            "decoys": sum(generated.decoys.values()), "decoys_by_kind": generated.decoys, "detected": len(found),
            "recall": _ratio(len(hits), len(planted)), "precision": _ratio(len(hits), len(found)),
            "per_kind": per_kind, "detection_seconds": round(detection_seconds, 3),
            "second_pass_seconds": round(second_seconds, 3), "second_pass_writes": writes,
            "baseline_visit_scan_seconds": round(baseline, 3),
            "detection_over_baseline": round(detection_seconds / baseline, 2) if baseline else None,
            "target": {"recall": 0.95, "precision": 0.95, "detection_seconds": 10},
            "generate_seconds": round(generate_seconds, 1)}

    def _baseline(self, study) -> float:
        """A plain SQL scan of the study's visits, every row fetched by the cursor."""
        table = connection.ops.quote_name(SubjectVisit._meta.db_table)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id, subject_id, definition_id, repeat_key, actual_date FROM {table} "
                           f"WHERE study_id = %s", [study.pk])
            rows = cursor.fetchall()
        elapsed = time.perf_counter() - started
        self._say(f"baseline: {len(rows)} visits scanned in {elapsed:.2f}s")
        return elapsed


def _kind(key: str) -> str:
    prefix = key.split(":", 1)[0]
    return "visit_window" if prefix == "visit_missed" else prefix


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
