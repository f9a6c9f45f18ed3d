"""One client for every LLM call: OpenAI (or any OpenAI-compatible server) with an offline fallback.

llm_complete() renders a versioned prompt, redacts direct identifiers, then answers from, in order:
the offline provider when no key is set; the response cache; the offline provider when the study's
monthly budget is spent; the model, with our own retries (429, 5xx, time-outs), its answer validated
against the schema; the offline provider when the model failed. Every answer is one LlmCall row.
"""

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import jsonschema
import openai
import structlog
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from agents.llm.ledger import llm_budget_spent, llm_cached_call, llm_cost
from agents.llm.offline import offline_answer
from agents.llm.prompts import prompt_render, prompt_version_for
from agents.llm.redaction import redact_text, redact_variables
from agents.models import LlmCall, PromptTemplate

log = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SYSTEM_MESSAGE = (
    "You assist clinical-trial data management. Never ask for or include patient identifiers. "
    "When a JSON schema is given, answer with one JSON object that conforms to it."
)
# Transient: worth another attempt. APITimeoutError is an APIConnectionError.
RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)


@dataclass
class LlmRequest:
    template: PromptTemplate
    variables: dict  # redacted
    schema: dict | None
    messages: list[dict]
    redactions: dict
    input_hash: str
    model: str


@dataclass
class Answer:
    provider: str
    model: str
    output: object
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: Decimal = field(default_factory=Decimal)
    cache_hit: bool = False
    cache_source: LlmCall | None = None
    fallback_reason: str = ""


class LlmFailure(Exception):
    """The model gave no usable answer; tokens it used are still paid for."""

    def __init__(self, reason: str, *, attempts: int, tokens_in: int = 0, tokens_out: int = 0):
        super().__init__(reason)
        self.attempts, self.tokens_in, self.tokens_out = attempts, tokens_in, tokens_out


def llm_complete(
    *, prompt: PromptTemplate | str, variables: dict, purpose: str, schema: dict | None = None,
    study_id: int | None = None, ab_key: str | int | None = None,
) -> LlmCall:
    """Answer `prompt` (a PromptTemplate, or a prompt name: its version then chosen by `ab_key`)
    filled with `variables`; with a `schema`, the answer is an object valid under it. Returns the
    ledger row: the answer is `.output`, and `.id` is what a reviewer's outcome is recorded against."""
    template = prompt if isinstance(prompt, PromptTemplate) else prompt_version_for(name=prompt, key=ab_key)
    request = _request_prepare(template, variables, schema)
    started = time.monotonic()
    answer = _answer(request, study_id)
    return LlmCall.objects.create(
        provider=answer.provider, model=answer.model, prompt_template=template, prompt_version=template.version,
        purpose=purpose, study_id=study_id, input_hash=request.input_hash, messages=request.messages,
        redactions=request.redactions, output=answer.output, tokens_in=answer.tokens_in,
        tokens_out=answer.tokens_out, cost=answer.cost, latency_ms=round((time.monotonic() - started) * 1000),
        attempts=answer.attempts, cache_hit=answer.cache_hit, cache_source=answer.cache_source,
        fallback_used=bool(answer.fallback_reason),
        fallback_reason=answer.fallback_reason,
    )


def _request_prepare(template: PromptTemplate, variables: dict, schema: dict | None) -> LlmRequest:
    if schema is not None:
        jsonschema.Draft202012Validator.check_schema(schema)  # a caller's mistake: fail loudly
    safe, identifiers, counts = redact_variables(variables, template.identifier_variables)
    # Check the rendered prompt too: an identifier may also hide in a value that is not a string.
    text = redact_text(prompt_render(template=template, text=template.text, variables=safe), identifiers, counts)
    messages = [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": text}]
    hashed = json.dumps({"messages": messages, "schema": schema}, sort_keys=True, separators=(",", ":"))
    return LlmRequest(
        template=template, variables=safe, schema=schema, messages=messages,
        redactions={kind: n for kind, n in sorted(counts.items()) if n},
        input_hash=hashlib.sha256(hashed.encode()).hexdigest(), model=settings.LLM_MODEL,
    )


def _answer(request: LlmRequest, study_id: int | None) -> Answer:
    api_key = _api_key()
    if not api_key:
        return _offline(request)
    cached = llm_cached_call(model=request.model, template=request.template, input_hash=request.input_hash)
    if cached is not None:
        return Answer(provider=cached.provider, model=cached.model, output=cached.output, cache_hit=True,
                      cache_source=cached)
    if llm_budget_spent(study_id=study_id):
        budget = settings.LLM_MONTHLY_BUDGET_USD
        return _offline(request, reason=f"budget: the monthly {budget} USD of study {study_id} is spent")
    try:
        return _openai_answer(request, api_key)
    except LlmFailure as failure:
        return _offline(request, reason=f"openai {request.model}: {failure}", failure=failure)


def _offline(request: LlmRequest, *, reason: str = "", failure: LlmFailure | None = None) -> Answer:
    output = offline_answer(template=request.template, variables=request.variables, schema=request.schema)
    if reason:
        log.warning("llm.fallback", model=request.model, prompt=str(request.template), reason=reason)
    if failure is None:
        return Answer(provider=LlmCall.Provider.OFFLINE, model="offline", output=output, fallback_reason=reason)
    return Answer(
        provider=LlmCall.Provider.OFFLINE, model="offline", output=output, fallback_reason=reason,
        attempts=failure.attempts, tokens_in=failure.tokens_in, tokens_out=failure.tokens_out,
        cost=llm_cost(model=request.model, tokens_in=failure.tokens_in, tokens_out=failure.tokens_out),
    )


def _api_key() -> str:
    if settings.OPENAI_API_KEY:
        return settings.OPENAI_API_KEY
    if not settings.OPENAI_API_KEY_FILE:
        return ""
    try:  # read at use, so a rotated secret is picked up without a restart
        return Path(settings.OPENAI_API_KEY_FILE).read_text().strip()
    except OSError as error:
        raise ImproperlyConfigured(f"OPENAI_API_KEY_FILE cannot be read ({error.strerror})") from None


def _openai_answer(request: LlmRequest, api_key: str) -> Answer:
    client = openai.OpenAI(
        api_key=api_key, base_url=settings.LLM_BASE_URL or DEFAULT_BASE_URL,
        timeout=float(settings.LLM_TIMEOUT_SECONDS), max_retries=0,  # the retries are ours, below
    )
    max_attempts = settings.LLM_MAX_ATTEMPTS
    for attempt in range(1, max_attempts + 1):
        try:
            completion = client.chat.completions.create(**_request_body(request))
        except RETRYABLE as error:
            if attempt == max_attempts:
                raise LlmFailure(f"{_describe(error)} after {attempt} attempts", attempts=attempt) from None
            time.sleep(_backoff_seconds(attempt))
        except openai.OpenAIError as error:
            raise LlmFailure(_describe(error), attempts=attempt) from None
        except ValueError as error:  # the SDK lets a 200 whose body is not JSON through as JSONDecodeError
            raise LlmFailure(f"malformed response ({type(error).__name__})", attempts=attempt) from None
        else:
            return _parsed(completion, request, attempt)
    raise AssertionError("unreachable")


def _backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter: spreads out the retries of many workers after a 429."""
    ceiling = min(settings.LLM_RETRY_MAX_SECONDS, settings.LLM_RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)


def _describe(error: openai.OpenAIError) -> str:
    # The class and status only: an error body may echo the request.
    status = getattr(error, "status_code", None)
    return f"{type(error).__name__}" + (f" (HTTP {status})" if status else "")


def _request_body(request: LlmRequest) -> dict:
    body = {"model": request.model, "messages": request.messages}
    if request.schema is not None:
        name = re.sub(r"[^a-zA-Z0-9_-]", "_", request.template.name)[:64]
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": name, "schema": request.schema}}
    return body


def _parsed(completion, request: LlmRequest, attempts: int) -> Answer:
    usage = completion.usage
    tokens = {"tokens_in": usage.prompt_tokens if usage else 0, "tokens_out": usage.completion_tokens if usage else 0}
    message = completion.choices[0].message if completion.choices else None
    if message is None:
        raise LlmFailure("no answer", attempts=attempts, **tokens)
    if message.refusal or completion.choices[0].finish_reason == "content_filter":
        raise LlmFailure("refused", attempts=attempts, **tokens)
    output = _validated(message.content or "", request.schema, attempts, tokens)
    return Answer(
        provider=LlmCall.Provider.OPENAI, model=request.model, output=output, attempts=attempts,
        cost=llm_cost(model=request.model, **tokens), **tokens,
    )


def _validated(content: str, schema: dict | None, attempts: int, tokens: dict):
    if schema is None:
        return content
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        raise LlmFailure("the answer is not valid JSON", attempts=attempts, **tokens) from None
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is not None:
        path = "/".join(str(part) for part in error.absolute_path) or "(root)"
        raise LlmFailure(f"the answer fails the schema at {path}: {error.message[:200]}", attempts=attempts,
                         **tokens)
    return value
