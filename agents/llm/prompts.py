"""Versioned prompt templates and their A/B assignment.

A version is never edited: storing a changed text makes the next version, and the checksum is
verified at every use, so an answer in the ledger always points at the exact text that produced it.
Text uses string.Template syntax ($name, ${name}): no attribute access, and JSON braces need no escaping.
"""

import hashlib
import json
import string

from agents.models import PromptTemplate


class PromptError(ValueError):
    pass


def _checksum(*, text: str, offline_text: str, identifier_variables: list[str]) -> str:
    payload = json.dumps(
        {"text": text, "offline_text": offline_text, "identifier_variables": sorted(identifier_variables)},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _variables(text: str) -> list[str]:
    template = string.Template(text)
    if not template.is_valid():
        raise PromptError(f"Not a valid template (a lone $ must be written $$): {text[:80]!r}")
    return template.get_identifiers()


def prompt_template_create(
    *, name: str, text: str, offline_text: str = "", identifier_variables: list[str] | tuple = ()
) -> PromptTemplate:
    """Store `text` as the next version of `name`; the latest version itself if nothing changed."""
    identifier_variables = sorted(set(identifier_variables))
    checksum = _checksum(text=text, offline_text=offline_text, identifier_variables=identifier_variables)
    variables = sorted(set(_variables(text)) | set(_variables(offline_text)))
    latest = PromptTemplate.objects.filter(name=name).order_by("-version").first()
    if latest is not None and latest.checksum == checksum:
        return latest
    return PromptTemplate.objects.create(
        name=name, version=latest.version + 1 if latest else 1, text=text, offline_text=offline_text,
        variables=variables, identifier_variables=identifier_variables, checksum=checksum,
    )


def prompt_template_retire(*, template: PromptTemplate) -> PromptTemplate:
    """Take a version out of the A/B split; its calls keep pointing at it."""
    template.active = False
    template.save(update_fields=["active"])
    return template


def prompt_version_for(*, name: str, key: str | int | None = None) -> PromptTemplate:
    """The active version of `name` that serves `key`: the same key always gets the same version
    (while the set of active versions is unchanged), and keys split evenly between versions.
    Without a key, the newest active version."""
    versions = list(PromptTemplate.objects.filter(name=name, active=True).order_by("version"))
    if not versions:
        raise PromptError(f"No active version of prompt {name!r}")
    if key is None:
        return versions[-1]
    digest = hashlib.sha256(f"{name}\0{key}".encode()).digest()
    return versions[int.from_bytes(digest[:8], "big") % len(versions)]


def prompt_is_intact(template: PromptTemplate) -> bool:
    checksum = _checksum(text=template.text, offline_text=template.offline_text,
                         identifier_variables=template.identifier_variables)
    return checksum == template.checksum


def prompt_render(*, template: PromptTemplate, text: str, variables: dict) -> str:
    """Fill `text` (the template's text or its offline text) with `variables`."""
    if not prompt_is_intact(template):
        raise PromptError(f"Prompt {template} was altered after it was stored (checksum mismatch)")
    values = {name: _as_text(value) for name, value in variables.items()}
    try:
        return string.Template(text).substitute(values)
    except KeyError as missing:
        raise PromptError(f"Prompt {template} needs the variable {missing.args[0]!r}") from None


def _as_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
