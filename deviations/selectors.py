"""Reads of the deviations cluster, scoped by the user's access at the source, and who may do what.

Everyone in a study reads the deviations of the sites they see (site staff their own site, a CRA
the sites granted, study-wide roles all). Site staff and CRAs report deviations; data managers and
medical monitors review, code and classify them and decide root causes; data managers, sponsors
and CRAs (their sites) keep CAPAs; data managers and sponsors sign the periodic reports; auditors
read everything and change nothing."""

from django.db.models import QuerySet

from deviations.models import Capa, ComplianceReport, Deviation, DeviationPlan, RootCauseAnalysis
from studies.models import STUDY_WIDE_ROLES, Role, Site, Study
from studies.selectors import roles_for_site, site_list, study_list, study_roles

CAPABILITIES = {
    "report_deviation": {Role.SITE_COORDINATOR, Role.INVESTIGATOR, Role.CRA},
    "review_deviation": {Role.DATA_MANAGER, Role.MEDICAL_MONITOR},
    "decide_root_cause": {Role.DATA_MANAGER, Role.MEDICAL_MONITOR},
    "manage_capa": {Role.DATA_MANAGER, Role.SPONSOR, Role.CRA},
    "sign_report": {Role.DATA_MANAGER, Role.SPONSOR},
    # The study-level reads: the DV domain, the plan, root causes and reports (not site staff:
    # they span every site).
    "read_study_deviations": {*STUDY_WIDE_ROLES},
}


def deviation_user_can(*, user, capability: str, site: Site) -> bool:
    if user.is_superuser:
        return True
    return bool(CAPABILITIES[capability] & roles_for_site(user=user, site=site))


def deviation_study_can(*, user, capability: str, study: Study, at_a_site: bool = False) -> bool:
    """Through a study-wide role; with `at_a_site`, through any role in the study (what the user
    then reaches is still scoped per site)."""
    if user.is_superuser:
        return True
    roles = study_roles(user=user, study=study)
    if not at_a_site:
        roles = roles & set(STUDY_WIDE_ROLES)
    return bool(CAPABILITIES[capability] & roles)


def deviation_list(*, user) -> QuerySet[Deviation]:
    return Deviation.objects.filter(site__in=site_list(user=user)).select_related("site", "subject",
                                                                                  "visit__definition")


def deviation_study(*, user, pk) -> Study | None:
    return study_list(user=user).filter(pk=pk).first()


def plan_list(*, user) -> QuerySet[DeviationPlan]:
    readable = [s.pk for s in study_list(user=user) if deviation_study_can(
        user=user, capability="read_study_deviations", study=s)]
    return DeviationPlan.objects.filter(study_id__in=readable).select_related("created_by")


def root_cause_analysis_list(*, user) -> QuerySet[RootCauseAnalysis]:
    """Study-wide readers see every site's patterns; a CRA those of their sites."""
    sites = site_list(user=user)
    if not user.is_superuser:
        cra_or_wide = [s.pk for s in study_list(user=user) if study_roles(user=user, study=s)
                       & {*STUDY_WIDE_ROLES, Role.CRA}]
        sites = sites.filter(study_id__in=cra_or_wide)
    return RootCauseAnalysis.objects.filter(site__in=sites).select_related("site", "decided_by")


def capa_list(*, user) -> QuerySet[Capa]:
    return Capa.objects.filter(site__in=site_list(user=user)).select_related("site", "owner", "created_by")


def compliance_report_list(*, user) -> QuerySet[ComplianceReport]:
    readable = [s.pk for s in study_list(user=user) if deviation_study_can(
        user=user, capability="read_study_deviations", study=s)]
    return ComplianceReport.objects.filter(study_id__in=readable).select_related("signed_by", "study")
