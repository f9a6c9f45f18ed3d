"""SDTM DV coding from the shipped vocabulary (deviations/data/pd_taxonomy_dvcat_dvdecod_dvterm.csv,
MIT, see LICENSE-pd-taxonomy): DVCAT, DVDECOD and DVTERM for a category and the rule that fired.
A missed visit codes to MISSED VISIT/PHONE CONTACT, a visit out of its window to OUT OF WINDOW -
VISIT/PHONE CONTACT, and so on; a category with no rule (a person's report) to its "other" term."""

import csv
from functools import cache
from pathlib import Path

VOCABULARY = Path(__file__).parent / "data" / "pd_taxonomy_dvcat_dvdecod_dvterm.csv"

# (category, rule) -> DVDECOD; (category, "") is the category's default.
CODES = {
    ("informed_consent", "informed_consent.after_first_visit"):
        "INFORMED CONSENT/ASSENT NOT SIGNED PRIOR TO ANY STUDY PROCEDURE",
    ("informed_consent", "informed_consent.after_first_dose"):
        "INFORMED CONSENT/ASSENT NOT SIGNED PRIOR TO ANY STUDY PROCEDURE",
    ("informed_consent", "informed_consent.no_consent_date"):
        "INFORMED CONSENT/ASSENT NOT SIGNED AND/OR DATED BY SUBJECT (PARENT/LEGAL REPRESENTATIVE, IF APPLICABLE)",
    ("informed_consent", ""): "OTHER INFORMED CONSENT/ASSENT DEVIATION",
    ("visit_window", "visit_window.out_of_window"): "OUT OF WINDOW - VISIT/PHONE CONTACT",
    ("visit_window", "visit_window.missed"): "MISSED VISIT/PHONE CONTACT",
    ("visit_window", ""): "OTHER VISIT WINDOW DEVIATION",
    ("ip_dosing", "ip_dosing.other_arm_dose"): "WRONG STUDY TREATMENT OR ASSIGNMENT ADMINISTERED",
    ("ip_dosing", "ip_dosing.dose_not_allowed"): "OTHER DEVIATION RELATED TO WRONG STUDY TREATMENT/ADMINISTRATION/DOSE",
    ("ip_dosing", ""): "STUDY TREATMENT NOT ADMINISTERED PER PROTOCOL",
    ("prohibited_medication", ""): "MEDICATION, EXCLUDED BY THE PROTOCOL, WAS ADMINISTERED",
    ("eligibility", ""): "ELIGIBILITY CRITERIA NOT MET",
    ("safety_reporting", "safety_reporting.sae_late"): "SAE NOT REPORTED WITHIN THE EXPECTED TIME FRAME",
    ("safety_reporting", ""): "OTHER",
    ("other", ""): "OTHER DEVIATION FROM STUDY PROCEDURE",
}
# Codes whose DVDECOD appears under more than one DVCAT ("OTHER"): the category's DVCAT decides.
CATEGORY_DVCAT = {"safety_reporting": "FAILURE TO REPORT SAFETY EVENTS PER PROTOCOL"}


@cache
def vocabulary() -> list[dict]:
    """Every (DVCAT, DVDECOD, DVTERM) row of the shipped vocabulary, in file order."""
    with VOCABULARY.open(encoding="utf-8", newline="") as handle:
        return [{"dvcat": r["DVCAT"].strip(), "dvdecod": r["DVDECOD"].strip(), "dvterm": r["DVTERM"].strip()}
                for r in csv.DictReader(handle)]


def term_for(dvdecod: str, dvcat: str | None = None) -> dict | None:
    """The vocabulary row of a coded term (and category, where the term is not unique)."""
    for row in vocabulary():
        if row["dvdecod"] == dvdecod and (dvcat is None or row["dvcat"] == dvcat):
            return row
    return None


def code(category: str, rule: str = "") -> dict:
    """DVCAT, DVDECOD, DVTERM for a category and the rule that fired."""
    dvdecod = CODES.get((category, rule)) or CODES.get((category, "")) or CODES[("other", "")]
    row = term_for(dvdecod, CATEGORY_DVCAT.get(category))
    if row is None:  # the vocabulary file and CODES disagree: a packaging bug, fail loudly
        raise LookupError(f"DVDECOD {dvdecod!r} is not in {VOCABULARY.name}")
    return dict(row)


# A source system's own categories (clindata's CTMS companycategory) -> DVDECOD. "OTHER" there is
# a deviation of some other study procedure; a blank or unreadable category stays uncoded, for a
# person to code.
SOURCE_CATEGORIES = {
    "INFORMED CONSENT": "OTHER INFORMED CONSENT/ASSENT DEVIATION",
    "ELIGIBILITY CRITERIA": "ELIGIBILITY CRITERIA NOT MET",
    "EXCLUDED CONCOMITANT MEDICATION": "MEDICATION, EXCLUDED BY THE PROTOCOL, WAS ADMINISTERED",
    "OFF SCHEDULE PROCEDURE": "OUT OF WINDOW - OTHER",
    "OTHER TREATMENT COMPLIANCE ISSUE": "STUDY TREATMENT NOT ADMINISTERED PER PROTOCOL",
    "WRONG TREATMENT OR INCORRECT DOSE": "OTHER DEVIATION RELATED TO WRONG STUDY TREATMENT/ADMINISTRATION/DOSE",
    "OTHER": "OTHER DEVIATION FROM STUDY PROCEDURE",
}


def code_source_category(text: str) -> dict:
    """DVCAT, DVDECOD, DVTERM of a source's category; blank ones where it has no code."""
    dvdecod = SOURCE_CATEGORIES.get((text or "").strip().upper())
    row = term_for(dvdecod) if dvdecod else None
    return dict(row) if row else {"dvcat": "", "dvdecod": "", "dvterm": ""}
