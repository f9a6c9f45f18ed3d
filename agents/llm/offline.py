"""The offline provider: deterministic answers without a model.

It is the default when no API key is set and the fallback when the model fails, refuses or answers
outside the schema. Free text is the template's offline text (or, without one, the prompt itself)
filled with the variables; a structured answer is the smallest object valid under the schema,
taking a property's value from the variable of the same name when that value is valid.
"""

import jsonschema

from agents.llm.prompts import prompt_render
from agents.models import PromptTemplate


class OfflineSchemaError(ValueError):
    """The schema asks for something the offline provider cannot build (a pattern, a $ref, ...)."""


def offline_answer(*, template: PromptTemplate, variables: dict, schema: dict | None):
    if schema is None:
        return prompt_render(template=template, text=template.offline_text or template.text, variables=variables)
    value = _build(schema, variables, name=None)
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as error:
        raise OfflineSchemaError(f"offline answer does not satisfy the schema: {error.message}") from None
    return value


def _is_valid(value, schema: dict) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def _build(schema: dict, variables: dict, name: str | None):
    if name in variables and _is_valid(variables[name], schema):
        return variables[name]
    for keyword in ("const", "default"):
        if keyword in schema:
            return schema[keyword]
    if schema.get("enum"):
        return schema["enum"][0]
    for keyword in ("anyOf", "oneOf", "allOf"):
        if schema.get(keyword):
            return _build(schema[keyword][0], variables, name)
    return _build_type(_first_type(schema), schema, variables)


def _first_type(schema: dict) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        return next((k for k in kind if k != "null"), "null")
    return kind or ("object" if "properties" in schema else None)


def _build_type(kind: str | None, schema: dict, variables: dict):
    if kind == "object":
        properties = schema.get("properties", {})
        return {prop: _build(sub, variables, name=prop) for prop, sub in properties.items()}
    if kind == "array":
        item = _build(schema.get("items", {}), variables, name=None)
        return [item] * schema.get("minItems", 0)
    if kind == "string":
        return "-" * schema.get("minLength", 0)
    if kind in ("integer", "number"):
        value = schema.get("minimum", 0)
        return min(value, schema["maximum"]) if "maximum" in schema else value
    if kind == "boolean":
        return False
    return None
