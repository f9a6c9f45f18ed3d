"""Writes of source data verification: the agent's reading of documents (pages, verdicts,
candidate queries) and the CRA's decisions (confirm or override a verdict, manual SDV, raise a
query). Every write is audited with its actor and reason; a verdict's history keeps every
earlier verdict, so a re-read replaces, never duplicates.

Reading is split from writing: `documents_read` does the OCR (slow, parallel, no database), then
`document_store` writes one document's pages and verdicts in a short transaction."""

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from queries.generator import query_text_render
from queries.lifecycle import TransitionRefused, query_create
from queries.models import Query
from sdv.documents import document_path
from sdv.models import SourceDocument, SourcePage, SourceVerification
from sdv.verification import analytes, files, layout, matching, ocr
from sdv.verification.units import number_parse, unit_known, unit_normalise
from studies.audit import audited_bulk_create, set_audit
from studies.models import DataPoint
from studies.selectors import user_can

AGENT_NAME = "DataVerification"
AGENT_VERSION = "1"
RULE_CODE = "SDV.SOURCE"
ACTIVE_QUERY_STATES = (Query.State.CANDIDATE, Query.State.OPEN, Query.State.ANSWERED)
V = SourceVerification.Verdict


def ocr_workers() -> int:
    return settings.SDV_OCR_WORKERS or max(1, len(os.sched_getaffinity(0)))


# --- Reading ----------------------------------------------------------------------------------------
@dataclass
class PageRead:
    number: int
    width: int
    height: int
    dpi: int
    text_source: str
    rotation: int = 0
    skew: float = 0.0
    steps: list = field(default_factory=list)
    words: list = field(default_factory=list)  # [[text, confidence, x0, y0, x1, y1]]
    rows: list = field(default_factory=list)  # layout.Row.as_json()
    crops: list = field(default_factory=list, repr=False)  # (row index, image) waiting for a second reading
    read_again: int = 0  # values read a second time
    settled: int = 0  # doubtful values not read again: their first reading matched the EDC

    @property
    def mean_confidence(self) -> float | None:
        return round(sum(w[1] for w in self.words) / len(self.words), 1) if self.words else None


@dataclass
class DocumentRead:
    document_id: int
    pages: list[PageRead] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


REREAD_BELOW = 90  # a value read with less confidence than this (or doubtful otherwise) is read again


def _needs_second_reading(row) -> bool:
    if row.confidence < REREAD_BELOW or number_parse(row.value) is None:
        return True
    if row.unit and not unit_known(unit_normalise(row.unit)):
        return True  # a row whose unit did not read may have lost more
    checked = matching.reading_checked(matching.PageRow(page=0, name=row.name, value=row.value, unit=row.unit,
                                                        confidence=row.confidence, value_box=[], box=[], text="",
                                                        range=row.range, flag=row.flag))
    if checked[2]:
        return True  # its own row contradicts it (a lost decimal point)
    number, bounds = number_parse(row.value), matching.reference_bounds(row.range)
    # far outside its range, flagged or not (a flag does not tell a lost point from a high value),
    # or outside it unflagged (labs flag what is out of range)
    if number and bounds and (number.value > 3 * bounds[1] or number.value * 3 < bounds[0]):
        return True
    return matching.strictly_consistent(row.value, row.range, row.flag) is False


def _ocr_page(image, number: int, dpi: int, steps) -> PageRead:
    prepared, words = ocr.page_ocr(image, dpi=dpi, steps=steps)
    flat = [[w.text, round(w.confidence, 1), *w.box] for w in words]
    rows = layout.page_rows(flat)
    doubtful = [i for i, row in enumerate(rows) if _needs_second_reading(row)] if "reread" in steps else []
    width, height = prepared.size
    read = PageRead(number=number, width=width, height=height, dpi=dpi,
                    text_source=SourceDocument.TextSource.OCR, rotation=prepared.rotation, skew=prepared.skew,
                    steps=prepared.steps + ([f"reread {len(doubtful)}"] if doubtful else []), words=flat,
                    rows=[r.as_json() for r in rows])
    # Cut now (the page image goes when this returns), read later with every other page's in one call.
    read.crops = list(zip(doubtful, ocr.value_crops(prepared.image, [rows[i].value_box for i in doubtful],
                                                    noisy="denoise" in prepared.steps, scale=prepared.scale),
                          strict=True))
    return read


def _settled_drop(page: PageRead, expected: list[matching.EdcValue]) -> None:
    """Drop the crops of values whose first reading already settles their verdicts
    (matching.reading_settles): a second reading of a value that matches the EDC changes nothing."""
    if not page.crops:
        return
    keep, settled = [], 0
    for index, crop in page.crops:
        row = _page_row(page.number, page.rows[index])
        if matching.reading_settles(matching.rows_with_analytes([row])[0], expected):
            page.rows[index]["settled"] = True
            settled += 1
        else:
            keep.append((index, crop))
    page.crops, page.read_again, page.settled = keep, len(keep), settled
    page.steps = [s for s in page.steps if not s.startswith("reread ")] + (
        [f"reread {len(keep)}"] if keep else []) + ([f"settled {settled}"] if settled else [])


def _second_readings(pages: list[PageRead], pool: ThreadPoolExecutor, workers: int) -> None:
    """Read every page's doubtful values a second time: all crops in `workers` strips at once."""
    pending = [(page, index, crop) for page in pages for index, crop in getattr(page, "crops", [])]
    if not pending:
        return
    size = -(-len(pending) // workers)
    chunks = [pending[i:i + size] for i in range(0, len(pending), size)]
    results = pool.map(lambda chunk: ocr.crops_read([c for _, _, c in chunk], dpi=300), chunks)
    for chunk, readings in zip(chunks, results, strict=True):
        for (page, index, _), (text, confidence) in zip(chunk, readings, strict=True):
            page.rows[index]["second"], page.rows[index]["second_confidence"] = text, round(confidence, 1)
    for page in pages:
        page.crops = []


def documents_read(documents: list[SourceDocument], *, workers: int | None = None,
                   steps=ocr.DEFAULT_STEPS) -> list[DocumentRead]:
    """Read every page of `documents`: text layers directly, images by OCR on `workers` pages at
    once (one tesseract process each). Pages are decoded and rendered here, one at a time, while
    the pool reads the ones before (PDFium is not thread-safe; tesseract is a process)."""
    results = {d.pk: DocumentRead(d.pk) for d in documents}
    expected: dict[int, list[matching.EdcValue]] = {}
    futures: list[tuple[int, Future]] = []
    workers = workers or ocr_workers()
    slots = threading.BoundedSemaphore(workers * 2)  # pages decoded ahead of the pool, at most
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ocr") as pool:
        for document in documents:
            started = time.monotonic()
            # What the second readings are weighed against (while the pool reads the pages before).
            expected[document.pk] = [value for _, value in _edc_values(document)]
            try:
                for page in files.document_pages(document_path(document), document.content_type,
                                                 dpi=settings.SDV_RENDER_DPI, max_pixels=settings.SDV_MAX_IMAGE_PIXELS):
                    if page.has_text_layer:
                        words = [list(w) for w in page.words]
                        results[document.pk].pages.append(PageRead(
                            number=page.number, width=page.width, height=page.height, dpi=page.dpi,
                            text_source=SourceDocument.TextSource.TEXT_LAYER, words=words,
                            rows=[r.as_json() for r in layout.page_rows(words)]))
                        continue
                    if not futures:
                        ocr.tesseract_version()  # fails the run at once, with the reason, when tesseract is missing
                    slots.acquire()
                    future = pool.submit(_ocr_page, page.image, page.number, page.dpi, steps)
                    future.add_done_callback(lambda _: slots.release())
                    futures.append((document.pk, future))
            except (OSError, ValueError, files.DocumentRefused) as error:  # a file that stopped being readable
                results[document.pk].error = f"{type(error).__name__}: {error}"
            results[document.pk].seconds += time.monotonic() - started
        for document_id, future in futures:
            try:
                page = future.result()
                _settled_drop(page, expected[document_id])
                results[document_id].pages.append(page)
            except ocr.OcrUnavailable:
                raise
            except (OSError, ValueError, RuntimeError) as error:
                results[document_id].error = f"{type(error).__name__}: {error}"
        _second_readings([page for read in results.values() for page in read.pages], pool, workers)
    for read in results.values():
        read.pages.sort(key=lambda p: p.number)
    return [results[d.pk] for d in documents]


# --- Verdicts ---------------------------------------------------------------------------------------
def _edc_values(document: SourceDocument) -> list[tuple[DataPoint, matching.EdcValue]]:
    """The EDC values a document is checked against: its visit's; for a subject-level document,
    the subject's values of the items recorded once for the subject (a second visit's would be
    ambiguous)."""
    points = DataPoint.objects.filter(subject_id=document.subject_id).select_related("item", "form",
                                                                                   "visit__definition")
    if document.visit_id:
        points = points.filter(visit_id=document.visit_id)
    points = list(points.order_by("item_id", "visit_id", "repeat_key"))
    if not document.visit_id:
        counts: dict[int, int] = {}
        for point in points:
            counts[point.item_id] = counts.get(point.item_id, 0) + 1
        points = [p for p in points if counts[p.item_id] == 1]
    seen, out = set(), []
    for point in points:
        if point.item_id in seen:  # one verdict per (document, item): the first repeat
            continue
        seen.add(point.item_id)
        out.append((point, matching.EdcValue(
            data_point_id=point.pk, item_id=point.item_id, item_label=point.item.label, value=point.raw_value,
            unit=point.units or point.item.units, analyte=analytes.item_analyte_code(point.item))))
    return out


def _page_row(number: int, row: dict) -> matching.PageRow:
    return matching.PageRow(page=number, name=row["name"], value=row["value"], unit=row["unit"],
                            confidence=float(row["confidence"]), value_box=row["value_box"], box=row["box"],
                            text=row["text"], range=row.get("range", ""), flag=row.get("flag", ""),
                            second=row.get("second", ""), second_confidence=float(row.get("second_confidence", 0.0)),
                            settled=bool(row.get("settled")))


def _page_rows(pages) -> list[matching.PageRow]:
    return matching.rows_with_analytes([_page_row(page.number, row) for page in pages for row in page.rows])


@dataclass
class StoreCounts:
    verdicts: dict = field(default_factory=dict)
    written: int = 0
    queries_raised: int = 0
    queries_linked: int = 0


def document_store(*, document: SourceDocument, read: DocumentRead | None, actor, reason: str) -> StoreCounts:
    """Write what was read from one document (its pages, when `read` is given; else the stored
    pages are matched again, e.g. after the EDC values changed) and the verdict on each EDC value
    of its visit. A verdict a CRA reviewed keeps the CRA's decision; the agent's own verdict and
    evidence are updated beside it."""
    counts = StoreCounts()
    with transaction.atomic():
        document = SourceDocument.objects.select_for_update(of=("self",)).select_related(
            "site", "subject", "visit__definition").get(pk=document.pk)
        now = timezone.now()
        if read is not None and read.error:
            document.status, document.error = SourceDocument.Status.FAILED, read.error[:2000]
            document.read_at, document.agent_version = now, AGENT_VERSION
            set_audit(document, actor=actor, reason=f"{reason}: could not be read")
            document.save()
            return counts
        if read is not None:
            pages = _pages_store(document, read, actor=actor, reason=reason, now=now)
        else:
            pages = list(document.pages.order_by("number"))
        rows = _page_rows(pages)
        # of=("self",) and no ordering: the model's ordering joins the visit, nullable, and
        # PostgreSQL refuses FOR UPDATE on the nullable side of an outer join.
        stored = {v.item_id: v for v in SourceVerification.objects.select_for_update(of=("self",))
                  .filter(document=document).order_by("pk")}
        verifications, fresh = [], []
        for point, value in _edc_values(document):
            verdict = matching.verdict_for(value, rows, review_below=settings.SDV_REVIEW_CONFIDENCE)
            counts.verdicts[verdict.verdict] = counts.verdicts.get(verdict.verdict, 0) + 1
            verification, changed = _verification_upsert(document, point, value, verdict, stored.get(value.item_id),
                                                          now=now)
            if changed and verification.pk is None:
                fresh.append(verification)  # a document's first verdicts: one insert, with their history rows
            elif changed:
                set_audit(verification, actor=actor, reason=reason)
                verification.save()
            counts.written += changed
            verifications.append(verification)
        audited_bulk_create(fresh, actor=actor, reason=reason)
        for verification in verifications:
            if verification.verdict == V.DISCREPANCY and verification.query_id is None:
                query, created = _discrepancy_query(verification, actor=actor)
                if query is not None:
                    verification.query = query
                    set_audit(verification, actor=actor, reason=f"{reason}: query {query.pk} "
                                                                f"{'raised' if created else 'already active'}")
                    verification.save()
                    counts.queries_raised += created
                    counts.queries_linked += not created
        if read is not None:
            document.page_count = len(read.pages)
            sources = {p.text_source for p in read.pages}
            document.text_source = sources.pop() if len(sources) == 1 else SourceDocument.TextSource.MIXED
        document.status = _document_status(document)
        document.error, document.read_at, document.agent_version = "", now, AGENT_VERSION
        set_audit(document, actor=actor, reason=reason)
        document.save()
    return counts


def _pages_store(document, read: DocumentRead, *, actor, reason: str, now) -> list[SourcePage]:
    existing = {p.number: p for p in SourcePage.objects.select_for_update(of=("self",))
                .filter(document=document).order_by("pk")}
    pages = []
    for page in read.pages:
        row = existing.get(page.number) or SourcePage(document=document, number=page.number)
        row.width, row.height, row.dpi, row.text_source = page.width, page.height, page.dpi, page.text_source
        row.rotation, row.skew, row.steps, row.words, row.rows = page.rotation, page.skew, page.steps, page.words, \
            page.rows
        row.mean_confidence, row.agent_version, row.read_at = page.mean_confidence, AGENT_VERSION, now
        set_audit(row, actor=actor, reason=reason)
        row.save()
        pages.append(row)
    return pages


_EVIDENCE = ("agent_verdict", "edc_value", "edc_unit", "data_point_version", "source_value", "source_unit",
             "source_name", "source_text", "analyte", "confidence", "page", "bbox", "row_bbox", "explanation")


def _verification_upsert(document, point: DataPoint, value: matching.EdcValue, verdict: matching.Verdict,
                         current: SourceVerification | None, *, now) -> tuple[SourceVerification, bool]:
    row = verdict.row
    fields = {
        "agent_verdict": verdict.verdict, "edc_value": point.raw_value, "edc_unit": value.unit,
        "data_point_version": point.version,
        "source_value": row.value[:64] if row else "", "source_unit": verdict.source_unit[:64] if row else "",
        "source_name": row.name[:255] if row else "", "source_text": row.text if row else "",
        "analyte": (row.analyte or value.analyte or "") if row else (value.analyte or ""),
        "confidence": verdict.confidence, "page": row.page if row else None,
        "bbox": list(row.value_box) if row else None, "row_bbox": list(row.box) if row else None,
        "explanation": verdict.explanation,
    }
    if current is None:
        return SourceVerification(
            study_id=document.study_id, site_id=document.site_id, subject_id=document.subject_id,
            visit_id=point.visit_id, item_id=point.item_id, data_point=point, document=document,
            method=SourceVerification.Method.DOCUMENT, verdict=verdict.verdict, agent_version=AGENT_VERSION,
            created_at=now, updated_at=now, **fields), True
    stale = current.data_point_version != point.version
    if all(getattr(current, k) == v for k, v in fields.items()) and not stale:
        return current, False
    for name, new in fields.items():
        setattr(current, name, new)
    if stale or not current.review:
        # A changed EDC value voids the CRA's review of the old one; an unreviewed verdict follows the agent.
        current.verdict, current.review, current.verified_by, current.verified_at = verdict.verdict, "", None, None
        current.query = current.query if current.query and current.query.state in ACTIVE_QUERY_STATES else None
    current.agent_version, current.updated_at = AGENT_VERSION, now
    return current, True


def _document_status(document: SourceDocument) -> str:
    pending = document.verifications.filter(review="").exclude(agent_verdict=V.NOT_FOUND).exists()
    reviewed = document.verifications.exclude(review="").exists()
    return SourceDocument.Status.VERIFIED if reviewed and not pending else SourceDocument.Status.EXTRACTED


def _query_context(verification: SourceVerification) -> dict:
    point = verification.data_point
    unit = verification.edc_unit
    return {"item": point.item.label, "item_oid": point.item.oid, "form": point.form.name,
            "visit": point.visit.definition.name, "observed": f"{point.raw_value} {unit}".strip(),
            "expected": f"document {verification.document_id}, page {verification.page}"}


def _discrepancy_query(verification: SourceVerification, *, actor, person: bool = False) -> tuple[Query | None, bool]:
    """The query on a source discrepancy: an active query on the same data point (the
    QueryAnalyzer's, a person's, an earlier one of ours) is reused, never doubled. The agent's
    is a Candidate for data-manager review; a CRA's (`person`) is raised Open."""
    active = (Query.objects.filter(data_point_id=verification.data_point_id, state__in=ACTIVE_QUERY_STATES)
              .order_by("created_at", "pk").first())
    if active is not None:
        return active, False
    site = verification.site
    text = query_text_render(rule_type="source_verification", category=Query.Category.INCONSISTENCY,
                             language=site.language, context=_query_context(verification))
    severity = Query.Severity.CRITICAL if verification.item.critical else Query.Severity.MAJOR
    try:
        query = query_create(actor=actor, study=verification.study, subject=verification.subject,
                             data_point=verification.data_point, text=text, category=Query.Category.INCONSISTENCY,
                             severity=severity, origin=Query.Origin.MANUAL if person else Query.Origin.RULE,
                             candidate=None if person else True, rule_code="" if person else RULE_CODE,
                             confidence=verification.confidence)
    except TransitionRefused:
        return None, False
    return query, True


# --- The CRA's decisions ----------------------------------------------------------------------------
CONFIRMABLE = (V.VERIFIED, V.DISCREPANCY, V.NOT_FOUND)
SDV_STATE_OF = {V.VERIFIED: DataPoint.SdvState.VERIFIED, V.DISCREPANCY: DataPoint.SdvState.DISCREPANCY}


class VerificationRefused(ValidationError):
    pass


def _require_verifier(actor, site) -> None:
    if not user_can(user=actor, capability="verify_source", site=site):
        raise PermissionDenied("Only the CRA monitoring this site verifies source data.")


def _data_point_mark(point: DataPoint, *, verdict: str, actor, reason: str) -> None:
    state = SDV_STATE_OF.get(verdict)
    if state is None or point.sdv_state == state:
        return
    point.sdv_state = state
    set_audit(point, actor=actor, reason=reason)
    point.save()


def verification_confirm(*, verification: SourceVerification, actor, verdict: str = "",
                         reason: str = "") -> SourceVerification:
    """The CRA confirms the verdict (no `verdict`, or the same) or overrides it (another verdict,
    a reason required). A verified verdict marks the data point verified; a discrepancy marks it
    so. Refused on a verdict about a value that changed since (stale)."""
    _require_verifier(actor, verification.site)
    reason = (reason or "").strip()
    with transaction.atomic():
        verification = SourceVerification.objects.select_for_update(of=("self",)).select_related(
            "data_point", "document", "site").get(pk=verification.pk)
        point = DataPoint.objects.select_for_update(of=("self",)).get(pk=verification.data_point_id)
        if point.version != verification.data_point_version:
            raise VerificationRefused({"verdict": f"The EDC value changed since this verdict (version "
                                                  f"{verification.data_point_version}, now {point.version}): read "
                                                  "the document again or verify by hand."})
        target = verdict or verification.verdict
        if target not in CONFIRMABLE:
            raise VerificationRefused({"verdict": f"Choose one of {', '.join(CONFIRMABLE)} (not {target!r})."})
        override = target != (verification.agent_verdict or verification.verdict)
        if override and not reason:
            raise VerificationRefused({"reason": "Overriding the agent's verdict needs a reason."})
        verification.verdict = target
        verification.review = SourceVerification.Review.OVERRIDDEN if override else SourceVerification.Review.CONFIRMED
        verification.reason, verification.verified_by, verification.verified_at = reason, actor, timezone.now()
        verification.updated_at = verification.verified_at
        why = (f"Overridden by the CRA ({verification.agent_verdict} -> {target}): {reason}" if override
               else f"Confirmed by the CRA ({target}){f': {reason}' if reason else ''}")
        set_audit(verification, actor=actor, reason=why)
        verification.save()
        where = f"document {verification.document_id}, page {verification.page}" if verification.document_id \
            else "paper source on site"
        _data_point_mark(point, verdict=target, actor=actor, reason=f"SDV {target} against {where} "
                                                                    f"(verification {verification.pk})")
        if verification.document_id:
            document = SourceDocument.objects.select_for_update(of=("self",)).get(pk=verification.document_id)
            status = _document_status(document)
            if status != document.status:
                document.status = status
                set_audit(document, actor=actor, reason=f"Every value reviewed (verification {verification.pk})")
                document.save()
    return verification


def data_point_verify_manually(*, data_point: DataPoint, actor, verdict: str = V.VERIFIED,
                               reason: str = "") -> SourceVerification:
    """Manual SDV: the CRA ticks a value verified (or flags it) against paper on site."""
    data_point = DataPoint.objects.select_related("subject__site", "item", "visit").get(pk=data_point.pk)
    _require_verifier(actor, data_point.subject.site)
    if verdict not in SDV_STATE_OF:
        raise VerificationRefused({"verdict": "Manual SDV records verified or discrepancy."})
    reason = (reason or "").strip() or ("Verified against the source on site" if verdict == V.VERIFIED else "")
    if not reason:
        raise VerificationRefused({"reason": "Flagging a discrepancy needs a reason."})
    with transaction.atomic():
        point = DataPoint.objects.select_for_update(of=("self",)).get(pk=data_point.pk)
        now = timezone.now()
        row = SourceVerification.objects.select_for_update(of=("self",)).filter(
            data_point=point, document=None).order_by("pk").first() or \
            SourceVerification(study_id=point.study_id, site_id=data_point.subject.site_id, subject_id=point.subject_id,
                               visit_id=point.visit_id, item_id=point.item_id, data_point=point,
                               method=SourceVerification.Method.MANUAL, created_at=now)
        row.verdict, row.review, row.reason = verdict, SourceVerification.Review.CONFIRMED, reason
        row.edc_value, row.edc_unit = point.raw_value, point.units or data_point.item.units
        row.data_point_version, row.verified_by, row.verified_at, row.updated_at = point.version, actor, now, now
        set_audit(row, actor=actor, reason=f"Manual SDV ({verdict}): {reason}")
        row.save()
        _data_point_mark(point, verdict=verdict, actor=actor, reason=f"Manual SDV {verdict}: {reason}")
    return row


def verification_query_raise(*, verification: SourceVerification, actor) -> tuple[Query, bool]:
    """The CRA raises a query on a verdict's data point (Open, the template's neutral text), or
    is given the active one already on it. Returns (query, created)."""
    _require_verifier(actor, verification.site)
    if not verification.document_id:
        raise VerificationRefused({"verdict": "Raise a query on a manual SDV from the query page."})
    with transaction.atomic():
        verification = SourceVerification.objects.select_for_update(of=("self",)).get(pk=verification.pk)
        query, created = _discrepancy_query(verification, actor=actor, person=True)
        if query is None:
            raise VerificationRefused({"query": "The query text did not pass the compliance check."})
        if verification.query_id != query.pk:
            verification.query = query
            set_audit(verification, actor=actor, reason=f"Query {query.pk} {'raised' if created else 'linked'} by "
                                                        "the CRA")
            verification.save()
    return query, created

