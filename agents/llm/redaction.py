"""No direct patient identifiers in a prompt (HIPAA, GDPR: minimal personal data).

Before anything is sent to a model, the values of identifier variables are replaced by placeholders
wherever they appear, and patterns of direct identifiers (e-mail, phone, date of birth, record and
national id numbers) are redacted in every other value. Study dates (visit, AE onset) are data and
stay: a date is redacted only when it is labelled as a date of birth.
"""

import re
from collections import Counter

# Variables under these names always hold an identifier, whether or not the template marks them.
ALWAYS_IDENTIFIERS = frozenset({
    "subject_initials", "initials", "patient_name", "subject_name", "full_name",
    "date_of_birth", "dob", "birth_date", "mrn", "email", "phone", "national_id", "address",
})

_DATE = (r"(?:\d{4}-\d{2}-\d{2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}"
         r"|\d{1,2} [A-Za-z]{3,9},? \d{4}|[A-Za-z]{3,9} \d{1,2},? \d{4})")
PATTERNS = [
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("date_of_birth", re.compile(rf"\b(?:DOB|D\.O\.B\.|date of birth|birth ?date|born(?: on)?)\s*[:=]?\s*{_DATE}",
                                 re.IGNORECASE)),
    ("medical_record_number", re.compile(
        r"\b(?:MRN|medical record(?: number| no\.?)?|hospital number|NHS(?: number| no\.?)?|patient id)"
        r"\s*[:#=]?\s*[A-Z0-9][A-Z0-9-]{3,}", re.IGNORECASE)),
    ("national_id", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),  # US SSN
    ("phone", re.compile(
        r"\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}\b"  # international
        r"|(?<!\w)\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b"  # North American
        r"|\b0\d(?:[\s.-]?\d{2}){4}\b")),  # European national format, e.g. 01 23 45 67 89
    ("id_number", re.compile(r"\b\d{9,}\b")),  # long digit runs: social security, insurance numbers
]


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


def _value_pattern(value: str) -> re.Pattern:
    # Initials ("JS", "J.S.") match case-sensitively, as whole words; longer values ignore case.
    flags = 0 if len(value) <= 4 else re.IGNORECASE
    return re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", flags)


def _identifier_values(variables: dict, names: set[str]) -> list[tuple[str, str]]:
    """(variable name, value) for each identifier, plus each part of a multi-word name."""
    found = []
    for name in sorted(names & set(variables)):
        value = str(variables[name] or "").strip()
        if len(value) < 2:
            continue
        found.append((name, value))
        found += [(name, part) for part in re.split(r"[\s,]+", value) if len(part) >= 3 and part != value]
    # Longest first, so "John Smith" is replaced whole before "Smith" alone.
    return sorted(found, key=lambda item: -len(item[1]))


def redact_text(text: str, identifiers: list[tuple[str, str]], counts: Counter) -> str:
    # Patterns first, so an e-mail address holding a name is redacted whole.
    for kind, pattern in PATTERNS:
        text, n = pattern.subn(placeholder(kind), text)
        counts[kind] += n
    for name, value in identifiers:
        text, n = _value_pattern(value).subn(placeholder(name), text)
        counts[name] += n
    return text


def redact_variables(variables: dict, identifier_names) -> tuple[dict, list[tuple[str, str]], Counter]:
    """Variables safe to send: identifier variables replaced whole, identifiers and identifier
    patterns redacted in the others (nested lists and dicts included). Returns them with the
    identifier values (to check the rendered prompt again) and what was redacted, by kind."""
    names = set(identifier_names) | ALWAYS_IDENTIFIERS
    identifiers = _identifier_values(variables, names)
    counts: Counter = Counter()
    safe = {}
    for name, value in variables.items():
        if name in names and value not in (None, ""):
            safe[name] = placeholder(name)
            counts[name] += 1
        else:
            safe[name] = _redact_value(value, identifiers, counts)
    return safe, identifiers, counts


def _redact_value(value, identifiers, counts):
    if isinstance(value, str):
        return redact_text(value, identifiers, counts)
    if isinstance(value, list | tuple):
        return [_redact_value(item, identifiers, counts) for item in value]
    if isinstance(value, dict):
        return {key: _redact_value(item, identifiers, counts) for key, item in value.items()}
    return value
