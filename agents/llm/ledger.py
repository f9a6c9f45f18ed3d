"""The LLM call ledger: cost, the response cache, the monthly budget, reviewers' outcomes."""

from decimal import Decimal

import structlog
from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from agents.models import LlmCall, PromptTemplate

log = structlog.get_logger(__name__)

OUTCOMES = (LlmCall.Outcome.ACCEPTED, LlmCall.Outcome.EDITED, LlmCall.Outcome.REJECTED)


class OutcomeAlreadyRecorded(ValueError):
    pass


def llm_cost(*, model: str, tokens_in: int, tokens_out: int) -> Decimal:
    """USD, from settings.LLM_PRICES (per 1,000 tokens)."""
    price = settings.LLM_PRICES.get(model)
    if price is None:
        log.warning("llm.price_unknown", model=model)
        return Decimal(0)
    cost = (Decimal(price["in"]) * tokens_in + Decimal(price["out"]) * tokens_out) / 1000
    return cost.quantize(Decimal("0.000001"))


def llm_cached_call(*, model: str, template: PromptTemplate, input_hash: str) -> LlmCall | None:
    """The last answer the model itself gave to exactly this input (never an offline or cached one)."""
    return (
        LlmCall.objects.filter(model=model, prompt_template=template, input_hash=input_hash,
                               provider=LlmCall.Provider.OPENAI, fallback_used=False, cache_hit=False)
        .order_by("-id").first()
    )


def llm_month_spend(*, study_id: int) -> Decimal:
    """What the study's calls cost in this calendar month (UTC)."""
    month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    spent = LlmCall.objects.filter(study_id=study_id, created_at__gte=month_start).aggregate(total=Sum("cost"))
    return spent["total"] or Decimal(0)


def llm_budget_spent(*, study_id: int | None) -> bool:
    # Checked before each call, not reserved: two concurrent calls can overshoot by one call each.
    if study_id is None:
        return False
    return llm_month_spend(study_id=study_id) >= Decimal(settings.LLM_MONTHLY_BUDGET_USD)


def llm_outcome_record(*, call: LlmCall, outcome: str, actor) -> LlmCall:
    """A reviewer accepted, edited or rejected an answer. Recorded once: the first decision stands."""
    if outcome not in OUTCOMES:
        raise ValueError(f"Outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    # Compare-and-set: of two concurrent reviews, exactly one is recorded.
    updated = LlmCall.objects.filter(pk=call.pk, outcome=LlmCall.Outcome.PENDING).update(
        outcome=outcome, reviewed_by=actor, reviewed_at=timezone.now()
    )
    if updated != 1:
        raise OutcomeAlreadyRecorded(f"LLM call #{call.pk} already has an outcome")
    call.refresh_from_db()
    return call


def llm_outcome_summary(*, name: str) -> list[dict]:
    """Per version of the prompt `name`: calls, fallbacks, and the reviewers' outcomes."""
    rows = (
        LlmCall.objects.filter(prompt_template__name=name)
        .values("prompt_version")
        .annotate(
            calls=Count("id"),
            fallbacks=Count("id", filter=Q(fallback_used=True)),
            accepted=Count("id", filter=Q(outcome=LlmCall.Outcome.ACCEPTED)),
            edited=Count("id", filter=Q(outcome=LlmCall.Outcome.EDITED)),
            rejected=Count("id", filter=Q(outcome=LlmCall.Outcome.REJECTED)),
        )
        .order_by("prompt_version")
    )
    summary = []
    for row in rows:
        reviewed = row["accepted"] + row["edited"] + row["rejected"]
        version = row.pop("prompt_version")
        summary.append({
            "version": version,
            **row,
            "pending": row["calls"] - reviewed,
            "acceptance_rate": row["accepted"] / reviewed if reviewed else None,
        })
    return summary
