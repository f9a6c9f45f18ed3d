"""Physiological lab limits (queries.checks.lab_limits): recognising an analyte from a label or
code, unit conversion to SI, and plausibility with unit-error detection.

Pure Python, no database. Two tests read the clindata study's 1.1 million real lab values from
../shared/data (skipped when it is absent, failing instead when TRIALOPS_REQUIRE_SHARED_DATA=1)."""

import functools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from queries.checks.lab_limits import ANALYTES, analyte_for, item_analyte, plausibility, to_si, unit_factor

# --- clindata: every label, every real value -------------------------------------------------------

# The lab item labels the clindata ingest builds, f"{lbtstnam} ({battrnam})", and their analyte
CHEM, HEME = "CHEMISTRY PANEL", "HEMATOLOGY&DIFFERENTIAL PANEL"
CLINDATA_LABELS = {
    f"ALT (SGPT) ({CHEM})": "alt",
    f"AST (SGOT) ({CHEM})": "ast",
    f"Albumin-QT ({CHEM})": "albumin",
    f"Alkaline Phosphatase ({CHEM})": "alp",
    f"Basophils (%) ({HEME})": "basophils_pct",
    f"Basophils ({HEME})": "basophils",
    # An opaque vendor test code, not a name: it is not guessed (its values have calcium's normal
    # range, 2.07-2.64 mmol/L, so a reviewer names the analyte "calcium" explicitly; see below)
    f"CHM.CCA.00.00 ({CHEM})": None,
    f"Calcium (EDTA) ({CHEM})": "calcium",
    f"Calcium Corrected for Albumin ({CHEM})": "calcium",
    f"Cholesterol (High Performance) ({CHEM})": "cholesterol",
    f"Creatine Kinase ({CHEM})": "ck",
    f"Creatinine(Rate Blanked)-2dp ({CHEM})": "creatinine",
    f"Direct Bilirubin ({CHEM})": "bili_direct",
    f"Eosinophils (%) ({HEME})": "eosinophils_pct",
    f"Eosinophils ({HEME})": "eosinophils",
    f"GGT ({CHEM})": "ggt",
    f"Globulin-QT ({CHEM})": "globulin",
    f"Glucose (2dp SI) ({CHEM})": "glucose",
    f"Hematocrit ({HEME})": "hematocrit",
    f"Hemoglobin ({HEME})": "hemoglobin",
    f"Indirect Bili ({CHEM})": "bili_indirect",
    f"LDH ({CHEM})": "ldh",
    f"Lymphocytes (%) ({HEME})": "lymphocytes_pct",
    f"Lymphocytes ({HEME})": "lymphocytes",
    f"MCH ({HEME})": "mch",
    f"MCHC ({HEME})": "mchc",
    f"MCV ({HEME})": "mcv",
    f"Magnesium-PS ({CHEM})": "magnesium",
    f"Monocytes (%) ({HEME})": "monocytes_pct",
    f"Monocytes ({HEME})": "monocytes",
    f"Neutrophils (%) ({HEME})": "neutrophils_pct",
    f"Neutrophils ({HEME})": "neutrophils",
    f"Phosphorus ({CHEM})": "phosphate",
    f"Platelets ({HEME})": "platelets",
    f"RBC ({HEME})": "rbc",
    f"Serum Bicarbonate ({CHEM})": "bicarbonate",
    f"Serum Chloride ({CHEM})": "chloride",
    f"Serum Potassium ({CHEM})": "potassium",
    f"Serum Sodium ({CHEM})": "sodium",
    f"Serum Uric Acid ({CHEM})": "urate",
    f"Total Bilirubin ({CHEM})": "bilirubin",
    f"Total Protein ({CHEM})": "protein",
    f"Triglycerides (GPO) ({CHEM})": "triglycerides",
    f"Urea Nitrogen ({CHEM})": "urea",
    f"WBC ({HEME})": "wbc",
}
EXPLICIT = {f"CHM.CCA.00.00 ({CHEM})": "calcium"}  # the analyte a reviewer names for the opaque code


@functools.cache
def _clindata_lb(path: Path) -> pd.DataFrame:
    lb = pd.read_parquet(path / "clindata" / "parquet" / "rawplus_lb.parquet",
                         columns=["lbtstnam", "battrnam", "siresn"])
    return pd.DataFrame({"label": lb["lbtstnam"] + " (" + lb["battrnam"] + ")", "value": lb["siresn"]})


def test_every_clindata_label_is_recognised(shared_data):
    labels = set(_clindata_lb(shared_data)["label"].unique())
    assert labels == set(CLINDATA_LABELS)
    found = {label: getattr(analyte_for(label), "key", None) for label in sorted(labels)}
    assert found == CLINDATA_LABELS


def test_every_real_clindata_value_is_plausible(shared_data):
    """Zero false positives: clindata reports siresn in SI units (no units column, so units are
    empty, which means the analyte's SI unit)."""
    lb = _clindata_lb(shared_data)
    assert len(lb) > 1_100_000
    keys = {**CLINDATA_LABELS, **EXPLICIT}
    frame = pd.DataFrame({"analyte": lb["label"].map(keys), "value": lb["value"], "units": ""})
    assert frame["analyte"].notna().all()
    verdict = plausibility(frame)
    assert verdict.index.equals(frame.index)
    judged = verdict["plausible"].notna() | frame["value"].isna()
    assert judged.all()  # every value with a number was judged
    implausible = frame[verdict["plausible"].eq(False).to_numpy()]
    assert implausible.empty, implausible.groupby("analyte")["value"].agg(["size", "min", "max"]).to_string()
    assert verdict["unit_error_factor"].isna().all()


# --- recognising an analyte -------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "key"), [
    # SDTM LBTESTCD
    ("ALT", "alt"), ("AST", "ast"), ("GLUC", "glucose"), ("HGB", "hemoglobin"), ("CREAT", "creatinine"),
    ("SODIUM", "sodium"), ("K", "potassium"), ("CA", "calcium"), ("MG", "magnesium"), ("CL", "chloride"),
    ("BILI", "bilirubin"), ("BILDIR", "bili_direct"), ("BILIND", "bili_indirect"), ("BASOLE", "basophils_pct"),
    ("BASO", "basophils"), ("NEUTLE", "neutrophils_pct"), ("NEUT", "neutrophils"), ("MCHC", "mchc"),
    ("MCH", "mch"), ("PLAT", "platelets"), ("UREAN", "urea"), ("BUN", "urea"), ("GLOBUL", "globulin"),
    ("gluc", "glucose"), (" hgb ", "hemoglobin"),  # codes are case and space insensitive
    # LOINC
    ("1742-6", "alt"), ("1920-8", "ast"), ("2345-7", "glucose"), ("718-7", "hemoglobin"),
    ("2160-0", "creatinine"), ("2951-2", "sodium"), ("2823-3", "potassium"), ("17861-6", "calcium"),
    ("786-4", "mchc"), ("785-6", "mch"), ("787-2", "mcv"), ("706-2", "basophils_pct"), ("704-7", "basophils"),
    ("770-8", "neutrophils_pct"), ("751-8", "neutrophils"), ("4544-3", "hematocrit"), ("6690-2", "wbc"),
    ("1975-2", "bilirubin"), ("1968-7", "bili_direct"), ("1971-1", "bili_indirect"),
])
def test_sdtm_and_loinc_codes(code, key):
    assert analyte_for(None, code).key == key
    assert analyte_for("Something else entirely", code).key == key  # the code wins over the label


def test_every_name_code_and_key_in_the_table_finds_its_own_analyte():
    assert len({a.key for a in ANALYTES}) == len(ANALYTES)
    for analyte in ANALYTES:
        assert analyte.low < analyte.high, analyte.key
        assert analyte_for(analyte.key) is analyte
        for name in analyte.names:
            assert analyte_for(name) is analyte, name
            assert analyte_for(name.upper()) is analyte, name
        for code in analyte.codes:
            assert analyte_for(None, code) is analyte, code


@pytest.mark.parametrize(("label", "key"), [
    ("Calcium Corrected for Albumin", "calcium"),  # not albumin: the first name wins a tie
    ("Globulin-QT", "globulin"),
    ("Albumin-QT", "albumin"),
    ("Indirect Bili", "bili_indirect"),  # not total bilirubin ("bili")
    ("Direct Bilirubin", "bili_direct"),
    ("Total Bilirubin", "bilirubin"),
    ("Basophils (%)", "basophils_pct"),  # the percentage, not the count
    ("Basophils", "basophils"),
    ("Neutrophils/100 leukocytes in Blood by Automated count", "neutrophils_pct"),  # LOINC's name
    ("MCHC", "mchc"),
    ("MCH", "mch"),  # not MCHC, and MCHC is not MCH
    ("Mean Corpuscular Hemoglobin Concentration", "mchc"),
    ("Mean Corpuscular Hemoglobin", "mch"),  # not hemoglobin
    ("Mean corpuscular volume", "mcv"),
    ("ALT (SGPT) (CHEMISTRY PANEL)", "alt"),
    ("Creatine Kinase", "ck"),  # not creatinine
    ("Creatinine(Rate Blanked)-2dp", "creatinine"),
    ("Serum Potassium", "potassium"),
    ("K", "potassium"), ("Mg", "magnesium"), ("Cl", "chloride"), ("Na", "sodium"), ("Hb", "hemoglobin"),
    ("Magnesium (mg/dL)", "magnesium"),
    ("Glucose (mg/dL)", "glucose"),  # a unit in the label is not magnesium
    ("WBC (K/uL)", "wbc"),  # nor potassium
    ("Carbon dioxide, total [Moles/volume] in Serum or Plasma", "bicarbonate"),
    ("Ionized calcium", "calcium"),
])
def test_tricky_labels(label, key):
    assert analyte_for(label).key == key


@pytest.mark.parametrize("label", [
    None, "", "   ", "Ferritin", "TSH", "INR", "eGFR", "Lipase", "HbA1c", "Weight", "Systolic blood pressure",
    # Labels that contain an analyte's name but measure something else, or in another specimen:
    # judging them by blood limits would raise false queries on good data
    "Hemoglobin A1c", "Glycated hemoglobin", "C-Reactive Protein", "Protein C activity", "Urine Protein",
    "Glucose, urine", "Glucose (URINALYSIS)", "Glucose [Mass/volume] in Urine by Test strip", "Urine Creatinine",
    "Creatinine Clearance", "Albumin/Creatinine Ratio", "BUN/Creatinine Ratio", "HDL Cholesterol",
    "LDL Cholesterol", "Vitamin K", "CA 19-9", "CA-125", "Nucleated RBC", "Total Protein (CSF)",
    # Units and pharmacokinetics are not analytes: "mg" is not magnesium, "CL/F" is not chloride
    "Dose (mg)", "Total daily dose (mg)", "CL/F (L/h)",
])
def test_unknown_labels_give_none(label):
    assert analyte_for(label) is None


# --- units ----------------------------------------------------------------------------------------

def _a(key):
    return analyte_for(key)


@pytest.mark.parametrize(("key", "value", "units", "si"), [
    ("glucose", 90, "mg/dL", 90 * 0.05551),  # 90 mg/dL = 5.0 mmol/L
    ("glucose", 5.0, "mmol/L", 5.0),
    ("hemoglobin", 14.6, "g/dL", 146.0),
    ("hemoglobin", 146, "g/L", 146.0),
    ("hemoglobin", 9.0, "mmol/L", 9.0 * 16.11),
    ("creatinine", 1.0, "mg/dL", 88.42),
    ("creatinine", 88, "umol/L", 88.0),
    ("creatinine", 88, "µmol/L", 88.0),  # micro sign
    ("creatinine", 88, "μmol/L", 88.0),  # Greek mu
    ("creatinine", 88, " UMOL / l ", 88.0),  # case and spaces
    ("creatinine", 0.088, "mmol/L", 88.0),
    ("calcium", 9.5, "mg/dL", 9.5 * 0.2495),
    ("alt", 1.0, "ukat/L", 60.0),
    ("hematocrit", 45, "%", 0.45),
    ("platelets", 250000, "/uL", 250.0),
    ("sodium", 140, "mEq/L", 140.0),
    ("sodium", 140, "", 140.0),  # no units: the analyte's SI unit
])
def test_to_si(key, value, units, si):
    assert to_si(value, units, _a(key)) == pytest.approx(si)


def test_unknown_units_have_no_factor():
    assert unit_factor("furlongs", _a("glucose")) is None
    assert unit_factor("mg/dL", _a("sodium")) is None  # a unit of mass for an electrolyte: not guessed
    assert to_si(5.0, "furlongs", _a("glucose")) is None
    assert to_si(None, "mg/dL", _a("glucose")) is None


def test_the_engines_conversion_between_units_uses_these_factors():
    """evaluate._convert: a range check in g/L over a value reported in g/dL."""
    from queries.checks.evaluate import _convert  # noqa: PLC0415 (needs Django settings, not a database)

    hemoglobin = SimpleNamespace(label="Hemoglobin (HEMATOLOGY&DIFFERENTIAL PANEL)", code="", oid="LB.HEMOGLOBIN")
    assert _convert(14.6, "g/dL", "g/L", hemoglobin) == pytest.approx(146.0)
    assert _convert(146.0, "g/L", "g/dL", hemoglobin) == pytest.approx(14.6)
    glucose = SimpleNamespace(label="Fasting glucose", code="GLUC", oid="LB.GLUC")
    assert _convert(90, "mg/dL", "mmol/L", glucose) == pytest.approx(4.996, abs=1e-3)
    assert np.isnan(_convert(90, "furlongs", "mmol/L", glucose))
    assert np.isnan(_convert(5.0, "mg/dL", "g/L", SimpleNamespace(label="Ferritin", code="", oid="LB.FERRITIN")))


# --- plausibility ---------------------------------------------------------------------------------

def verdict(rows: list[tuple]) -> pd.DataFrame:
    return plausibility(pd.DataFrame(rows, columns=["analyte", "value", "units"]))


def test_plausible_values_in_si_and_other_units():
    out = verdict([("hemoglobin", 146, "g/L"), ("hemoglobin", 14.6, "g/dL"), ("glucose", 90, "mg/dL"),
                   ("creatinine", 1.1, "mg/dL"), ("sodium", 140, "")])
    assert out["plausible"].tolist() == [True] * 5
    assert out["unit_error_factor"].isna().all()
    # the limits are given in the row's own units
    assert out.loc[0, ["low", "high"]].tolist() == pytest.approx([15, 270])
    assert out.loc[1, ["low", "high"]].tolist() == pytest.approx([1.5, 27])
    assert out.loc[2, ["low", "high"]].tolist() == pytest.approx([0.5 / 0.05551, 120 / 0.05551])


def test_limits_are_inclusive():
    out = verdict([("sodium", 90, "mmol/L"), ("sodium", 200, "mmol/L"), ("sodium", 89.9, "mmol/L")])
    assert out["plausible"].tolist() == [True, True, False]


def test_hemoglobin_in_g_dl_reported_as_g_l_is_a_unit_error():
    out = verdict([("hemoglobin", 14.6, "g/L")])
    assert out["plausible"].tolist() == [False]
    assert out.loc[0, "unit_error_factor"] == 10.0
    assert (out.loc[0, "low"], out.loc[0, "high"]) == (15, 270)


def test_sodium_with_a_slipped_decimal():
    out = verdict([("sodium", 1400, "mmol/L")])
    assert not out.loc[0, "plausible"]
    assert out.loc[0, "unit_error_factor"] == pytest.approx(0.1)


def test_glucose_95_reported_in_mmol_l_is_plausible():
    """Decision: 95 "mmol/L" is almost certainly 95 mg/dL (5.3 mmol/L) in the wrong unit, but it is
    not physiologically impossible: the limit is 120 mmol/L (about 2,160 mg/dL), since survivable
    hyperosmolar glucose has been reported above 100 mmol/L. The limits are wide on purpose (a
    plausibility finding is a data error, near certain); this value is left to the normal range
    (a medical-review signal), not raised as a unit error."""
    out = verdict([("glucose", 95, "mmol/L")])
    assert out.loc[0, "plausible"] == True  # noqa: E712
    assert np.isnan(out.loc[0, "unit_error_factor"])


def test_glucose_in_mg_dl_reported_as_mmol_l_beyond_the_limit_is_a_unit_error():
    out = verdict([("glucose", 950, "mmol/L")])
    assert not out.loc[0, "plausible"]
    assert out.loc[0, "unit_error_factor"] == pytest.approx(0.05551)  # the mg/dL -> mmol/L factor


def test_an_impossible_value_no_factor_explains():
    out = verdict([("hemoglobin", -5, "g/L")])
    assert not out.loc[0, "plausible"]
    assert np.isnan(out.loc[0, "unit_error_factor"])


def test_unknown_units_analyte_or_value_are_not_judged():
    out = verdict([("glucose", 95, "furlongs"), ("no-such-analyte", 5, ""), (None, 5, ""),
                   ("glucose", np.nan, "mmol/L"), ("sodium", 140, None)])
    assert out["plausible"].isna().tolist() == [True, True, True, True, False]
    assert out.loc[0, ["low", "high", "unit_error_factor"]].isna().all()  # no limits in unknown units
    assert out.loc[4, "plausible"] == True  # noqa: E712 (no units: SI)


def test_the_result_keeps_the_callers_index_even_with_repeated_labels():
    frame = pd.DataFrame({"analyte": ["sodium", "sodium", "hemoglobin"], "value": [140, 1400, 14.6],
                          "units": ["mmol/L", "mmol/L", "g/L"]}, index=[7, 7, 3])
    out = plausibility(frame)
    assert out.index.tolist() == [7, 7, 3]
    assert out["plausible"].tolist() == [True, False, False]
    assert out["unit_error_factor"].tolist()[1:] == pytest.approx([0.1, 10.0])


def test_empty_frame():
    out = plausibility(pd.DataFrame({"analyte": [], "value": [], "units": []}))
    assert out.empty
    assert list(out.columns) == ["plausible", "low", "high", "unit_error_factor"]


def test_an_sdtm_lab_item_is_known_by_the_test_code_in_its_oid():
    # The CDISC pilot's MCHC is "Ery. Mean Corpuscular HGB Concentration", item LB.MCHC, no code
    mchc = SimpleNamespace(label="Ery. Mean Corpuscular HGB Concentration", code="", oid="LB.MCHC")
    basophils = SimpleNamespace(label="Basophils/Leukocytes", code="", oid="LB.BASOLE")
    assert (item_analyte(mchc).key, item_analyte(basophils).key) == ("mchc", "basophils_pct")
    assert unit_factor("FRACTION", item_analyte(basophils)) == 100.0
    assert item_analyte(SimpleNamespace(label="Hemoglobin", code="", oid="VS.HGB_SCREEN")).key == "hemoglobin"
