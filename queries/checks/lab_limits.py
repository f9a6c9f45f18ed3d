"""Physiological limits of common lab analytes, their units, and how to tell a unit error.

A value outside an analyte's physiological limits cannot belong to a living participant: it is
a data error (a typo, a wrong unit, a wrong test), not a clinical finding. The limits are wide on
purpose, wider than any value seen in clinical practice (the clindata study's 1.1 million lab
values all fall inside them), so that a plausibility finding is almost always a real error.

Limits are kept in the analyte's SI unit; `UNITS` gives each unit the analyte is commonly
reported in and its factor to SI (value in unit x factor = value in SI). A value whose units are
not known for its analyte is not judged (plausible is unknown).

An analyte is recognised from an item's label or code: SDTM test codes (LBTESTCD), LOINC codes,
and the usual names and abbreviations (clindata's "ALT (SGPT) (CHEMISTRY PANEL)" is ALT)."""

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Analyte:
    key: str
    name: str
    unit: str  # SI unit the limits are in
    low: float
    high: float
    names: tuple[str, ...]  # patterns matched against the normalised label (whole words)
    codes: tuple[str, ...]  # SDTM LBTESTCD and LOINC codes
    units: tuple[tuple[str, float], ...] = ()  # other units: (unit, factor to SI)


_CELLS = (("10^9/l", 1.0), ("10*9/l", 1.0), ("giga/l", 1.0), ("giga.l-1", 1.0), ("gi/l", 1.0), ("10^3/ul", 1.0),
          ("10*3/ul", 1.0), ("10^3/mm3", 1.0), ("k/ul", 1.0), ("x10^3/ul", 1.0), ("thousand per microliter", 1.0),
          ("thou/ul", 1.0), ("/ul", 0.001), ("cells/ul", 0.001), ("cells per microliter", 0.001), ("/mm3", 0.001))
_RED_CELLS = (("10^12/l", 1.0), ("10*12/l", 1.0), ("tera/l", 1.0), ("tera.l-1", 1.0), ("10^6/ul", 1.0),
              ("10*6/ul", 1.0), ("m/ul", 1.0), ("mill/ul", 1.0), ("million per microliter", 1.0), ("x10^6/ul", 1.0))
_ENZYME = (("u/l", 1.0), ("iu/l", 1.0), ("[iu]/l", 1.0), ("ukat/l", 60.0), ("µkat/l", 60.0))
_PERCENT = (("%", 1.0), ("percent", 1.0), ("pct", 1.0), ("fraction", 100.0))
_ELECTROLYTE = (("mmol/l", 1.0), ("meq/l", 1.0))
_G_PER_L = (("g/l", 1.0), ("g/dl", 10.0), ("mg/dl", 0.01))

ANALYTES = (
    Analyte("alt", "Alanine aminotransferase", "U/L", 0, 20000, ("alt", "sgpt", "alanine aminotransferase"),
            ("ALT", "1742-6", "1743-4", "1744-2", "76625-3"), _ENZYME),
    Analyte("ast", "Aspartate aminotransferase", "U/L", 0, 30000, ("ast", "sgot", "aspartate aminotransferase"),
            ("AST", "1920-8", "30239-8"), _ENZYME),
    Analyte("alp", "Alkaline phosphatase", "U/L", 0, 10000, ("alp", "alkaline phosphatase", "alk phos"),
            ("ALP", "6768-6"), _ENZYME),
    Analyte("ggt", "Gamma-glutamyl transferase", "U/L", 0, 10000, ("ggt", "gamma gt", "gamma glutamyl transferase"),
            ("GGT", "2324-2"), _ENZYME),
    Analyte("ldh", "Lactate dehydrogenase", "U/L", 0, 50000, ("ldh", "lactate dehydrogenase"),
            ("LDH", "2532-0", "14804-9"), _ENZYME),
    Analyte("ck", "Creatine kinase", "U/L", 0, 1000000, ("creatine kinase", "ck", "cpk"),
            ("CK", "2157-6"), _ENZYME),
    Analyte("calcium", "Calcium", "mmol/L", 0.5, 6.0, ("calcium", "ca"),
            ("CA", "17861-6", "2000-8", "29265-6"), (("mmol/l", 1.0), ("mg/dl", 0.2495), ("meq/l", 0.5))),
    Analyte("albumin", "Albumin", "g/L", 5, 80, ("albumin", "alb"), ("ALB", "1751-7", "61151-7"), _G_PER_L),
    Analyte("globulin", "Globulin", "g/L", 5, 130, ("globulin",), ("GLOBUL", "10834-0"), _G_PER_L),
    Analyte("protein", "Total protein", "g/L", 20, 160, ("total protein", "protein"), ("PROT", "2885-2"), _G_PER_L),
    Analyte("cholesterol", "Cholesterol", "mmol/L", 0.3, 60, ("cholesterol", "chol"), ("CHOL", "2093-3"),
            (("mmol/l", 1.0), ("mg/dl", 0.02586))),
    Analyte("triglycerides", "Triglycerides", "mmol/L", 0.05, 150, ("triglycerides", "triglyceride", "trig"),
            ("TRIG", "2571-8"), (("mmol/l", 1.0), ("mg/dl", 0.01129))),
    Analyte("creatinine", "Creatinine", "umol/L", 5, 3500, ("creatinine", "creat"), ("CREAT", "2160-0", "38483-4"),
            (("umol/l", 1.0), ("µmol/l", 1.0), ("mg/dl", 88.42), ("mmol/l", 1000.0))),
    Analyte("bili_direct", "Direct bilirubin", "umol/L", 0, 1000,
            ("direct bilirubin", "direct bili", "conjugated bilirubin"),
            ("BILDIR", "1968-7"), (("umol/l", 1.0), ("µmol/l", 1.0), ("mg/dl", 17.1))),
    Analyte("bili_indirect", "Indirect bilirubin", "umol/L", 0, 1000, ("indirect bilirubin", "indirect bili"),
            ("BILIND", "1971-1"), (("umol/l", 1.0), ("µmol/l", 1.0), ("mg/dl", 17.1))),
    Analyte("bilirubin", "Total bilirubin", "umol/L", 0, 1200, ("total bilirubin", "bilirubin", "bili"),
            ("BILI", "1975-2", "42719-5"), (("umol/l", 1.0), ("µmol/l", 1.0), ("mg/dl", 17.1))),
    Analyte("glucose", "Glucose", "mmol/L", 0.5, 120, ("glucose", "glu", "gluc"),
            ("GLUC", "2345-7", "2339-0", "1558-6"), (("mmol/l", 1.0), ("mg/dl", 0.05551))),
    Analyte("magnesium", "Magnesium", "mmol/L", 0.1, 6.0, ("magnesium",), ("MG", "19123-9", "2601-3"),
            (("mmol/l", 1.0), ("mg/dl", 0.4114), ("meq/l", 0.5))),
    Analyte("phosphate", "Phosphate", "mmol/L", 0.1, 8.0, ("phosphorus", "phosphate", "phos"),
            ("PHOS", "2777-1"), (("mmol/l", 1.0), ("mg/dl", 0.3229))),
    Analyte("bicarbonate", "Bicarbonate", "mmol/L", 2, 70, ("bicarbonate", "bicarb", "hco3", "co2", "total co2",
                                                           "carbon dioxide"),
            ("BICARB", "CO2", "1963-8", "2028-9", "1959-6"), _ELECTROLYTE),
    Analyte("chloride", "Chloride", "mmol/L", 50, 170, ("chloride",), ("CL", "2075-0"), _ELECTROLYTE),
    Analyte("potassium", "Potassium", "mmol/L", 1.0, 12.0, ("potassium", "k"), ("K", "2823-3", "6298-4"), _ELECTROLYTE),
    Analyte("sodium", "Sodium", "mmol/L", 90, 200, ("sodium", "na"), ("SODIUM", "2951-2", "2947-0"), _ELECTROLYTE),
    Analyte("urate", "Uric acid", "umol/L", 0, 2500, ("uric acid", "urate"), ("URATE", "3084-1"),
            (("umol/l", 1.0), ("µmol/l", 1.0), ("mg/dl", 59.48), ("mmol/l", 1000.0))),
    Analyte("urea", "Urea nitrogen", "mmol/L", 0.3, 150, ("urea nitrogen", "blood urea nitrogen", "bun", "urea"),
            ("UREAN", "BUN", "UREA", "3094-0", "6299-2"), (("mmol/l", 1.0), ("mg/dl", 0.357))),
    Analyte("basophils_pct", "Basophils (%)", "%", 0, 100, ("basophils pct", "baso pct", "basophils 100 leukocytes"),
            ("BASOLE", "706-2"), _PERCENT),
    Analyte("eosinophils_pct", "Eosinophils (%)", "%", 0, 100,
            ("eosinophils pct", "eos pct", "eosinophils 100 leukocytes"), ("EOSLE", "713-8"), _PERCENT),
    Analyte("lymphocytes_pct", "Lymphocytes (%)", "%", 0, 100,
            ("lymphocytes pct", "lymph pct", "lymphocytes 100 leukocytes"), ("LYMLE", "736-9"), _PERCENT),
    Analyte("monocytes_pct", "Monocytes (%)", "%", 0, 100, ("monocytes pct", "mono pct", "monocytes 100 leukocytes"),
            ("MONOLE", "5905-5"), _PERCENT),
    Analyte("neutrophils_pct", "Neutrophils (%)", "%", 0, 100,
            ("neutrophils pct", "neut pct", "neutrophils 100 leukocytes"), ("NEUTLE", "770-8"), _PERCENT),
    Analyte("basophils", "Basophils", "10^9/L", 0, 20, ("basophils", "baso"), ("BASO", "704-7"), _CELLS),
    Analyte("eosinophils", "Eosinophils", "10^9/L", 0, 150, ("eosinophils", "eos"), ("EOS", "711-2"), _CELLS),
    Analyte("lymphocytes", "Lymphocytes", "10^9/L", 0, 1000, ("lymphocytes", "lymph"), ("LYM", "731-0"), _CELLS),
    Analyte("monocytes", "Monocytes", "10^9/L", 0, 150, ("monocytes", "mono"), ("MONO", "742-7"), _CELLS),
    Analyte("neutrophils", "Neutrophils", "10^9/L", 0, 300, ("neutrophils", "neut", "anc"), ("NEUT", "751-8"),
            _CELLS),
    Analyte("wbc", "White blood cells", "10^9/L", 0.01, 1500, ("wbc", "white blood cells", "leukocytes"),
            ("WBC", "6690-2", "26464-8"), _CELLS),
    Analyte("platelets", "Platelets", "10^9/L", 1, 5000, ("platelets", "plt", "platelet count"),
            ("PLAT", "777-3", "26515-7"), _CELLS),
    Analyte("rbc", "Red blood cells", "10^12/L", 0.3, 12, ("rbc", "red blood cells", "erythrocytes"),
            ("RBC", "789-8", "26453-1"), _RED_CELLS),
    Analyte("hematocrit", "Hematocrit", "L/L", 0.05, 0.85, ("hematocrit", "haematocrit", "hct"),
            ("HCT", "4544-3", "20570-8"), (("l/l", 1.0), ("1", 1.0), ("fraction", 1.0), ("%", 0.01),
                                            ("percent", 0.01))),
    Analyte("hemoglobin", "Hemoglobin", "g/L", 15, 270, ("hemoglobin", "haemoglobin", "hgb", "hb"),
            ("HGB", "718-7", "20509-6"), (("g/l", 1.0), ("g/dl", 10.0), ("mmol/l", 16.11))),
    Analyte("mchc", "MCHC", "g/L", 150, 500, ("mchc", "mean corpuscular hemoglobin concentration",
                                              "mean cell hemoglobin concentration"),
            ("MCHC", "786-4"), (("g/l", 1.0), ("g/dl", 10.0))),
    Analyte("mch", "MCH", "pg", 8, 70, ("mch", "mean corpuscular hemoglobin", "mean cell hemoglobin"),
            ("MCH", "785-6"), (("pg", 1.0), ("picograms per cell", 1.0), ("fmol", 16.11))),
    Analyte("mcv", "MCV", "fL", 40, 180, ("mcv", "mean corpuscular volume", "mean cell volume"),
            ("MCV", "787-2", "30428-7"), (("fl", 1.0), ("um3", 1.0))),
)
# The longest name found wins ("indirect bili" over "bili", "basophils pct" over "basophils"),
# then the first ("calcium corrected for albumin" is calcium).
_BY_KEY = {a.key: a for a in ANALYTES}
_BY_CODE = {code.upper(): a for a in ANALYTES for code in a.codes}
_NAMES = [name for a in ANALYTES for name in a.names]
_PATTERNS = [(re.compile(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])"), a) for a in ANALYTES for name in a.names]
# A label with one of these words names another analyte, or the analyte in another specimen, whose
# values these limits do not fit: urine glucose, HbA1c (hemoglobin A1c), C-reactive protein,
# protein C, the albumin/creatinine ratio, creatinine clearance, HDL cholesterol, vitamin K
# (not potassium), the CA 19-9 and CA-125 tumour markers (not calcium), nucleated RBC.
_OTHER = re.compile(r"\b(urine|urinary|urinalysis|csf|fluid|stool|fecal|faecal|24 ?h|24 hours?|ratio|clearance|"
                    r"excretion|reactive|protein [cs]|a1c|a2|glycated|glycosylated|vitamin|hdl|ldl|vldl|"
                    r"nucleated|ca \d+)\b")


def _normalise(label: str) -> str:
    text = label.lower().replace("%", " pct ").replace("(", " ").replace(")", " ")
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def item_analyte(item) -> Analyte | None:
    """The analyte of a study item: from its code, else from its OID when that ends in a test
    code (SDTM imports name lab items LB.<LBTESTCD>), else from its label."""
    if item.code and (analyte := analyte_for(None, item.code)):
        return analyte
    suffix = (item.oid or "").rsplit(".", 1)[-1]
    return analyte_for(None, suffix) or analyte_for(item.label, item.code)


def analyte_for(label: str | None, code: str | None = None) -> Analyte | None:
    """The analyte an item measures, from its code (SDTM or LOINC), an analyte key, or its label."""
    if label and label in _BY_KEY:
        return _BY_KEY[label]
    for text in (code, label):
        if text and text.strip().upper() in _BY_CODE:
            return _BY_CODE[text.strip().upper()]
    if not label:
        return None
    normal = _normalise(label)
    if _OTHER.search(normal):
        return None
    # A panel name in parentheses ("ALT (SGPT) (CHEMISTRY PANEL)") never names the analyte
    normal = re.sub(r"\b(chemistry|hematology|haematology|differential|panel)\b", " ", normal)
    found = [(-len(name), match.start(), analyte) for (pattern, analyte), name in zip(_PATTERNS, _NAMES, strict=True)
             if (match := pattern.search(normal))]
    return min(found, key=lambda f: f[:2])[2] if found else None  # the longest name, then the first


def _unit_key(units: str) -> str:
    return re.sub(r"\s+", "", (units or "").lower()).replace("μ", "u").replace("µ", "u").replace("×", "x")


def unit_factor(units: str, analyte: Analyte) -> float | None:
    """Factor from `units` to the analyte's SI unit; None when the units are unknown for it."""
    key = _unit_key(units)
    if key in ("", _unit_key(analyte.unit)):
        return 1.0
    for name, factor in analyte.units:
        if _unit_key(name) == key:
            return factor
    return None


def to_si(value: float, units: str, analyte: Analyte) -> float | None:
    factor = unit_factor(units, analyte)
    return None if factor is None or value is None else float(value) * factor


# Factors a value is off by when it was entered in another unit or with a slipped decimal point
_SLIPS = (10.0, 0.1, 100.0, 0.01, 1000.0, 0.001)


def plausibility(frame: pd.DataFrame) -> pd.DataFrame:
    """For rows of analyte key, value and units: whether the value is physiologically possible
    (<NA> where the analyte or units are unknown), the limits in the row's units, and the factor
    that brings an impossible value back into range when one does (a likely unit error)."""
    index = frame.index
    frame = frame.reset_index(drop=True)  # positions: the caller's index may repeat labels
    out = pd.DataFrame(index=frame.index, data={"plausible": pd.array([pd.NA] * len(frame), dtype="boolean"),
                                                "low": np.nan, "high": np.nan, "unit_error_factor": np.nan})
    if frame.empty:
        return out.set_axis(index)
    for (key, units), rows in frame.groupby(["analyte", frame["units"].fillna("")], sort=False):
        analyte = _BY_KEY.get(key)
        factor = unit_factor(units, analyte) if analyte else None
        if factor is None:
            continue
        value = rows["value"].astype(float)
        si = value * factor
        ok = (si >= analyte.low) & (si <= analyte.high)
        out.loc[rows.index, "plausible"] = ok.where(value.notna()).astype("boolean")
        out.loc[rows.index, "low"] = analyte.low / factor
        out.loc[rows.index, "high"] = analyte.high / factor
        bad = rows.index[(~ok & value.notna()).to_numpy()]
        if len(bad):
            out.loc[bad, "unit_error_factor"] = _slip(si[bad], analyte)
    return out.set_axis(index)


def _slip(si: pd.Series, analyte: Analyte) -> np.ndarray:
    """The first factor (another unit of the analyte, then a slipped decimal) that brings each
    impossible value into range; NaN when none does."""
    factors = [f2 / f1 for _, f1 in (*analyte.units, ("", 1.0)) for _, f2 in (*analyte.units, ("", 1.0))
               if f1 != f2] + list(_SLIPS)
    found = np.full(len(si), np.nan)
    for factor in dict.fromkeys(factors):
        fits = np.isnan(found) & (si.to_numpy() * factor >= analyte.low) & (si.to_numpy() * factor <= analyte.high)
        found[fits] = factor
    return found
