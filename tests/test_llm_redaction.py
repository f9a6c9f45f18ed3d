"""Redaction of direct identifiers: what it catches, and the study data it leaves alone."""

from collections import Counter

import pytest

from agents.llm.redaction import redact_text, redact_variables
from tests.test_settings_env import start


@pytest.mark.parametrize("text, kind", [
    ("contact jane.doe+trial@hospital.example.com", "email"),
    ("DOB: 02/04/1961", "date_of_birth"),
    ("born on 2 April 1961", "date_of_birth"),
    ("Date of birth 1961-04-02", "date_of_birth"),
    ("MRN# 00123456", "medical_record_number"),
    ("NHS number 9434765919", "medical_record_number"),
    ("SSN 123-45-6789", "national_id"),
    ("call +33 1 23 45 67 89", "phone"),
    ("call (555) 123-4567", "phone"),
    ("call 01 23 45 67 89", "phone"),
    ("insurance 1850375123456", "id_number"),
])
def test_an_identifier_pattern_is_redacted(text, kind):
    counts = Counter()
    assert f"[REDACTED:{kind}]" in redact_text(text, [], counts)
    assert counts[kind] == 1


@pytest.mark.parametrize("text", [
    "AE onset 2025-01-10 is before consent on 2025-01-12.",
    "Weight 715 kg at visit 4 (Week 4, day 28), range 30-250.",
    "Systolic BP 120 130 140 150 mmHg; HbA1c 6.5%; ALT 3.2 x ULN.",
    "Item IT.VS.WEIGHT of form FORM.VS, site 101, subject 101-004.",
])
def test_study_data_is_left_alone(text):
    counts = Counter()
    assert redact_text(text, [], counts) == text
    assert not +counts


def test_identifier_variables_are_replaced_whole_and_found_in_other_values():
    safe, _, counts = redact_variables(
        {"initials": "J.S.", "patient_name": "Jane Smithers", "notes": ["J.S. and Mrs Smithers called", {"x": 1}]},
        identifier_names=[],
    )
    assert safe == {"initials": "[REDACTED:initials]", "patient_name": "[REDACTED:patient_name]",
                    "notes": ["[REDACTED:initials] and Mrs [REDACTED:patient_name] called", {"x": 1}]}
    assert counts["initials"] == 2


def test_short_initials_match_whole_words_with_their_case():
    safe, _, _ = redact_variables({"subject_initials": "AB", "note": "AB was seen; abnormal lab; TAB taken"},
                                  identifier_names=[])
    assert safe["note"] == "[REDACTED:subject_initials] was seen; abnormal lab; TAB taken"


@pytest.mark.parametrize("name, value", [
    ("LLM_MAX_ATTEMPTS", "three"),
    ("LLM_TIMEOUT_SECONDS", "0"),
    ("LLM_MONTHLY_BUDGET_USD", "lots"),
    ("LLM_BASE_URL", "ftp://models.example.org"),
])
def test_a_malformed_llm_setting_stops_start_up_naming_the_variable(name, value):
    result = start({name: value})
    assert result.returncode != 0
    assert name in result.stderr.strip().splitlines()[-1]
