"""Reads of deviations, scoped by the user's access at the source."""

from django.db.models import QuerySet

from deviations.models import Deviation
from studies.selectors import site_list


def deviation_list(*, user) -> QuerySet[Deviation]:
    return Deviation.objects.filter(site__in=site_list(user=user)).select_related("site", "subject")
