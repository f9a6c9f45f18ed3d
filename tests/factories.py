"""factory_boy factories for test setup. Regulated records get an actor and a reason like any write."""

import datetime

import factory
from django.contrib.auth import get_user_model

from studies.models import (
    DataPoint,
    FormDefinition,
    ItemDefinition,
    Site,
    Study,
    Subject,
    SubjectVisit,
    VisitDefinition,
)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = "Test"
    last_name = factory.SelfAttribute("username")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", "pw-for-tests")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class StudyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Study

    protocol_id = factory.Sequence(lambda n: f"PROT-{n:03d}")
    oid = factory.LazyAttribute(lambda o: f"S.{o.protocol_id}")
    name = factory.LazyAttribute(lambda o: f"Study {o.protocol_id}")
    sponsor = "Acme Pharma"
    phase = "II"


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site

    study = factory.SubFactory(StudyFactory)
    number = factory.Sequence(lambda n: f"{100 + n}")
    name = factory.LazyAttribute(lambda o: f"Site {o.number}")
    country = "FR"
    city = "Paris"
    timezone = "Europe/Paris"
    language = "fr"


class SubjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subject

    site = factory.SubFactory(SiteFactory)
    study = factory.SelfAttribute("site.study")
    subject_id = factory.Sequence(lambda n: f"SUBJ-{n:04d}")
    status = Subject.Status.ENROLLED
    consent_date = datetime.date(2025, 1, 10)
    enrolment_date = datetime.date(2025, 1, 12)


class VisitDefinitionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VisitDefinition

    study = factory.SubFactory(StudyFactory)
    oid = factory.Sequence(lambda n: f"SE.V{n}")
    name = factory.Sequence(lambda n: f"Visit {n}")
    order = factory.Sequence(lambda n: n)
    planned_day = 1
    window_before = 0
    window_after = 3


class SubjectVisitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SubjectVisit

    subject = factory.SubFactory(SubjectFactory)
    study = factory.SelfAttribute("subject.study")
    definition = factory.SubFactory(VisitDefinitionFactory, study=factory.SelfAttribute("..study"))
    actual_date = datetime.date(2025, 1, 12)


class FormDefinitionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FormDefinition

    study = factory.SubFactory(StudyFactory)
    oid = factory.Sequence(lambda n: f"F.FORM{n}")
    name = factory.Sequence(lambda n: f"Form {n}")


class ItemDefinitionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ItemDefinition

    study = factory.SubFactory(StudyFactory)
    form = factory.SubFactory(FormDefinitionFactory, study=factory.SelfAttribute("..study"))
    oid = factory.Sequence(lambda n: f"I.ITEM{n}")
    label = factory.Sequence(lambda n: f"Item {n}")
    data_type = ItemDefinition.DataType.FLOAT
    units = "mmHg"
    range_low = 60
    range_high = 200


class DataPointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DataPoint

    visit = factory.SubFactory(SubjectVisitFactory)
    subject = factory.SelfAttribute("visit.subject")
    study = factory.SelfAttribute("visit.study")
    item = factory.SubFactory(ItemDefinitionFactory, study=factory.SelfAttribute("..study"))
    form = factory.SelfAttribute("item.form")
    raw_value = "120"
    value_number = 120.0
    entered_by = "edc.user"
