"""The QueryAnalyzer: edit checks over a study's data, run by the `data_review` workflow after
each import and nightly (agents/workflows/data_review.yaml), or by hand:
`python manage.py run_agent QueryAnalyzer --study ID [--config '{"full": true}']`."""

from agents.identity import agent_user
from agents.registry import Agent, register
from agents.services import agent_config_get
from queries.services import analyzer_run
from studies.models import Study


@register
class QueryAnalyzerAgent(Agent):
    name = "QueryAnalyzer"
    version = "1"
    description = ("Runs the study's edit checks (incrementally: only data changed since its last pass), grades "
                   "what they find, raises queries for data errors, holds back uncertain findings for data-manager "
                   "review and sends abnormal lab values to medical review.")
    config_schema = {
        "type": "object",
        "properties": {
            "full": {"type": "boolean", "description": "re-check everything, not only what changed"},
            "confidence_threshold": {"type": "number", "minimum": 0, "maximum": 1,
                                     "description": "below it, a finding is held back from the site (default 0.5)"},
        },
        "additionalProperties": False,
    }
    time_limit = 600

    def run(self, *, step) -> dict:
        study_id = step.input.get("study_id")
        # A scheduled run has no study: it covers every active study, one pass each.
        studies = (Study.objects.filter(pk=study_id) if study_id
                   else Study.objects.filter(status=Study.Status.ACTIVE).order_by("pk"))
        actor = agent_user(self.name)
        out = {}
        for study in studies:
            # The study's stored configuration, overridden by the step's (workflow YAML, --config)
            config = {**agent_config_get(agent=self.name, study_id=study.pk).config, **step.input.get("config", {})}
            done = analyzer_run(study=study, actor=actor, full=config.get("full") or None,
                                threshold=config.get("confidence_threshold"))
            out[study.protocol_id] = {"pass": done.pk, "full": done.full, "counts": done.counts, "errors": done.errors}
        return {"studies": out}
from queries.generator import QueryGeneratorAgent  # noqa: E402,F401 (registers the agent)
from queries.sla import QueryTrackerAgent  # noqa: E402,F401 (registers the agent)
