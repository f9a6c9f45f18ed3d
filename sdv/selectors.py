"""Reads of risk-based monitoring, scoped by the user's access at the source. Risk is read by the
study-wide roles and by CRAs (for the sites granted to them); site staff read none of it: they do
not rank sites, must not read other sites' figures even pooled, and must not know which of their
data points are selected for SDV. Country and study-level rows only through a study-wide role."""

from django.db.models import Q, QuerySet

from sdv.models import KriDefinition, KriResult, KriSnapshot, SdvPlan, SiteRiskAssessment
from studies.models import STUDY_WIDE_ROLES, Role, StudyMembership
from studies.selectors import site_list, study_list


def _study_wide_studies(user):
    if user.is_superuser:
        return study_list(user=user).values("pk")
    return StudyMembership.objects.filter(user=user, is_active=True, role__in=STUDY_WIDE_ROLES).values("study_id")


def _risk_reader_studies(user):
    if user.is_superuser:
        return study_list(user=user).values("pk")
    return StudyMembership.objects.filter(user=user, is_active=True,
                                          role__in=[*STUDY_WIDE_ROLES, Role.CRA]).values("study_id")


def kri_result_list(*, user) -> QuerySet[KriResult]:
    return KriResult.objects.filter(
        Q(site__in=site_list(user=user), snapshot__study__in=_risk_reader_studies(user))
        | Q(site__isnull=True, snapshot__study__in=_study_wide_studies(user))
    ).select_related("snapshot")


def kri_snapshot_list(*, user) -> QuerySet[KriSnapshot]:
    """Snapshots carry the study-level QTL figures: the readers of the risk dashboard (which shows them)."""
    return KriSnapshot.objects.filter(study__in=_risk_reader_studies(user))


def kri_definition_list(*, user) -> QuerySet[KriDefinition]:
    return KriDefinition.objects.filter(study__in=study_list(user=user))


def site_risk_list(*, user) -> QuerySet[SiteRiskAssessment]:
    return SiteRiskAssessment.objects.filter(site__in=site_list(user=user),
                                             site__study__in=_risk_reader_studies(user)).select_related("site",
                                                                                                       "snapshot")


def site_risk_latest(*, user, study) -> QuerySet[SiteRiskAssessment]:
    """Each visible site's assessment of the study's latest snapshot."""
    latest = KriSnapshot.objects.filter(study=study).order_by("-snapshot_date").first()
    if latest is None:
        return SiteRiskAssessment.objects.none()
    return site_risk_list(user=user).filter(snapshot=latest)


def sdv_plan_list(*, user) -> QuerySet[SdvPlan]:
    return SdvPlan.objects.filter(site__in=site_list(user=user),
                                  site__study__in=_risk_reader_studies(user)).select_related("site")


def risk_readable(*, user, study) -> bool:
    """Whether the user may read the study's risk dashboard: study-wide roles and CRAs (for the
    sites granted to them, as site_list scopes every row). Site staff do not rank sites."""
    if user.is_superuser:
        return True
    roles = set(StudyMembership.objects.filter(user=user, study=study, is_active=True).values_list("role", flat=True))
    return bool(roles & {*STUDY_WIDE_ROLES, Role.CRA})


def risk_writable(*, user, study) -> bool:
    """Whether the user may change the study's KRI definitions and risk configuration."""
    if user.is_superuser:
        return True
    return StudyMembership.objects.filter(user=user, study=study, is_active=True,
                                          role__in=[Role.SPONSOR, Role.DATA_MANAGER]).exists()


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
