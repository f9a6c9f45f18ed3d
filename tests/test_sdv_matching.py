"""Units, the matching rule at its rounding edges, analyte synonyms, and lab rows laid out from
word boxes: the pure parts of the DataVerification agent (no OCR, no database)."""

from dataclasses import replace
from decimal import Decimal
from types import SimpleNamespace

import pytest

from sdv.verification import analytes, layout, matching
from sdv.verification.units import conversion_factor, number_parse, unit_normalise, values_compare


@pytest.mark.parametrize("printed, normal", [
    ("10*9/l", "10^9/L"), ("x10^9/L", "10^9/L"), ("10°9/L", "10^9/L"), ("10^12/L", "10^12/L"), ("G/L", "10^9/L"),
    ("g/L", "g/L"), ("µmol/L", "umol/L"), ("μmol/l", "umol/L"), ("IU/L", "U/L"), ("g/dl", "g/dL"),
    ("K/uL", "10^3/uL"), ("10^3/µL", "10^3/uL"), ("mmol/L.", "mmol/L"), ("mEq/L", "mEq/L")])
def test_units_are_normalised_as_labs_print_them(printed, normal):
    assert unit_normalise(printed) == normal


@pytest.mark.parametrize("source, target, analyte, factor", [
    ("g/dL", "g/L", "HGB", Decimal(10)), ("g/L", "g/dL", "ALB", Decimal("0.1")),
    ("mg/dL", "umol/L", "CREAT", Decimal("88.42")), ("mmol/L", "mg/dL", "GLUC", Decimal("18.016")),
    ("mg/dL", "umol/L", "BILI", Decimal("17.1")), ("mmol/L", "mg/dL", "CHOL", Decimal("38.67")),
    ("mmol/L", "mg/dL", "TRIG", Decimal("88.57")), ("mmol/L", "mg/dL", "CA", Decimal("4.008")),
    ("mmol/L", "mg/dL", "UREA", Decimal("6.006")), ("mmol/L", "mg/dL", "UREAN", Decimal("2.801")),
    ("10^9/L", "10^3/uL", "WBC", Decimal(1)), ("10^12/L", "10^6/uL", "RBC", Decimal(1)),
    ("mEq/L", "mmol/L", "CA", Decimal("0.5")), ("mEq/L", "mmol/L", "K", Decimal(1)),
    ("%", "L/L", "HCT", Decimal("0.01"))])
def test_conversions_with_pint_and_the_lab_factors(source, target, analyte, factor):
    assert conversion_factor(source, target, analyte) == factor


def test_a_molar_to_mass_conversion_needs_its_analyte():
    assert conversion_factor("mg/dL", "umol/L", "CREAT") == Decimal("88.42")
    assert conversion_factor("mg/dL", "umol/L") is None  # no analyte: pint alone cannot
    assert conversion_factor("mg/dL", "umol/L", "ALT") is None  # an enzyme has no molar mass
    assert conversion_factor("mg/dL", "umol/L", "GLUC") == Decimal(1000) / Decimal("18.016")  # via mmol/L
    # the inverse direction is the factor's inverse, and chains through pint (mmol/L -> umol/L)
    assert conversion_factor("mmol/L", "mg/dL", "CREAT") == Decimal(1000) / Decimal("88.42")


@pytest.mark.parametrize("source, source_unit, edc, edc_unit, analyte, matches", [
    # page -> EDC unit at the EDC's precision: 13.5 g/dL is 135 g/L
    ("13.5", "g/dL", "135", "g/L", "HGB", True),
    # 1.0 mg/dL = 88.42 umol/L -> 88 at 0 decimals (round half up at .42: down)
    ("1.0", "mg/dL", "88", "umol/L", "CREAT", True),
    # either direction counts: 89 umol/L is 1.0066 mg/dL, 1.0 at the page's precision
    ("1.0", "mg/dL", "89", "umol/L", "CREAT", True),
    ("1.0", "mg/dL", "95", "umol/L", "CREAT", False),
    # 5.55 mmol/L x 18.016 = 99.9888 -> 100 mg/dL
    ("5.55", "mmol/L", "100", "mg/dL", "GLUC", True),
    # the EDC value in the page's unit at the page's precision: 94 mg/dL / 18.016 = 5.2176 -> 5.2
    ("94", "mg/dL", "5.2", "mmol/L", "GLUC", True),
    ("94", "mg/dL", "5.3", "mmol/L", "GLUC", False),
    # exactly half: 2.25 rounds half up to 2.3 (never to even)
    ("2.25", "mmol/L", "2.3", "mmol/L", "K", True),
    ("2.25", "mmol/L", "2.2", "mmol/L", "K", False),
    # 0.45 mg/dL x 17.1 = 7.695 umol/L: 7.7 at one decimal, 8 at none
    ("0.45", "mg/dL", "7.7", "umol/L", "BILI", True),
    ("0.45", "mg/dL", "8", "umol/L", "BILI", True),
    ("0.45", "mg/dL", "7.6", "umol/L", "BILI", False),
    # a decimal comma reads as a point; trailing zeros are the same value
    ("13,5", "g/dl", "13.50", "g/dL", "HGB", True),
    ("4.4", "mmol/L", "44", "mmol/L", "K", False),
])
def test_the_matching_rule(source, source_unit, edc, edc_unit, analyte, matches):
    assert values_compare(source=source, source_unit=source_unit, edc=edc, edc_unit=edc_unit,
                          analyte=analyte).matches is matches


def test_units_that_do_not_convert_and_censored_values_are_undecided():
    assert values_compare(source="5", source_unit="mg/dL", edc="5", edc_unit="U/L", analyte="ALT").matches is None
    assert values_compare(source="<0.5", source_unit="mg/dL", edc="0.3", edc_unit="mg/dL").matches is None
    assert values_compare(source="<0.5", source_unit="mg/dL", edc="<0.5", edc_unit="mg/dL").matches is True


@pytest.mark.parametrize("text, value, places", [("13.5", "13.5", 1), ("13,5", "13.5", 1), ("1,250", "1250", 0),
                                                  ("0.70", "0.70", 2), ("<5.2", "5.2", 1), ("135", "135", 0)])
def test_printed_numbers(text, value, places):
    number = number_parse(text)
    assert (number.value, number.places) == (Decimal(value), places)


@pytest.mark.parametrize("printed, code", [
    ("HGB", "HGB"), ("Hb", "HGB"), ("Haemoglobin", "HGB"), ("Hémoglobine", "HGB"), ("ALT", "ALT"), ("SGPT", "ALT"),
    ("GPT", "ALT"), ("ALT (SGPT)", "ALT"), ("WBC", "WBC"), ("Leucocytes", "WBC"), ("Na+", "SODIUM"),
    ("Sodium", "SODIUM"), ("K+", "K"), ("Kalium", "K"), ("S-Kalium", "K"), ("Glucose (fasting)", "GLUC"),
    ("Bilirubin, total", "BILI"), ("Crealinine", "CREAT"), ("Cat+", "CA"), ("Atbumin", "ALB")])
def test_printed_names_map_to_lbtestcd(printed, code):
    found = analytes.printed_analyte(printed)
    assert found is not None and found.code == code


@pytest.mark.parametrize("printed", ["Test", "Result", "Reference range", "Subject: 101-004", "Visit: Week", "Nx"])
def test_other_words_are_no_analyte(printed):
    assert analytes.printed_analyte(printed) is None


def test_a_differential_count_in_percent_is_its_percentage_twin():
    assert analytes.printed_analyte("Neutrophils", "%").code == "NEUTLE"
    assert analytes.printed_analyte("Neutrophils", "10^9/L").code == "NEUT"


@pytest.mark.parametrize("code, oid, label, expected", [
    ("HGB", "I.X", "Whatever", "HGB"),  # an Alias with the LBTESTCD
    ("718-7", "I.X", "Whatever", "HGB"),  # an Alias with the LOINC code
    ("", "LB.K", "Whatever", "K"),  # the OID's test code
    ("", "I.X", "Haemoglobin (g/dL)", "HGB"),  # the label, through the QueryAnalyzer's recognition
    ("", "I.X", "ALT (SGPT) (CHEMISTRY PANEL)", "ALT"),
    ("", "I.X", "Urea", "UREA"),  # the label, in the synonym table
    ("", "VS.SYSBP", "Systolic blood pressure", None)])
def test_edc_items_map_to_their_analyte(code, oid, label, expected):
    assert analytes.item_analyte_code(SimpleNamespace(code=code, oid=oid, label=label)) == expected


def _line(y, *cells):
    """Words (text, confidence, box) of one printed line: cells at given x, words 40 px apart."""
    words = []
    for x, text in cells:
        for word in text.split():
            words.append((word, 95.0, x, y, x + 12 * len(word), y + 24))
            x += 12 * len(word) + 12
    return words


def test_rows_are_laid_out_from_word_boxes():
    words = (_line(100, (50, "CENTRAL LABORATORY REPORT")) + _line(160, (50, "Test"), (400, "Result"),
                                                                    (560, "Units"), (700, "Reference range"))
             + _line(200, (50, "Total bilirubin"), (400, "12.3"), (560, "umol/L"), (700, "3.4 - 20.5"))
             + _line(240, (50, "K+"), (400, "5.4"), (460, "H"), (560, "mmol/L"), (700, "(3.5-5.1)"))
             + _line(280, (50, "Cholesterol"), (400, "5.9H"), (560, "mmol/L"), (700, "< 5.2"))
             + _line(320, (50, "Albumin"), (400, "A5"), (560, "g/L"), (700, "35 - 50"))
             + _line(360, (50, "Aspartate aminotransferase46"), (560, "U/L"), (700, "0 - 40"))
             + _line(400, (50, "Neutrophils"), (400, "4.1"), (560, "10 *9/L"), (700, "2.0 - 7.5")))
    rows = {r.name: r for r in layout.page_rows(words)}
    # title and header are no rows; a name glued to its result is split again
    assert set(rows) == {"Total bilirubin", "K+", "Cholesterol", "Albumin", "Aspartate aminotransferase",
                         "Neutrophils"}
    assert rows["Aspartate aminotransferase"].value == "46"
    # "10 *9/L" is a unit: a row's result, never its value
    assert (rows["Neutrophils"].value, rows["Neutrophils"].unit) == ("4.1", "10*9/L")
    assert (rows["Total bilirubin"].value, rows["Total bilirubin"].unit, rows["Total bilirubin"].range) == (
        "12.3", "umol/L", "3.4 - 20.5")
    assert (rows["K+"].value, rows["K+"].flag, rows["K+"].range) == ("5.4", "H", "(3.5-5.1)")
    assert (rows["Cholesterol"].value, rows["Cholesterol"].flag, rows["Cholesterol"].range) == ("5.9", "H", "<5.2")
    # a result that is no number is kept as read (illegible), never taken from its reference range
    assert (rows["Albumin"].value, rows["Albumin"].confidence, rows["Albumin"].range) == ("A5", 0.0, "35 - 50")
    assert rows["K+"].value_box == (400, 240, 436, 264)


def _row(value, *, unit="mmol/L", range_="3.5 - 5.1", flag="", confidence=95.0, second="", second_confidence=0.0,
         name="Potassium"):
    return matching.PageRow(page=1, name=name, value=value, unit=unit, confidence=confidence,
                            value_box=[0, 0, 1, 1], box=[0, 0, 1, 1], text="", range=range_, flag=flag,
                            second=second, second_confidence=second_confidence)


def _verdict(rows, value="5.4", unit="mmol/L"):
    edc = matching.EdcValue(data_point_id=1, item_id=1, item_label="Potassium", value=value, unit=unit, analyte="K")
    return matching.verdict_for(edc, matching.rows_with_analytes(rows), review_below=60)


def test_verdicts_from_rows():
    assert _verdict([_row("5.4")]).verdict == "verified"
    assert _verdict([_row("5.4")], value="4.5").verdict == "discrepancy"
    assert _verdict([_row("5.4", confidence=40)], value="4.5").verdict == "needs_review"  # too uncertain to query
    assert _verdict([_row("5.4", confidence=40)]).verdict == "verified"  # agreement needs no high confidence
    assert _verdict([_row("5.4", name="Sodium")]).verdict == "not_found"
    assert _verdict([_row("5.4", unit="U/L")]).verdict == "needs_review"  # units that do not convert


def test_a_lost_decimal_point_is_not_a_discrepancy():
    # "44" beside a range of 3.5-5.1 and no flag: the point was lost; restored, but only for review
    verdict = _verdict([_row("44")], value="4.5")
    assert verdict.verdict == "needs_review" and "decimal point restored (4.4)" in verdict.explanation
    assert _verdict([_row("44")], value="4.4").verdict == "verified"
    # a second reading that agrees with the restored value confirms it: a discrepancy again
    assert _verdict([_row("44", second="4.4", second_confidence=90)], value="4.5").verdict == "discrepancy"
    # two readings that disagree, both agreeing with their row, make it doubtful however confident each
    assert _verdict([_row("5.4", range_="3.5 - 6.0", second="5.1", second_confidence=40)],
                    value="4.5").verdict == "needs_review"
    assert _verdict([_row("5.4", range_="3.5 - 6.0", second="5.1", second_confidence=90)],
                    value="4.5").verdict == "needs_review"
    # either reading matching the EDC verifies it, unless its own row contradicts it and not the other
    assert _verdict([_row("5.1", flag="H", second="5.4", second_confidence=90)]).verdict == "verified"
    assert _verdict([_row("5.4", range_="3.5 - 6.0", second="5.1", second_confidence=90)],
                    value="5.1").verdict == "verified"
    # "45" (a lost point) beside 3.4-20.5 unflagged, read again as 4.5: the EDC's shifted 45.0 is no match
    bili = matching.EdcValue(data_point_id=1, item_id=1, item_label="Bilirubin", value="45.0", unit="umol/L",
                             analyte="BILI")
    lost = _row("45", unit="umol/L", range_="3.4 - 20.5", second="4.5", second_confidence=90,
                name="Total bilirubin")
    assert matching.verdict_for(bili, matching.rows_with_analytes([lost]), review_below=60).verdict == "discrepancy"


def test_an_illegible_unit_is_tried_in_every_unit_of_the_analyte():
    hgb = matching.EdcValue(data_point_id=1, item_id=1, item_label="Hemoglobin", value="135", unit="g/L",
                            analyte="HGB")
    row = _row("13.5", unit="qfdt", range_="12.0 - 16.0", name="Hb")
    assert matching.verdict_for(hgb, matching.rows_with_analytes([row]), review_below=60).verdict == "verified"
    wrong = matching.EdcValue(data_point_id=1, item_id=1, item_label="Hemoglobin", value="153", unit="g/L",
                              analyte="HGB")
    assert matching.verdict_for(wrong, matching.rows_with_analytes([row]), review_below=60).verdict == "discrepancy"


def test_how_second_readings_weigh():
    # a weak second reading does not contradict a confident first one
    assert _verdict([_row("7.4", second="744", second_confidence=7)], value="7.5").verdict == "discrepancy"
    # a second reading that is no number leaves the first uncorroborated (64 x 0.8 < 60: for review)
    assert _verdict([_row("77", range_="", confidence=64, second="Ta", second_confidence=16)],
                    value="7.7").verdict == "needs_review"
    # both readings lost the point, exactly one placement fits the range: as sure as the readings
    restored = _verdict([_row("73", range_="4.0 - 10.0", second="73", second_confidence=90, name="K")], value="7.9")
    assert restored.verdict == "discrepancy" and "decimal point restored (7.3)" in restored.explanation
    # a second reading with its flag glued on still counts ("8.6H")
    assert _verdict([_row("86", range_="3.5 - 5.1", flag="H", confidence=26, second="5.4H",
                          second_confidence=90)]).verdict == "verified"


def test_a_value_impossible_in_its_unit_is_never_a_discrepancy():
    # 7.6 beside "g/L" for total protein (possible: 20-160 g/L): misread; it matches as 7.6 g/dL = 76 g/L
    protein = matching.EdcValue(data_point_id=1, item_id=1, item_label="Total protein", value="76", unit="g/L",
                                analyte="PROT")
    row = _row("7.6", unit="g/L", range_="6.4 - 8.3", name="Total protein")
    assert matching.verdict_for(protein, matching.rows_with_analytes([row]), review_below=60).verdict == "verified"
    # 43 mmol/L of potassium (a lost point), against an EDC 4.5: for review, not a query
    assert _verdict([_row("43", range_="35-51")], value="4.5").verdict == "needs_review"
    # a planted decimal slip (EDC 7.6 for 76) against a page read correctly stays a discrepancy
    slipped = matching.EdcValue(data_point_id=1, item_id=1, item_label="Total protein", value="7.6", unit="g/L",
                                analyte="PROT")
    page = _row("7.6", unit="g/dL", range_="6.4 - 8.3", name="Total protein")
    assert matching.verdict_for(slipped, matching.rows_with_analytes([page]), review_below=60).verdict == \
        "discrepancy"


def test_of_two_readings_the_one_its_row_agrees_with_wins():
    # 8.63 or 0.63 beside "< 1.70", unflagged: 0.63
    trig = matching.EdcValue(data_point_id=1, item_id=1, item_label="Triglycerides", value="0.36", unit="mmol/L",
                             analyte="TRIG")
    row = _row("8.63", range_="<1.70", second="0.63", second_confidence=85, name="TG")
    verdict = matching.verdict_for(trig, matching.rows_with_analytes([row]), review_below=60)
    assert verdict.verdict == "discrepancy" and "the one its row's range and flag agree with" in verdict.explanation
    # neither agreeing with its row: the first, its point restored from the range (77 -> 7.7)
    assert _verdict([_row("77", range_="2.0 - 7.5", second="1", second_confidence=85)], value="7.7").verdict == \
        "verified"


def test_a_restored_decimal_point_is_judged_in_the_unit_printed():
    # "35" beside 3.5-5.0 g/dL: the point was lost (3.5 g/dL), not the unit (35 g/dL is impossible,
    # but 3.5 g/dL is the reading once checked against its own row)
    albumin = matching.EdcValue(data_point_id=1, item_id=1, item_label="Albumin", value="35", unit="g/L",
                                analyte="ALB")
    row = _row("35", unit="g/dL", range_="3.5-5.0", name="Alb", second="3.5", second_confidence=90)
    assert matching.verdict_for(albumin, matching.rows_with_analytes([row]), review_below=60).verdict == "verified"


def test_a_value_the_rows_range_and_flag_rule_out_is_a_discrepancy_however_uncertain_the_digits():
    # ALP 131 flagged H beside 40-129, read with confidence 24: the EDC's shifted 1310
    # cannot be what is printed, whatever digits the reading got wrong
    alp = matching.EdcValue(data_point_id=1, item_id=1, item_label="Alkaline phosphatase", value="1310", unit="U/L",
                            analyte="ALP")
    row = _row("131", unit="U/L", range_="40 - 129", flag="H", confidence=24, name="Alkalische Phosphatase")
    verdict = matching.verdict_for(alp, matching.rows_with_analytes([row]), review_below=60)
    assert verdict.verdict == "discrepancy"
    assert "the EDC value (1310 U/L) disagrees with the range printed on the row (40 - 129, flagged H)" in \
        verdict.explanation
    assert verdict.confidence == 0.24  # the reading's own confidence, shown as it is
    # in another unit: bilirubin 1.54 mg/dL flagged H (0.2-1.2), the EDC's 15.7 umol/L is 0.918 mg/dL, normal
    bili = matching.EdcValue(data_point_id=1, item_id=1, item_label="Total bilirubin", value="15.7", unit="umol/L",
                             analyte="BILI")
    row = _row("1.54", unit="mg/dL", range_="0.2 - 1.2", flag="H", confidence=36, second="1.5", second_confidence=40,
               name="Gesamtbilirubin")
    assert matching.verdict_for(bili, matching.rows_with_analytes([row]), review_below=60).verdict == "discrepancy"
    # a low potassium reading flagged H, the EDC normal: ruled out; flagged L or read inside the range, not
    assert _verdict([_row("5.4", flag="H", confidence=40)], value="4.5").verdict == "discrepancy"
    assert _verdict([_row("5.4", flag="H", confidence=40)], value="5.8").verdict == "needs_review"  # also high
    assert _verdict([_row("4.8", confidence=40)], value="4.5").verdict == "needs_review"  # both in range


def test_the_row_rules_nothing_out_when_it_cannot_be_trusted():
    # no range printed, a reading its own row contradicts (5.4 unflagged above 5.1), a restored point
    assert _verdict([_row("3.9", range_="", confidence=40)], value="5.9").verdict == "needs_review"
    assert _verdict([_row("5.4", confidence=40)], value="2.1").verdict == "needs_review"
    assert _verdict([_row("44", confidence=40)], value="2.1").verdict == "needs_review"
    # two readings, one of which disagrees with the row
    assert _verdict([_row("4.4", confidence=40, second="9.4", second_confidence=40)],
                    value="2.1").verdict == "needs_review"
    # an EDC value on the border: 5.5 mmol/L of glucose is 98.2-100.0 mg/dL once its rounding is counted,
    # inside 70-99 at one end: a page read as 90 (uncertain) does not rule it out
    glucose = matching.EdcValue(data_point_id=1, item_id=1, item_label="Glucose", value="5.5", unit="mmol/L",
                                analyte="GLUC")
    row = _row("90", unit="mg/dL", range_="70 - 99", confidence=40, name="Glucose")
    assert matching.verdict_for(glucose, matching.rows_with_analytes([row]), review_below=60).verdict == \
        "needs_review"
    # a censored EDC value is no number to place in the range
    assert _verdict([_row("4.4", confidence=40)], value="<2").verdict == "needs_review"


def test_a_flagged_value_an_order_of_magnitude_past_its_range_is_compared_with_its_point_restored():
    def bili(edc):
        value = matching.EdcValue(data_point_id=1, item_id=1, item_label="Total bilirubin", value=edc, unit="umol/L",
                                  analyte="BILI")
        row = _row("14", unit="mg/dL", range_="0.2 - 1.2", flag="H", confidence=80, name="Total bilirubin")
        return matching.verdict_for(value, matching.rows_with_analytes([row]), review_below=60)

    # "14" flagged H beside 0.2-1.2 (1.4 read without its point): 1.4 mg/dL is the EDC's 23.9 umol/L
    restored = bili("23.9")
    assert restored.verdict == "verified" and "decimal point restored (1.4)" in restored.explanation
    assert bili("239").verdict == "verified"  # a real 14 mg/dL still matches as read
    assert bili("40.0").verdict == "needs_review"  # matching neither: doubtful, never a query
    # a very high value that agrees with its flag and fits no other placement is left as it is
    alt = matching.EdcValue(data_point_id=1, item_id=1, item_label="ALT", value="160", unit="U/L", analyte="ALT")
    row = _row("150", unit="U/L", range_="0 - 41", flag="H", name="ALT")
    assert matching.verdict_for(alt, matching.rows_with_analytes([row]), review_below=60).verdict == "discrepancy"
    assert matching.flagged_point_lost(row) == ""
    assert matching.flagged_point_lost(_row("14", range_="0.2 - 1.2", flag="H")) == "1.4"
    assert matching.flagged_point_lost(_row("14", range_="0.2 - 1.2")) == ""  # unflagged: reading_checked's case


def test_a_second_reading_that_restores_the_point_of_a_flagged_value_settles_it():
    # "16" flagged H beside 0.2-1.2, read again as 1.6 (confident): 1.6 mg/dL is 27.4 umol/L, the
    # EDC's swapped 72.4 is a discrepancy, not a doubt
    bili = matching.EdcValue(data_point_id=1, item_id=1, item_label="Total bilirubin", value="72.4", unit="umol/L",
                             analyte="BILI")
    row = _row("16", unit="mg/dL", range_="0.2-1.2", flag="H", confidence=80, second="1.6", second_confidence=90,
               name="TBIL")
    assert matching.verdict_for(bili, matching.rows_with_analytes([row]), review_below=60).verdict == "discrepancy"


def _laid_out(words, *, second="", second_confidence=0.0):
    return [matching.PageRow(page=1, name=r.name, value=r.value, unit=r.unit, confidence=r.confidence,
                             value_box=list(r.value_box), box=list(r.box), text=r.text, range=r.range, flag=r.flag,
                             second=second, second_confidence=second_confidence)
            for r in layout.page_rows(words)]


def test_a_result_glued_to_its_name_is_no_confident_reading_on_its_own():
    # Seed 99 of bench_sdv, page 21: "Aspartate aminotransferase 34" read as one word
    # "aminotransferasa4" (confidence 85): the gap was lost with the "3" in it. The "4" split off is
    # not a confident reading of a different value: no query from it, a review.
    words = _line(300, (50, "Aspartate aminotransferasa4"), (560, "U/L"), (700, "0 - 40"))
    rows = _laid_out(words, second="a4", second_confidence=91.0)  # the second reading: no number either
    assert rows[0].value == "4"
    ast = matching.EdcValue(data_point_id=1, item_id=1, item_label="AST", value="34", unit="U/L", analyte="AST")
    assert matching.verdict_for(ast, matching.rows_with_analytes(rows), review_below=60).verdict == "needs_review"
    assert rows[0].confidence == layout.GLUED_VALUE_CONFIDENCE
    # a value split off its name still verifies when it matches, and a second reading that reads
    # the same number confirms it: a confident reading again, a difference is a discrepancy
    assert matching.verdict_for(replace(ast, value="4"), matching.rows_with_analytes(_laid_out(words)),
                                review_below=60).verdict == "verified"
    confirmed = _laid_out(words, second="4", second_confidence=91.0)
    assert matching.verdict_for(ast, matching.rows_with_analytes(confirmed), review_below=60).verdict == "discrepancy"


def test_a_doubtful_reading_that_matches_the_edc_is_settled_without_a_second_reading():
    potassium = matching.EdcValue(data_point_id=1, item_id=1, item_label="Potassium", value="4.2", unit="mmol/L",
                                  analyte="K")
    sodium = matching.EdcValue(data_point_id=2, item_id=2, item_label="Sodium", value="140", unit="mmol/L",
                               analyte="SODIUM")
    rows = matching.rows_with_analytes([_row("4.2", confidence=70), _row("4.7", confidence=70),
                                        _row("7.2", confidence=70), _row("140", confidence=70, name="Sodium",
                                                                         range_="135 - 145")])
    matches, differs, out_of_range, other = rows
    assert matching.reading_settles(matches, [potassium, sodium])
    assert not matching.reading_settles(differs, [potassium, sodium])  # a difference is read again
    assert not matching.reading_settles(out_of_range, [matching.EdcValue(  # its own row contradicts it
        data_point_id=1, item_id=1, item_label="Potassium", value="7.2", unit="mmol/L", analyte="K")])
    assert matching.reading_settles(other, [potassium, sodium])
    # Settled and compared later with a changed EDC value: unconfirmed, for review, never a query.
    changed = matching.EdcValue(data_point_id=1, item_id=1, item_label="Potassium", value="4.9", unit="mmol/L",
                                analyte="K")
    settled = replace(matches, confidence=95.0, settled=True)
    assert matching.verdict_for(changed, [settled], review_below=60).verdict == "needs_review"
    assert matching.verdict_for(changed, [replace(settled, settled=False)], review_below=60).verdict == "discrepancy"
    assert matching.verdict_for(potassium, [settled], review_below=60).verdict == "verified"
