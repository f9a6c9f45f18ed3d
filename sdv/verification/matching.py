"""The verdict on each EDC value of a document's subject and visit, from the rows read on its pages.

Each row gets an analyte from its printed name (sdv.verification.analytes); each EDC value is
matched to the rows of its item's analyte (or, for an item that is no lab test, to rows whose
name is the item's label). Then, for the best row:
- verified: the values match by the rule of sdv.verification.units (converted, rounded);
- discrepancy: they differ and the page value was read with confidence at least the threshold;
- needs_review: they differ but the reading is too uncertain to say so (a misread digit must not
  become a query to the site), or the comparison cannot be made (units that do not convert, a
  censored value "<0.5" against a number);
- not_found: no row of the document is about the item.
A match needs no high confidence: a misreading that lands exactly on the EDC's value is far less
likely than a true reading, so agreement is evidence in itself.

A page unit that OCR could not read cleanly is resolved to the nearest unit the analyte is
reported in (rapidfuzz); one that stays unknown is compared as if in the EDC's unit."""

from dataclasses import dataclass

from rapidfuzz import fuzz, process

from queries.checks import lab_limits
from sdv.verification import analytes
from sdv.verification.units import conversion_factor, number_parse, unit_normalise, values_compare

UNIT_CUTOFF = 70
LABEL_CUTOFF = 90


@dataclass
class EdcValue:
    data_point_id: int
    item_id: int
    item_label: str
    value: str
    unit: str
    analyte: str | None  # LBTESTCD


@dataclass
class PageRow:
    page: int
    name: str
    value: str
    unit: str
    confidence: float  # 0-100
    value_box: list
    box: list
    text: str
    analyte: str | None = None
    name_score: float = 0.0


@dataclass
class Verdict:
    data_point_id: int
    verdict: str
    row: PageRow | None
    source_unit: str = ""
    explanation: str = ""

    @property
    def confidence(self) -> float | None:
        return None if self.row is None else round(self.row.confidence / 100, 3)


def rows_with_analytes(rows: list[PageRow]) -> list[PageRow]:
    for row in rows:
        found = analytes.printed_analyte(row.name, row.unit)
        row.analyte, row.name_score = (found.code, found.score) if found else (None, 0.0)
    return rows


def candidate_units(analyte: str | None, edc_unit: str) -> list[str]:
    """Units the analyte is reported in: the EDC's, the QueryAnalyzer's table, the conversions table."""
    units = [unit_normalise(edc_unit)] if edc_unit else []
    known = lab_limits.analyte_for(None, analyte) if analyte else None
    if known:
        units += [unit_normalise(known.unit)] + [unit_normalise(name) for name, _ in known.units]
    return [u for u in dict.fromkeys(units) if u]


def unit_resolve(printed: str, candidates: list[str]) -> str:
    """The unit as printed if it reads as one, else the nearest candidate, else ""."""
    normal = unit_normalise(printed)
    if not normal:
        return ""
    if normal in candidates or not candidates:
        return normal
    best = process.extractOne(normal.lower(), [c.lower() for c in candidates], scorer=fuzz.ratio,
                              score_cutoff=UNIT_CUTOFF)
    if best:
        return candidates[best[2]]
    return normal if conversion_factor(normal, candidates[0]) is not None else ""


def _rows_for(value: EdcValue, rows: list[PageRow]) -> list[PageRow]:
    if value.analyte:
        found = [r for r in rows if r.analyte == value.analyte]
        if found:
            return found
    label = analytes.name_normalise(value.item_label)
    if len(label) < 4:
        return []
    return [r for r in rows if r.analyte is None
            and fuzz.ratio(analytes.name_normalise(r.name), label) >= LABEL_CUTOFF]


def verdict_for(value: EdcValue, rows: list[PageRow], *, review_below: float) -> Verdict:
    """The verdict on one EDC value against the rows of one document."""
    found = _rows_for(value, rows)
    if not found:
        return Verdict(value.data_point_id, "not_found", None, explanation="not on the document")
    if not value.value.strip():
        row = max(found, key=lambda r: r.confidence)
        return Verdict(value.data_point_id, "discrepancy" if row.confidence >= review_below else "needs_review",
                       row, unit_resolve(row.unit, candidate_units(value.analyte, value.unit)),
                       "no value in the EDC, one on the document")
    judged = []
    for row in found:
        unit = unit_resolve(row.unit, candidate_units(value.analyte, value.unit))
        if number_parse(row.value) is None:
            judged.append((2, row, unit, None, "the value on the page is not a number"))
            continue
        comparison = values_compare(source=row.value, source_unit=unit or value.unit, edc=value.value,
                                    edc_unit=value.unit, analyte=value.analyte)
        note = comparison.explanation if unit or not row.unit else \
            f"{comparison.explanation}; the unit on the page ('{row.unit}') is not legible"
        rank = 0 if comparison.matches else 1 if comparison.matches is False else 2
        judged.append((rank, row, unit, comparison.matches, note))
    # The matching row if any (a test printed twice), else the most confident reading.
    rank, row, unit, matches, note = min(judged, key=lambda j: (j[0], -j[1].confidence))
    if matches:
        verdict = "verified"
    elif matches is False and row.confidence >= review_below:
        verdict = "discrepancy"
    else:
        verdict = "needs_review"
        if matches is False:
            note = f"{note}; read with confidence {row.confidence:.0f} (< {review_below:.0f})"
    return Verdict(value.data_point_id, verdict, row, unit or row.unit, note)
