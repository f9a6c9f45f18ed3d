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

import re
from dataclasses import dataclass, replace
from decimal import Decimal

from rapidfuzz import fuzz, process

from queries.checks import lab_limits
from sdv.verification import analytes
from sdv.verification.units import conversion_factor, number_parse, unit_known, unit_normalise, values_compare

UNIT_CUTOFF = 75
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
    range: str = ""
    flag: str = ""
    second: str = ""  # the value read a second time, "" when not
    second_confidence: float = 0.0
    settled: bool = False  # not read a second time: the first reading matched the EDC when read (reading_settles)
    analyte: str | None = None
    name_score: float = 0.0


@dataclass
class Verdict:
    data_point_id: int
    verdict: str
    row: PageRow | None
    source_unit: str = ""
    explanation: str = ""
    reading_confidence: float | None = None  # 0-100, after the row's own checks

    @property
    def confidence(self) -> float | None:
        if self.row is None:
            return None
        value = self.row.confidence if self.reading_confidence is None else self.reading_confidence
        return round(value / 100, 3)


GROSS = Decimal(3)  # a value this many times past its printed range, unflagged, was misread
DOUBTFUL = 50.0  # the confidence a reading keeps when its own row contradicts it


def reference_bounds(text: str) -> tuple[Decimal, Decimal] | None:
    """(low, high) of a printed reference range: "3.5 - 5.1", "(3.5-5.1)", "< 5.2" (low 0)."""
    clean = (text or "").strip().strip("()[]{}").replace(" ", "").replace(",", ".")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)[-–—](\d+(?:\.\d+)?)", clean)
    if match:
        low, high = Decimal(match.group(1)), Decimal(match.group(2))
        return (low, high) if low < high else None
    match = re.fullmatch(r"(?:<|<=|≤)(\d+(?:\.\d+)?)", clean)
    return (Decimal(0), Decimal(match.group(1))) if match else None


def _gross(value: Decimal, bounds: tuple[Decimal, Decimal], flag: str) -> bool:
    low, high = bounds
    flag = flag.strip("()[]").upper()
    if flag in ("H", "HH", "HIGH", "↑", "*", "**", "A", "C", "CRIT"):
        return value < low  # flagged high, yet below the range
    if flag in ("L", "LL", "LOW", "↓"):
        return value > high
    return value > high * GROSS or (low > 0 and value < low / GROSS)


def reading_checked(row: PageRow) -> tuple[str, float, str]:
    """The page value as its own row corroborates it: (value, confidence, note). A value far
    outside the range printed beside it, with no flag saying so, was misread, most often a
    decimal point lost ("44" for 4.4): restored when exactly one placement of the point fits the
    range; either way the reading keeps at most DOUBTFUL confidence (a difference from the EDC
    is then for review, never a query)."""
    number = number_parse(row.value)
    bounds = reference_bounds(row.range)
    if number is None or bounds is None or number.qualifier or not _gross(number.value, bounds, row.flag):
        return row.value, row.confidence, ""
    digits = row.value.replace(",", "").replace(".", "")
    fits = [candidate for i in range(1, len(digits)) if not _gross(
        Decimal(candidate := f"{digits[:i]}.{digits[i:]}"), bounds, row.flag)]
    if len(fits) == 1:
        return fits[0], min(row.confidence, DOUBTFUL), f"read {row.value}, outside the printed range {row.range}: " \
                                                       f"decimal point restored ({fits[0]})"
    return row.value, min(row.confidence, DOUBTFUL), f"read {row.value}, outside the printed range {row.range} " \
                                                     "without a flag"


def rows_with_analytes(rows: list[PageRow]) -> list[PageRow]:
    for row in rows:
        found = analytes.printed_analyte(row.name, row.unit)
        row.analyte, row.name_score = (found.code, found.score) if found else (None, 0.0)
    return rows


def candidate_units(analyte: str | None, edc_unit: str) -> list[str]:
    """Units the analyte is reported in and that convert to the EDC's: the EDC's own, then the
    QueryAnalyzer's table of the analyte's units."""
    units = [unit_normalise(edc_unit)] if edc_unit else []
    known = lab_limits.analyte_for(None, analyte) if analyte else None
    if known:
        units += [unit_normalise(known.unit)] + [unit_normalise(name) for name, _ in known.units]
    units = [u for u in dict.fromkeys(units) if u]
    if not edc_unit:
        return units
    return [u for u in units if conversion_factor(u, edc_unit, analyte) is not None]


def unit_resolve(printed: str, candidates: list[str]) -> str:
    """The unit as printed if it reads as one, else the nearest candidate, else ""."""
    normal = unit_normalise(printed)
    if not normal:
        return ""
    if normal in candidates or not candidates:
        return normal
    if len(normal) >= 4:
        best = process.extractOne(normal.lower(), [c.lower() for c in candidates], scorer=fuzz.ratio,
                                  score_cutoff=UNIT_CUTOFF)
        if best:
            return candidates[best[2]]
    return normal if unit_known(normal) else ""  # a real unit, if not one of the analyte's: legible


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


_LEADING_NUMBER = re.compile(r"^([<>]=?)?\d+(?:[.,]\d+)?|^[.,]\d+")


def _second(text: str) -> str:
    """The number a second reading starts with ("8.6H" read with its flag, "63." with a speck)."""
    match = _LEADING_NUMBER.match((text or "").strip())
    return match.group(0) if match else ""


WEAK = 30.0  # a reading this unsure does not contradict a confident one
UNCORROBORATED = 0.8  # the confidence kept by a reading whose second reading is no number at all


def _readings(row: PageRow) -> list[tuple[str, float]]:
    """The readings of a row's value that are numbers: the page's, and the second one if it
    differs (a weak one only while the other is weak too). A second reading that is no number
    leaves the first uncorroborated: it keeps UNCORROBORATED of its confidence."""
    first = number_parse(row.value)
    if row.settled and not row.second:
        # Read once because it matched the EDC of its day: against another EDC value it is unconfirmed.
        return [(row.value, min(row.confidence, DOUBTFUL))] if first else []
    out = [(row.value, row.confidence)] if first else []
    second_text = _second(row.second)
    second = number_parse(second_text) if second_text else None
    if second is None:
        if out and row.second.strip():
            out = [(row.value, row.confidence * UNCORROBORATED)]
        return out
    if first is not None and second.value == first.value:  # two readings of the same value confirm each other
        return [(row.value, max(row.confidence, row.second_confidence))]
    if first is not None and row.second_confidence < WEAK <= row.confidence:
        return out
    if first is not None and row.confidence < WEAK <= row.second_confidence:
        return [(second_text, row.second_confidence)]
    return out + [(second_text, row.second_confidence)]


def physiologically_possible(text: str, unit: str, analyte: str | None) -> bool | None:
    """Whether a value can belong to a living participant in that unit (queries.checks.lab_limits);
    None when the analyte or unit is not known there."""
    known = lab_limits.analyte_for(None, analyte) if analyte else None
    number = number_parse(text)
    if known is None or number is None or not unit:
        return None
    si = lab_limits.to_si(float(number.value), unit, known)
    return None if si is None else known.low <= si <= known.high


def strictly_consistent(text: str, reference: str, flag: str) -> bool | None:
    """Whether a reading agrees with the range and flag printed beside it: inside the range when
    unflagged, above it when flagged high, below when low, and never an order of magnitude out."""
    number = number_parse(text)
    return None if number is None else value_consistent(number.value, reference, flag)


def value_consistent(value: Decimal, reference: str, flag: str) -> bool | None:
    """strictly_consistent for a number (in the row's unit); None when the range does not read."""
    bounds = reference_bounds(reference)
    if bounds is None:
        return None
    low, high = bounds
    flag = flag.strip("()[]").upper()
    if value > high * GROSS or (low > 0 and value < low / GROSS):
        return False
    if flag in ("H", "HH", "HIGH", "↑"):
        return value > high
    if flag in ("L", "LL", "LOW", "↓"):
        return value < low
    return low <= value <= high


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")


def flagged_point_lost(row: PageRow) -> str:
    """The value with its decimal point restored when the page value, flagged H (or L), is an order
    of magnitude past its printed range and exactly one placement of the point fits the flag
    ("14" flagged H beside 0.2-1.2 was most likely 1.4); "" otherwise. A value so far out is
    possible (a flag does not tell a lost point from a very high value), so both are compared."""
    number, bounds = number_parse(row.value), reference_bounds(row.range)
    flag = (row.flag or "").strip("()[]").upper()
    if number is None or bounds is None or number.qualifier or flag not in ("H", "HH", "HIGH", "L", "LL", "LOW"):
        return ""
    if strictly_consistent(row.value, row.range, row.flag) is not False or value_consistent(
            number.value, row.range, "") is not False:
        return ""  # agrees with its flag, or is no order of magnitude out
    digits = row.value.replace(",", "").replace(".", "")
    fits = [candidate for i in range(1, len(digits)) if strictly_consistent(
        candidate := f"{digits[:i]}.{digits[i:]}", row.range, row.flag)]
    return fits[0] if len(fits) == 1 and fits[0] != row.value else ""


def _judge(value: EdcValue, row: PageRow) -> tuple[int, str, bool | None, str, float, str]:
    """(rank, unit, matches, explanation, confidence, value as read) of one row for one EDC value;
    rank 0: matches, 1: differs, 2: cannot be decided. A flagged value an order of magnitude past
    its range is compared as read and with its point restored (flagged_point_lost): either
    matching verifies it; a difference is doubtful (for review, never a query)."""
    judged = _judge_readings(value, row)
    restored = flagged_point_lost(row)
    if not restored or judged[0] == 0 or judged[5] != row.value:
        return judged  # a match, or a second reading that settled it (the point it restored, read again)
    capped = min(row.confidence, DOUBTFUL)
    again = _judge_readings(value, replace(row, value=restored, confidence=capped))
    note = f"read {row.value} flagged {row.flag}, an order of magnitude past the printed range {row.range}: " \
           f"decimal point restored ({restored})"
    if again[0] == 0:
        return (*again[:3], f"{again[3]}; {note}", again[4], again[5])
    rank, unit, matches, explanation, confidence, text = judged
    return rank, unit, matches, f"{explanation}; {note}, which does not match either", min(confidence, DOUBTFUL), text


def _judge_readings(value: EdcValue, row: PageRow) -> tuple[int, str, bool | None, str, float, str]:
    """_judge of the row's readings as they are (the page's and a second one)."""
    candidates = candidate_units(value.analyte, value.unit)
    unit = unit_resolve(row.unit, candidates)
    illegible_unit = bool(row.unit) and not unit
    readings = _readings(row)
    if not readings:
        return 2, unit, None, f"the value on the page ('{row.value}') is not legible", 0.0, row.value
    checked = []
    for text, confidence in readings:
        page_value, capped, note = reading_checked(replace(row, value=text, confidence=confidence))
        checked.append([page_value, capped, note, text, confidence])
    if len(checked) == 2 and number_parse(checked[0][0]).value == number_parse(checked[1][0]).value:
        # Both readings say the same once checked against the row's range: they confirm each other.
        first, second = checked
        checked = [[first[0], max(first[4], second[4]), first[2] or second[2], first[3], first[4]]]
    elif len(checked) == 1 and checked[0][2] and row.second and _digits(row.second) == _digits(row.value) \
            and "restored" in checked[0][2]:
        # Two readings agree on every digit and exactly one placement of the point fits the
        # printed range: the point was lost twice, the value is no less certain.
        checked[0][1] = checked[0][4]
    # A value impossible in the unit read was misread (a lost point, a wrong unit): never a query,
    # but it may still match the EDC in another unit of the analyte.
    unit_note = ""
    if physiologically_possible(checked[0][0], unit, value.analyte) is False:
        unit_note = f"{checked[0][0]} {unit} is not possible for this analyte"
        for c in checked:
            c[1] = min(c[1], DOUBTFUL)
        illegible_unit = True
    results = []
    for page_value, confidence, note, text, _ in checked:
        # An illegible unit: the value differs only if it differs in every unit the analyte is reported in.
        units = [unit or value.unit] + (candidates if illegible_unit else [])
        for tried in dict.fromkeys(units):
            comparison = values_compare(source=page_value, source_unit=tried, edc=value.value, edc_unit=value.unit,
                                        analyte=value.analyte)
            if comparison.matches:
                break
        notes = [comparison.explanation, note, unit_note]
        if illegible_unit:
            notes.append(f"the unit on the page ('{row.unit}') is not legible"
                         + ("" if comparison.matches else f"; no unit of {', '.join(candidates)} makes it match"))
        results.append((comparison.matches, "; ".join(n for n in notes if n), confidence, text,
                        tried if comparison.matches else unit))
    if len(results) == 2:
        # Two readings that differ: the one its own row agrees with (range and flag) wins when the
        # other contradicts its row, whichever matches the EDC (a lost point must not verify a
        # shifted one), with its own confidence.
        fits = [strictly_consistent(c[0], row.range, row.flag) for c in checked]
        if sorted(fits, key=str) == [False, True]:
            matches, note, confidence, text, tried = results[fits.index(True)]
            note = f"{note}; of two readings ({checked[0][3]}, {checked[1][3]}), the one its row's range and flag " \
                   "agree with"
            return (0 if matches else 1 if matches is False else 2), tried, matches, note, confidence, text
    matched = [r for r in results if r[0]]
    if matched:
        _, note, confidence, text, tried = max(matched, key=lambda r: r[2])
        if text != row.value:
            note = f"{note} (second reading)"
        return 0, tried, True, note, confidence, text
    matches, note, confidence, text, _ = results[0]
    if len(results) > 1:  # two readings that differ from each other: neither is sure
        confidence = min(DOUBTFUL, *(r[2] for r in results))
        note = f"{note}; two readings differ ({', '.join(r[3] for r in results)})"
    return (1 if matches is False else 2), unit, matches, note, confidence, text


def row_contradicts_edc(value: EdcValue, row: PageRow, unit: str) -> str:
    """Why the row itself says the EDC value is not on the page ("" when it does not): the EDC
    value, in the page's unit, disagrees with the reference range and flag printed on the row
    (outside the range unflagged, inside it or on the other side of it flagged H or L, an order of
    magnitude out) while every reading of the page value agrees with them. Range and flag are
    words of their own, read apart from the value: whatever digits an uncertain reading got
    wrong, a value on the other side of the printed range is not the value printed. Not used on
    a restored decimal point (its reading disagrees with the range), an illegible or impossible
    unit, or a censored value."""
    if not unit or not row.range or reference_bounds(row.range) is None:
        return ""
    edc = number_parse(value.value)
    if edc is None or edc.qualifier:
        return ""
    factor = conversion_factor(value.unit or unit, unit, value.analyte) if value.unit else Decimal(1)
    if factor is None:
        return ""
    readings = _readings(row)
    if not readings or any(strictly_consistent(text, row.range, row.flag) is not True for text, _ in readings):
        return ""
    if any(physiologically_possible(text, unit, value.analyte) is False for text, _ in readings):
        return ""
    # Every value that rounds to the EDC's (its precision) must disagree, not only the EDC's own:
    # a value on the border of the range, rounded and converted, may land just across it.
    half = Decimal(1).scaleb(-edc.places) / 2
    if any(value_consistent(end * factor, row.range, row.flag) is not False for end in (edc.value - half,
                                                                                         edc.value + half)):
        return ""
    in_page_unit = edc.value * factor
    shown = f"{Decimal(format(in_page_unit, '.3g')):f} {unit}" if factor != 1 else f"{edc.value} {unit}"
    flag = f" flagged {row.flag}" if row.flag else " unflagged"
    return (f"the EDC value ({shown}) disagrees with the range printed on the row ({row.range},{flag}), which "
            f"the page value ({', '.join(t for t, _ in readings)}) agrees with")


def reading_settles(row: PageRow, values: list[EdcValue]) -> bool:
    """Whether a doubtful first reading needs no second one: it agrees with its own row's range and
    flag, and matches the EDC value of every item it is about (or is about none of them). A second
    reading could not change those verdicts (a match needs no confidence, see the module's
    docstring), so it is not made; the row is marked `settled`, and should the EDC value change
    later, the single reading is compared as unconfirmed (for review, never a query)."""
    if strictly_consistent(row.value, row.range, row.flag) is False:
        return False
    about = [v for v in values if _rows_for(v, [row])]
    return all(v.value.strip() and _judge(v, row)[0] == 0 for v in about)


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
    judged = [(row, *_judge(value, row)) for row in found]
    # The matching row if any (a test printed twice), else the most confident reading.
    row, rank, unit, matches, note, confidence, _ = min(judged, key=lambda j: (j[1], -j[5]))
    if matches:
        verdict = "verified"
    elif matches is False and confidence >= review_below:
        verdict = "discrepancy"
    elif matches is False and (contradiction := row_contradicts_edc(value, row, unit)):
        # Read with low confidence, but the row's own range and flag rule the EDC value out.
        verdict = "discrepancy"
        note = f"{note}; read with confidence {confidence:.0f} (< {review_below:.0f}), but {contradiction}"
    else:
        verdict = "needs_review"
        if matches is False:
            note = f"{note}; read with confidence {confidence:.0f} (< {review_below:.0f})"
    return Verdict(value.data_point_id, verdict, row, unit or row.unit, note, confidence)
