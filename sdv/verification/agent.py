"""DataVerification: reads the study's source documents waiting to be read (uploaded, or asked
for again) and matches every value on them to the EDC; documents whose EDC values changed since
their verdicts are matched again from the pages already read (no second OCR). Runs on the `ocr`
queue in the `source_verification` workflow (after an upload, after the SDV plan changes, and
every ten minutes for anything left over); `run_agent DataVerification --study ID` by hand.

A run bounds itself to its time limit, however many pages are queued: it takes documents while
their pages fit the budget (SECONDS_PER_PAGE per page and OCR worker, pessimistic), and publishes
`source_document.pending` for the rest, which starts the next run once this one has committed."""

import time

from django.db.models import F

from agents.events import event_publish
from agents.identity import agent_user
from agents.registry import Agent, register
from agents.services import agent_config_get
from sdv.models import SourceDocument, SourceVerification
from sdv.verification import ocr
from sdv.verification.services import AGENT_NAME, AGENT_VERSION, document_store, documents_read, ocr_workers
from studies.models import Study

PENDING_EVENT = "source_document.pending"
SECONDS_PER_PAGE = 6.0  # a degraded page takes 1-2 s of tesseract; the rest is margin
TIME_LIMIT = 600  # under the step lease (AGENT_STEP_LEASE_SECONDS, 660 by default)


def documents_due(*, study_id: int | None, document_ids: list[int] | None = None, reread: bool = False):
    """(to read, to match again): documents waiting for the agent, and documents read before whose
    EDC values changed since (a stale verdict)."""
    documents = SourceDocument.objects.all() if study_id is None else SourceDocument.objects.filter(study_id=study_id)
    if document_ids:
        chosen = documents.filter(pk__in=document_ids)
        return list(chosen.order_by("uploaded_at", "pk")), []
    if reread:
        return list(documents.exclude(status=SourceDocument.Status.UPLOADED).order_by("uploaded_at", "pk")) + \
            list(documents.filter(status=SourceDocument.Status.UPLOADED).order_by("uploaded_at", "pk")), []
    waiting = list(documents.filter(status=SourceDocument.Status.UPLOADED).order_by("uploaded_at", "pk"))
    stale_ids = (SourceVerification.objects.filter(document__in=documents)
                 .exclude(data_point_version=F("data_point__version")).values_list("document_id", flat=True))
    stale = list(documents.filter(pk__in=set(stale_ids)).exclude(status=SourceDocument.Status.UPLOADED)
                 .order_by("pk"))
    return waiting, stale


@register
class DataVerificationAgent(Agent):
    name = AGENT_NAME
    version = AGENT_VERSION
    description = ("Reads source documents (PDF text layers, OCR of scans with tesseract), lays lab reports out "
                   "as rows, matches each value to the EDC with unit conversions: verified, discrepancy (a "
                   "candidate query), not found or needs review.")
    queue = "ocr"
    time_limit = TIME_LIMIT
    config_schema = {
        "type": "object",
        "properties": {
            "documents": {"type": "array", "items": {"type": "integer"}, "description": "Only these documents"},
            "reread": {"type": "boolean", "description": "Read every document again (OCR included)"},
            "steps": {"type": "array", "items": {"enum": list(ocr.ALL_STEPS)},
                      "description": "Clean-up steps before OCR (default: all)"},
        },
        "additionalProperties": False,
    }

    def run(self, *, step) -> dict:
        started = time.monotonic()
        study_id = step.input.get("study_id")
        config = {**(agent_config_get(agent=self.name, study_id=study_id).config if study_id else {}),
                  **step.input.get("config", {})}
        if study_id is not None and not Study.objects.filter(pk=study_id).exists():
            return {"documents": 0, "note": f"no study {study_id}"}
        waiting, stale = documents_due(study_id=study_id, document_ids=config.get("documents"),
                                       reread=bool(config.get("reread")))
        workers = ocr_workers()
        budget = (step.policy or {}).get("time_limit") or self.time_limit
        pages_fit = max(1, int(0.8 * budget * workers / SECONDS_PER_PAGE))
        batch, left, pages = [], [], 0
        for document in waiting:
            if batch and pages + document.page_count > pages_fit:
                left.append(document)
                continue
            batch.append(document)
            pages += document.page_count
        actor = agent_user(self.name)
        reason = f"Read by {self.name} v{self.version} (run {step.run_id}, step {step.pk})"
        totals = {"documents": 0, "pages": 0, "failed": 0, "matched_again": 0, "verdicts": {}, "queries_raised": 0,
                  "queries_linked": 0, "values_read_again": 0, "values_settled": 0}
        steps = config["steps"] if "steps" in config else ocr.DEFAULT_STEPS
        reads = documents_read(batch, workers=workers, steps=steps)
        totals["read_seconds"] = round(time.monotonic() - started, 2)
        for document, read in zip(batch, reads, strict=True):
            counts = document_store(document=document, read=read, actor=actor, reason=reason)
            self._add(totals, counts)
            totals["documents"] += 1
            totals["pages"] += len(read.pages)
            totals["values_read_again"] += sum(p.read_again for p in read.pages)
            totals["values_settled"] += sum(p.settled for p in read.pages)
            totals["failed"] += bool(read.error)
        for document in stale:
            counts = document_store(document=document, read=None, actor=actor,
                                    reason=f"Matched again by {self.name} v{self.version} after the EDC values "
                                           f"changed (run {step.run_id})")
            self._add(totals, counts)
            totals["matched_again"] += 1
        if left:
            event_publish(type=PENDING_EVENT, study_id=study_id, payload={"documents": [d.pk for d in left]},
                          source_step=step)
        totals["left_for_next_run"] = len(left)
        totals["seconds"] = round(time.monotonic() - started, 2)
        return totals

    @staticmethod
    def _add(totals: dict, counts) -> None:
        for verdict, n in counts.verdicts.items():
            totals["verdicts"][verdict] = totals["verdicts"].get(verdict, 0) + n
        totals["queries_raised"] += counts.queries_raised
        totals["queries_linked"] += counts.queries_linked
