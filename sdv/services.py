"""Writes of risk-based monitoring: KRI definitions and configuration, KRI snapshots, site risk
assessments and SDV plans. One service per action, keyword-only, atomic, audited."""

import datetime
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import structlog
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from sdv import explain
from sdv.kri import KriInputError, KriMethod, binomial_interval, kri_from_subjects, site_risk_score
from sdv.kri_inputs import (
    POPULATIONS,
    check_measure_spec,
    measure_available,
    subject_frame,
    subject_measure,
    subject_measures,
)
from sdv.models import (
    KriDefinition,
    KriResult,
    KriSnapshot,
    RiskConfig,
    SiteRiskAssessment,
)
from studies.audit import audited_bulk_create, audited_bulk_update, audited_copy_create, set_audit
from studies.models import Site, Study

logger = structlog.get_logger(__name__)

GSM_DEFINITIONS = Path(__file__).parent / "data" / "gsm_kri_definitions.json"
EDITABLE = ("name", "numerator_label", "denominator_label", "numerator", "denominator", "population", "analysis",
            "score_of", "thresholds", "flags", "weights", "accrual_threshold", "accrual_metric", "active")


def kri_method(definition: KriDefinition) -> KriMethod:
    return KriMethod(analysis=definition.analysis, thresholds=tuple(definition.thresholds),
                     flags=tuple(definition.flags or ()), weights=tuple(definition.weights or ()),
                     accrual_threshold=definition.accrual_threshold,
                     accrual_metric=definition.accrual_metric or None, score_of=definition.score_of)


def gsm_definitions() -> list[dict]:
    return json.loads(GSM_DEFINITIONS.read_text())["definitions"]


@transaction.atomic
def kri_definitions_seed(*, study: Study, actor, reason: str = "Seeded from gsm's KRI definitions") -> int:
    """Give the study gsm's 15 site KRIs, their country twins and three study-level KRIs (gsm
    1.8.4's two quality tolerance limits and the screen failure rate); those it has are left alone."""
    have = set(KriDefinition.objects.filter(study=study).values_list("kri_id", flat=True))
    new = [KriDefinition(study=study, **row) for row in gsm_definitions() if row["kri_id"] not in have]
    for definition in new:
        definition.accrual_metric = definition.accrual_metric or ""
    audited_bulk_create(new, actor=actor, reason=reason)
    return len(new)


@transaction.atomic
def kri_definition_update(*, definition: KriDefinition, actor, reason: str, **changes) -> KriDefinition:
    """Change a definition: a new version, checked as the engine will read it, with a reason."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValidationError({"non_field_errors": f"not editable: {', '.join(sorted(unknown))}"})
    definition = KriDefinition.objects.select_for_update().get(pk=definition.pk)
    for name, value in changes.items():
        setattr(definition, name, value)
    if not (reason or "").strip():
        raise ValidationError({"reason": "A reason for change is required."})
    try:
        kri_method(definition)
        for spec in (definition.numerator, definition.denominator):
            check_measure_spec(spec)
        if definition.population not in POPULATIONS:
            raise KriInputError(f"unknown population {definition.population!r}; one of {', '.join(POPULATIONS)}")
    except KriInputError as exc:
        raise ValidationError({"non_field_errors": str(exc)}) from exc
    definition.full_clean()
    definition.version += 1
    set_audit(definition, actor=actor, reason=reason)
    definition.save()
    return definition


def risk_config_get(*, study: Study) -> RiskConfig:
    """The study's configuration, or the unsaved defaults when it has none."""
    return RiskConfig.objects.filter(study=study).first() or RiskConfig(study=study)


CONFIGURABLE = ("medium_from", "high_from", "sdv_share", "first_subjects_fully", "qtls", "critical_rules")


@transaction.atomic
def risk_config_set(*, study: Study, actor, reason: str, **values) -> RiskConfig:
    """Change the study's risk configuration (created with the defaults on first change), checked,
    versioned and audited with the reason. SDV plans follow at the next assessment."""
    unknown = set(values) - set(CONFIGURABLE)
    if unknown:
        raise ValidationError({"non_field_errors": f"not configurable: {', '.join(sorted(unknown))}"})
    config = RiskConfig.objects.select_for_update().filter(study=study).first() or RiskConfig(study=study)
    for name, value in values.items():
        setattr(config, name, value)
    config.full_clean()
    if config.pk:
        config.version += 1
    set_audit(config, actor=actor, reason=reason)
    config.save()
    return config


# --- Computing a snapshot ----------------------------------------------------------------------------
def _group_codes(subjects, level: str, study: Study):
    if level == KriDefinition.Level.SITE:
        keys = subjects["site"].astype(str)
    elif level == KriDefinition.Level.COUNTRY:
        keys = subjects["country"].astype(str)
    else:
        keys = np.full(len(subjects), study.protocol_id, dtype=object)
    codes, groups = pd.factorize(pd.Series(keys, index=subjects.index), sort=True)  # far faster than np.unique
    return codes, np.asarray(groups, dtype=object)


def _subjects(study: Study, population: str, snapshot: datetime.date, cache: dict):
    key = ("subjects", population)
    if key not in cache:
        cache[key] = subject_frame(study=study, snapshot=snapshot, population=population)
    return cache[key]


def _measures_prefetch(*, study: Study, definitions, snapshot: datetime.date, cache: dict) -> None:
    """Every numerator and denominator of the KRIs at once, per population (the counts over data
    points in one scan). Should one of them be unreadable, nothing is prefetched for its population
    and each KRI is computed on its own, so the problem is reported against the KRI it belongs to."""
    by_population = {}
    for definition in definitions:
        for spec in (definition.numerator, definition.denominator):
            if measure_available(spec):  # the others are reported when their KRI is computed
                by_population.setdefault(definition.population, {})[json.dumps(spec, sort_keys=True)] = spec
    for population, specs in by_population.items():
        try:
            subjects = _subjects(study, population, snapshot, cache)
            if subjects.empty:
                continue
            values = subject_measures(study=study, specs=list(specs.values()), subjects=subjects, snapshot=snapshot)
        except (KriInputError, ValueError, TypeError):
            continue
        for key, value in zip(specs, values, strict=True):
            cache[(population, key)] = value


def kri_compute(*, study: Study, definition: KriDefinition, snapshot: datetime.date, cache: dict | None = None):
    """One KRI for every group of its level, from the database to flags (nothing stored)."""
    cache = {} if cache is None else cache
    subjects = _subjects(study, definition.population, snapshot, cache)
    if subjects.empty:
        raise KriInputError("no subjects")
    values = []
    for spec in (definition.numerator, definition.denominator):
        spec_key = (definition.population, json.dumps(spec, sort_keys=True))
        if spec_key not in cache:
            cache[spec_key] = subject_measure(study=study, spec=spec, subjects=subjects, snapshot=snapshot)
        values.append(cache[spec_key])
    level_key = ("groups", definition.population, definition.level)
    if level_key not in cache:
        cache[level_key] = _group_codes(subjects, definition.level, study)
    codes, groups = cache[level_key]
    return kri_from_subjects(codes=codes, groups=groups, numerator=values[0], denominator=values[1],
                             method=kri_method(definition))


@transaction.atomic
def kri_snapshot_compute(*, study: Study, snapshot_date: datetime.date, actor) -> KriSnapshot:
    """Compute every active KRI of the study as of `snapshot_date` and store the results (a
    recomputation of the same date replaces them), then assess each site's risk. A KRI that cannot
    be computed is recorded in `problems` and the others go on."""
    started = time.perf_counter()
    if not KriDefinition.objects.filter(study=study).exists():
        kri_definitions_seed(study=study, actor=actor)
    snapshot, _ = KriSnapshot.objects.select_for_update().get_or_create(study=study, snapshot_date=snapshot_date)
    snapshot.results.all().delete()
    frames, problems, cache = [], [], {}
    definitions = list(KriDefinition.objects.filter(study=study, active=True).order_by("kri_id"))
    _measures_prefetch(study=study, definitions=definitions, snapshot=snapshot_date, cache=cache)
    for definition in definitions:
        try:
            result = kri_compute(study=study, definition=definition, snapshot=snapshot_date, cache=cache)
        except (KriInputError, ValueError, TypeError) as exc:
            # A definition edited into something the engine cannot read (a wrong type in its JSON)
            # is reported like any other bad input; the other KRIs of the snapshot go on.
            problem = str(exc) if isinstance(exc, KriInputError) else f"cannot be computed: {exc}"
            problems.append({"kri": definition.kri_id, "problem": problem})
            logger.info("kri_not_computed", study_id=study.pk, kri=definition.kri_id, problem=problem)
            continue
        if result.dropped:
            problems.append({"kri": definition.kri_id, "problem": f"{len(result.dropped)} group(s) with a zero "
                             f"denominator left out: {', '.join(result.dropped[:10])}"})
        frames.append(_result_frame(definition, result))
    results = _with_sites_and_trend(snapshot, pd.concat(frames, ignore_index=True) if frames else _empty_results())
    _results_store(snapshot, results)
    snapshot.problems, snapshot.computed_at = problems, timezone.now()
    snapshot.qtl = _qtl_checks(study, results)
    site_risk_assess(snapshot=snapshot, actor=actor, results=results)
    snapshot.seconds = time.perf_counter() - started
    snapshot.save()
    return snapshot


RESULT_COLUMNS = ["kri_id", "definition_version", "level", "group", "numerator", "denominator", "metric", "score",
                  "flag", "weight", "overall", "factor"]


def _empty_results() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="float64" if name not in ("kri_id", "level", "group") else object)
                         for name in RESULT_COLUMNS})


def _result_frame(definition: KriDefinition, result) -> pd.DataFrame:
    """One KRI's groups as rows (NaN where masked), columns as KriResult's."""
    return pd.DataFrame({"kri_id": definition.kri_id, "definition_version": definition.version,
                         "level": definition.level, "group": result.groups.astype(str),
                         "numerator": result.numerator, "denominator": result.denominator, "metric": result.metric,
                         "score": result.score, "flag": result.flag, "weight": result.weight,
                         "overall": result.overall, "factor": result.factor})


def _with_sites_and_trend(snapshot: KriSnapshot, results: pd.DataFrame) -> pd.DataFrame:
    """The site of each site-level row, each row's flag in the study's previous snapshot and its run
    of flagged snapshots (a masked or absent group counts as not flagged)."""
    sites = dict(Site.objects.filter(study=snapshot.study).values_list("number", "pk"))
    site_level = results["level"] == KriDefinition.Level.SITE
    results["site_id"] = results["group"].map(sites).where(site_level).astype("Int64")
    earlier = _previous_snapshot(snapshot)
    key = ["kri_id", "level", "group"]
    columns = [*key, "flag", "consecutive_flagged"]
    before = pd.DataFrame.from_records(list(earlier.results.values_list(*columns)) if earlier else [], columns=columns)
    before = before.rename(columns={"flag": "previous_flag", "consecutive_flagged": "run"})
    results = results.merge(before.astype({"previous_flag": "float64", "run": "float64"}), on=key, how="left")
    flagged = results["flag"].fillna(0) != 0
    results["flag_changed"] = (earlier is not None) & (results["previous_flag"].fillna(0) != results["flag"].fillna(0))
    results["consecutive_flagged"] = np.where(flagged, results["run"].fillna(0) + 1, 0).astype("int64")
    return results.drop(columns=["run"])


def _results_store(snapshot: KriSnapshot, results: pd.DataFrame) -> None:
    """KRI results are derived, recomputable data (see the model): plain rows, by COPY on
    PostgreSQL (22,000 rows of a 2,000-site study in a fraction of a second)."""
    frame = results.assign(snapshot_id=snapshot.pk)
    for name in ("flag", "previous_flag"):
        frame[name] = frame[name].astype("Int64")
    if connection.vendor == "postgresql":
        from studies.ingest.copy import copy_frame  # the project's COPY helper (ingest loads models)

        columns = {f.attname: f.column for f in KriResult._meta.concrete_fields if not f.primary_key}
        copy_frame(KriResult._meta.db_table, frame[list(columns)].rename(columns=columns))
        return
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    KriResult.objects.bulk_create([KriResult(**row) for row in rows], batch_size=5000)


def _qtl_checks(study: Study, results: pd.DataFrame) -> list[dict]:
    """Quality tolerance limits of study-level KRIs, as gsm 1.8.4's QTL workflows: the exact 95%
    binomial confidence interval of the proportion; "breached" when even its lower bound exceeds
    the limit, "above" when the estimate does but the interval still reaches the limit, else
    "within". Reported against the historical rate the limit was set from, when configured."""
    config = risk_config_get(study=study)
    study_rows = results[results["level"] == KriDefinition.Level.STUDY].set_index("kri_id")
    checks = []
    for qtl in config.qtls or []:
        if qtl.get("kri") not in study_rows.index:
            checks.append({**qtl, "status": "not computed"})
            continue
        row = study_rows.loc[qtl["kri"]]
        check = {**qtl, "metric": float(row["metric"]), "numerator": float(row["numerator"]),
                 "denominator": float(row["denominator"])}
        try:
            low, high = binomial_interval(row["numerator"], row["denominator"])
        except KriInputError as exc:  # not a proportion (a rate, or more events than subjects)
            checks.append({**check, "status": "not computed", "problem": str(exc)})
            continue
        limit = float(qtl["limit"])
        status = "breached" if low > limit else "above" if check["metric"] > limit else "within"
        check |= {"ci_low": low, "ci_high": high, "status": status}
        if qtl.get("historical"):
            check["ratio_to_historical"] = check["metric"] / float(qtl["historical"])
        checks.append(check)
    return checks


# --- Site risk -----------------------------------------------------------------------------------------
@transaction.atomic
def site_risk_assess(*, snapshot: KriSnapshot, actor, results: pd.DataFrame) -> list[SiteRiskAssessment]:
    """Score, tier and explain every site of the snapshot from its `results` (as kri_snapshot_compute
    builds them); publish `risk.changed` for each site whose tier moved since the previous snapshot
    (the SDV plans follow in their own step)."""
    study, config = snapshot.study, risk_config_get(study=snapshot.study)
    site_rows = results[results["level"] == KriDefinition.Level.SITE]
    definitions = {d.kri_id: d for d in KriDefinition.objects.filter(study=study, level=KriDefinition.Level.SITE)}
    weighted = sorted(k for k in set(site_rows.get("kri_id", [])) if definitions.get(k) and definitions[k].weights)
    sites = list(Site.objects.filter(study=study).order_by("number"))
    if weighted:
        table = (site_rows[site_rows["kri_id"].isin(weighted)].pivot_table(
            index="site_id", columns="kri_id", values="weight", aggfunc="first", dropna=False)
            .reindex(index=[s.pk for s in sites], columns=weighted))
        maxima = np.array([max(definitions[k].weights) for k in weighted], dtype="float64")
        scores = site_risk_score(table.to_numpy(dtype="float64"), maxima)
    else:
        scores = np.zeros(len(sites))
    flagged = _flagged_by_site(site_rows, definitions)
    previous = _previous_tiers(snapshot)
    existing = {a.site_id: a for a in snapshot.site_assessments.all()}
    assessments, changed = [], []
    for site, score in zip(sites, scores, strict=True):
        tier = config.tier_of(float(score))
        assessment = existing.get(site.pk) or SiteRiskAssessment(snapshot=snapshot, site=site)
        before = assessment.tier if assessment.pk else previous.get(site.pk, "")
        assessment.risk_score, assessment.tier = float(score), tier
        assessment.flagged = flagged.get(site.pk, [])
        assessment.previous_tier = previous.get(site.pk, "")
        assessment.explanation = explain.site_explanation(site=site, score=float(score), tier=tier,
                                                          flagged=assessment.flagged)
        assessments.append(assessment)
        if before != tier:
            changed.append((site, before, tier))
    reason = f"Site risk assessed from the KRI snapshot of {snapshot.snapshot_date}"
    stored = [a for a in assessments if a.pk is not None]
    _assessments_create([a for a in assessments if a.pk is None], actor=actor, reason=reason)
    # The same date recomputed (data corrected since): the stored assessments change, with history.
    audited_bulk_update(stored,
                        ["risk_score", "tier", "previous_tier", "flagged", "explanation"], actor=actor, reason=reason)
    # A first assessment is no change of tier: only moves between two snapshots are events.
    _risk_changed_publish(study, snapshot, [c for c in changed if c[1]])
    return assessments


def _assessments_create(assessments: list[SiteRiskAssessment], *, actor, reason: str) -> None:
    """New assessments with their history rows: by COPY on PostgreSQL (2,000 sites in a tenth of
    the time of bulk_create), else through the audited bulk_create."""
    if connection.vendor != "postgresql" or not assessments:
        audited_bulk_create(assessments, actor=actor, reason=reason, batch_size=2000)
        return
    columns = ["snapshot_id", "site_id", "risk_score", "tier", "previous_tier", "flagged", "explanation"]
    rows = [(a.snapshot_id, a.site_id, a.risk_score, a.tier, a.previous_tier, json.dumps(a.flagged), a.explanation)
            for a in assessments]
    audited_copy_create(SiteRiskAssessment, columns, rows, actor=actor, reason=reason)


def _flagged_by_site(site_rows: pd.DataFrame, definitions: dict) -> dict[int, list[dict]]:
    """The flagged (not 0, not masked) results of each site, for its explanation."""
    if not len(site_rows):
        return {}
    rows = site_rows[site_rows["flag"].fillna(0) != 0]
    by_site = {}
    for row in rows.itertuples(index=False):
        by_site.setdefault(int(row.site_id), []).append(row)
    return {site_id: explain.flagged_kris(rows, definitions) for site_id, rows in by_site.items()}


def _previous_snapshot(snapshot: KriSnapshot) -> KriSnapshot | None:
    return (KriSnapshot.objects.filter(study=snapshot.study, snapshot_date__lt=snapshot.snapshot_date)
            .order_by("-snapshot_date").first())


def _previous_tiers(snapshot: KriSnapshot) -> dict[int, str]:
    earlier = _previous_snapshot(snapshot)
    if earlier is None:
        return {}
    return dict(earlier.site_assessments.values_list("site_id", "tier"))


def _risk_changed_publish(study, snapshot, changes) -> None:
    from agents.events import event_publish  # the agents framework; imported late (it loads Celery tasks)

    for site, before, after in changes:
        event_publish(type="risk.changed", study_id=study.pk,
                      payload={"site_id": site.pk, "site": site.number, "from": before, "to": after,
                               "snapshot": snapshot.snapshot_date.isoformat()})
