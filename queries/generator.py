"""The QueryGenerator: query text in the site's language from the phrasebook's templates, an
optional rewording by the LLM service kept only when it passes the compliance check, and the
per-study policy deciding which generated queries skip the data managers' preview.

For the QueryAnalyzer (template text only: no network call inside its pass's transaction):
    texts = query_texts_for_findings(study=study, findings=rows, checks=checks_by_id, items=ctx.items)
    written = texts[(int(row.check_id), row.key)]   # .text .language .text_origin .prompt_version .compliant
    policy = candidate_policy_for(study=study)
    release = written.compliant and policy.allows_release(category=row.category, confidence=row.confidence)

For one discrepancy (lifecycle, re-query, the agent): query_text_for_discrepancy(discrepancy=d).
LLM rewording, when the study's QueryGenerator config says `"llm_rewording": true`, is applied by
the agent to Candidate queries, before a data manager sees them (candidate_texts_regenerate).
"""

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import pandas as pd
from django.db import transaction

from agents.identity import agent_user
from agents.llm import llm_complete, llm_outcome_record, prompt_template_create
from agents.models import LlmCall, PromptTemplate
from agents.registry import Agent, register
from agents.services import agent_config_get
from queries.compliance import compliance_check, compliance_max_length
from queries.models import Discrepancy, EditCheck, Query, QueryMessage
from queries.phrasebook import CLOSING_OF, DEFAULT_LANGUAGE, PHRASEBOOK, phrasebook_language
from studies.audit import set_audit
from studies.models import DataPoint, FormDefinition, ItemDefinition, Site, Study, SubjectVisit, VisitDefinition

AGENT_NAME = "QueryGenerator"
T = EditCheck.RuleType
# Longest value shown in a query: a free-text value or a long codelist would crowd out the question.
VALUE_LIMITS = {"item": 100, "form": 60, "visit": 60, "observed": 80, "expected": 120, "prior": 80, "rule": 120,
                "required": 80, "anchor_name": 80}


class PhrasebookError(LookupError):
    """A template names a placeholder its context does not supply (a bug: the tests catch it)."""


@dataclass(frozen=True)
class QueryText:
    text: str
    language: str  # the language actually used (English when the site's has no phrasebook)
    text_origin: str  # Query.TextOrigin: template or llm
    prompt_version: str = ""  # "name@version" of the prompt that reworded it, when text_origin is llm
    refusals: tuple[str, ...] = ()  # compliance reasons against the text itself: keep it for a data manager
    llm_refusals: tuple[str, ...] = ()  # why a rewording was not kept (offline, non-compliant, ...)
    llm_call_id: int | None = None  # the LlmCall whose answer is the text (for reviewers' outcomes)

    @property
    def compliant(self) -> bool:
        return not self.refusals


# --- Rendering ----------------------------------------------------------------------------------


def template_key(*, rule_type: str, category: str, context: Mapping) -> str:
    templates = PHRASEBOOK[DEFAULT_LANGUAGE]["templates"]
    if rule_type == T.DATE_ORDER:
        return "date_order.before" if context.get("order") == "before" else "date_order.after"
    if rule_type == T.DUPLICATE:
        return "duplicate.record" if context.get("keys") else "duplicate.item"
    if rule_type in templates:
        return rule_type
    return f"category.{category}" if f"category.{category}" in templates else "category.other"


def query_text_render(*, rule_type: str, category: str, language: str, context: Mapping) -> str:
    """The query text for a finding, in `language` (English if the phrasebook lacks it).

    `context`: "item", "item_oid", "form", "visit", "observed", "expected", "prior" (optional),
    and what the rule's template needs: "order" (date_order: after/before), "anchor"
    (consent/enrolment/visit/item), "anchor_name", "anchor_date", "min_days", "max_days", "keys"
    (a list of labels), "required", "rule", "today", "visit_date", "day", "planned", "before",
    "after". Raises PhrasebookError when the template needs a value the context lacks."""
    book = PHRASEBOOK[phrasebook_language(language)]
    key = template_key(rule_type=rule_type, category=category, context=context)
    values = _render_values(book, context)
    parts = [_format(book["templates"][key], values, key)]
    if context.get("prior") not in (None, ""):
        parts.append(_format(book["prior"], values, "prior"))
    parts.append(book["closings"][CLOSING_OF[key]])
    return book["sentence_separator"].join(parts)


def template_placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _format(template: str, values: Mapping, key: str) -> str:
    try:
        return template.format_map(values)
    except KeyError as missing:
        raise PhrasebookError(f"Template {key!r} needs {missing.args[0]!r}, which the context lacks") from None


def _render_values(book: dict, context: Mapping) -> dict:
    """The context as text, with the parts each language composes its own way."""
    values = {k: ", ".join(v) if isinstance(v, list | tuple) else ("" if v is None else str(v))
              for k, v in context.items()}
    form, visit = values.get("form", ""), values.get("visit", "")
    values["item"] = values.get("item") or values.get("item_oid") or visit
    values["where"] = (book["where"].format(form=form, visit=visit) if form and visit
                       else form or visit or values.get("item_oid", ""))
    if "keys" in context:
        values["keys"] = book["list_separator"].join(str(k) for k in context["keys"] or ())
    if "anchor" in context:
        values["reference"] = _reference(book, context)
    if "min_days" in context or "max_days" in context:
        values["window"] = _window(book, context.get("min_days"), context.get("max_days"))
    return values


def _reference(book: dict, context: Mapping) -> str:
    anchor, name = context.get("anchor") or "", str(context.get("anchor_name") or "")
    if anchor in ("consent", "enrolment"):
        label = book["anchors"][anchor]
    elif anchor == "visit":
        label = book["anchors"]["visit"].format(name=name)
    else:
        label = name  # another item's label, or the analyzer's own words for the anchor
    date = context.get("anchor_date") or ""
    return book["reference"].format(anchor=label, date=date) if date else label


def _window(book: dict, low, high) -> str:
    if low is not None and high is not None:
        return book["window"]["range"].format(low=low, high=high)
    if low is not None:
        return book["window"]["min"].format(low=low)
    return book["window"]["max"].format(high=high) if high is not None else ""


# --- From a finding to its context -----------------------------------------------------------------


class StudyLabels:
    """Names of a study's items, forms and visits by OID, each table read once, when first needed."""

    def __init__(self, *, study_id: int, items: Iterable[ItemDefinition] = ()):
        self.study_id = study_id
        self._items = {item.oid: item for item in items} or None
        self._forms: dict[str, str] | None = None
        self._visits: dict[str, str] | None = None

    def item(self, oid: str) -> ItemDefinition | None:
        if self._items is None:
            self._items = {i.oid: i for i in ItemDefinition.objects.filter(study_id=self.study_id)
                           .select_related("form")}
        return self._items.get(oid)

    def item_label(self, oid: str) -> str:
        item = self.item(oid)
        return item.label if item else oid

    def form_name(self, oid: str) -> str:
        if self._forms is None:
            self._forms = dict(FormDefinition.objects.filter(study_id=self.study_id).values_list("oid", "name"))
        return self._forms.get(oid, oid)

    def visit_name(self, oid: str) -> str:
        if self._visits is None:
            self._visits = dict(VisitDefinition.objects.filter(study_id=self.study_id).values_list("oid", "name"))
        return self._visits.get(oid, oid)


def _get(finding, name: str, default=None):
    value = finding.get(name, default) if isinstance(finding, Mapping) else getattr(finding, name, default)
    return default if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def _short(value, limit: int) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _limits(expected: str) -> str:
    """"60 to 250 mmHg" -> "60–250 mmHg", ">= 60" -> "≥ 60": the analyzer's limits without English."""
    text = re.sub(r"^physiologically possible: ", "", expected)
    text = re.sub(r"^(\S+) to (\S+)", r"\1–\2", text)
    return text.replace(">= ", "≥ ").replace("<= ", "≤ ")


def finding_context(*, finding, check: EditCheck | None, item: ItemDefinition | None, visit_name: str,
                    labels: StudyLabels, prior_value: str | None = None) -> dict:
    """The context of query_text_render for a finding of the analyzer (queries.checks.evaluate:
    its `observed`/`expected` strings are parsed back into their parts, and the rule's params
    give the rest, so nothing English reaches a text in another language)."""
    rule_type = _get(finding, "rule_type") or (check.rule_type if check else "")
    params = check.params if check else {}
    observed, expected = str(_get(finding, "observed", "")), str(_get(finding, "expected", ""))
    if rule_type == T.CONSISTENCY and item is None and params.get("when"):
        item = labels.item(params["when"]["item"])  # the trigger item: its data point gets the query
    context = {"item": item.label if item else "", "item_oid": item.oid if item else "",
               "form": item.form.name if item and item.form_id else "", "visit": visit_name,
               "observed": observed, "expected": expected, "prior": prior_value or ""}
    parse = _PARSERS.get(rule_type)
    if parse:
        parse(context, params, labels)
    if rule_type == T.EXPRESSION and check is not None:
        context["rule"] = check.name  # the rule's name reads better than its formula
    return {k: _short(v, VALUE_LIMITS[k]) if k in VALUE_LIMITS else v for k, v in context.items()}


def _parse_range(context, params, labels):
    context["expected"] = _limits(context["expected"])


def _parse_codelist(context, params, labels):
    context["expected"] = context["expected"].removeprefix("one of ")


def _parse_dates(context, params, labels):
    match = re.fullmatch(r"(\S+) \((.+): (\S+)\)", context["observed"])
    if match:
        context["observed"], context["anchor_name"], context["anchor_date"] = match.groups()
    else:
        context["anchor_name"], context["anchor_date"] = "", ""
    anchor = params.get("anchor", "")
    context["anchor"] = anchor
    if anchor == "visit":
        context["anchor_name"] = labels.visit_name(params.get("anchor_visit", ""))
    elif anchor == "item":
        context["anchor_name"] = labels.item_label(params.get("anchor_item", ""))
    context["order"] = params.get("order") or ("before" if context["expected"].startswith("on or before") else "after")
    context["min_days"], context["max_days"] = params.get("min_days"), params.get("max_days")


def _parse_visit_window(context, params, labels):
    seen = re.fullmatch(r"study day (-?\d+) \((\S+)\)", context["observed"])
    planned = re.fullmatch(r"study day (-?\d+) \(-(\d+)/\+(\d+)\)", context["expected"])
    context["day"], context["visit_date"] = seen.groups() if seen else ("?", context["observed"])
    context["planned"], context["before"], context["after"] = planned.groups() if planned else (
        context["expected"], "?", "?")


def _parse_future_date(context, params, labels):
    context["today"] = context["expected"].removeprefix("on or before ")


def _parse_consistency(context, params, labels):
    match = re.fullmatch(r"(.+?) = (.*); no (.+)", context["observed"], flags=re.DOTALL)
    if match:
        context["observed"] = match.group(2).strip()
    require = params.get("require") or {}
    if "form" in require:
        context["required"] = labels.form_name(require["form"])
    elif "item" in require:
        context["required"] = labels.item_label(require["item"])
    else:
        context["required"] = match.group(3) if match else context["expected"]


def _parse_duplicate(context, params, labels):
    if params.get("keys"):
        context["keys"] = [labels.item_label(oid) for oid in params["keys"]]
    elif match := re.fullmatch(r"the same (.+) as record with data point \d+", context["observed"]):
        context["keys"] = [labels.item_label(oid.strip()) for oid in match.group(1).split(",")]
    else:
        context["keys"] = []
        context["observed"] = context["observed"].removeprefix("recorded again: ")


def _parse_expression(context, params, labels):
    # "VS.SYSBP = 80, VS.DIABP = 90" -> "Systolic BP = 80, Diastolic BP = 90"
    context["observed"] = re.sub(r"([\w.]+) = ", lambda m: f"{labels.item_label(m.group(1))} = ",
                                 context["observed"])
    context["rule"] = context["expected"]


_PARSERS = {T.RANGE: _parse_range, T.LAB_PLAUSIBILITY: _parse_range, T.CODELIST: _parse_codelist,
            T.DATE_ORDER: _parse_dates, T.DATE_WINDOW: _parse_dates, T.VISIT_WINDOW: _parse_visit_window,
            T.FUTURE_DATE: _parse_future_date, T.CONSISTENCY: _parse_consistency, T.DUPLICATE: _parse_duplicate,
            T.EXPRESSION: _parse_expression}


# --- The text of one finding, and of a pass's findings ----------------------------------------------


def query_text_for(*, finding, check: EditCheck | None, site: Site, item: ItemDefinition | None = None,
                   visit_name: str = "", prior_value: str | None = None,
                   identifiers: Mapping[str, str] | None = None, subject_label: str = "",
                   use_llm: bool | None = None, ab_key: str | int | None = None,
                   labels: StudyLabels | None = None) -> QueryText:
    """The query text of one finding in `site`'s language.

    `finding`: a row of the analyzer's findings (itertuples), a Discrepancy or a dict, with
    observed, expected, category and rule_type. `item`: the ItemDefinition (its form loaded).
    `identifiers`: the patient's direct identifiers, if the caller knows any (keys among
    IDENTIFIER_KEYS); they are only used to refuse texts naming them and to redact them from an
    LLM prompt. `use_llm`: reword through the LLM service (None: the study's policy)."""
    study_id = site.study_id
    labels = labels or StudyLabels(study_id=study_id)
    context = finding_context(finding=finding, check=check, item=item, visit_name=visit_name, labels=labels,
                              prior_value=prior_value)
    rule_type = _get(finding, "rule_type") or (check.rule_type if check else "")
    category = _get(finding, "category") or Query.Category.OTHER
    language = phrasebook_language(site.language)
    text = query_text_render(rule_type=rule_type, category=category, language=language, context=context)
    checked = {**context, "identifiers": dict(identifiers or {})}
    written = QueryText(text=text, language=language, text_origin=Query.TextOrigin.TEMPLATE,
                        refusals=tuple(compliance_check(text, language=language, context=checked)))
    if use_llm is None:
        use_llm = candidate_policy_for(study=study_id).llm_rewording
    if not use_llm:
        return written
    if written.refusals:  # never send a text naming a patient, nor reword one a data manager must see
        return replace(written, llm_refusals=("not reworded: the template text itself is refused",))
    return _reworded(written, context=checked, study_id=study_id, subject_label=subject_label, ab_key=ab_key)


def data_point_prior_values(data_point_ids: Iterable[int]) -> dict[int, str]:
    """For each data point whose value changed: the value before its latest change (one query)."""
    ids = sorted({int(i) for i in data_point_ids})
    if not ids:
        return {}
    rows = (DataPoint.history.filter(id__in=ids).order_by("id", "-history_date", "-history_id")
            .values_list("id", "raw_value"))
    current, prior = {}, {}
    for pk, raw in rows:
        if pk not in current:
            current[pk] = raw  # the newest history row is the current value
        elif pk not in prior and raw not in ("", current[pk]):
            prior[pk] = raw
    return prior


def query_texts_for_findings(*, study: Study, findings: pd.DataFrame, checks: Mapping[int, EditCheck],
                             items: Mapping[int, ItemDefinition]) -> dict[tuple[int, str], QueryText]:
    """Template texts for the analyzer's findings that raise a query, by (check_id, key). Columns
    used: check_id, key, site_id, item_id, visit_id, data_point_id, observed, expected, category,
    rule_type. A handful of queries whatever the number of rows; no LLM call (see the module
    docstring: the analyzer holds its study's lock while it raises queries)."""
    if findings.empty:
        return {}
    sites = Site.objects.in_bulk(findings["site_id"].dropna().astype("int64").unique().tolist())
    visit_ids = findings["visit_id"].dropna().astype("int64").unique().tolist()
    visit_names = dict(SubjectVisit.objects.filter(pk__in=visit_ids).values_list("pk", "definition__name"))
    priors = data_point_prior_values(findings["data_point_id"].dropna().astype("int64").tolist())
    labels = StudyLabels(study_id=study.pk, items=items.values())
    out = {}
    for row in findings.itertuples(index=False):  # the findings that raise a query: a few per pass
        item_id, visit_id, point_id = (_get(row, c) for c in ("item_id", "visit_id", "data_point_id"))
        out[(int(row.check_id), row.key)] = query_text_for(
            finding=row, check=checks[int(row.check_id)], site=sites[int(row.site_id)],
            item=items.get(int(item_id)) if item_id is not None else None,
            visit_name=visit_names.get(int(visit_id), "") if visit_id is not None else "",
            prior_value=priors.get(int(point_id)) if point_id is not None else None, use_llm=False, labels=labels)
    return out


def query_text_for_discrepancy(*, discrepancy: Discrepancy, use_llm: bool | None = None,
                               identifiers: Mapping[str, str] | None = None) -> QueryText:
    """The text of a stored finding in its site's language (now: after a language change, a
    rewording, a re-query)."""
    d = (Discrepancy.objects.select_related("site", "subject", "item__form", "visit__definition", "edit_check")
         .get(pk=discrepancy.pk))
    prior = data_point_prior_values([d.data_point_id]).get(d.data_point_id) if d.data_point_id else None
    return query_text_for(finding=d, check=d.edit_check, site=d.site, item=d.item,
                          visit_name=d.visit.definition.name if d.visit_id else "", prior_value=prior,
                          identifiers=identifiers, subject_label=d.subject.subject_id, use_llm=use_llm,
                          ab_key=d.pk)


# --- LLM rewording ---------------------------------------------------------------------------------

REWORDING_PROMPT = "query-text-rewording"
REWORDING_TEXT = (
    "Reword this data clarification query to a clinical trial site. Write it in $language_name (language code "
    "$language), as a data manager who is a native speaker would write it.\n"
    "Keep every fact: the item \"$item\", the form \"$form\", the visit \"$visit\", the recorded value "
    "\"$observed\" and what was expected (\"$expected\"). Stay neutral and polite and ask the site to verify against "
    "the source document and correct or confirm. Never suggest a value or an answer, never ask a leading question, "
    "never blame anyone, add no patient identifier. At most $max_length characters.\n"
    "Query: $text\n"
    "Answer with JSON: {\"text\": \"<the reworded query>\"}"
)
REWORDING_SCHEMA = {"type": "object", "properties": {"text": {"type": "string", "minLength": 10, "maxLength": 2000}},
                    "required": ["text"], "additionalProperties": False}
# The variables that may carry a patient identifier: redacted wherever they appear, never sent.
IDENTIFIER_KEYS = ("address", "birth_date", "date_of_birth", "dob", "email", "full_name", "initials", "mrn",
                   "national_id", "patient_name", "phone", "subject", "subject_initials", "subject_name")


def rewording_prompt() -> PromptTemplate:
    """The prompt this code writes (stored as a new version when the text changes); a version an
    operator retired stays retired: no rewording then."""
    stored = (PromptTemplate.objects.filter(name=REWORDING_PROMPT, text=REWORDING_TEXT,
                                            identifier_variables=sorted(IDENTIFIER_KEYS))
              .order_by("-version").first())
    return stored or prompt_template_create(name=REWORDING_PROMPT, text=REWORDING_TEXT,
                                            identifier_variables=IDENTIFIER_KEYS)


def _reworded(written: QueryText, *, context: dict, study_id: int, subject_label: str, ab_key) -> QueryText:
    identifiers = context["identifiers"]
    unknown = set(identifiers) - set(IDENTIFIER_KEYS)
    if unknown:
        raise ValueError(f"Unknown identifier kinds {sorted(unknown)}; use {', '.join(IDENTIFIER_KEYS)}")
    prompt = rewording_prompt()
    if not prompt.active:
        return replace(written, llm_refusals=(f"not reworded: prompt {prompt} is retired",))
    language = written.language
    variables = {**identifiers, "subject": subject_label, "text": written.text, "language": language,
                 "language_name": PHRASEBOOK[language]["name"], "max_length": compliance_max_length(language),
                 **{k: context.get(k, "") for k in ("item", "form", "visit", "observed", "expected")}}
    call = llm_complete(prompt=prompt, variables=variables, schema=REWORDING_SCHEMA, study_id=study_id,
                        purpose="query-text", ab_key=ab_key)
    if call.provider == LlmCall.Provider.OFFLINE:  # no key, budget spent or the model failed: the template stays
        return replace(written, llm_refusals=(f"not reworded: offline ({call.fallback_reason or 'no API key'})",))
    text = " ".join(str(call.output["text"]).split())
    reasons = compliance_check(text, language=language, context=context) + _facts_dropped(text, written.text, context)
    if "[REDACTED" in text:
        reasons.append("contains a redaction placeholder")
    if reasons:
        llm_outcome_record(call=call, outcome=LlmCall.Outcome.REJECTED, actor=agent_user(AGENT_NAME))
        return replace(written, llm_refusals=tuple(reasons))
    return replace(written, text=text, text_origin=Query.TextOrigin.LLM,
                    prompt_version=f"{prompt.name}@{prompt.version}", llm_call_id=call.pk)


def _facts_dropped(text: str, template_text: str, context: dict) -> list[str]:
    """What the template said that the rewording no longer says (the site needs all of it)."""
    def said(value: str, where: str) -> bool:
        return " ".join(value.casefold().split()) in " ".join(where.casefold().split())

    return [f"the rewording drops the {what} ('{context[what]}')" for what in ("item", "visit", "observed")
            if context.get(what) and said(context[what], template_text) and not said(context[what], text)]


# --- The per-study policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidatePolicy:
    """Which generated queries skip the preview: {category: minimum confidence}; and whether the
    agent rewords Candidate texts through the LLM service."""

    auto_release: Mapping[str, float]
    llm_rewording: bool = False

    def allows_release(self, *, category: str, confidence: float) -> bool:
        threshold = self.auto_release.get(category)
        return threshold is not None and confidence >= threshold  # NaN: never


def candidate_policy_for(*, study: Study | int) -> CandidatePolicy:
    """The QueryGenerator's configuration of the study. Paused there: nothing is auto-released."""
    stored = agent_config_get(agent=AGENT_NAME, study_id=getattr(study, "pk", study))
    if not stored.enabled:
        return CandidatePolicy(auto_release={})
    thresholds: dict[str, float] = {}
    for rule in stored.config.get("auto_release", []):  # the same category twice: the stricter rule
        thresholds[rule["category"]] = max(float(rule["min_confidence"]), thresholds.get(rule["category"], 0.0))
    return CandidatePolicy(auto_release=thresholds, llm_rewording=bool(stored.config.get("llm_rewording", False)))


def candidate_policy_allows_release(*, study: Study | int, category: str, confidence: float) -> bool:
    return candidate_policy_for(study=study).allows_release(category=category, confidence=confidence)


# --- Regenerating Candidate texts (the agent) --------------------------------------------------------


def candidate_texts_regenerate(*, study: Study, actor, use_llm: bool) -> dict:
    """Rewrite the study's Candidate system queries whose text is not what the generator writes
    now: the site's language changed, the phrasebook changed, or LLM rewording is on and the text
    is still the template's. A text a person wrote or edited is never touched, nor a query that
    was released, edited or discarded while its new text was being written."""
    counts: Counter = Counter()
    candidates = (Query.objects.filter(study=study, state=Query.State.CANDIDATE, origin=Query.Origin.RULE,
                                       text_origin__in=[Query.TextOrigin.TEMPLATE, Query.TextOrigin.LLM])
                  .select_related("site").order_by("pk"))
    for query in candidates:
        counts["candidates"] += 1
        language = phrasebook_language(query.site.language)
        if query.text_origin == Query.TextOrigin.LLM and query.language == language:
            continue  # reworded already, in the right language
        discrepancy = query.discrepancies.order_by("-changed_at").first()
        if discrepancy is None:
            counts["without_finding"] += 1
            continue
        written = query_text_for_discrepancy(discrepancy=discrepancy, use_llm=use_llm)  # outside any transaction
        if use_llm and written.llm_refusals:
            counts["llm_refused"] += 1
        if (written.text, written.language) == (query.text, query.language):
            continue
        counts["rewritten"] += _candidate_text_replace(query=query, old_text=query.text, written=written, actor=actor)
    return dict(counts)


def _candidate_text_replace(*, query: Query, old_text: str, written: QueryText, actor) -> bool:
    """Compare-and-set: only a query still Candidate with the text we read is rewritten."""
    how = f" (reworded with {written.prompt_version})" if written.prompt_version else ""
    reason = f"Query text regenerated by the QueryGenerator in {written.language}{how}"
    with transaction.atomic():
        locked = Query.objects.select_for_update().filter(pk=query.pk, state=Query.State.CANDIDATE,
                                                          text=old_text).first()
        if locked is None:
            return False
        locked.text, locked.language = written.text, written.language
        locked.text_origin, locked.prompt_version = written.text_origin, written.prompt_version
        set_audit(locked, actor=actor, reason=reason)
        locked.save(update_fields=["text", "language", "text_origin", "prompt_version"])
        question = (QueryMessage.objects.filter(query=locked, kind=QueryMessage.Kind.QUESTION, text=old_text)
                    .order_by("created_at", "id").first())
        if question is not None:  # the thread shows what the site will read
            question.text = written.text
            set_audit(question, actor=actor, reason=reason)
            question.save(update_fields=["text"])
    return True


CATEGORIES = list(Query.Category.values)


@register
class QueryGeneratorAgent(Agent):
    name = AGENT_NAME
    version = "1"
    description = ("Writes query texts in each site's language from the phrasebook, optionally reworded by the LLM "
                   "service when the rewording passes the compliance check; its configuration is the study's "
                   "auto-release policy for generated (Candidate) queries.")
    queue = "llm"
    config_schema = {
        "type": "object",
        "properties": {
            "auto_release": {
                "type": "array",
                "description": "categories of generated queries released to the site without preview, "
                               "at or above a confidence",
                "items": {"type": "object",
                          "properties": {"category": {"enum": CATEGORIES},
                                         "min_confidence": {"type": "number", "minimum": 0, "maximum": 1}},
                          "required": ["category", "min_confidence"], "additionalProperties": False},
            },
            "llm_rewording": {"type": "boolean", "description": "reword Candidate texts through the LLM service "
                                                                "(default false)"},
        },
        "additionalProperties": False,
    }
    time_limit = 1800

    def run(self, *, step) -> dict:
        study_id = step.input.get("study_id")
        # A scheduled run has no study: it covers every active study.
        studies = (Study.objects.filter(pk=study_id) if study_id
                   else Study.objects.filter(status=Study.Status.ACTIVE).order_by("pk"))
        actor = agent_user(self.name)
        out = {}
        for study in studies:
            stored = agent_config_get(agent=self.name, study_id=study.pk)
            if not study_id and not stored.enabled:  # paused on that study: the schedule leaves it alone
                continue
            config = {**stored.config, **step.input.get("config", {})}
            out[study.protocol_id] = candidate_texts_regenerate(study=study, actor=actor,
                                                                use_llm=bool(config.get("llm_rewording")))
        return {"studies": out}
