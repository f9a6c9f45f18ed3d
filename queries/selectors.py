"""Reads of queries, scoped by the user's access at the source."""

import pandas as pd
from django.db.models import Count, Q, QuerySet

from queries.metrics import query_frame
from queries.models import Discrepancy, EditCheck, Query, QueryMessage
from studies.models import Role, Study, StudyMembership, Subject
from studies.selectors import site_list, study_list, study_user_can_at_a_site

# Candidate queries are drafts not yet released to the site: data managers review them; the
# sponsor and auditors may read them; site staff, CRAs and medical monitors never see them.
CANDIDATE_READERS = (Role.DATA_MANAGER, Role.SPONSOR, Role.AUDITOR)


def query_list(*, user) -> QuerySet[Query]:
    if not user.is_authenticated:
        return Query.objects.none()
    queries = Query.objects.filter(site__in=site_list(user=user)).select_related("site", "subject", "data_point")
    if user.is_superuser:
        return queries
    reviewer_studies = StudyMembership.objects.filter(
        user=user, is_active=True, role__in=CANDIDATE_READERS
    ).values("study_id")
    return queries.filter(~Q(state=Query.State.CANDIDATE) | Q(study_id__in=reviewer_studies))


def query_message_list(*, user, query: Query) -> QuerySet[QueryMessage]:
    return QueryMessage.objects.filter(query__in=query_list(user=user).filter(pk=query.pk)).select_related("author")


# Findings of the analyzer are internal to the study team: data managers and sponsors review
# them, medical monitors take the medical-review list, auditors read; CRAs see their sites'.
DISCREPANCY_READERS = (Role.DATA_MANAGER, Role.SPONSOR, Role.AUDITOR, Role.MEDICAL_MONITOR)


def _reader_scope(user) -> Q:
    memberships = StudyMembership.objects.filter(user=user, is_active=True)
    wide = memberships.filter(role__in=DISCREPANCY_READERS).values("study_id")
    cra_studies = memberships.filter(role=Role.CRA).values("study_id")
    return Q(study_id__in=wide) | Q(site__in=site_list(user=user).filter(study_id__in=cra_studies))


def study_for_review(*, user, pk: int) -> Study | None:
    """The study, if the user may review its discrepancies through any of their roles there (a
    CRA too: what they then see is scoped to their sites); None otherwise."""
    study = study_list(user=user).filter(pk=pk).first()
    if study is None or not study_user_can_at_a_site(user=user, capability="review_discrepancies", study=study):
        return None
    return study


def discrepancy_list(*, user) -> QuerySet[Discrepancy]:
    rows = Discrepancy.objects.select_related("site", "subject", "visit__definition", "item", "edit_check")
    if user.is_superuser:
        return rows
    if not user.is_authenticated:
        return rows.none()
    return rows.filter(_reader_scope(user))


def edit_check_list(*, user) -> QuerySet[EditCheck]:
    checks = EditCheck.objects.select_related("item", "study")
    if user.is_superuser:
        return checks
    if not user.is_authenticated:
        return checks.none()
    memberships = StudyMembership.objects.filter(user=user, is_active=True)
    return checks.filter(study_id__in=memberships.filter(role__in=(*DISCREPANCY_READERS, Role.CRA)).values("study_id"))


def rule_statistics(*, user, study: Study) -> list[dict]:
    """Per site (of the user's) and rule, from the study's whole query history (imported queries
    included, under the EDC's marking group, e.g. "EDC: System Query"): queries, query rate (per
    subject at the site), closed, confirmed correct, confirmation rate, median days to answer
    (from queries.metrics.query_frame: one definition of a query's start and answer)."""
    frame = query_frame(query_list(user=user).filter(study=study)).rename(columns={"site__number": "site"})
    if frame.empty:
        return []
    # Days to answer from the query's start, as the metrics count them; a query no rule raised
    # is counted by origin and marking group
    no_rule = frame["rule_code"] == ""
    frame["rule"] = frame["rule"].where(~no_rule, "(" + frame["origin"] + ": " + frame["recipient"] + ")")
    frame["closed"] = frame["state"] == Query.State.CLOSED
    frame["confirmed"] = frame["closed"] & (frame["resolution"] == Query.Resolution.CONFIRMED_CORRECT)
    frame["resolved_known"] = frame["closed"] & (frame["resolution"] != "")
    subjects = dict(Subject.objects.filter(study=study).values("site__number").annotate(n=Count("id"))
                    .values_list("site__number", "n"))
    grouped = frame.groupby(["site", "rule"]).agg(
        queries=("state", "size"), closed=("closed", "sum"), confirmed=("confirmed", "sum"),
        resolution_known=("resolved_known", "sum"), median_days_to_answer=("days_to_answer", "median"))
    out = []
    for (site, rule), row in grouped.iterrows():
        known = int(row["resolution_known"])
        out.append({"site": site, "rule": rule, "queries": int(row["queries"]),
                    "query_rate": round(row["queries"] / subjects[site], 3) if subjects.get(site) else None,
                    "closed": int(row["closed"]), "confirmed_correct": int(row["confirmed"]),
                    "confirmation_rate": round(row["confirmed"] / known, 3) if known else None,
                    "median_days_to_answer": None if pd.isna(row["median_days_to_answer"])
                    else round(float(row["median_days_to_answer"]), 1)})
    return out
