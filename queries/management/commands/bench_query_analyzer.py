"""Benchmark: the QueryAnalyzer on an imported study (by default clindata, 1.13 M lab results
plus its other forms): a first full pass, a full re-check, an incremental pass after 1,000 changed
data points, a pass over an unchanged study, and in the same run a plain SQL scan of the same lab
rows; the figures as one JSON line (the last line).

Everything runs in one transaction that is rolled back: the study, its checks and its queries are
left exactly as they were."""

import json
import random
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from queries.checks.engine import analyzer_pass
from queries.models import Discrepancy, EditCheck
from queries.services import edit_check_save, edit_checks_generate
from studies.audit import audited_bulk_update, system_account
from studies.models import DataPoint, FormDefinition, ItemDefinition, Study

# Study-specific rules a data manager would write for clindata, beside the generated ones
CLINDATA_CHECKS = [
    ("AE-AFTER-CONSENT", "date_order", "AE.AESTDAT", {"anchor": "consent"}),
    ("AE-END-AFTER-START", "date_order", "AE.AEENDAT", {"anchor": "item", "anchor_item": "AE.AESTDAT"}),
    ("EX-END-AFTER-START", "date_order", "EX.EXENDAT", {"anchor": "item", "anchor_item": "EX.EXSTDAT"}),
    # clindata masks the reported term ("XXX"): the same AE is the same preferred term and start
    ("AE-DUP", "duplicate", None, {"form": "AE", "keys": ["AE.AEDECOD", "AE.AESTDAT"]}),
    ("REQ-AE.AETERM", "required", "AE.AETERM", {}),
    ("STUDCOMP-REASON", "consistency", None, {"when": {"item": "STUDCOMP.COMPYN", "in": ["N"]},
                                              "require": {"item": "STUDCOMP.COMPREAS"}}),
]


class Command(BaseCommand):
    help = "Time the QueryAnalyzer on an imported study against a plain SQL scan of its lab rows."

    def add_arguments(self, parser):
        parser.add_argument("--study", default="AA-AA-000-0000", help="protocol id (default: clindata's)")
        parser.add_argument("--changes", type=int, default=1000, help="data points changed before the incremental pass")
        parser.add_argument("--samples", type=int, default=3, help="sample findings printed per rule type")

    def handle(self, *args, study, changes, samples, **options):
        target = Study.objects.filter(protocol_id=study).first()
        if target is None:
            raise CommandError(f"No study {study!r}: import it first (python manage.py import_clindata DIR)")
        with transaction.atomic():  # everything written is rolled back at the end
            result = self._measure(target, changes=changes, samples=samples)
            transaction.set_rollback(True)
        self.stdout.write(json.dumps({"bench": "query_analyzer", **result}))

    def _measure(self, study: Study, *, changes: int, samples: int) -> dict:
        actor = system_account("bench-query-analyzer")
        edit_checks_generate(study=study, actor=actor, reason="bench")
        items = set(ItemDefinition.objects.filter(study=study).values_list("oid", flat=True))
        for code, rule_type, item, params in CLINDATA_CHECKS:
            needed = {item, params.get("anchor_item"), *params.get("keys", []),
                      params.get("when", {}).get("item"), params.get("require", {}).get("item")} - {None}
            if needed <= items and not EditCheck.objects.filter(study=study, code=code).exists():
                check = EditCheck(study=study, code=code, name=code, rule_type=rule_type, params=params,
                                  item=ItemDefinition.objects.get(study=study, oid=item) if item else None)
                edit_check_save(check=check, actor=actor, reason="bench")
        lab_form = FormDefinition.objects.filter(study=study, oid="LB").first()
        data_points = DataPoint.objects.filter(study=study).count()

        started = time.perf_counter()
        first = analyzer_pass(study=study, actor=actor, full=True)
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        analyzer_pass(study=study, actor=actor, full=True)
        full_seconds = time.perf_counter() - started

        self._change(study, changes, actor)
        started = time.perf_counter()
        incremental = analyzer_pass(study=study, actor=actor)
        incremental_seconds = time.perf_counter() - started
        started = time.perf_counter()
        analyzer_pass(study=study, actor=actor)
        unchanged_seconds = time.perf_counter() - started

        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*), sum(value_number), min(raw_value) FROM studies_datapoint "
                           "WHERE study_id = %s AND form_id = %s", [study.pk, lab_form.pk if lab_form else -1])
            lab_rows = cursor.fetchone()[0]
        scan_seconds = time.perf_counter() - started

        self._report(study, first, samples)
        return {"data_points": data_points, "lab_rows": lab_rows, "checks": first.counts.get("checks"),
                "full_seconds": round(full_seconds, 3), "first_full_seconds": round(first_seconds, 3),
                "incremental_seconds": round(incremental_seconds, 3), "changed": changes,
                "unchanged_seconds": round(unchanged_seconds, 3), "sql_scan_seconds": round(scan_seconds, 3),
                "ratio": round(full_seconds / scan_seconds, 2) if scan_seconds else None,
                "found": first.counts.get("found"), "by_rule_type": first.counts.get("by_rule_type", {}),
                "queries_raised": first.counts.get("queries_raised"),
                "medical_review": first.counts.get("medical_review"), "held_back": first.counts.get("held_back"),
                "incremental_found_new": incremental.counts.get("new"), "database": connection.vendor}

    def _change(self, study: Study, count: int, actor) -> None:
        """`count` random lab values changed (+1), audited like any EDC update."""
        ids = list(DataPoint.objects.filter(study=study, value_number__isnull=False).values_list("pk", flat=True))
        chosen = random.Random(7).sample(ids, min(count, len(ids)))
        points = list(DataPoint.objects.filter(pk__in=chosen))
        for point in points:
            point.value_number += 1
            point.raw_value = format(point.value_number, "g")
            point.version += 1
        audited_bulk_update(points, ["value_number", "raw_value", "version"], actor=actor, reason="bench change")

    def _report(self, study: Study, first, samples: int) -> None:
        self.stdout.write(f"study {study.protocol_id}: first pass {json.dumps(first.counts)}; errors {first.errors}")
        for rule_type in sorted(first.counts.get("by_rule_type", {})):
            rows = Discrepancy.objects.filter(study=study, rule_type=rule_type).select_related(
                "edit_check", "site", "subject")[:samples]
            for d in rows:
                self.stdout.write(f"  {rule_type:17} {d.edit_check.code:24} site {d.site.number} {d.severity:8} "
                                  f"{d.disposition:14} conf {d.confidence:.2f}  {d.observed[:60]} | {d.expected[:50]}")
