"""Which analyte a printed test name, or an EDC item, is: CDISC LBTESTCD, with LOINC where known.

The names labs actually print (HGB / Hb / Haemoglobin, ALT / SGPT / GPT, WBC / Leucocytes, Na+ /
Sodium, K+, in a few languages) are data: sdv/data/lab_synonyms.csv, one name a row. A page name
is looked up exactly (after normalising case, accents, punctuation and specimen prefixes), then
by its parts ("Glucose (fasting)", "ALT (SGPT)"), then fuzzily with rapidfuzz for names long
enough for a fuzzy match to mean something (never "Na" for "Ca").

An EDC item is mapped by its code (an ODM Alias, LBTESTCD or LOINC) where the metadata has one,
else by its OID's last part (LB.HGB), else by its label; the analytes the QueryAnalyzer already
recognises (queries.checks.lab_limits) are reused for labels, not described twice."""

import csv
import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import fuzz, process

from queries.checks import lab_limits

SYNONYMS_CSV = Path(__file__).resolve().parent.parent / "data" / "lab_synonyms.csv"
FUZZY_MIN_LENGTH = 5  # shorter names only match exactly
FUZZY_CUTOFF = 82  # rapidfuzz ratio, 0-100; 88 for names of up to 7 letters
FUZZY_MARGIN = 6  # the best name must beat the best name of any other analyte by this much
# A differential count printed in % is the percentage twin of the absolute count.
PERCENT_TWINS = {"NEUT": "NEUTLE", "LYM": "LYMLE", "MONO": "MONOLE", "EOS": "EOSLE", "BASO": "BASOLE"}
_SPECIMEN = re.compile(r"^(?:serum|plasma|blood|whole blood|s|p|b|sp|fs|se)[\s-]+|\s+(?:level|count|conc|serum)$")


@dataclass(frozen=True)
class Synonyms:
    by_name: dict[str, str]  # normalised name -> LBTESTCD
    by_code: dict[str, str]  # LBTESTCD or LOINC (upper case) -> LBTESTCD
    loinc: dict[str, str]  # LBTESTCD -> LOINC
    names: tuple[str, ...]  # the normalised names, for fuzzy matching


def name_normalise(name: str) -> str:
    """Lower case, no accents, "+"/"-" kept after a symbol (Na+, Cl-), other punctuation as spaces."""
    text = unicodedata.normalize("NFKD", name or "")
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.replace("%", " % ").replace("ß", "ss")
    text = re.sub(r"[^a-z0-9%+\-]+", " ", text)
    text = re.sub(r"(?<![a-z0-9])-|-(?![a-z0-9+]|$)", " ", text)  # dashes as separators, not in Cl- or Gamma-GT
    return re.sub(r"\s+", " ", text).strip()


@functools.cache
def synonyms() -> Synonyms:
    by_name, by_code, loinc = {}, {}, {}
    with open(SYNONYMS_CSV, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            code = row["lbtestcd"].strip().upper()
            by_name.setdefault(name_normalise(row["name"]), code)
            by_code[code] = code
            if row.get("loinc", "").strip():
                by_code[row["loinc"].strip().upper()] = code
                loinc.setdefault(code, row["loinc"].strip())
    return Synonyms(by_name, by_code, loinc, tuple(by_name))


@dataclass(frozen=True)
class NameMatch:
    code: str
    score: float  # 100: exact; the rapidfuzz score otherwise
    how: str


def _variants(name: str) -> list[str]:
    """The name, without parenthesised parts, each parenthesised part, without a specimen prefix."""
    out = [name]
    bare = re.sub(r"\s*[(\[][^)\]]*[)\]]", " ", name).strip()
    out += [bare] + [part.strip() for part in re.findall(r"[(\[]([^)\]]+)[)\]]", name)]
    out += [part.strip() for part in re.split(r"[/,]", bare) if part.strip()]
    normal = [name_normalise(v) for v in out if v]
    normal += [_SPECIMEN.sub("", v).strip() for v in normal]
    # OCR debris after a name ("Gesamteiweif&R"): a last token of one or two characters dropped
    normal += [v.rsplit(" ", 1)[0] for v in normal if " " in v and len(v.rsplit(" ", 1)[1]) <= 2]
    return [v for v in dict.fromkeys(normal) if v]


# Characters OCR confuses in names (a fax's "l" read as "t", "Ca++" as "Cat+"): one swap at a time,
# and the result must still be a name of the table exactly.
_CONFUSIONS = (("t", "l"), ("l", "t"), ("t", "+"), ("t+", "+"), ("1", "l"), ("l", "1"), ("0", "o"), ("rn", "m"),
               ("ii", "u"), ("c", "e"), ("e", "c"), ("e", "o"), ("o", "e"), ("i", "l"), ("l", "i"), ("a", "o"))


def _confused(variant: str) -> list[str]:
    """One confusable swap, or one character too many (a speck read as a letter: "Ccl-")."""
    out = [variant[:i] + variant[i + 1:] for i in range(len(variant))] if len(variant) >= 3 else []
    for wrong, right in _CONFUSIONS:
        start = variant.find(wrong)
        while start != -1:
            out.append(variant[:start] + right + variant[start + len(wrong):])
            start = variant.find(wrong, start + 1)
    return out


def _fuzzy(table: Synonyms, normal: str) -> NameMatch | None:
    letters = len(normal.replace(" ", ""))
    if letters < FUZZY_MIN_LENGTH:
        return None
    cutoff = FUZZY_CUTOFF if letters > 7 else 85
    near = process.extract(normal, table.names, scorer=fuzz.ratio, limit=8, score_cutoff=cutoff - FUZZY_MARGIN)
    if not near or near[0][1] < cutoff:
        return None
    best, code = near[0], table.by_name[near[0][0]]
    rival = max((score for name, score, _ in near if table.by_name[name] != code), default=0)
    return NameMatch(code, float(best[1]), f"fuzzy ({best[0]!r})") if best[1] - rival >= FUZZY_MARGIN else None


def printed_analyte(name: str, unit: str = "") -> NameMatch | None:
    """The LBTESTCD of a test name as printed on a page, or None."""
    table = synonyms()
    found = None
    variants = _variants(name)
    for variant in variants:
        if variant in table.by_name:
            found = NameMatch(table.by_name[variant], 100.0, "exact" if variant == name_normalise(name) else "part")
            break
    if found is None:
        for variant in variants[:1]:
            hits = {table.by_name[c] for c in _confused(variant) if c in table.by_name}
            if len(hits) == 1:
                found = NameMatch(hits.pop(), 95.0, "one character OCR confuses")
    if found is None:
        for normal in [name_normalise(name), *variants]:
            found = _fuzzy(table, normal)
            if found:
                break
    if found and unit.strip() == "%" and found.code in PERCENT_TWINS:
        found = NameMatch(PERCENT_TWINS[found.code], found.score, found.how + ", in %")
    return found


def item_analyte_code(item) -> str | None:
    """The LBTESTCD an EDC item measures: its code (Alias: LBTESTCD or LOINC), its OID's last
    part, its label in the synonym table, or the QueryAnalyzer's recognition of the label."""
    table = synonyms()
    for code in (item.code, (item.oid or "").rsplit(".", 1)[-1]):
        if code and code.strip().upper() in table.by_code:
            return table.by_code[code.strip().upper()]
    label = name_normalise(item.label)
    if label in table.by_name:
        return table.by_name[label]
    analyte = lab_limits.item_analyte(item)
    if analyte is None:
        return None
    return next((table.by_code[c.upper()] for c in analyte.codes if c.upper() in table.by_code), None)


def loinc_of(code: str) -> str:
    return synonyms().loinc.get(code, "")
