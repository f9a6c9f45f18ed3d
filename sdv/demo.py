"""Source documents of the demo study (seed_demo): generated lab reports for two subjects' Week 12
visits at site 101, printed the way a lab prints them (Hb, K+, SGPT; creatinine in mg/dL while the
EDC holds umol/L), one of them scanned a little askew. Subject 101-002's report shows a potassium
value that was transcribed differently into the EDC: the DataVerification agent finds it and
raises a candidate query. The documents are read at once (in-process, as the agent does), so the
CRA opens a workspace with verdicts. Idempotent: the same files are the same documents, and a
document already read is not read again."""

from decimal import Decimal

from django.core.files.uploadedfile import SimpleUploadedFile

from agents.identity import agent_user
from sdv.documents import document_from_upload
from sdv.models import SourceDocument
from sdv.verification import ocr, samples
from sdv.verification.services import AGENT_NAME, AGENT_VERSION, document_store, documents_read
from sdv.verification.units import rounded
from studies.models import DataPoint, Study, SubjectVisit

VISIT = "SE.WEEK12"
PAGES = {"101-001": {"angle": 0.0}, "101-002": {"angle": 1.2, "discrepancy": ("I.LB.K", "0.6")}}
REASON = "Demo source document (seed_demo)"


def _lines(points: dict[str, DataPoint], discrepancy=None) -> list[samples.LabLine]:
    def value(oid):
        text = points[oid].raw_value
        if discrepancy and discrepancy[0] == oid:  # the source says otherwise than the EDC
            text = str(Decimal(text) + Decimal(discrepancy[1]))
        return text

    creatinine = rounded(Decimal(points["I.LB.CREAT"].raw_value) / Decimal("88.42"), 2)
    return [samples.LabLine("Hb", value("I.LB.HGB"), "g/dL", "12.0 - 16.0"),
            samples.LabLine("K+", value("I.LB.K"), "mmol/L", "3.5 - 5.1"),
            samples.LabLine("Creatinine", f"{creatinine:.2f}", "mg/dL", "0.70 - 1.20"),
            samples.LabLine("SGPT", value("I.LB.ALT"), "U/L", "0 - 41"),
            samples.LabLine("Sodium", "140", "mmol/L", "135 - 145")]


def demo_source_documents(*, study: Study, actor) -> dict:
    """Plant and read the demo's source documents; returns what was done (for the seed report)."""
    documents = []
    for subject_id, spec in PAGES.items():
        visit = SubjectVisit.objects.filter(study=study, subject__subject_id=subject_id,
                                            definition__oid=VISIT).select_related("subject").first()
        if visit is None:
            continue
        points = {p.item.oid: p for p in DataPoint.objects.filter(visit=visit).select_related("item")}
        if not {"I.LB.HGB", "I.LB.K", "I.LB.CREAT", "I.LB.ALT"} <= set(points) or not all(
                points[o].raw_value for o in ("I.LB.HGB", "I.LB.K", "I.LB.CREAT", "I.LB.ALT")):
            continue
        image = samples.lab_report_image(_lines(points, spec.get("discrepancy")), subject_id=subject_id,
                                         visit="Week 12", collected=visit.actual_date.isoformat(), dpi=200)
        image = samples.degrade(image, samples.Degradation(angle=spec["angle"]), seed=1)
        upload = SimpleUploadedFile(f"lab-report-{subject_id}-week12.png", samples.image_bytes(image, "png", dpi=200))
        document, _ = document_from_upload(subject=visit.subject, visit=visit, upload=upload, actor=actor,
                                           reason=REASON)
        documents.append(document)
    waiting = [d for d in documents if d.status == SourceDocument.Status.UPLOADED]
    if not waiting:
        return {"documents": len(documents), "read": 0}
    try:
        reads = documents_read(waiting)
    except ocr.OcrUnavailable as error:
        return {"documents": len(documents), "read": 0, "note": str(error)}
    agent = agent_user(AGENT_NAME)
    for document, read in zip(waiting, reads, strict=True):
        document_store(document=document, read=read, actor=agent,
                       reason=f"Read by {AGENT_NAME} v{AGENT_VERSION} (seed_demo)")
    return {"documents": len(documents), "read": len(waiting)}
