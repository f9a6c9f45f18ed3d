"""Reads of risk-based monitoring, scoped by the user's access at the source. Risk is read by the
study-wide roles and by CRAs (for the sites granted to them); site staff read none of it: they do
not rank sites, must not read other sites' figures even pooled, and must not know which of their
data points are selected for SDV. Country and study-level rows only through a study-wide role."""

from django.db.models import Q, QuerySet

from sdv.models import KriDefinition, KriResult, KriSnapshot, SdvPlan, SiteRiskAssessment
from studies.models import STUDY_WIDE_ROLES, Role, StudyMembership
from studies.selectors import site_list, study_list, study_roles

RISK_READERS = frozenset({*STUDY_WIDE_ROLES, Role.CRA})
RISK_WRITERS = frozenset({Role.SPONSOR, Role.DATA_MANAGER})


def _studies_where(user, roles):
    """The studies where the user holds one of `roles` (every study for a superuser)."""
    if not user.is_authenticated:
        return StudyMembership.objects.none().values("study_id")
    if user.is_superuser:
        return study_list(user=user).values("pk")
    return StudyMembership.objects.filter(user=user, is_active=True, role__in=roles).values("study_id")


def kri_result_list(*, user) -> QuerySet[KriResult]:
    return KriResult.objects.filter(
        Q(site__in=site_list(user=user), snapshot__study__in=_studies_where(user, RISK_READERS))
        | Q(site__isnull=True, snapshot__study__in=_studies_where(user, STUDY_WIDE_ROLES))
    ).select_related("snapshot")


def kri_snapshot_list(*, user) -> QuerySet[KriSnapshot]:
    """Snapshots carry the study-level QTL figures: the readers of the risk dashboard (which shows them)."""
    return KriSnapshot.objects.filter(study__in=_studies_where(user, RISK_READERS))


def kri_definition_list(*, user) -> QuerySet[KriDefinition]:
    return KriDefinition.objects.filter(study__in=study_list(user=user))


def site_risk_list(*, user) -> QuerySet[SiteRiskAssessment]:
    return SiteRiskAssessment.objects.filter(
        site__in=site_list(user=user), site__study__in=_studies_where(user, RISK_READERS)
    ).select_related("site", "snapshot")


def sdv_plan_list(*, user) -> QuerySet[SdvPlan]:
    return SdvPlan.objects.filter(site__in=site_list(user=user),
                                  site__study__in=_studies_where(user, RISK_READERS)).select_related("site")


def risk_readable(*, user, study) -> bool:
    """Whether the user may read the study's risk dashboard: study-wide roles and CRAs (for the
    sites granted to them, as site_list scopes every row). Site staff do not rank sites."""
    return user.is_superuser or bool(study_roles(user=user, study=study) & RISK_READERS)


def risk_writable(*, user, study) -> bool:
    """Whether the user may change the study's KRI definitions and risk configuration."""
    return user.is_superuser or bool(study_roles(user=user, study=study) & RISK_WRITERS)


def kri_snapshot_latest(*, study, snapshot_date=None) -> KriSnapshot | None:
    snapshots = KriSnapshot.objects.filter(study=study)
    if snapshot_date:
        snapshots = snapshots.filter(snapshot_date=snapshot_date)
    return snapshots.order_by("-snapshot_date").first()


def site_kri_history(*, user, site, kri_id: str | None = None) -> QuerySet[KriResult]:
    """A site's KRI results over every snapshot, oldest first."""
    rows = kri_result_list(user=user).filter(site=site)
    if kri_id:
        rows = rows.filter(kri_id=kri_id)
    return rows.order_by("kri_id", "snapshot__snapshot_date")


def site_risk_history(*, user, site) -> QuerySet[SiteRiskAssessment]:
    return site_risk_list(user=user).filter(site=site).order_by("snapshot__snapshot_date")


def kri_flag_changes(*, user, snapshot) -> QuerySet[KriResult]:
    """Results of the snapshot whose flag differs from the previous snapshot's."""
    return kri_result_list(user=user).filter(snapshot=snapshot, flag_changed=True).order_by("kri_id", "group")


def kri_flagged_in_a_row(*, user, snapshot, at_least: int = 2) -> QuerySet[KriResult]:
    """Results of the snapshot flagged in at least `at_least` consecutive snapshots."""
    return (kri_result_list(user=user).filter(snapshot=snapshot, consecutive_flagged__gte=at_least)
            .order_by("-consecutive_flagged", "kri_id", "group"))
