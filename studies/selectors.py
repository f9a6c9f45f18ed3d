"""Reads, scoped by the user's access at the source.

Every list, detail, export and history endpoint of every app starts from one of these, so a site
user can never read another site's rows: there is no unscoped path to forget. Objects outside a
user's scope simply are not in the queryset, so views answer 404 and leak no existence.
"""

from django.db.models import Q, QuerySet
from guardian.shortcuts import get_objects_for_user

from studies.models import (
    SITE_ROLES,
    STUDY_WIDE_ROLES,
    DataPoint,
    FormDefinition,
    Import,
    ItemDefinition,
    Role,
    Site,
    Study,
    StudyMembership,
    Subject,
    SubjectVisit,
    VisitDefinition,
)

# What each role may do beyond reading its scope. Checked per site by `user_can`.
CAPABILITIES: dict[str, frozenset[str]] = {
    Role.SPONSOR: frozenset({"manage_study", "import_data", "read_imports", "run_workflow", "manage_edit_checks",
                             "review_discrepancies"}),
    Role.DATA_MANAGER: frozenset({"raise_query", "close_query", "release_query", "cancel_query", "reassign_query",
                                  "run_workflow", "import_data", "read_imports", "manage_edit_checks",
                                  "review_discrepancies"}),
    # A CRA cancels only the queries they raised themselves (queries.lifecycle).
    Role.CRA: frozenset({"raise_query", "close_query", "cancel_own_query", "reassign_query", "verify_source",
                         "report_deviation", "review_discrepancies"}),
    Role.SITE_COORDINATOR: frozenset({"enter_data", "answer_query", "report_deviation"}),
    Role.INVESTIGATOR: frozenset({"enter_data", "answer_query", "report_deviation", "sign"}),
    Role.MEDICAL_MONITOR: frozenset({"review_safety", "review_discrepancies"}),
    Role.AUDITOR: frozenset({"read_imports", "review_discrepancies"}),
}


def _memberships(user) -> QuerySet[StudyMembership]:
    return StudyMembership.objects.filter(user=user, is_active=True)


def site_list(*, user, study: Study | None = None) -> QuerySet[Site]:
    """The sites `user` may see: all sites of studies where the role is study-wide, the own site
    for site roles, and for a CRA the sites granted to them (guardian) in studies they monitor."""
    if not user.is_authenticated:
        return Site.objects.none()
    if user.is_superuser:
        sites = Site.objects.all()
    else:
        memberships = _memberships(user)
        cra_studies = memberships.filter(role=Role.CRA).values("study_id")
        granted = get_objects_for_user(
            user, "studies.monitor_site", klass=Site.objects.filter(study_id__in=cra_studies),
            accept_global_perms=False, with_superuser=False,
        ).values("id")
        sites = Site.objects.filter(
            Q(study_id__in=memberships.filter(role__in=STUDY_WIDE_ROLES).values("study_id"))
            | Q(id__in=memberships.filter(role__in=SITE_ROLES).values("site_id"))
            | Q(id__in=granted)
        )
    return sites.filter(study=study) if study is not None else sites


def study_list(*, user) -> QuerySet[Study]:
    if not user.is_authenticated:
        return Study.objects.none()
    if user.is_superuser:
        return Study.objects.all()
    return Study.objects.filter(id__in=_memberships(user).values("study_id"))


def subject_list(*, user) -> QuerySet[Subject]:
    return Subject.objects.filter(site__in=site_list(user=user)).select_related("site", "study")


def subject_visit_list(*, user) -> QuerySet[SubjectVisit]:
    return SubjectVisit.objects.filter(subject__site__in=site_list(user=user)).select_related(
        "subject", "definition"
    )


def data_point_list(*, user) -> QuerySet[DataPoint]:
    return DataPoint.objects.filter(subject__site__in=site_list(user=user)).select_related(
        "subject", "subject__site", "visit__definition", "form", "item"
    )


def visit_definition_list(*, user) -> QuerySet[VisitDefinition]:
    return VisitDefinition.objects.filter(study__in=study_list(user=user))


def form_definition_list(*, user) -> QuerySet[FormDefinition]:
    return FormDefinition.objects.filter(study__in=study_list(user=user))


def item_definition_list(*, user) -> QuerySet[ItemDefinition]:
    return ItemDefinition.objects.filter(study__in=study_list(user=user)).select_related("form")


def roles_for_site(*, user, site: Site) -> set[str]:
    """The roles through which `user` reaches `site` (empty if it is outside their scope)."""
    if not user.is_authenticated:
        return set()
    roles = set()
    for membership in _memberships(user).filter(study_id=site.study_id):
        if membership.role in STUDY_WIDE_ROLES:
            roles.add(membership.role)
        elif membership.role in SITE_ROLES and membership.site_id == site.id:
            roles.add(membership.role)
        elif membership.role == Role.CRA and user.has_perm("studies.monitor_site", site):
            roles.add(membership.role)
    return roles


def user_can(*, user, capability: str, site: Site) -> bool:
    if user.is_superuser:
        return True
    return any(capability in CAPABILITIES[role] for role in roles_for_site(user=user, site=site))


def study_roles(*, user, study: Study) -> set[str]:
    return set(_memberships(user).filter(study=study).values_list("role", flat=True))


def study_user_can(*, user, capability: str, study: Study) -> bool:
    """A study-level capability, held through a study-wide role (importing, reading imports)."""
    if user.is_superuser:
        return True
    return any(capability in CAPABILITIES[role] for role in study_roles(user=user, study=study)
               if role in STUDY_WIDE_ROLES)


def study_user_can_at_a_site(*, user, capability: str, study: Study) -> bool:
    """The capability through any of the user's roles in the study, site-scoped ones included
    (a CRA reviews the discrepancies of their own sites): what they then see is scoped per site."""
    if user.is_superuser:
        return True
    return any(capability in CAPABILITIES[role] for role in study_roles(user=user, study=study))


def import_list(*, user) -> QuerySet[Import]:
    """Imports of the studies where the user's role may read them (not site staff: an import's
    errors can name any site's subjects)."""
    if not user.is_authenticated:
        return Import.objects.none()
    imports = Import.objects.select_related("study", "created_by")
    if user.is_superuser:
        return imports
    readers = [role for role, caps in CAPABILITIES.items() if "read_imports" in caps]
    return imports.filter(study_id__in=_memberships(user).filter(role__in=readers).values("study_id"))
