"""Reads of source verification, scoped at the source. Verdicts and SDV progress are read like the
SDV plan (sdv.selectors): by the study-wide roles and by CRAs for their sites; site staff, who must
not know which of their values are selected for SDV, read none of it (they see their documents)."""

from django.db.models import Count, Q, QuerySet

from sdv.models import SourceVerification
from sdv.selectors import RISK_READERS, _studies_where
from studies.models import DataPoint
from studies.selectors import data_point_list, site_list


def source_verification_list(*, user) -> QuerySet[SourceVerification]:
    return SourceVerification.objects.filter(
        site__in=site_list(user=user), study__in=_studies_where(user, RISK_READERS)
    ).select_related("subject", "visit__definition", "item", "data_point", "verified_by", "document", "site")


def sdv_data_points(*, user) -> QuerySet[DataPoint]:
    """The data points whose SDV state the user may read (the SDV readers' scope)."""
    return data_point_list(user=user).filter(study__in=_studies_where(user, RISK_READERS))


def sdv_progress(points: QuerySet[DataPoint], *, by: list[str]) -> list[dict]:
    """Items verified / planned, grouped `by` (e.g. ["subject__site"], ["visit"], ["subject"]).
    Planned: every value the SDV plan (or the study set-up) asks to verify, i.e. not "not required"."""
    return list(points.exclude(sdv_state=DataPoint.SdvState.NOT_REQUIRED).order_by().values(*by).annotate(
        planned=Count("pk"),
        verified=Count("pk", filter=Q(sdv_state=DataPoint.SdvState.VERIFIED)),
        discrepancy=Count("pk", filter=Q(sdv_state=DataPoint.SdvState.DISCREPANCY)),
    ))


def progress_totals(rows: list[dict]) -> dict:
    planned = sum(r["planned"] for r in rows)
    verified = sum(r["verified"] for r in rows)
    return {"planned": planned, "verified": verified, "discrepancy": sum(r["discrepancy"] for r in rows),
            "percent": round(100 * verified / planned) if planned else None}
