"""The LLM service: one client (OpenAI or offline), versioned prompts, the call ledger.

    from agents.llm import llm_complete, llm_outcome_record
    call = llm_complete(prompt="query-text", variables={...}, schema=SCHEMA, study_id=study.id,
                        purpose="query-text", ab_key=discrepancy.id)
    ... call.output ...
    llm_outcome_record(call=call, outcome="accepted", actor=request.user)
"""

from agents.llm.client import llm_complete
from agents.llm.ledger import llm_month_spend, llm_outcome_record, llm_outcome_summary
from agents.llm.prompts import prompt_template_create, prompt_template_retire, prompt_version_for

__all__ = [
    "llm_complete", "llm_month_spend", "llm_outcome_record", "llm_outcome_summary",
    "prompt_template_create", "prompt_template_retire", "prompt_version_for",
]
