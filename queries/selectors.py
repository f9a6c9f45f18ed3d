"""Reads of queries, scoped by the user's access at the source."""

from django.db.models import Q, QuerySet

from queries.models import Query, QueryMessage
from studies.models import Role, StudyMembership
from studies.selectors import site_list

# Candidate queries are drafts not yet released to the site: data managers review them; the
# sponsor and auditors may read them; site staff, CRAs and medical monitors never see them.
CANDIDATE_READERS = (Role.DATA_MANAGER, Role.SPONSOR, Role.AUDITOR)


def query_list(*, user) -> QuerySet[Query]:
    queries = Query.objects.filter(site__in=site_list(user=user)).select_related("site", "subject", "data_point")
    if user.is_superuser:
        return queries
    reviewer_studies = StudyMembership.objects.filter(
        user=user, is_active=True, role__in=CANDIDATE_READERS
    ).values("study_id")
    return queries.filter(~Q(state=Query.State.CANDIDATE) | Q(study_id__in=reviewer_studies))


def query_message_list(*, user, query: Query) -> QuerySet[QueryMessage]:
    return QueryMessage.objects.filter(query__in=query_list(user=user).filter(pk=query.pk)).select_related("author")
