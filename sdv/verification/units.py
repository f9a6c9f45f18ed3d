"""Units as labs print them, conversions between them, and the matching rule.

Conversions: pint for everything dimensionally consistent (g/dL and g/L, mmol/L and umol/L,
10^9/L and 10^3/uL, U/L and ukat/L, % and L/L), plus the analyte-specific conversions pint cannot
know, between amount of substance and mass (creatinine umol/L = mg/dL x 88.42, glucose mg/dL =
mmol/L x 18.016, ...) or by valence (mEq/L), kept as data in sdv/data/lab_conversions.csv. A
conversion is at most pint, one lab factor, pint.

The matching rule (issue 17): a page value matches the EDC value when, converted to the EDC's
unit and rounded to the EDC's precision, it equals the EDC value, or when the EDC value,
converted to the page's unit and rounded to the page's precision, equals the page value. The
precision of a value is the number of decimals it is written with; rounding is half up, as labs
and EDCs round, in decimal arithmetic (no binary floating point at the edges)."""

import csv
import functools
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import pint

CONVERSIONS_CSV = Path(__file__).resolve().parent.parent / "data" / "lab_conversions.csv"

# Printed forms of a power of ten before a per-volume unit: 10^9/L, 10*9/L, x10E9/L, 10⁹/L, 10°9/L
_POWER = re.compile(r"^(?:x|\*)?10(?:\^|\*|e|\*\*|°|º)?([0-9]{1,2}|[⁰¹²³⁴⁵⁶⁷⁸⁹]{1,2})(?=/)")
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")
# Whole-unit spellings, after lower-casing and removing spaces.
_ALIASES = {
    "u/l": "U/L", "iu/l": "U/L", "[iu]/l": "U/L", "units/l": "U/L", "ui/l": "U/L",
    "ukat/l": "ukat/L", "k/ul": "10^3/uL", "thou/ul": "10^3/uL", "x10e3/ul": "10^3/uL",
    "m/ul": "10^6/uL", "mill/ul": "10^6/uL", "/ul": "1/uL", "cells/ul": "1/uL", "/mm3": "1/uL", "cells/mm3": "1/uL",
    "%": "%", "percent": "%", "pct": "%", "l/l": "L/L", "fraction": "L/L", "meq/l": "mEq/L",
    "fl": "fL", "um3": "fL", "pg": "pg", "mmhg": "mmHg", "bpm": "beats/min", "beats/min": "beats/min",
    "/min": "beats/min",
    "gi/l": "10^9/L", "giga/l": "10^9/L", "tera/l": "10^12/L",
    "kg": "kg", "cm": "cm", "°c": "degC", "c": "degC", "degc": "degC",
}
# Giga and tera per litre are written G/L and T/L (capitals) in French and German reports; g/L is grams.
_CASED = {"G/L": "10^9/L", "T/L": "10^12/L", "Giga/L": "10^9/L", "Tera/L": "10^12/L"}


def unit_normalise(text: str) -> str:
    """One spelling per unit: "10*9/l" -> "10^9/L", "µmol/L" -> "umol/L", "IU/L" -> "U/L"."""
    raw = re.sub(r"\s+", "", text or "").replace("µ", "u").replace("μ", "u").replace("×", "x").strip(".,;:")
    if raw in _CASED:
        return _CASED[raw]
    low = raw.lower()
    if low in _ALIASES:
        return _ALIASES[low]
    power = _POWER.match(low)
    if power:
        rest = low[power.end():]
        exponent = power.group(1).translate(_SUPERSCRIPTS)
        return f"10^{exponent}{_litre_case(rest)}"
    return _litre_case(low)


def _litre_case(unit: str) -> str:
    # Litres as L, the prefixes as written: mmol/l -> mmol/L, g/dl -> g/dL, /ul -> /uL.
    return re.sub(r"(?<=/)(d|m|u|n|)l$", lambda m: f"{m.group(1)}L", unit)


@functools.cache
def _registry() -> pint.UnitRegistry:
    registry = pint.UnitRegistry()
    registry.define("beat = count")
    return registry


@functools.cache
def _quantity(unit: str):
    """The unit as a pint quantity (scale included: 10^9/L is 1e9 per litre); None if pint cannot read it."""
    if unit in ("", "mEq/L") or len(unit) > 24 or not re.fullmatch(r"[A-Za-z0-9/^*.%]+", unit):
        return None  # OCR text is not an expression to hand to a parser
    expression = re.sub(r"^10\^(\d+)", r"1e\1", unit).replace("%", "percent").replace("U/L", "enzyme_unit/L")
    try:
        return _registry().parse_expression(expression)
    except Exception:  # noqa: BLE001 (pint's parser raises anything, AssertionError included, on odd input)
        return None


@functools.cache
def lab_units() -> frozenset[str]:
    """Every unit labs report in, normalised: the spellings above, the conversions table, and the
    units of the QueryAnalyzer's analyte table."""
    from queries.checks.lab_limits import ANALYTES  # noqa: PLC0415 (a table, loaded when needed)

    units = {unit_normalise(u) for u in _ALIASES.values()} | set(_CASED.values())
    for rows in _lab_factors().values():
        units |= {a for a, _, _ in rows}
    for analyte in ANALYTES:
        units |= {unit_normalise(analyte.unit)} | {unit_normalise(name) for name, _ in analyte.units}
    units |= {"g/L", "g/dL", "mg/dL", "mg/L", "mmol/L", "umol/L", "nmol/L", "pmol/L", "ng/mL", "pg/mL", "ug/L",
              "mL/min", "s", "sec", "mm/h", "ratio", "cm", "kg", "degC", "mmHg", "beats/min", "%"}
    return frozenset(u for u in units if u)


def unit_known(unit: str) -> bool:
    """Whether a (normalised) unit is one labs report in (OCR garbage such as "g/t" or "107" is
    not, although a unit parser would read a gram per tonne or a number)."""
    return unit in lab_units()


@functools.cache
def _lab_factors() -> dict[str, list[tuple[str, str, Decimal]]]:
    """lbtestcd -> [(from, to, factor)], each also the other way round."""
    table: dict[str, list[tuple[str, str, Decimal]]] = {}
    with open(CONVERSIONS_CSV, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            a, b, factor = unit_normalise(row["from_unit"]), unit_normalise(row["to_unit"]), Decimal(row["factor"])
            table.setdefault(row["lbtestcd"].strip().upper(), []).extend([(a, b, factor), (b, a, 1 / factor)])
    return table


def _pint_factor(a: str, b: str) -> Decimal | None:
    if a == b:
        return Decimal(1)
    qa, qb = _quantity(a), _quantity(b)
    if qa is None or qb is None or qa.dimensionality != qb.dimensionality:
        return None
    ratio = (qa / qb).to("dimensionless").magnitude
    return Decimal(f"{ratio:.12g}")  # the float's noise (10.000000000000002) off


@functools.cache
def conversion_factor(from_unit: str, to_unit: str, analyte: str | None = None) -> Decimal | None:
    """value in `to_unit` = value in `from_unit` x factor; None when the units do not convert
    (for this analyte). Units are normalised first."""
    a, b = unit_normalise(from_unit), unit_normalise(to_unit)
    direct = _pint_factor(a, b)
    if direct is not None:
        return direct
    for start, end, factor in _lab_factors().get((analyte or "").upper(), []):
        before, after = _pint_factor(a, start), _pint_factor(end, b)
        if before is not None and after is not None:
            return before * factor * after
    return None


# --- Numbers as printed --------------------------------------------------------------------------
_NUMBER = re.compile(r"^([<>]=?|≤|≥)?\s*([-+]?)(\d+(?:[.,]\d+)?|[.,]\d+)$")


@dataclass(frozen=True)
class Number:
    value: Decimal
    places: int  # decimals written
    qualifier: str = ""  # "<", ">", "<=", ">=" of a censored value ("<5")

    @property
    def text(self) -> str:
        return f"{self.qualifier}{self.value}"


def number_parse(text: str) -> Number | None:
    """A printed number: "13.5", "13,5" (decimal comma), "<0.5", "1,250" (thousands). None if it is not one."""
    raw = (text or "").strip().replace(" ", "").replace("≤", "<=").replace("≥", ">=")
    match = _NUMBER.match(raw)
    if not match:
        return None
    qualifier, sign, digits = match.groups()
    if re.fullmatch(r"\d{1,3},\d{3}", digits):  # a thousands separator, never a decimal comma of 3 places
        digits = digits.replace(",", "")
    digits = digits.replace(",", ".")
    places = len(digits.split(".", 1)[1]) if "." in digits else 0
    try:
        return Number(Decimal(sign + digits), places, qualifier or "")
    except InvalidOperation:
        return None


def rounded(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Comparison:
    matches: bool | None  # None: cannot be decided (units that do not convert, a censored value)
    explanation: str


def values_compare(*, source: str, source_unit: str, edc: str, edc_unit: str,
                   analyte: str | None = None) -> Comparison:
    """The matching rule, with the reason in words (kept with the verdict)."""
    page, record = number_parse(source), number_parse(edc)
    if page is None or record is None:
        same = " ".join((source or "").split()).casefold() == " ".join((edc or "").split()).casefold()
        return Comparison(same, "same text" if same else f"'{source}' is not '{edc}'")
    if page.qualifier or record.qualifier:
        if (page.qualifier, page.value) == (record.qualifier, record.value):
            return Comparison(True, "the same censored value")
        return Comparison(None, f"a censored value ({page.text} on the page, {record.text} in the EDC)")
    if not edc_unit or not source_unit or unit_normalise(edc_unit) == unit_normalise(source_unit):
        to_edc = to_page = Decimal(1)
        how = "same unit" if edc_unit and source_unit else "compared as printed (a unit is missing)"
    else:
        to_edc = conversion_factor(source_unit, edc_unit, analyte)
        if to_edc is None:
            return Comparison(None, f"{source_unit} does not convert to {edc_unit}"
                                    f"{f' for {analyte}' if analyte else ''}")
        to_page = 1 / to_edc
        how = f"{source_unit} -> {edc_unit} x {to_edc:.6g}"
    page_in_edc = rounded(page.value * to_edc, record.places)
    if page_in_edc == record.value:
        return Comparison(True, f"{page.text} {source_unit} is {page_in_edc} {edc_unit} at the EDC's precision ({how})")
    edc_in_page = rounded(record.value * to_page, page.places)
    if edc_in_page == page.value:
        return Comparison(True, f"{record.text} {edc_unit} is {edc_in_page} {source_unit} at the page's precision "
                                f"({how})")
    return Comparison(False, f"{page.text} {source_unit} is {page_in_edc} {edc_unit}, not {record.text} ({how})")
