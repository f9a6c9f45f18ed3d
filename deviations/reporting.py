"""Deviation reporting: the SDTM DV domain (SAS transport v5 by pyreadstat, CSV on request), the
ICH E3 section 10.2 listing (PDF by reportlab, Excel by openpyxl) and the periodic compliance
summary (ComplianceReporting), signed off by a person.

DV has one row per deviation of a subject, withdrawn ones (not deviations) left out; site-level
deviations (no subject) are not subject data and are not in DV (the listing shows them)."""

import datetime
import hashlib
import io
import json
import unicodedata
from pathlib import Path

import pandas as pd
import pyreadstat
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from deviations.models import Capa, ComplianceReport, Deviation
from deviations.plan import plan_latest
from deviations.selectors import deviation_study_can
from studies.audit import set_audit
from studies.models import Study

# SDTMIG 3.4 DV: variable -> label (at most 40 characters, as SAS v5 allows). Character lengths
# are the longest value's (at most 200), as the FDA's technical conformance guide asks.
DV_VARIABLES = {
    "STUDYID": "Study Identifier", "DOMAIN": "Domain Abbreviation", "USUBJID": "Unique Subject Identifier",
    "DVSEQ": "Sequence Number", "DVREFID": "Reference ID", "DVTERM": "Protocol Deviation Term",
    "DVDECOD": "Protocol Deviation Coded Term", "DVCAT": "Category for Protocol Deviation",
    "DVSCAT": "Subcategory for Protocol Deviation", "EPOCH": "Epoch",
    "DVSTDTC": "Start Date/Time of Deviation", "DVSTDY": "Study Day of Start of Deviation",
}
IMPORTANCE_SUBCATEGORY = {"important": "IMPORTANT", "non_important": "NON-IMPORTANT"}


def _ascii(text: str, limit: int = 200) -> str:
    """SAS transport v5 text: ASCII, at most 200 characters."""
    plain = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode("ascii")
    return " ".join(plain.split())[:limit]


def reportable(study: Study) -> QuerySet[Deviation]:
    return (Deviation.objects.filter(study=study).exclude(resolution=Deviation.Resolution.WITHDRAWN)
            .select_related("site", "subject", "visit__definition"))


def _epochs_where_known(study: Study, frame: pd.DataFrame) -> pd.Series:
    """EPOCH as stored (detected deviations), else from the deviation's date, the subject's first
    dose and last exposure, as PatternRecognition derives it (a person's or a source's deviation)."""
    from deviations.detection import epochs  # noqa: PLC0415 (detection imports the models this module does)
    from deviations.detectors.data import StudyData, read_exposure, read_subjects  # noqa: PLC0415

    missing = (frame["epoch"].fillna("") == "") & frame["occurred_on"].notna()
    if not missing.any():
        return frame["epoch"]
    plan = plan_latest(study=study)
    data = StudyData(subjects=read_subjects(study), visits=pd.DataFrame())
    read_exposure(study, plan.content if plan else {}, data)
    derived = epochs(frame.loc[missing, ["subject", "occurred_on"]], data)
    return frame["epoch"].where(~missing, derived)


def dv_frame(*, study: Study) -> pd.DataFrame:
    """The DV domain of the study, one row per deviation of a subject, DVSEQ per subject in date order."""
    rows = reportable(study).filter(subject__isnull=False).values_list(
        "pk", "external_id", "subject_id", "subject__subject_id", "subject__first_dose_date", "dvterm", "term",
        "description", "dvdecod", "dvcat", "importance", "epoch", "occurred_on")
    frame = pd.DataFrame.from_records(list(rows), columns=[
        "pk", "external_id", "subject", "usubjid", "first_dose", "dvterm", "term", "description", "dvdecod",
        "dvcat", "importance", "epoch", "occurred_on"])
    frame["epoch"] = _epochs_where_known(study, frame)
    frame = frame.sort_values(["usubjid", "occurred_on", "pk"], na_position="last", kind="stable")
    when = pd.to_datetime(frame["occurred_on"])
    first = pd.to_datetime(frame["first_dose"])
    delta = (when - first).dt.days
    out = pd.DataFrame({
        "STUDYID": _ascii(study.protocol_id), "DOMAIN": "DV", "USUBJID": frame["usubjid"].map(_ascii),
        "DVSEQ": (frame.groupby("usubjid").cumcount() + 1).astype("float64"),
        "DVREFID": [_ascii(e) if e else f"TRIALOPS-{pk}" for pk, e in zip(frame["pk"], frame["external_id"],
                                                                           strict=True)],
        # DVTERM: the vocabulary's term where coded, else the reported term (or description)
        "DVTERM": [_ascii(t or r or d) for t, r, d in zip(frame["dvterm"], frame["term"], frame["description"],
                                                         strict=True)],
        "DVDECOD": frame["dvdecod"].map(_ascii), "DVCAT": frame["dvcat"].map(_ascii),
        "DVSCAT": frame["importance"].map(IMPORTANCE_SUBCATEGORY).fillna(""),
        "EPOCH": frame["epoch"].map(_ascii),
        "DVSTDTC": when.dt.strftime("%Y-%m-%d").fillna(""),
        "DVSTDY": delta.where(delta < 0, delta + 1).astype("float64"),
    })
    return out.reset_index(drop=True)


def dv_export(*, study: Study, path: Path, csv: bool = False) -> dict:
    """Write DV to `path` (.xpt, SAS transport v5) and, with `csv`, the same rows beside it."""
    frame = dv_frame(study=study)
    if frame.empty:  # a transport file needs a width per character variable: write one blank
        frame = pd.DataFrame({name: pd.Series(dtype="float64" if name in ("DVSEQ", "DVSTDY") else object)
                              for name in DV_VARIABLES})
    path = Path(path)
    pyreadstat.write_xport(frame, str(path), file_label="Protocol Deviations", table_name="DV",
                           column_labels=DV_VARIABLES, file_format_version=5)
    written = {"xpt": str(path), "rows": int(len(frame.dropna(how="all")))}
    if csv:
        csv_path = path.with_suffix(".csv")
        frame.to_csv(csv_path, index=False)
        written["csv"] = str(csv_path)
    return written


def dv_bytes(*, study: Study) -> bytes:
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / "dv.xpt"
        dv_export(study=study, path=target)
        return target.read_bytes()


# --- ICH E3 10.2 listing -----------------------------------------------------------------------

LISTING_COLUMNS = ["Site", "Subject", "Category", "Importance", "Coded term (DVDECOD)", "Date", "Status",
                   "Source", "Description"]


def listing_rows(deviations: QuerySet[Deviation]) -> list[list[str]]:
    """By site, subject, category and importance (important first), as ICH E3 10.2 lists them."""
    rows = deviations.exclude(resolution=Deviation.Resolution.WITHDRAWN).order_by(
        "site__number", "subject__subject_id", "category", "importance", "occurred_on", "pk")
    return [[d.site.number, d.subject.subject_id if d.subject_id else "(site)", d.get_category_display(),
             d.get_importance_display(), d.dvdecod or "(not coded)",
             d.occurred_on.isoformat() if d.occurred_on else "", d.get_status_display(), d.get_source_display(),
             d.description] for d in rows]


def _summary_rows(rows: list[list[str]]) -> list[list]:
    counts: dict[tuple, int] = {}
    for row in rows:
        counts[(row[2], row[3])] = counts.get((row[2], row[3]), 0) + 1
    return [[category, importance, n] for (category, importance), n in sorted(counts.items())]


def listing_pdf(*, study: Study, deviations: QuerySet[Deviation], title_note: str = "") -> bytes:
    from reportlab.lib import colors  # noqa: PLC0415 (only the listing needs reportlab)
    from reportlab.lib.pagesizes import A4, landscape  # noqa: PLC0415
    from reportlab.lib.styles import getSampleStyleSheet  # noqa: PLC0415
    from reportlab.lib.units import mm  # noqa: PLC0415
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle  # noqa: PLC0415

    rows = listing_rows(deviations)
    styles = getSampleStyleSheet()
    cell = styles["BodyText"].clone("cell", fontSize=7, leading=8.5)
    buffer = io.BytesIO()
    generated = timezone.now().strftime("%Y-%m-%d %H:%M UTC")

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawString(15 * mm, 8 * mm, f"{study.protocol_id} - ICH E3 10.2 listing of protocol deviations - "
                                          f"generated {generated}")
        canvas.drawRightString(282 * mm, 8 * mm, f"Page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(buffer, pagesize=landscape(A4), leftMargin=15 * mm, rightMargin=15 * mm,
                            topMargin=12 * mm, bottomMargin=15 * mm, title=f"{study.protocol_id} deviations",
                            author="TrialOps")
    story = [Paragraph(f"Listing of protocol deviations (ICH E3 section 10.2): {study.protocol_id}", styles["Title"]),
             Paragraph(f"{study.name}. {len(rows)} deviation(s) by site, subject, category and importance"
                       f"{'; ' + title_note if title_note else ''}. Generated {generated}.", styles["Normal"]),
             Spacer(1, 4 * mm)]
    summary = Table([["Category", "Importance", "Deviations"], *_summary_rows(rows)], hAlign="LEFT")
    summary.setStyle(TableStyle([("FONT", (0, 0), (-1, -1), "Helvetica", 8),
                                 ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                                 ("GRID", (0, 0), (-1, -1), 0.25, colors.grey)]))
    story += [summary, Spacer(1, 5 * mm)]
    head = cell.clone("head", fontName="Helvetica-Bold")
    data = [[Paragraph(c, head) for c in LISTING_COLUMNS]] + [[Paragraph(_escape(v), cell) for v in row]
                                                              for row in rows]
    widths = [12, 24, 36, 22, 52, 18, 18, 22, 63]
    table = Table(data, colWidths=[w * mm for w in widths], repeatRows=1)
    table.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, -1), "Helvetica", 7), ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef6")), ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey)]))
    story.append(table if rows else Paragraph("No deviation.", styles["Normal"]))
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


def _escape(text: str) -> str:
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def listing_xlsx(*, study: Study, deviations: QuerySet[Deviation]) -> bytes:
    from openpyxl import Workbook  # noqa: PLC0415
    from openpyxl.styles import Font  # noqa: PLC0415

    rows = listing_rows(deviations)
    book = Workbook()
    sheet = book.active
    sheet.title = "Listing"
    sheet.append(LISTING_COLUMNS)
    for row in rows:
        sheet.append([_cell(v) for v in row])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = sheet.dimensions
    for column, width in zip("ABCDEFGHI", (8, 16, 30, 16, 48, 12, 14, 18, 80), strict=True):
        sheet.column_dimensions[column].width = width
    summary = book.create_sheet("Summary")
    summary.append(["Study", study.protocol_id])
    summary.append(["Generated (UTC)", timezone.now().strftime("%Y-%m-%d %H:%M")])
    summary.append([])
    summary.append(["Category", "Importance", "Deviations"])
    for row in _summary_rows(rows):
        summary.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _cell(value: str) -> str:
    """Text that a spreadsheet shows as text: a leading =, +, - or @ would be read as a formula."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value


# --- the periodic compliance summary -----------------------------------------------------------

def _month(day: datetime.date) -> str:
    return day.strftime("%Y-%m")


def compliance_summary(*, study: Study, period_start, period_end, review_within_days: int) -> tuple[dict, dict]:
    """(inputs, summary) of the study's deviations in the period."""
    everything = reportable(study)
    inside = everything.filter(Q(occurred_on__gte=period_start, occurred_on__lte=period_end)
                               | Q(occurred_on__isnull=True, detected_on__gte=period_start,
                                   detected_on__lte=period_end))
    by = lambda field: {row[field] or "": row["n"] for row in inside.values(field).annotate(n=Count("pk"))}  # noqa: E731
    trend_from = (period_end.replace(day=1) - datetime.timedelta(days=335)).replace(day=1)
    trend: dict[str, int] = {}
    for day in everything.filter(occurred_on__gte=trend_from, occurred_on__lte=period_end).values_list(
            "occurred_on", flat=True):
        trend[_month(day)] = trend.get(_month(day), 0) + 1
    overdue_before = period_end - datetime.timedelta(days=review_within_days)
    overdue = everything.filter(status=Deviation.Status.OPEN, detected_on__lt=overdue_before)
    capas = Capa.objects.filter(study=study).exclude(status__in=[Capa.Status.COMPLETED, Capa.Status.CANCELLED])
    plan = plan_latest(study=study)
    summary = {
        "total": inside.count(), "by_category": by("category"), "by_importance": by("importance"),
        "by_site": {site: n for site, n in inside.values_list("site__number").annotate(n=Count("pk"))},
        "by_source": by("source"), "by_status": by("status"),
        "trend": dict(sorted(trend.items())),
        "open_capas": capas.count(), "overdue_capas": capas.filter(due_on__lt=period_end).count(),
        "overdue_reviews": overdue.count(),
        "overdue_review_ids": list(overdue.order_by("pk").values_list("pk", flat=True)[:200]),
    }
    inputs = {"period_start": period_start.isoformat(), "period_end": period_end.isoformat(),
              "review_within_days": review_within_days, "plan_version": plan.version if plan else None,
              "deviation_ids_sha256": hashlib.sha256(",".join(
                  f"{pk}:{status}" for pk, status in inside.order_by("pk").values_list("pk", "status")).encode())
              .hexdigest(), "deviations_in_study": everything.count()}
    return inputs, summary


def _digest(inputs: dict, summary: dict) -> str:
    return hashlib.sha256(json.dumps({"inputs": inputs, "summary": summary}, sort_keys=True).encode()).hexdigest()


def compliance_report_create(*, study: Study, actor, period_start, period_end,
                             review_within_days: int = 30) -> tuple[ComplianceReport, bool]:
    """Store the period's summary (once per period: an unsigned report of the same period is
    refreshed when its figures changed; a signed one is never touched)."""
    if period_end < period_start:
        raise ValidationError({"period_end": "The period ends before it starts."})
    inputs, summary = compliance_summary(study=study, period_start=period_start, period_end=period_end,
                                         review_within_days=review_within_days)
    digest = _digest(inputs, summary)
    with transaction.atomic():
        report = ComplianceReport.objects.select_for_update().filter(
            study=study, period_start=period_start, period_end=period_end).first()
        if report is not None and (report.signed_at is not None or report.sha256 == digest):
            return report, False
        created = report is None
        report = report or ComplianceReport(study=study, period_start=period_start, period_end=period_end,
                                            created_by=actor)
        report.inputs, report.summary, report.sha256 = inputs, summary, digest
        set_audit(report, actor=actor, reason="Periodic deviation summary" if created else
                  "Periodic deviation summary recomputed: the figures changed")
        report.save()
    return report, created


SIGNATURE_MEANINGS = ("reviewed", "approved")


def compliance_report_sign(*, report: ComplianceReport, actor, password: str, meaning: str) -> ComplianceReport:
    """Sign off a report: the signer re-authenticates with their password; the signature holds
    the printed name, the time (UTC), the meaning and the digest of what was signed."""
    if not deviation_study_can(user=actor, capability="sign_report", study=report.study):
        raise PermissionDenied("Your role may not sign this study's deviation reports.")
    if meaning not in SIGNATURE_MEANINGS:
        raise ValidationError({"meaning": f"One of {', '.join(SIGNATURE_MEANINGS)}."})
    if not password or not actor.check_password(password):
        raise ValidationError({"password": "The password is not correct: the signature was not applied."})
    with transaction.atomic():
        report = ComplianceReport.objects.select_for_update().get(pk=report.pk)
        if report.signed_at is not None:
            raise ValidationError({"report": "Already signed."})
        report.signed_by, report.signed_at = actor, timezone.now()
        report.signed_name = actor.get_full_name() or actor.username
        report.signature_meaning, report.signed_sha256 = meaning, report.sha256
        set_audit(report, actor=actor, reason=f"Signed ({meaning})")
        report.save()
    return report
