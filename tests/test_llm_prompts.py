"""Versioned prompt templates, A/B assignment between versions and reviewers' outcomes per version."""

from collections import Counter

import pytest

from agents.llm import (
    llm_complete,
    llm_outcome_record,
    llm_outcome_summary,
    prompt_template_create,
    prompt_template_retire,
    prompt_version_for,
)
from agents.llm.ledger import OutcomeAlreadyRecorded
from agents.llm.prompts import PromptError
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def offline(settings):
    settings.OPENAI_API_KEY, settings.OPENAI_API_KEY_FILE = "", ""


def two_versions():
    first = prompt_template_create(name="query-text", text="Write a query about $item.")
    second = prompt_template_create(name="query-text", text="Write a neutral query about $item for the site.")
    return first, second


def test_a_changed_text_is_stored_as_the_next_version_and_an_unchanged_one_is_not():
    first, second = two_versions()
    again = prompt_template_create(name="query-text", text="Write a neutral query about $item for the site.")
    assert (first.version, second.version, again.pk) == (1, 2, second.pk)
    assert second.variables == ["item"] and first.checksum != second.checksum


def test_a_template_with_a_lone_dollar_is_refused():
    with pytest.raises(PromptError, match="lone"):
        prompt_template_create(name="bad", text="Costs $ 5")


def test_a_missing_variable_is_named():
    template = prompt_template_create(name="query-text", text="Write a query about $item.")
    with pytest.raises(PromptError, match="'item'"):
        llm_complete(prompt=template, variables={}, purpose="test")


def test_the_same_key_always_gets_the_same_version_and_keys_split_between_versions():
    first, second = two_versions()
    assigned = {key: prompt_version_for(name="query-text", key=key) for key in range(400)}
    assert all(prompt_version_for(name="query-text", key=key) == version for key, version in assigned.items())
    split = Counter(version.version for version in assigned.values())
    assert set(split) == {1, 2} and 140 <= split[1] <= 260


def test_a_retired_version_is_no_longer_assigned_and_no_key_gets_the_newest():
    first, second = two_versions()
    assert prompt_version_for(name="query-text") == second
    prompt_template_retire(template=second)
    assert {prompt_version_for(name="query-text", key=key) for key in range(50)} == {first}
    prompt_template_retire(template=first)
    with pytest.raises(PromptError, match="No active version"):
        prompt_version_for(name="query-text")


def test_a_call_by_name_uses_the_assigned_version():
    two_versions()
    call = llm_complete(prompt="query-text", variables={"item": "WEIGHT"}, purpose="query-text", ab_key=17)
    assert call.prompt_template == prompt_version_for(name="query-text", key=17)
    assert call.prompt_version == call.prompt_template.version


def test_outcomes_are_summarised_per_version():
    two_versions()
    reviewer = UserFactory()
    calls = {key: llm_complete(prompt="query-text", variables={"item": "WEIGHT"}, purpose="q", ab_key=key)
             for key in range(20)}
    outcomes = ["accepted", "edited", "rejected", None]
    for key, call in calls.items():
        if outcomes[key % 4]:
            llm_outcome_record(call=call, outcome=outcomes[key % 4], actor=reviewer)

    summary = llm_outcome_summary(name="query-text")

    expected = {1: Counter(), 2: Counter()}
    for key, call in calls.items():
        expected[call.prompt_version][outcomes[key % 4] or "pending"] += 1
    assert [row["version"] for row in summary] == [1, 2]
    for row in summary:
        counts = expected[row["version"]]
        assert row["calls"] == sum(counts.values())
        assert (row["accepted"], row["edited"], row["rejected"], row["pending"]) == (
            counts["accepted"], counts["edited"], counts["rejected"], counts["pending"])
        reviewed = counts["accepted"] + counts["edited"] + counts["rejected"]
        assert row["acceptance_rate"] == (counts["accepted"] / reviewed if reviewed else None)


def test_an_outcome_names_the_reviewer_and_cannot_be_recorded_twice():
    first, _ = two_versions()
    reviewer = UserFactory()
    call = llm_complete(prompt=first, variables={"item": "WEIGHT"}, purpose="q")
    llm_outcome_record(call=call, outcome="accepted", actor=reviewer)
    call.refresh_from_db()
    assert (call.outcome, call.reviewed_by, call.reviewed_at is not None) == ("accepted", reviewer, True)
    with pytest.raises(OutcomeAlreadyRecorded):
        llm_outcome_record(call=call, outcome="rejected", actor=reviewer)
    with pytest.raises(ValueError, match="not one of"):
        llm_outcome_record(call=call, outcome="liked", actor=reviewer)
