"""`python manage.py bench_kri [--sites N --subjects M] [--study PROTOCOL]`.

Two measures, as issue 7 asks:
- `seconds`: every active KRI of a study from the database to stored results (the KRI snapshot
  with site risk, as the RiskAssessment agent computes it; SDV plans are a separate step).
- `one_kri_compute_seconds`: the AE-rate KRI from its subject-level input in memory (a site id
  string, N and D per subject, as gsm's analyticsInput) to flags; `pandas_seconds` is the same
  KRI written the plain pandas way (groupby), measured in the same run (best of 3 each).

First, when the database holds it, the imported clindata study (176 sites; `--study` names
another, `--study ""` skips it) at gsm's snapshot date 2018-01-01; then a generated study of
`--sites` x `--subjects` with adverse events, lab results, deviations and queries. Everything is
written inside a transaction that is rolled back. Each prints one JSON line; the generated study's
line is the last.
"""

import datetime
import json
import time

import numpy as np
import pandas as pd
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.utils import timezone

from deviations.models import Deviation
from queries.models import Query
from sdv.kri import KriMethod, kri_from_subjects
from sdv.models import KriDefinition, KriResult
from sdv.services import kri_snapshot_compute
from studies.audit import audited_bulk_create, audited_copy_create, system_account
from studies.models import (
    DataPoint,
    FormDefinition,
    ItemDefinition,
    Site,
    Study,
    Subject,
    SubjectVisit,
    VisitDefinition,
)

AE_RATE = KriMethod(analysis="normal_rate", thresholds=(-2, -1, 2, 3), accrual_threshold=30,
                    accrual_metric="denominator")
CLINDATA = "AA-AA-000-0000"
COUNTRIES = ("US", "DE", "FR", "ES", "IT", "GB", "JP", "CN", "CA", "AU")
SNAPSHOT = datetime.date(2025, 1, 1)


def pandas_ae_rate(frame: pd.DataFrame) -> pd.DataFrame:
    """The same KRI the plain-pandas way (groupby, columns), the baseline."""
    sites = frame.groupby("site")[["n", "d"]].sum()
    sites = sites[sites["d"] > 0]
    sites["m"] = sites["n"] / sites["d"]
    p = sites["n"].sum() / sites["d"].sum()
    z0 = (sites["m"] - p) / np.sqrt(p / sites["d"])
    sites["z"] = (sites["m"] - p) / np.sqrt((z0**2).mean() * p / sites["d"])
    sites["flag"] = pd.cut(sites["z"], [-np.inf, -2, -1, 2, 3, np.inf], labels=[-2, -1, 0, 1, 2], right=False)
    sites.loc[sites["d"] < 30, ["z", "flag"]] = np.nan
    return sites


def one_kri_seconds(frame: pd.DataFrame) -> dict:
    """Best of 3 of the AE-rate KRI from a subject-level frame (site, n, d) to flags: ours (group
    codes, totals, scores, flags) and the pandas baseline."""
    best = best_pandas = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        codes, groups = pd.factorize(frame["site"], sort=True)
        kri_from_subjects(codes=codes, groups=groups, numerator=frame["n"].to_numpy("float64"),
                          denominator=frame["d"].to_numpy("float64"), method=AE_RATE)
        best = min(best, time.perf_counter() - started)
        started = time.perf_counter()
        pandas_ae_rate(frame)
        best_pandas = min(best_pandas, time.perf_counter() - started)
    return {"one_kri_compute_seconds": round(best, 4), "pandas_seconds": round(best_pandas, 4)}


def _write(model, frame: pd.DataFrame, *, actor) -> list[int]:
    """Rows of `frame` (columns: the model's attnames) with their history rows: COPY on
    PostgreSQL, audited bulk_create elsewhere. Returns the new primary keys in order."""
    if connection.vendor == "postgresql":
        return audited_copy_create(model, list(frame.columns), frame, actor=actor, reason="benchmark")
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    objs = [model(**row) for row in rows]
    return [obj.pk for obj in audited_bulk_create(objs, actor=actor, reason="benchmark", batch_size=2000)]


class Command(BaseCommand):
    help = "Benchmark the KRI engine on clindata (when imported) and on a generated study (rolled back)."

    def add_arguments(self, parser):
        parser.add_argument("--sites", type=int, default=2000)
        parser.add_argument("--subjects", type=int, default=100_000)
        parser.add_argument("--study", default=CLINDATA, help="protocol id of an imported study to measure too "
                                                              "(default clindata's; empty to skip)")

    def handle(self, *args, sites: int, subjects: int, study: str, **options):
        actor = system_account("system.bench")
        existing = Study.objects.filter(protocol_id=study).first() if study else None
        if existing is not None:
            self.stdout.write(json.dumps(self._measure_study(existing, actor)))
        self.stdout.write(json.dumps(self._measure_generated(sites, subjects, actor)))

    def _measure_study(self, study: Study, actor) -> dict:
        snapshot = datetime.date(2018, 1, 1) if study.protocol_id == CLINDATA else timezone.now().date()
        result = {"bench": "kri", "study": study.protocol_id, "sites": Site.objects.filter(study=study).count(),
                  "subjects": Subject.objects.filter(study=study).count(),
                  "data_points": DataPoint.objects.filter(study=study).count()}
        with transaction.atomic():  # everything written is rolled back at the end
            result |= self._snapshot(study, snapshot, actor)
            ae = KriResult.objects.filter(snapshot__study=study, snapshot__snapshot_date=snapshot,
                                          kri_id="kri0001").values_list("group", "numerator", "denominator")
            frame = pd.DataFrame.from_records(list(ae), columns=["site", "n", "d"])
            transaction.set_rollback(True)
        return result | one_kri_seconds(frame)

    def _measure_generated(self, sites: int, subjects: int, actor) -> dict:
        rng = np.random.default_rng(7)
        site_of = rng.integers(0, sites, subjects)
        days = rng.integers(20, 900, subjects).astype("float64")
        aes = rng.poisson(days * rng.gamma(20, 0.004 / 20, sites)[site_of])
        result = {"bench": "kri", "sites": sites, "subjects": subjects}
        frame = pd.DataFrame({"site": pd.Series(site_of).map(lambda i: f"{i:05d}"), "n": aes, "d": days})
        result |= one_kri_seconds(frame)
        with transaction.atomic():  # everything written is rolled back at the end
            started = time.perf_counter()
            study, counts = self._generate(rng, site_of, days, aes, sites, actor)
            counts["setup_seconds"] = round(time.perf_counter() - started, 1)
            result |= self._snapshot(study, SNAPSHOT, actor) | counts
            transaction.set_rollback(True)
        return {k: result[k] for k in ("bench", "sites", "subjects", "seconds", "one_kri_compute_seconds")} | result

    @staticmethod
    def _snapshot(study: Study, snapshot: datetime.date, actor) -> dict:
        started = time.perf_counter()
        stored = kri_snapshot_compute(study=study, snapshot_date=snapshot, actor=actor)
        seconds = time.perf_counter() - started
        return {"seconds": round(seconds, 3), "kris": KriDefinition.objects.filter(study=study, active=True).count(),
                "kris_not_computed": len({p["kri"] for p in stored.problems if "left out" not in p["problem"]}),
                "results": KriResult.objects.filter(snapshot=stored).count()}

    def _generate(self, rng, site_of, days, aes, n_sites: int, actor) -> tuple[Study, dict]:
        """A study shaped like a real one, written through the audited bulk paths."""
        n = len(site_of)
        study = Study(protocol_id=f"BENCH-KRI-{time.time_ns()}", name="KRI benchmark", status=Study.Status.ACTIVE)
        study._history_user, study._change_reason = actor, "benchmark"
        study.save()
        site_ids = np.asarray(_write(Site, pd.DataFrame({
            "study_id": study.pk, "number": [f"{i:05d}" for i in range(n_sites)],
            "name": [f"Site {i}" for i in range(n_sites)],
            "country": [COUNTRIES[i % len(COUNTRIES)] for i in range(n_sites)]}), actor=actor))
        status = rng.choice(["enrolled", "completed", "discontinued", "screen_failed"], n, p=[0.6, 0.25, 0.07, 0.08])
        enrolment = pd.Timestamp(SNAPSHOT) - pd.to_timedelta(days - 1, unit="D")
        subject_ids = np.asarray(_write(Subject, pd.DataFrame({
            "study_id": study.pk, "site_id": site_ids[site_of], "subject_id": [f"B{i:07d}" for i in range(n)],
            "status": status, "enrolment_date": enrolment.date}), actor=actor))
        definition = VisitDefinition(study=study, oid="LAST", name="Last visit")
        form_ae, form_lb = (FormDefinition(study=study, oid=oid, name=oid) for oid in ("AE", "LB"))
        audited_bulk_create([definition], actor=actor, reason="benchmark")
        audited_bulk_create([form_ae, form_lb], actor=actor, reason="benchmark")
        items = {oid: ItemDefinition(study=study, form=form_lb if oid.startswith("LB") else form_ae, oid=oid,
                                     label=oid, data_type="date" if oid.endswith("DAT") else "text")
                 for oid in ("AE.AETERM", "AE.AESER", "AE.AESTDAT", "LB.ALT")}
        audited_bulk_create(list(items.values()), actor=actor, reason="benchmark")
        visit_ids = np.asarray(_write(SubjectVisit, pd.DataFrame({
            "study_id": study.pk, "subject_id": subject_ids, "definition_id": definition.pk,
            "actual_date": pd.Series(pd.Timestamp(SNAPSHOT), index=range(n)).dt.date}), actor=actor))
        points = self._data_points(rng, study, subject_ids, visit_ids, days, aes, items, form_ae, form_lb)
        _write(DataPoint, points, actor=actor)
        per_subject = rng.poisson(aes / 3)
        owner = np.repeat(np.arange(n), per_subject)
        deviations = pd.DataFrame({"study_id": study.pk, "site_id": site_ids[site_of[owner]],
                                   "subject_id": subject_ids[owner], "description": "bench",
                                   "importance": np.where(rng.random(len(owner)) < 0.2, "important", "non_important"),
                                   "occurred_on": SNAPSHOT, "created_at": timezone.now()})
        _write(Deviation, deviations, actor=actor)
        owner = np.repeat(np.arange(n), rng.poisson(0.4, n))
        created = pd.Timestamp(SNAPSHOT, tz="UTC") - pd.to_timedelta(rng.integers(1, 400, len(owner)), unit="D")
        queries = pd.DataFrame({"study_id": study.pk, "site_id": site_ids[site_of[owner]],
                                "subject_id": subject_ids[owner], "text": "bench",
                                "state": rng.choice(["open", "answered", "closed"], len(owner)),
                                "created_at": created,
                                "closed_at": created + pd.to_timedelta(rng.integers(0, 60, len(owner)), unit="D")})
        _write(Query, queries, actor=actor)
        return study, {"data_points": len(points), "deviations": len(deviations), "queries": len(queries)}

    @staticmethod
    def _data_points(rng, study, subject_ids, visit_ids, days, aes, items, form_ae, form_lb) -> pd.DataFrame:
        """Each AE as its three data points (term, seriousness, onset) and one graded lab per subject."""
        owner = np.repeat(np.arange(len(subject_ids)), aes)
        repeat = (pd.Series(owner).groupby(owner).cumcount() + 1).astype(str).to_numpy()
        onset = pd.Timestamp(SNAPSHOT) - pd.to_timedelta((rng.random(len(owner)) * days[owner]).astype(int), unit="D")
        serious = np.where(rng.random(len(owner)) < 0.05, "Y", "N")
        parts = []
        for oid, raw, day in (("AE.AETERM", "Headache", None), ("AE.AESER", serious, None),
                              ("AE.AESTDAT", onset.strftime("%Y-%m-%d"), onset.date)):
            parts.append(pd.DataFrame({"subject_id": subject_ids[owner], "visit_id": visit_ids[owner],
                                       "form_id": form_ae.pk, "item_id": items[oid].pk, "repeat_key": repeat,
                                       "raw_value": raw, "value_date": day}))
        parts.append(pd.DataFrame({"subject_id": subject_ids, "visit_id": visit_ids, "form_id": form_lb.pk,
                                   "item_id": items["LB.ALT"].pk, "repeat_key": "1", "raw_value": "30",
                                   "toxicity_grade": pd.array(rng.choice([0, 1, 2, 3], len(subject_ids),
                                                                         p=[0.8, 0.12, 0.05, 0.03]), dtype="Int64"),
                                   "collected_at": pd.Timestamp(SNAPSHOT, tz="UTC")}))
        frame = pd.concat(parts, ignore_index=True)
        frame.insert(0, "study_id", study.pk)
        frame["toxicity_grade"] = frame["toxicity_grade"].astype("Int64")
        return frame
