"""The QueryGenerator: every template renders in every language from what the analyzer finds,
compliant and without English leaking in; the prior value; English for an unknown language; the
auto-release policy; LLM rewording through the real openai client against the local fake server,
kept only when compliant and never sent a patient identifier; the agent regenerating Candidates."""

import datetime
import re
from types import SimpleNamespace

import pandas as pd
import pytest
from django.core.exceptions import ValidationError

from agents.llm.prompts import prompt_template_retire
from agents.models import LlmCall
from agents.registry import get_agent
from agents.services import agent_config_set
from queries.checks.engine import analyzer_pass
from queries.compliance import compliance_check
from queries.generator import (
    PhrasebookError,
    candidate_policy_allows_release,
    candidate_policy_for,
    data_point_prior_values,
    query_text_for,
    query_text_for_discrepancy,
    query_text_render,
    query_texts_for_findings,
    rewording_prompt,
    template_key,
    template_placeholders,
)
from queries.models import Discrepancy, EditCheck, Query, QueryMessage
from queries.phrasebook import CLOSING_OF, LANGUAGES, PHRASEBOOK
from queries.services import edit_check_save
from studies.audit import set_audit, system_account
from studies.models import DataPoint, ItemDefinition
from studies.services import data_point_update
from tests.factories import (
    FormDefinitionFactory,
    ItemDefinitionFactory,
    SiteFactory,
    StudyFactory,
    SubjectFactory,
    SubjectVisitFactory,
    VisitDefinitionFactory,
)
from tests.fakes import serve
from tests.fakes.openai_server import FakeOpenAI

F = ItemDefinition.DataType
# What the renderer supplies (queries.generator._render_values): a template naming anything else is a bug.
PLACEHOLDERS = {"item", "item_oid", "where", "form", "visit", "observed", "expected", "prior", "reference", "window",
                "keys", "required", "rule", "today", "visit_date", "day", "planned", "before", "after"}
# The analyzer's own English words: none may reach a text in another language.
ENGLISH = ["on or after", "on or before", "the consent date", "study day", "one of ", "recorded again",
           "physiologically possible", "the same ", "; no ", "a value", "present"]


class World:
    """A study with vital signs, adverse events, an SAE form and a lab, at a site in `language`."""

    def __init__(self, language: str = "fr"):
        self.actor = system_account("agent.QueryAnalyzer")
        self.study = StudyFactory()
        self.site = SiteFactory(study=self.study, language=language)
        self.day1 = VisitDefinitionFactory(study=self.study, oid="SE.DAY1", name="Day 1", planned_day=1,
                                           window_before=0, window_after=0)
        self.week2 = VisitDefinitionFactory(study=self.study, oid="SE.WEEK2", name="Week 2", planned_day=15,
                                            window_before=2, window_after=2)
        forms = {oid: FormDefinitionFactory(study=self.study, oid=oid, name=name) for oid, name in (
            ("VS", "Vital signs"), ("AE", "Adverse events"), ("SAE", "Serious adverse event"), ("LB", "Laboratory"))}
        self.items = {}
        for form, oid, label, data_type, extra in (
            ("VS", "VS.SYSBP", "Systolic BP", F.FLOAT, {"range_low": 60, "range_high": 250, "units": "mmHg"}),
            ("VS", "VS.DIABP", "Diastolic BP", F.FLOAT, {"units": "mmHg"}),
            ("VS", "VS.VSDAT", "Vital signs date", F.DATE, {}),
            ("AE", "AE.AETERM", "AE term", F.TEXT, {}),
            ("AE", "AE.AESTDAT", "AE start date", F.DATE, {}),
            ("AE", "AE.AEENDAT", "AE end date", F.DATE, {}),
            ("AE", "AE.AESER", "Serious", F.TEXT, {"codelist": [{"code": "Y"}, {"code": "N"}]}),
            ("SAE", "SAE.SAEDAT", "SAE date", F.DATE, {}),
            ("LB", "LB.K", "Serum potassium", F.FLOAT, {"units": "mmol/L"}),
        ):
            values = {"range_low": None, "range_high": None, "units": "", **extra}
            self.items[oid] = ItemDefinitionFactory(study=self.study, form=forms[form], oid=oid, label=label,
                                                    data_type=data_type, **values)

    def check(self, rule_type: str, item: str | None = None, name: str = "", **params) -> EditCheck:
        return EditCheck(study=self.study, code=f"T-{rule_type}", name=name or f"{rule_type} check",
                         rule_type=rule_type, item=self.items[item] if item else None, params=params)

    def subject(self, **kwargs):
        subject = SubjectFactory(site=self.site, study=self.study, **kwargs)
        self.visit = SubjectVisitFactory(subject=subject, study=self.study, definition=self.day1,
                                         actual_date=subject.enrolment_date)
        return subject

    def value(self, subject, oid: str, raw: str, *, visit=None, repeat="1") -> DataPoint:
        item = self.items[oid]
        point = DataPoint(study=self.study, subject=subject, visit=visit or self.visit, form=item.form, item=item,
                          repeat_key=repeat, raw_value=raw)
        if item.data_type == F.FLOAT:
            point.value_number = float(raw)
        if item.data_type == F.DATE:
            point.value_date = datetime.date.fromisoformat(raw)
        set_audit(point, actor=self.actor, reason="test data")
        point.save()
        return point


# One finding of each rule type, as queries.checks.evaluate writes it: (rule type, category, item,
# check params, observed, expected, what the text must say besides the item, the form and the visit).
FINDINGS = {
    "required": ("required", "missing", "VS.DIABP", {}, "(empty)", "a value", []),
    "range": ("range", "range", "VS.SYSBP", {"low": 60, "high": 250, "units": "mmHg"}, "260 mmHg",
              "60 to 250 mmHg", ["260 mmHg", "60–250 mmHg"]),
    "codelist": ("codelist", "range", "AE.AESER", {"codes": ["Y", "N"]}, "maybe", "one of Y, N", ["maybe", "Y, N"]),
    "date_order.after": ("date_order", "inconsistency", "AE.AESTDAT", {"anchor": "consent", "order": "after"},
                         "2025-01-05 (the consent date: 2025-01-10)", "on or after the consent date",
                         ["2025-01-05", "2025-01-10"]),
    "date_order.before": ("date_order", "inconsistency", "AE.AESTDAT",
                          {"anchor": "item", "anchor_item": "AE.AEENDAT", "order": "before"},
                          "2025-02-05 (AE.AEENDAT: 2025-02-01)", "on or before AE.AEENDAT",
                          ["2025-02-05", "AE end date", "2025-02-01"]),
    "date_window": ("date_window", "visit_protocol", "VS.VSDAT",
                    {"anchor": "visit", "anchor_visit": "SE.DAY1", "min_days": 0, "max_days": 30},
                    "2025-03-01 (visit SE.DAY1: 2025-01-12)", "0 to 30 days after visit SE.DAY1",
                    ["2025-03-01", "Day 1", "2025-01-12", "30"]),
    "visit_window": ("visit_window", "visit_protocol", None, {"reference": "day1"}, "study day 18 (2025-01-29)",
                     "study day 15 (-2/+2)", ["2025-01-29", "18", "15", "-2/+2"]),
    "future_date": ("future_date", "inconsistency", "AE.AESTDAT", {}, "2025-06-02", "on or before 2025-06-01",
                    ["2025-06-02", "2025-06-01"]),
    "consistency": ("consistency", "safety", None,
                    {"when": {"item": "AE.AESER", "in": ["Y"]}, "require": {"form": "SAE"}, "scope": "subject"},
                    "AE.AESER = Y; no SAE", "SAE present", ["Serious", "Y", "Serious adverse event"]),
    "lab_plausibility": ("lab_plausibility", "range", "LB.K", {"analyte": "potassium"}, "45 mmol/L",
                         "physiologically possible: 1 to 12 mmol/L", ["45 mmol/L", "1–12 mmol/L"]),
    "duplicate.record": ("duplicate", "duplicate", "AE.AETERM", {"form": "AE", "keys": ["AE.AETERM", "AE.AESTDAT"]},
                         "the same AE.AETERM, AE.AESTDAT as record with data point 17", "one record",
                         ["AE term", "AE start date"]),
    "duplicate.item": ("duplicate", "duplicate", "VS.SYSBP", {}, "recorded again: 122", "once per visit", ["122"]),
    "expression": ("expression", "inconsistency", "VS.DIABP", {"expression": "[VS.SYSBP] > [VS.DIABP]"},
                   "VS.SYSBP = 80, VS.DIABP = 90", "[VS.SYSBP] > [VS.DIABP]",
                   ["Systolic BP = 80", "Diastolic BP = 90", "Systolic above diastolic"]),
}


def written_for(world: World, key: str, **kwargs):
    rule_type, category, item, params, observed, expected, _ = FINDINGS[key]
    check = world.check(rule_type, item if rule_type != "consistency" else None, name="Systolic above diastolic",
                        **params)
    visit = "Week 2" if key == "visit_window" else "Day 1"
    finding = {"rule_type": rule_type, "category": category, "observed": observed, "expected": expected}
    written = query_text_for(finding=finding, check=check, site=world.site, item=world.items.get(item),
                             visit_name=visit, **kwargs)
    return written, check


# --- The phrasebook -----------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_has_every_template_with_the_same_placeholders_as_english(language):
    english, book = PHRASEBOOK["en"], PHRASEBOOK[language]
    assert set(book["templates"]) == set(english["templates"]) == set(CLOSING_OF)
    for part in ("closings", "anchors", "window"):
        assert set(book[part]) == set(english[part]), part
    for key, template in book["templates"].items():
        assert template_placeholders(template) == template_placeholders(english["templates"][key]), key
        assert template_placeholders(template) <= PLACEHOLDERS, key
    assert template_placeholders(book["prior"]) == {"prior"}
    assert all(not template_placeholders(text) for text in book["closings"].values())


def test_a_context_lacking_a_placeholder_fails_loudly():
    with pytest.raises(PhrasebookError, match="'range' needs 'expected'"):
        query_text_render(rule_type="range", category="range", language="de",
                          context={"item": "Systolic BP", "form": "VS", "visit": "Week 2", "observed": "260"})


# --- Every template, every language ---------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", list(FINDINGS))
def test_every_rule_template_renders_in_every_language(key, language):
    world = World(language)
    written, check = written_for(world, key)
    rule_type, category, item, _, _, _, facts = FINDINGS[key]

    assert template_key(rule_type=rule_type, category=category, context=_context_of(key)) == key
    assert (written.language, written.text_origin, written.prompt_version) == (language, "template", "")
    assert not re.search(r"[{}]", written.text), written.text
    label = world.items[item or "AE.AESER"].label if key != "visit_window" else "Week 2"
    for fact in [label, *facts]:
        assert fact in written.text, (fact, written.text)
    if key != "visit_window":
        assert world.items[item or "AE.AESER"].form.name in written.text and "Day 1" in written.text
    context = {"item": label if key != "visit_window" else "", "visit": "Week 2" if key == "visit_window" else ""}
    assert compliance_check(written.text, language=language, context=context) == []
    assert written.compliant
    if language != "en":
        assert not [e for e in ENGLISH if e in written.text], written.text


def _context_of(key: str) -> dict:
    params = FINDINGS[key][3]
    return {"order": params.get("order"), "keys": params.get("keys") or []}


@pytest.mark.django_db
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("category", list(Query.Category.values))
def test_every_category_template_renders_in_every_language(category, language):
    world = World(language)
    finding = {"rule_type": "", "category": category, "observed": "260 mmHg", "expected": "60–250 mmHg"}
    written = query_text_for(finding=finding, check=None, site=world.site, item=world.items["VS.SYSBP"],
                             visit_name="Week 2")

    assert "Systolic BP" in written.text and "Week 2" in written.text and "Vital signs" in written.text
    if "{observed}" in PHRASEBOOK[language]["templates"][f"category.{category}"]:
        assert "260 mmHg" in written.text
    assert not re.search(r"[{}]", written.text)
    assert compliance_check(written.text, language=language, context={"item": "Systolic BP"}) == []


@pytest.mark.django_db
@pytest.mark.parametrize(("site_language", "used"), [("sw", "en"), ("", "en"), ("fr-CA", "fr"), ("PT_br", "pt")])
def test_a_language_without_a_phrasebook_falls_back_to_english_and_says_so(site_language, used):
    world = World(site_language)
    written, _ = written_for(world, "range")
    assert written.language == used
    assert written.text.startswith({"en": "Systolic BP (Vital signs, Day 1)", "fr": "« Systolic BP »",
                                    "pt": "“Systolic BP”"}[used])


@pytest.mark.django_db
def test_the_prior_value_is_shown_when_the_value_was_changed():
    world = World("de")
    subject = world.subject()
    point = world.value(subject, "VS.SYSBP", "120")
    untouched = world.value(subject, "VS.DIABP", "80")
    data_point_update(data_point=point, raw_value="260", actor=world.actor, reason="transcription corrected")

    priors = data_point_prior_values([point.pk, untouched.pk])
    written, _ = written_for(world, "range", prior_value=priors.get(point.pk))

    assert priors == {point.pk: "120"}
    assert "Zuvor eingetragener Wert: 120." in written.text


@pytest.mark.django_db
def test_a_value_naming_the_patient_is_flagged_for_a_data_manager():
    world = World("en")
    finding = {"rule_type": "codelist", "category": "range", "observed": "Mrs Smithers said yes",
               "expected": "one of Y, N"}
    written = query_text_for(finding=finding, check=world.check("codelist", "AE.AESER", codes=["Y", "N"]),
                             site=world.site, item=world.items["AE.AESER"], visit_name="Day 1")

    assert not written.compliant and written.refusals == ("names the patient's name",)


# --- From the analyzer's findings -----------------------------------------------------------------


@pytest.mark.django_db
def test_the_analyzers_findings_get_texts_in_the_sites_language():
    world = World("es")
    actor = world.actor
    for rule_type, item, params in (
        ("range", "VS.SYSBP", {"low": 60, "high": 250}),
        ("date_order", "AE.AESTDAT", {"anchor": "consent"}),
        ("visit_window", None, {"reference": "day1"}),
        ("consistency", None, {"when": {"item": "AE.AESER", "in": ["Y"]}, "require": {"form": "SAE"}}),
        ("duplicate", None, {"form": "AE", "keys": ["AE.AETERM", "AE.AESTDAT"]}),
        ("codelist", "AE.AESER", {}),
    ):
        edit_check_save(check=world.check(rule_type, item, **params), actor=actor, reason="written for the test")
    subject = world.subject(consent_date=datetime.date(2025, 1, 10), enrolment_date=datetime.date(2025, 1, 10))
    world.value(subject, "VS.SYSBP", "120")
    changed = world.value(subject, "VS.SYSBP", "130", repeat="2")
    data_point_update(data_point=changed, raw_value="2600", actor=actor, reason="re-entered")
    SubjectVisitFactory(subject=subject, study=world.study, definition=world.week2,
                        actual_date=datetime.date(2025, 1, 29))  # study day 20: outside 15 +/- 2
    for repeat in ("1", "2"):
        world.value(subject, "AE.AETERM", "Headache", repeat=repeat)
        world.value(subject, "AE.AESTDAT", "2025-01-05", repeat=repeat)
        world.value(subject, "AE.AESER", "Y" if repeat == "1" else "maybe", repeat=repeat)

    analyzer_pass(study=world.study, actor=actor, today=datetime.date(2025, 6, 1))

    found = pd.DataFrame.from_records(Discrepancy.objects.filter(study=world.study).values(
        "edit_check_id", "key", "site_id", "item_id", "visit_id", "data_point_id", "observed", "expected", "category",
        "rule_type")).rename(columns={"edit_check_id": "check_id"})
    assert set(found["rule_type"]) == {"range", "date_order", "visit_window", "consistency", "duplicate", "codelist"}
    checks = {c.pk: c for c in EditCheck.objects.filter(study=world.study).select_related("item__form")}
    items = {i.pk: i for i in ItemDefinition.objects.filter(study=world.study).select_related("form")}
    texts = query_texts_for_findings(study=world.study, findings=found, checks=checks, items=items)

    assert len(texts) == len(found)
    for discrepancy in Discrepancy.objects.filter(study=world.study):
        written = texts[(discrepancy.edit_check_id, discrepancy.key)]
        assert written.language == "es" and written.compliant, written
        assert not [e for e in ENGLISH if e in written.text], written.text
        assert query_text_for_discrepancy(discrepancy=discrepancy).text == written.text
    range_text = next(t.text for (c, _), t in texts.items() if checks[c].rule_type == "range")
    assert "2600" in range_text and "Valor registrado anteriormente: 130." in range_text


# --- The auto-release policy ------------------------------------------------------------------------


@pytest.mark.django_db
def test_by_default_nothing_is_auto_released():
    study = StudyFactory()
    assert candidate_policy_allows_release(study=study, category="missing", confidence=1.0) is False
    assert candidate_policy_for(study=study).llm_rewording is False


@pytest.mark.django_db
def test_the_policy_releases_its_categories_at_or_above_their_confidence():
    study = StudyFactory()
    dm = system_account("dm")
    agent_config_set(agent="QueryGenerator", study_id=study.pk, enabled=True, actor=dm, config={
        "auto_release": [{"category": "missing", "min_confidence": 0.95}, {"category": "range", "min_confidence": 0.9},
                         {"category": "range", "min_confidence": 0.99}], "llm_rewording": True})

    allows = [candidate_policy_allows_release(study=study, category=c, confidence=x) for c, x in (
        ("missing", 0.97), ("missing", 0.95), ("missing", 0.9), ("range", 0.95), ("range", 0.99),
        ("duplicate", 1.0), ("missing", float("nan")))]
    assert allows == [True, True, False, False, True, False, False]  # the same category twice: the stricter
    assert candidate_policy_for(study=study.pk).llm_rewording is True

    agent_config_set(agent="QueryGenerator", study_id=study.pk, config={
        "auto_release": [{"category": "missing", "min_confidence": 0.95}]}, enabled=False, actor=dm)
    assert candidate_policy_allows_release(study=study, category="missing", confidence=1.0) is False  # paused


@pytest.mark.django_db
@pytest.mark.parametrize("config", [{"auto_release": [{"category": "typo", "min_confidence": 0.9}]},
                                    {"auto_release": [{"category": "missing", "min_confidence": 1.5}]},
                                    {"auto_release": [{"category": "missing"}]}, {"llm": True}])
def test_an_invalid_policy_is_refused(config):
    with pytest.raises(ValidationError):
        agent_config_set(agent="QueryGenerator", study_id=1, config=config, enabled=True, actor=None)


# --- LLM rewording through the fake OpenAI server -----------------------------------------------------

REWORDED = ("Pour « Systolic BP » (Vital signs, Day 1), la valeur saisie de 260 mmHg dépasse l'intervalle attendu "
            "(60–250 mmHg). Merci de la vérifier dans le document source, puis de la corriger ou de la confirmer.")
IDENTIFIERS = {"patient_name": "Jane Smithers", "initials": "JS", "date_of_birth": "1961-04-02"}


@pytest.fixture
def openai_fake(settings):
    fake = FakeOpenAI(answer={"text": REWORDED})
    with serve(fake) as url:
        settings.OPENAI_API_KEY = "sk-test-key"
        settings.OPENAI_API_KEY_FILE = ""
        settings.LLM_BASE_URL = f"{url}/v1"
        settings.LLM_MODEL = "gpt-4o-mini"
        settings.LLM_TIMEOUT_SECONDS = 2
        settings.LLM_MAX_ATTEMPTS = 1
        settings.LLM_MONTHLY_BUDGET_USD = 50
        yield fake


def sent(fake: FakeOpenAI) -> str:
    return "\n".join(m["content"] for body in fake.bodies for m in body["messages"])


@pytest.mark.django_db
def test_a_compliant_rewording_is_kept_with_its_prompt_version(openai_fake):
    world = World("fr")
    written, _ = written_for(world, "range", use_llm=True, identifiers=IDENTIFIERS, subject_label="SUBJ-0042")

    assert (written.text, written.text_origin, written.language) == (REWORDED, "llm", "fr")
    assert written.prompt_version == "query-text-rewording@1" and written.llm_refusals == ()
    call = LlmCall.objects.get(pk=written.llm_call_id)
    assert (call.provider, call.purpose, call.study_id, call.outcome) == ("openai", "query-text", world.study.pk, "")
    prompt = sent(openai_fake)
    assert "« Systolic BP » (Vital signs, Day 1) : la valeur saisie, 260 mmHg" in prompt  # the template text
    assert "French" in prompt and '{"text":' in prompt


@pytest.mark.django_db
def test_no_patient_identifier_is_sent_to_the_model(openai_fake):
    world = World("fr")
    written_for(world, "range", use_llm=True, identifiers=IDENTIFIERS, subject_label="SUBJ-0042")

    prompt = sent(openai_fake)
    assert len(openai_fake.requests) == 1
    for value in ("Jane", "Smithers", "1961", "SUBJ-0042"):
        assert value not in prompt
    assert not re.search(r"\bJS\b", prompt)


@pytest.mark.django_db
def test_a_template_naming_the_patient_is_never_sent(openai_fake):
    world = World("fr")
    world.items["VS.SYSBP"].label = "Systolic BP of Jane Smithers"
    written, _ = written_for(world, "range", use_llm=True, identifiers=IDENTIFIERS)

    assert openai_fake.requests == []
    assert written.text_origin == "template" and "names the patient's name" in written.refusals


@pytest.mark.parametrize(("answer", "reason"), [
    ("« Systolic BP » (Vital signs, Day 1) : la valeur de 260 mmHg devrait être 120 mmHg, merci de corriger.",
     "suggests a value or an answer: 'devrait être'"),
    ("Vous avez oublié de vérifier « Systolic BP » (Day 1) : 260 mmHg est hors intervalle.",
     "blaming tone: 'Vous avez oublié'"),
    ("« Systolic BP » : la valeur 260 mmHg est hors intervalle. Merci de vérifier et de corriger ou confirmer.",
     "the rewording drops the visit ('Day 1')"),
])
@pytest.mark.django_db
def test_a_rewording_that_fails_the_compliance_check_is_dropped_for_the_template(openai_fake, answer, reason):
    openai_fake.answer = {"text": answer}
    world = World("fr")
    written, _ = written_for(world, "range", use_llm=True)

    assert written.text.startswith("« Systolic BP » (Vital signs, Day 1) : la valeur saisie, 260 mmHg")
    assert (written.text_origin, written.prompt_version, written.llm_call_id) == ("template", "", None)
    assert reason in written.llm_refusals, written.llm_refusals
    assert LlmCall.objects.get().outcome == "rejected"  # counts against the prompt version's acceptance rate


@pytest.mark.django_db
def test_without_a_model_the_template_is_kept(settings):
    settings.OPENAI_API_KEY, settings.OPENAI_API_KEY_FILE = "", ""
    world = World("it")
    written, _ = written_for(world, "range", use_llm=True)

    assert written.text_origin == "template" and written.text.startswith("«Systolic BP»")
    assert written.llm_refusals[0].startswith("not reworded: offline")


@pytest.mark.django_db
def test_a_retired_prompt_rewords_nothing(openai_fake):
    prompt_template_retire(template=rewording_prompt())
    written, _ = written_for(World("fr"), "range", use_llm=True)

    assert written.text_origin == "template" and openai_fake.requests == []
    assert written.llm_refusals == ("not reworded: prompt query-text-rewording v1 is retired",)


@pytest.mark.django_db
def test_the_study_policy_decides_whether_to_reword(openai_fake):
    world = World("fr")
    assert written_for(world, "range")[0].text_origin == "template" and openai_fake.requests == []
    agent_config_set(agent="QueryGenerator", study_id=world.study.pk, config={"llm_rewording": True},
                     enabled=True, actor=None)
    assert written_for(world, "range")[0].text_origin == "llm"


# --- The agent -----------------------------------------------------------------------------------


def candidate(world: World, *, text: str = "Old text", text_origin: str = Query.TextOrigin.TEMPLATE) -> Query:
    """A Candidate system query raised by a range check on 260 mmHg, with its finding and thread."""
    check = EditCheck.objects.filter(study=world.study, code="T-range").first() or edit_check_save(
        check=world.check("range", "VS.SYSBP", low=60, high=250), actor=world.actor, reason="written for the test")
    subject = world.subject()
    point = world.value(subject, "VS.SYSBP", "260")
    query = Query(study=world.study, site=world.site, subject=subject, data_point=point, origin=Query.Origin.RULE,
                  rule_code=check.code, category="range", state=Query.State.CANDIDATE, text=text, language="en",
                  text_origin=text_origin, created_by=world.actor)
    set_audit(query, actor=world.actor, reason="raised for the test")
    query.save()
    message = QueryMessage(query=query, kind=QueryMessage.Kind.QUESTION, author=world.actor, text=text)
    set_audit(message, actor=world.actor, reason="raised for the test")
    message.save()
    Discrepancy.objects.create(study=world.study, site=world.site, subject=subject, visit=world.visit,
                               item=point.item, data_point=point, edit_check=check, check_version=1,
                               key=f"dp:{point.pk}", rule_type="range", category="range", severity="major",
                               confidence=0.99, observed="260 mmHg", expected="60 to 250 mmHg", query=query)
    return query


def run_agent(world: World, config: dict | None = None) -> dict:
    step = SimpleNamespace(input={"study_id": world.study.pk, "config": config or {}})
    return get_agent("QueryGenerator").run(step=step)


@pytest.mark.django_db
def test_the_agent_rewrites_candidates_in_the_sites_language_with_an_audit_row():
    world = World("de")
    query = candidate(world)
    edited = candidate(world, text="Bitte Systolic BP prüfen.", text_origin=Query.TextOrigin.PERSON)
    released = candidate(world)
    released.state = Query.State.OPEN
    set_audit(released, actor=world.actor, reason="released for the test")
    released.save()

    out = run_agent(world)

    query.refresh_from_db()
    assert out["studies"][world.study.protocol_id]["rewritten"] == 1
    assert query.text.startswith("„Systolic BP“ (Vital signs, Day 1): Der eingetragene Wert 260 mmHg")
    assert (query.language, query.text_origin, query.prompt_version) == ("de", "template", "")
    history = query.history.latest()
    assert history.history_user.username == "agent.QueryGenerator"
    assert history.history_change_reason == "Query text regenerated by the QueryGenerator in de"
    assert query.messages.get(kind="question").text == query.text
    edited.refresh_from_db()
    released.refresh_from_db()
    assert edited.text == "Bitte Systolic BP prüfen." and released.text == "Old text"
    assert run_agent(world)["studies"][world.study.protocol_id].get("rewritten", 0) == 0  # nothing left to do


@pytest.mark.django_db
def test_the_agent_rewords_candidates_through_the_llm_when_the_study_asks(openai_fake):
    world = World("fr")
    query = candidate(world)

    run_agent(world, {"llm_rewording": True})

    query.refresh_from_db()
    assert (query.text, query.text_origin, query.prompt_version) == (REWORDED, "llm", "query-text-rewording@1")
    assert "reworded with query-text-rewording@1" in query.history.latest().history_change_reason
    run_agent(world, {"llm_rewording": True})
    assert len(openai_fake.requests) == 1  # a reworded text in the right language is left alone
