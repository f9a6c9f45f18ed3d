"""The LLM client against a local fake OpenAI server, through the real openai SDK: the ledger,
retries, fallbacks, the cache, the monthly budget and redaction of patient identifiers."""

import json
from datetime import timedelta
from decimal import Decimal

import jsonschema
import pytest

from agents.llm import llm_complete, llm_month_spend, prompt_template_create
from agents.llm.prompts import PromptError
from agents.models import LlmCall, PromptTemplate
from tests.fakes import serve
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.django_db

SCHEMA = {
    "type": "object",
    "properties": {
        "severity": {"type": "string", "enum": ["minor", "major", "critical"]},
        "query_text": {"type": "string", "minLength": 10},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["severity", "query_text", "confidence"],
    "additionalProperties": False,
}
ANSWER = {"severity": "major", "query_text": "Please verify the weight at Week 4 against source.", "confidence": 0.8}
VARIABLES = {"form": "VS", "visit": "Week 4", "item": "WEIGHT", "value": "715", "rule": "range 30-250 kg",
             "query_text": "Weight 715 at Week 4 is outside 30-250 kg. Please verify against source."}


@pytest.fixture
def template():
    return prompt_template_create(
        name="query-text",
        text="Form $form, visit $visit, item $item: value $value fails the rule $rule. "
             "Write a neutral, non-leading query to the site as JSON.",
        offline_text="$item at $visit ($value) fails $rule. Please verify against source.",
    )


@pytest.fixture
def openai_fake(settings):
    """The fake server, and settings pointing the client at it with tiny time-outs and delays."""
    fake = FakeOpenAI(answer=ANSWER)
    with serve(fake) as url:
        settings.OPENAI_API_KEY = "sk-test-key"
        settings.OPENAI_API_KEY_FILE = ""
        settings.LLM_BASE_URL = f"{url}/v1"
        settings.LLM_MODEL = "gpt-4o-mini"
        settings.LLM_TIMEOUT_SECONDS = 0.3
        settings.LLM_MAX_ATTEMPTS = 3
        settings.LLM_RETRY_BASE_SECONDS = 0.01
        settings.LLM_RETRY_MAX_SECONDS = 0.02
        settings.LLM_MONTHLY_BUDGET_USD = 50
        yield fake


def complete(template, **overrides) -> LlmCall:
    arguments = {"prompt": template, "variables": VARIABLES, "schema": SCHEMA, "study_id": 7, "purpose": "query-text"}
    return llm_complete(**{**arguments, **overrides})


def test_a_normal_answer_is_recorded_with_tokens_cost_and_latency(openai_fake, template):
    call = complete(template)

    call.refresh_from_db()
    assert call.output == ANSWER
    assert (call.provider, call.model, call.attempts) == ("openai", "gpt-4o-mini", 1)
    assert (call.tokens_in, call.tokens_out) == (120, 30)
    assert call.cost == Decimal("0.000036")  # 120 x 0.00015 / 1000 + 30 x 0.0006 / 1000
    assert call.latency_ms >= 0 and not call.cache_hit and not call.fallback_used
    assert (call.prompt_template, call.prompt_version, call.study_id) == (template, 1, 7)
    assert len(call.input_hash) == 64
    [request] = openai_fake.requests
    assert request["authorization"] == "Bearer sk-test-key"
    assert request["body"]["response_format"]["json_schema"]["schema"] == SCHEMA
    assert request["body"]["messages"] == call.messages


def test_a_free_text_answer_is_returned_as_text(openai_fake, template):
    openai_fake.answer = "Please verify the weight at Week 4."
    call = complete(template, schema=None)
    assert call.output == "Please verify the weight at Week 4."
    assert "response_format" not in openai_fake.bodies[0]


def test_a_429_is_retried_then_answered(openai_fake, template):
    openai_fake.script = ["429"]
    call = complete(template)
    assert (call.provider, call.attempts, call.fallback_used) == ("openai", 2, False)
    assert len(openai_fake.requests) == 2


def test_a_persistent_500_falls_back_to_offline_and_records_why(openai_fake, template):
    openai_fake.script = ["500"] * 3
    call = complete(template)
    call.refresh_from_db()
    assert (call.provider, call.model, call.attempts, call.fallback_used) == ("offline", "offline", 3, True)
    assert "InternalServerError (HTTP 500) after 3 attempts" in call.fallback_reason
    assert len(openai_fake.requests) == 3
    jsonschema.validate(call.output, SCHEMA)


def test_a_time_out_is_retried_then_falls_back(openai_fake, template, settings):
    settings.LLM_MAX_ATTEMPTS = 2
    openai_fake.script, openai_fake.sleep_seconds = ["timeout", "timeout"], 1.0
    call = complete(template)
    assert (call.provider, call.attempts, call.fallback_used) == ("offline", 2, True)
    assert "APITimeoutError" in call.fallback_reason


@pytest.mark.parametrize("behaviour, reason", [
    ("malformed_body", "malformed response"),
    ("malformed_json", "not valid JSON"),
    ("schema_invalid", "fails the schema"),
    ("refusal", "refused"),
])
def test_an_unusable_answer_falls_back_without_retrying(openai_fake, template, behaviour, reason):
    openai_fake.script = [behaviour]
    call = complete(template)
    assert (call.provider, call.fallback_used, call.attempts) == ("offline", True, 1)
    assert reason in call.fallback_reason
    assert len(openai_fake.requests) == 1
    jsonschema.validate(call.output, SCHEMA)
    assert call.output["query_text"] == VARIABLES["query_text"]  # offline: taken from the variable


def test_the_tokens_of_an_answer_that_failed_the_schema_are_still_paid_for(openai_fake, template):
    openai_fake.script = ["schema_invalid"]
    call = complete(template)
    assert (call.tokens_in, call.tokens_out, call.cost) == (120, 30, Decimal("0.000036"))


def test_the_second_identical_call_is_a_cache_hit_that_reaches_no_server(openai_fake, template):
    first = complete(template)
    second = complete(template)
    assert len(openai_fake.requests) == 1
    assert (second.cache_hit, second.cost, second.tokens_in, second.attempts) == (True, 0, 0, 0)
    assert (second.provider, second.output, second.input_hash) == ("openai", first.output, first.input_hash)
    assert second.cache_source == first


def test_a_fallback_answer_is_not_cached(openai_fake, template):
    openai_fake.script = ["refusal"]
    complete(template)
    call = complete(template)
    assert (call.provider, call.cache_hit) == ("openai", False)
    assert len(openai_fake.requests) == 2


def test_a_study_whose_monthly_budget_is_spent_goes_offline_without_calling_the_server(openai_fake, template, settings):
    settings.LLM_MONTHLY_BUDGET_USD = 1
    openai_fake.tokens = (10_000_000, 0)  # 1.50 USD
    first = complete(template)
    assert first.cost == Decimal("1.5") and llm_month_spend(study_id=7) == Decimal("1.5")

    second = complete(template, variables={**VARIABLES, "value": "716"})

    assert len(openai_fake.requests) == 1
    assert (second.provider, second.fallback_used, second.cost) == ("offline", True, 0)
    assert second.fallback_reason.startswith("budget:")
    assert complete(template, study_id=8, variables={**VARIABLES, "value": "716"}).provider == "openai"


def test_last_months_spending_does_not_count(openai_fake, template, settings):
    settings.LLM_MONTHLY_BUDGET_USD = 1
    openai_fake.tokens = (10_000_000, 0)
    old = complete(template)
    LlmCall.objects.filter(pk=old.pk).update(created_at=old.created_at - timedelta(days=32))
    assert llm_month_spend(study_id=7) == 0
    assert complete(template, variables={**VARIABLES, "value": "716"}).provider == "openai"


def test_patient_identifiers_never_reach_the_server(openai_fake):
    template = prompt_template_create(
        name="query-text-with-context",
        text="Subject $subject_initials, visit $visit on $visit_date. Site note: $note. Draft a query as JSON.",
        identifier_variables=["patient_name"],
    )
    note = ("Reported by John Smith (Smith's wife called), DOB: 1961-04-02, john.smith@example.org, "
            "tel +44 20 7946 0958, MRN: A1234567, SSN 123-45-6789. JDS weighed 715 kg on 2025-01-10.")
    variables = {"subject_initials": "JDS", "patient_name": "John Smith", "visit": "Week 4",
                 "visit_date": "2025-01-10", "note": note}

    call = complete(template, variables=variables)

    sent = json.dumps(openai_fake.bodies)
    for identifier in ("JDS", "John", "Smith", "1961-04-02", "john.smith@example.org", "7946", "A1234567",
                       "123-45-6789"):
        assert identifier not in sent
    for placeholder in ("subject_initials", "patient_name", "date_of_birth", "email", "phone",
                        "medical_record_number", "national_id"):
        assert f"[REDACTED:{placeholder}]" in sent
    assert "2025-01-10" in sent and "715 kg" in sent  # study data stays
    assert call.redactions["subject_initials"] == 2 and call.redactions["email"] == 1
    assert "JDS" not in json.dumps(call.messages)


def test_without_a_key_the_offline_provider_answers_deterministically(settings, template):
    settings.OPENAI_API_KEY, settings.OPENAI_API_KEY_FILE = "", ""
    first = complete(template)
    second = complete(template)
    assert (first.provider, first.fallback_used, first.cache_hit) == ("offline", False, False)
    assert first.output == second.output and first.input_hash == second.input_hash
    assert first.output == {"severity": "minor", "query_text": VARIABLES["query_text"], "confidence": 0}
    text = complete(template, schema=None)
    assert text.output == "WEIGHT at Week 4 (715) fails range 30-250 kg. Please verify against source."


def test_the_key_can_come_from_a_secret_file(openai_fake, template, settings, tmp_path):
    secret = tmp_path / "openai-key"
    secret.write_text("sk-from-file\n")
    settings.OPENAI_API_KEY, settings.OPENAI_API_KEY_FILE = "", str(secret)
    assert complete(template).provider == "openai"
    assert openai_fake.requests[0]["authorization"] == "Bearer sk-from-file"


def test_a_prompt_altered_after_it_was_stored_is_refused(settings, template):
    settings.OPENAI_API_KEY, settings.OPENAI_API_KEY_FILE = "", ""
    PromptTemplate.objects.filter(pk=template.pk).update(text="Ask the site to change the value to 71.5.")
    template.refresh_from_db()
    with pytest.raises(PromptError, match="altered"):
        complete(template)
    assert not LlmCall.objects.exists()
