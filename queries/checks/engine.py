"""One pass of the QueryAnalyzer over a study: evaluate the edit checks, grade what they find
(severity, category, confidence), match it against what earlier passes found, and raise queries.

- Full or incremental: a pass re-reads only the data changed since the previous pass (from the
  history tables), unless the checks changed or there was no previous pass. An unchanged study
  costs three indexed lookups.
- Deduplicated: a finding is a Discrepancy row per (check, key), kept across passes; a finding
  that is still there is recognised, not raised again; one that is gone is resolved. No new query
  while an unanswered or answered query exists for the same data point and rule; a finding whose
  query was closed as "data confirmed correct" stays quiet until its value changes.
- Graded: severity from the rule, the item's criticality and the size of the error (10x a limit
  suggests a unit error); confidence from the rule's determinism and from history (queries of that
  rule at that site closed as confirmed correct); below the study's threshold a finding is held
  back for data-manager review instead of going to the site. An abnormal but plausible lab value
  goes to medical review, never to the site.
- A rule that fails at run time is reported on the pass; the others still run, and what the
  failed rule found before is left as it was."""

import hashlib
import json
import logging
from collections import defaultdict
from datetime import date

import numpy as np
import pandas as pd
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from queries.checks.context import Context, changed_since
from queries.checks.evaluate import EVALUATORS, FINDING_COLUMNS
from queries.checks.rules import PROPERTIES, category_of, confidence_base
from queries.generator import candidate_policy_for, query_texts_for_findings
from queries.lifecycle import queries_auto_close
from queries.models import AnalyzerPass, Discrepancy, EditCheck, Query, QueryMessage
from queries.sla import query_due_date
from studies.audit import audited_bulk_create
from studies.ingest.copy import copy_frame, is_postgresql
from studies.models import Study, Subject

logger = logging.getLogger(__name__)
DEFAULT_THRESHOLD = 0.5
HISTORY_PRIOR = 3  # closed queries' worth of trust in the rule before its history counts
UNIT_ERROR_MAGNITUDE = 10
ACTIVE_QUERY_STATES = (Query.State.CANDIDATE, Query.State.OPEN, Query.State.ANSWERED)
SEVERITY_RANK = {Query.Severity.MINOR: 0, Query.Severity.MAJOR: 1, Query.Severity.CRITICAL: 2}


def checks_fingerprint(checks: list[EditCheck]) -> str:
    text = ",".join(f"{c.pk}:{c.version}" for c in sorted(checks, key=lambda c: c.pk))
    return hashlib.sha256(text.encode()).hexdigest()


def analyzer_pass(*, study: Study, actor, full: bool | None = None, threshold: float = DEFAULT_THRESHOLD,
                  today: date | None = None) -> AnalyzerPass:
    checks = list(EditCheck.objects.filter(study=study, active=True).select_related("item", "item__form"))
    fingerprint = checks_fingerprint(checks)
    previous = AnalyzerPass.objects.filter(study=study, finished_at__isnull=False).order_by("-started_at").first()
    if full is None:
        full = previous is None or previous.checks_fingerprint != fingerprint
    started = timezone.now()
    record = AnalyzerPass(study=study, full=full, checks_fingerprint=fingerprint, started_at=started)
    changed_points = changed_subjects = None
    if not full:
        changed_points, changed_subjects = changed_since(study, previous.started_at)
        if not changed_points and not changed_subjects:
            record.finished_at = timezone.now()
            record.counts = {"changed_data_points": 0}
            record.save()
            return record
    ctx = Context(study, today=today or timezone.localdate(), changed_points=changed_points,
                  changed_subjects=changed_subjects)
    found, failed = _evaluate(checks, ctx, record)
    by_id = {c.pk: c for c in checks}
    with transaction.atomic():
        # One pass at a time per study: a second one waits here and then sees this one's rows.
        Study.objects.select_for_update().filter(pk=study.pk).first()
        graded = _grade(found, by_id, ctx, threshold)
        counts = _store(graded, checks=[c for c in checks if c.pk not in failed], ctx=ctx, actor=actor, now=started)
        record.counts = {**counts, "checks": len(checks),
                         "data_points_checked": "all" if full else len(ctx.changed_points),
                         "subjects_rechecked": None if full else len(ctx.changed_subjects)}
        record.finished_at = timezone.now()
        record.save()
    logger.info("analyzer pass study=%s full=%s counts=%s errors=%s", study.pk, full, record.counts, len(record.errors))
    return record


def _evaluate(checks: list[EditCheck], ctx: Context, record: AnalyzerPass) -> tuple[pd.DataFrame, set[int]]:
    groups = defaultdict(list)
    for check in checks:
        groups[EVALUATORS[check.rule_type]].append(check)
    frames, failed = [], set()
    for evaluator, group in groups.items():
        try:
            frames.append(evaluator(group, ctx))
        except Exception:  # noqa: BLE001 (isolate the failing rule; the others must still run)
            for check in group:  # one at a time, to name the rule that fails
                try:
                    frames.append(evaluator([check], ctx))
                except Exception as error:  # noqa: BLE001
                    failed.add(check.pk)
                    record.errors.append({"check": check.code, "rule_type": check.rule_type,
                                          "error": f"{type(error).__name__}: {error}"[:500]})
                    logger.exception("edit check %s failed", check.code)
    frames = [f for f in frames if not f.empty]
    found = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FINDING_COLUMNS)
    return found, failed


def _history_factor(study: Study) -> dict[tuple[int, str], float]:
    """Per (site, rule): how far to trust the rule there, from its closed queries: each one
    closed as "data confirmed correct" (a false alarm) lowers it."""
    rows = (Query.objects.filter(study=study, state=Query.State.CLOSED).exclude(rule_code="")
            .values("site_id", "rule_code")
            .annotate(closed=Count("id"),
                      confirmed=Count("id", filter=Q(resolution=Query.Resolution.CONFIRMED_CORRECT))))
    return {(r["site_id"], r["rule_code"]): 1 - r["confirmed"] / (r["closed"] + HISTORY_PRIOR) for r in rows}


def _grade(found: pd.DataFrame, checks: dict[int, EditCheck], ctx: Context, threshold: float) -> pd.DataFrame:
    if found.empty:
        return found.assign(site_id=[], severity=[], category=[], confidence=[], disposition=[], rule_type=[])
    found = found.copy()
    found["check_id"] = found["check_id"].astype("int64")
    check_of = found["check_id"].map(checks)
    found["rule_type"] = check_of.map(lambda c: c.rule_type)
    # Subjects of the findings (visit-window findings carry no item): one query
    subjects = dict(Subject.objects.filter(pk__in=found["subject_id"].dropna().astype("int64").unique().tolist())
                    .values_list("pk", "site_id"))
    found["site_id"] = found["subject_id"].astype("int64").map(subjects)
    found["item_id"] = found["item_id"].where(found["item_id"].notna(), check_of.map(lambda c: c.item_id))
    magnitude = pd.to_numeric(found["magnitude"], errors="coerce").fillna(0).to_numpy()
    unit_error = pd.to_numeric(found["unit_factor"], errors="coerce").notna().to_numpy() | (
        magnitude >= UNIT_ERROR_MAGNITUDE)
    medical = found["medical"].fillna(False).astype(bool).to_numpy()
    critical_item = found["item_id"].map(lambda i: bool(i) and not pd.isna(i) and ctx.items[int(i)].critical)
    severity = np.array([c.severity or PROPERTIES[c.rule_type].severity for c in check_of], dtype=object)
    severity = np.where(critical_item.to_numpy(dtype=bool) | unit_error, Query.Severity.CRITICAL, severity)
    # A clinical signal: minor unless far outside its normal range
    severity = np.where(medical, np.where(magnitude >= 3, Query.Severity.MAJOR, Query.Severity.MINOR), severity)
    found["severity"] = severity
    found["category"] = np.where(medical, Query.Category.SAFETY, check_of.map(category_of))
    base = check_of.map(confidence_base).to_numpy(dtype=float)
    base = np.where(unit_error, np.maximum(base, 0.99), base)
    history = _history_factor(ctx.study)
    factor = [history.get((s, c.code), 1.0) for s, c in zip(found["site_id"], check_of, strict=True)]
    found["confidence"] = np.round(np.clip(base * np.array(factor), 0, 1), 4)
    found["disposition"] = np.where(medical, Discrepancy.Disposition.MEDICAL_REVIEW,
                                    np.where(found["confidence"] < threshold, Discrepancy.Disposition.HELD_BACK,
                                             Discrepancy.Disposition.QUERY))
    found["unit_factor"] = pd.to_numeric(found["unit_factor"], errors="coerce")
    return found.drop_duplicates(["check_id", "key"], keep="first")


def _stored(ctx: Context, checks: list[EditCheck]) -> pd.DataFrame:
    """What earlier passes found, for the checks that ran, within what this pass re-checked."""
    columns = ["id", "edit_check_id", "key", "status", "disposition", "observed", "query_id", "data_point_id",
               "subject_id"]
    rows = Discrepancy.objects.filter(edit_check__in=checks)
    if not ctx.full:
        local = [c.pk for c in checks if PROPERTIES[c.rule_type].row_local]
        rows = rows.filter(Q(edit_check_id__in=local, data_point_id__in=ctx.changed_points)
                           | (~Q(edit_check_id__in=local) & Q(subject_id__in=ctx.changed_subjects)))
    return pd.DataFrame.from_records(rows.values_list(*columns), columns=columns)


def _store(found: pd.DataFrame, *, checks: list[EditCheck], ctx: Context, actor, now) -> dict:
    """Match the findings with the stored discrepancies: insert the new, update the changed,
    resolve the gone; raise the queries. Returns the pass's counts."""
    ran = {c.pk for c in checks}
    found = found[found["check_id"].isin(ran)] if not found.empty else found
    stored = _stored(ctx, checks)
    stored = stored.rename(columns={"edit_check_id": "check_id", **{c: f"{c}_stored" for c in stored.columns
                                                                     if c not in ("edit_check_id", "key")}})
    merged = found.merge(stored, on=["check_id", "key"], how="outer", indicator=True)
    new = merged[merged["_merge"] == "left_only"]
    both = merged[merged["_merge"] == "both"]
    gone = merged[(merged["_merge"] == "right_only") & (merged["status_stored"] == Discrepancy.Status.OPEN)]
    checks_by_id = {c.pk: c for c in checks}

    # Still there: stays quiet when nothing changed. A value confirmed correct is not raised
    # again unless it changed; a resolved finding that is back is open again.
    queries = _query_states(both["query_id_stored"].dropna().astype("int64").tolist())
    confirmed = both["query_id_stored"].map(
        lambda q: not pd.isna(q) and queries.get(int(q)) == (Query.State.CLOSED, Query.Resolution.CONFIRMED_CORRECT))
    same_value = both["observed"] == both["observed_stored"]
    both = both.assign(disposition=np.where(confirmed.astype(bool) & same_value,
                                            Discrepancy.Disposition.CONFIRMED, both["disposition"]))
    changed = both[(both["status_stored"] != Discrepancy.Status.OPEN) | ~same_value
                   | (both["disposition"] != both["disposition_stored"])]
    # A query for what goes to the site and has no active query yet (a new finding, a changed
    # value after a closed query, a finding back after it was resolved)
    raise_for = pd.concat([new, changed])
    raise_for = raise_for[raise_for["disposition"] == Discrepancy.Disposition.QUERY]
    active = raise_for["query_id_stored"].map(
        lambda q: not pd.isna(q) and queries.get(int(q), ("",))[0] in ACTIVE_QUERY_STATES).astype(bool)
    query_ids = _queries_raise(raise_for[~active], checks_by_id, ctx, actor)

    inserted = _insert(new, query_ids, checks_by_id, now)
    updated = _update(changed, query_ids, checks_by_id, now)
    resolved = 0
    auto_closed = 0
    if not gone.empty:
        resolved = Discrepancy.objects.filter(pk__in=gone["id_stored"].astype("int64").tolist()).update(
            status=Discrepancy.Status.RESOLVED, resolved_at=now, changed_at=now)
        # A system query whose value was corrected and whose rule now passes closes itself
        gone_queries = gone["query_id_stored"].dropna().astype("int64").unique().tolist()
        if gone_queries:
            auto_closed = len(queries_auto_close(queries=Query.objects.filter(pk__in=gone_queries), actor=actor,
                                                 reason="QueryAnalyzer pass"))
    dispositions = found["disposition"].value_counts() if len(found) else pd.Series(dtype=int)
    counts = {"found": int(len(found)), "new": inserted, "changed": updated, "resolved": resolved,
              "queries_raised": len(query_ids.get("created", [])),
              "queries_auto_closed": auto_closed,
              "held_back": int(dispositions.get(Discrepancy.Disposition.HELD_BACK, 0)),
              "medical_review": int(dispositions.get(Discrepancy.Disposition.MEDICAL_REVIEW, 0))}
    if len(found):
        counts["by_rule_type"] = {k: int(v) for k, v in found["rule_type"].value_counts().items()}
    return counts


def _query_states(ids: list[int]) -> dict[int, tuple[str, str]]:
    return {pk: (state, resolution) for pk, state, resolution in
            Query.objects.filter(pk__in=ids).values_list("pk", "state", "resolution")}


def _queries_raise(rows: pd.DataFrame, checks: dict[int, EditCheck], ctx: Context, actor) -> dict:
    """A query per finding to raise, unless one is already active for the same data point (or
    subject, for findings without one) and rule: then the finding points at that one.

    The text comes from the QueryGenerator's templates in the site's language. A query starts as
    a Candidate for data-manager review, unless the study's policy releases its category at its
    confidence (then it is Open, with its question in the thread and an SLA due date); a text
    that fails the compliance check always waits for a person."""
    if rows.empty:
        return {}
    codes = {checks[int(c)].code for c in rows["check_id"]}
    active = Query.objects.filter(study=ctx.study, rule_code__in=codes, state__in=ACTIVE_QUERY_STATES)
    by_point = {(q.data_point_id, q.rule_code): q.pk for q in active if q.data_point_id}
    by_subject = {(q.subject_id, q.rule_code): q.pk for q in active if not q.data_point_id}
    mapping, new = {}, []
    for position, row in enumerate(rows.itertuples(index=False)):
        check = checks[int(row.check_id)]
        point = None if pd.isna(row.data_point_id) else int(row.data_point_id)
        existing = by_point.get((point, check.code)) if point else by_subject.get((int(row.subject_id), check.code))
        if existing:
            mapping[(row.check_id, row.key)] = existing
        else:
            new.append(position)
    rows = rows.iloc[new]
    if rows.empty:
        return mapping
    texts = query_texts_for_findings(study=ctx.study, findings=rows, checks=checks, items=ctx.items)
    policy = candidate_policy_for(study=ctx.study)
    to_create = []
    for row in rows.itertuples(index=False):  # the findings that raise a query: a few per pass
        check = checks[int(row.check_id)]
        written = texts[(int(row.check_id), row.key)]
        release = written.compliant and policy.allows_release(category=row.category, confidence=float(row.confidence))
        query = Query(
            study=ctx.study, site_id=int(row.site_id), subject_id=int(row.subject_id),
            data_point_id=None if pd.isna(row.data_point_id) else int(row.data_point_id),
            origin=Query.Origin.RULE, rule_code=check.code, category=row.category, severity=row.severity,
            state=Query.State.OPEN if release else Query.State.CANDIDATE, recipient=Query.Recipient.SITE,
            text=written.text, language=written.language, text_origin=written.text_origin,
            prompt_version=written.prompt_version, released_at=ctx.now if release else None, created_by=actor)
        if release:
            query.due_date = query_due_date(query=query, start=ctx.now)
        to_create.append((row, query))
    reason = "Raised by the QueryAnalyzer (edit check failed)"
    created = audited_bulk_create([q for _, q in to_create], actor=actor, reason=reason)
    if created and created[0].pk is None:  # databases that do not return ids from a bulk insert
        created = list(Query.objects.filter(study=ctx.study, created_by=actor).order_by("-pk")[:len(created)])[::-1]
    # A candidate's question enters the thread when it is released (queries.lifecycle)
    audited_bulk_create([QueryMessage(query=q, kind=QueryMessage.Kind.QUESTION, author=actor, text=q.text)
                         for q in created if q.state == Query.State.OPEN], actor=actor, reason=reason)
    for (row, _), query in zip(to_create, created, strict=True):
        mapping[(row.check_id, row.key)] = query.pk
    mapping["created"] = [q.pk for q in created]
    mapping["released"] = [q.pk for q in created if q.state == Query.State.OPEN]
    return mapping


def _values(rows: pd.DataFrame, query_ids: dict, checks: dict, now) -> list[dict]:
    out = []
    for row in rows.itertuples(index=False):
        check = checks[int(row.check_id)]
        params = {} if pd.isna(row.unit_factor) else {"unit_error_factor": float(row.unit_factor)}
        query = query_ids.get((row.check_id, row.key))
        if query is None and not pd.isna(getattr(row, "query_id_stored", np.nan)):
            query = int(row.query_id_stored)
        out.append({
            "study_id": check.study_id, "site_id": int(row.site_id), "subject_id": int(row.subject_id),
            "visit_id": None if pd.isna(row.visit_id) else int(row.visit_id),
            "item_id": None if pd.isna(row.item_id) else int(row.item_id),
            "data_point_id": None if pd.isna(row.data_point_id) else int(row.data_point_id),
            "edit_check_id": check.pk, "check_version": check.version, "key": row.key, "rule_type": check.rule_type,
            "category": row.category, "severity": row.severity, "confidence": float(row.confidence),
            "observed": str(row.observed or "")[:2000], "expected": str(row.expected or "")[:2000],
            "params": params, "status": Discrepancy.Status.OPEN, "disposition": row.disposition,
            "query_id": query, "changed_at": now,
        })
    return out


def _insert(rows: pd.DataFrame, query_ids: dict, checks: dict, now) -> int:
    if rows.empty:
        return 0
    values = _values(rows, query_ids, checks, now)
    if is_postgresql():
        # Derived rows, not audited (see Discrepancy): COPY, the first pass of a big study
        # finds tens of thousands (abnormal labs for medical review).
        frame = pd.DataFrame(values).assign(found_at=now, resolved_at=None)
        frame["params"] = frame["params"].map(lambda p: "{}" if not p else json.dumps(p))
        for column in ("visit_id", "item_id", "data_point_id", "query_id"):
            frame[column] = frame[column].astype("Int64")
        copy_frame(Discrepancy._meta.db_table, frame)
    else:
        Discrepancy.objects.bulk_create([Discrepancy(found_at=now, **v) for v in values], batch_size=2000)
    return len(values)


# What a pass may change on a stored discrepancy, with the SQL type of each value
_UPDATED = {"check_version": "integer", "severity": "varchar(8)", "category": "varchar(16)",
            "confidence": "double precision", "observed": "text", "expected": "text", "params": "jsonb",
            "status": "varchar(10)", "disposition": "varchar(16)", "query_id": "bigint", "visit_id": "bigint",
            "item_id": "bigint", "data_point_id": "bigint"}


def _update(rows: pd.DataFrame, query_ids: dict, checks: dict, now) -> int:
    """One UPDATE ... FROM (VALUES ...) per slice of rows: a full re-check after a rule change
    can touch thousands, and the ORM's bulk_update builds a CASE expression per field and row."""
    if rows.empty:
        return 0
    values = _values(rows, query_ids, checks, now)
    ids = [int(pk) for pk in rows["id_stored"]]
    postgresql = is_postgresql()
    table = connection.ops.quote_name(Discrepancy._meta.db_table)
    fields = list(_UPDATED)
    cast = (lambda f: f"CAST(%s AS {_UPDATED[f]})") if postgresql else (lambda f: "%s")
    row_sql = f"(CAST(%s AS bigint), {', '.join(cast(f) for f in fields)})" if postgresql else \
        f"(%s, {', '.join('%s' for _ in fields)})"
    assignments = ", ".join(f"{f} = v.{f}" for f in fields)
    updated = 0
    with connection.cursor() as cursor:
        for start in range(0, len(values), 500):
            chunk = list(zip(ids[start:start + 500], values[start:start + 500], strict=True))
            params = []
            for pk, value in chunk:
                params += [pk, *[json.dumps(value[f]) if f == "params" else value[f] for f in fields]]
            cursor.execute(
                f"WITH v(id, {', '.join(fields)}) AS (VALUES {', '.join([row_sql] * len(chunk))}) "
                f"UPDATE {table} SET {assignments}, changed_at = %s, resolved_at = NULL "
                f"FROM v WHERE {table}.id = v.id", [*params, now])
            updated += cursor.rowcount
    return updated
