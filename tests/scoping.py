"""A small world for access tests: two studies x two sites, each site with a subject, a visit, a
data point, a query and a deviation, and one user per role in study A."""

from dataclasses import dataclass, field

from deviations.models import Deviation
from queries.models import Query
from studies.audit import set_audit
from studies.models import Role
from studies.services import cra_site_assign, membership_grant
from tests.factories import (
    DataPointFactory,
    FormDefinitionFactory,
    ItemDefinitionFactory,
    SiteFactory,
    StudyFactory,
    SubjectFactory,
    SubjectVisitFactory,
    UserFactory,
    VisitDefinitionFactory,
)

ROLE_USERS = {
    Role.SPONSOR: "sponsor_a",
    Role.DATA_MANAGER: "dm_a",
    Role.CRA: "cra_a",
    Role.SITE_COORDINATOR: "sc_a1",
    Role.INVESTIGATOR: "pi_a1",
    Role.MEDICAL_MONITOR: "medmon_a",
    Role.AUDITOR: "auditor_a",
}
# The sites of study A each role reaches: study-wide roles both; the CRA the one granted (A1);
# site roles their own (A1). Nobody in study A reaches study B.
EXPECTED_SITES = {
    Role.SPONSOR: {"A1", "A2"},
    Role.DATA_MANAGER: {"A1", "A2"},
    Role.CRA: {"A1"},
    Role.SITE_COORDINATOR: {"A1"},
    Role.INVESTIGATOR: {"A1"},
    Role.MEDICAL_MONITOR: {"A1", "A2"},
    Role.AUDITOR: {"A1", "A2"},
}
CAN_CHANGE_DATA = {Role.SITE_COORDINATOR, Role.INVESTIGATOR}


@dataclass
class SiteWorld:
    site: object
    subject: object
    visit: object
    data_point: object
    query: object
    deviation: object


@dataclass
class World:
    studies: dict = field(default_factory=dict)
    sites: dict = field(default_factory=dict)
    users: dict = field(default_factory=dict)


def build_world() -> World:
    world = World()
    seeder = UserFactory(username="seed")
    for study_key in ("A", "B"):
        study = StudyFactory(protocol_id=f"PROT-{study_key}", name=f"Study {study_key}")
        world.studies[study_key] = study
        form = FormDefinitionFactory(study=study)
        item = ItemDefinitionFactory(study=study, form=form)
        definition = VisitDefinitionFactory(study=study)
        for number in ("1", "2"):
            key = f"{study_key}{number}"
            site = SiteFactory(study=study, number=f"{study_key}-{number}0{number}", name=f"Site {key}")
            subject = SubjectFactory(site=site, subject_id=f"SUBJ-{key}")
            visit = SubjectVisitFactory(subject=subject, definition=definition)
            data_point = DataPointFactory(visit=visit, item=item, form=form, raw_value="120")
            query = Query(study=study, site=site, subject=subject, data_point=data_point,
                          text=f"Please verify the value for {key} against source.", state=Query.State.OPEN)
            set_audit(query, actor=seeder, reason="test setup")
            query.save()
            deviation = Deviation(study=study, site=site, subject=subject, description=f"Deviation at {key}",
                                  category=Deviation.Category.VISIT_WINDOW)
            set_audit(deviation, actor=seeder, reason="test setup")
            deviation.save()
            world.sites[key] = SiteWorld(site, subject, visit, data_point, query, deviation)

    study_a = world.studies["A"]
    for role, username in ROLE_USERS.items():
        user = UserFactory(username=username)
        site = world.sites["A1"].site if role in (Role.SITE_COORDINATOR, Role.INVESTIGATOR) else None
        membership_grant(user=user, study=study_a, role=role, site=site)
        world.users[role] = user
    cra_site_assign(cra=world.users[Role.CRA], site=world.sites["A1"].site)
    return world
