"""The edit-check expression language (queries.checks.expression): parsing, column-wise
evaluation with three-valued logic, and refusal of anything outside the language.

Pure Python: no database. Results are compared as lists where <NA> is None."""

import numpy as np
import pandas as pd
import pytest

from queries.checks.expression import MAX_LENGTH, MAX_NODES, Expression, ExpressionError, parse

NA = None  # how <NA> reads in `values()`


def values(result: pd.Series) -> list:
    """A nullable boolean Series as [True, False, None, ...]."""
    assert result.dtype == "boolean"
    return [None if v is pd.NA else bool(v) for v in result]


def run(text: str, frame: pd.DataFrame) -> list:
    return values(parse(text).evaluate(frame))


@pytest.fixture
def frame() -> pd.DataFrame:
    """Five records: numbers (float, with a gap), dates (datetime64, with gaps) and text."""
    return pd.DataFrame({
        "VS.SYSBP": [120.0, 150.0, np.nan, 90.0, 110.0],
        "VS.DIABP": [80.0, 160.0, 70.0, np.nan, 110.0],
        "VS.WEIGHT": [70.0, 0.0, 80.0, 90.0, np.nan],
        "AE.AESTDAT": pd.to_datetime(["2024-01-01", "2024-02-10", None, "2024-03-01", "2024-01-05"]),
        "AE.AEENDAT": pd.to_datetime(["2024-01-03", "2024-02-01", "2024-01-01", None, "2024-01-05"]),
        "AE.AESEV": pd.Series(["MILD", "severe", " Moderate ", None, ""], dtype=object),
    })


# --- parsing -------------------------------------------------------------------------------------

def test_parse_returns_an_expression_with_variables_in_order_of_first_use():
    parsed = parse("[VS.SYSBP] > [VS.DIABP] and abs([VS.WEIGHT] - [VS.SYSBP]) < 20 or [ DM.SEX ] == 'F'")
    assert isinstance(parsed, Expression)
    assert parsed.variables == ["VS.SYSBP", "VS.DIABP", "VS.WEIGHT", "DM.SEX"]  # each once, spaces trimmed
    assert parsed.text.startswith("[VS.SYSBP]")


def test_variables_may_hold_dots_dashes_and_underscores():
    assert parse("[IT.LB-ALT_2] > 0").variables == ["IT.LB-ALT_2"]


def test_brackets_inside_a_string_are_text_not_items():
    parsed = parse('[AE.AETERM] != "[redacted]"')
    assert parsed.variables == ["AE.AETERM"]
    frame = pd.DataFrame({"AE.AETERM": pd.Series(["[redacted]", "Headache"], dtype=object)})
    assert values(parsed.evaluate(frame)) == [False, True]


@pytest.mark.parametrize("text", ["", "   ", None, 42])
def test_empty_or_non_text_is_refused(text):
    with pytest.raises(ExpressionError, match="empty"):
        parse(text)


def test_syntax_error_is_an_expression_error():
    with pytest.raises(ExpressionError, match="Not a valid expression"):
        parse("[VS.SYSBP] > 1 and")


# --- evaluation: numbers, dates, text, missing ---------------------------------------------------

def test_result_is_a_nullable_boolean_series_on_the_frame_index(frame):
    frame.index = pd.MultiIndex.from_tuples([("S1", v) for v in range(5)], names=["subject_id", "visit_id"])
    result = parse("[VS.SYSBP] > [VS.DIABP]").evaluate(frame)
    assert result.dtype == "boolean"
    assert result.index.equals(frame.index)
    assert values(result) == [True, False, NA, NA, False]


def test_arithmetic_and_functions(frame):
    assert run("[VS.SYSBP] - [VS.DIABP] >= 30", frame) == [True, False, NA, NA, False]
    assert run("abs([VS.SYSBP] - [VS.DIABP]) == 10", frame) == [False, True, NA, NA, False]
    assert run("[VS.WEIGHT] * 2 + 1 > 150", frame) == [False, False, True, True, NA]
    assert run("-[VS.WEIGHT] < -75", frame) == [False, False, True, True, NA]
    assert run("max([VS.SYSBP], [VS.DIABP]) == 160", frame) == [False, True, NA, NA, False]
    assert run("min([VS.SYSBP], [VS.DIABP], 100) == 80", frame) == [True, False, NA, NA, False]


def test_literals_only_still_give_a_row_each(frame):
    assert run("min(1, 2) == 1", frame) == [True] * 5
    assert run("True", frame) == [True] * 5
    assert run("1 > 2", frame) == [False] * 5


def test_dates_compare_as_dates_with_each_other_and_with_a_literal(frame):
    assert run("[AE.AESTDAT] <= [AE.AEENDAT]", frame) == [True, False, NA, NA, True]
    assert run('[AE.AESTDAT] < "2024-02-15"', frame) == [True, True, NA, False, True]


def test_days_between(frame):
    assert run("days_between([AE.AESTDAT], [AE.AEENDAT]) >= 0", frame) == [True, False, NA, NA, True]
    assert run("days_between([AE.AESTDAT], [AE.AEENDAT]) == 2", frame) == [True, False, NA, NA, False]
    assert run("days_between([AE.AESTDAT], [AE.AEENDAT]) == -9", frame) == [False, True, NA, NA, False]
    assert run('days_between("2024-01-01", "2024-03-01") == 60', frame) == [True] * 5  # a leap year


def test_dates_cannot_be_used_in_arithmetic(frame):
    with pytest.raises(ExpressionError, match="days_between"):
        parse("[AE.AESTDAT] + 1 > 0").evaluate(frame)


def test_division_by_zero_is_unknown_not_an_error(frame):
    assert run("[VS.SYSBP] / [VS.WEIGHT] > 1", frame) == [True, NA, NA, False, NA]  # weight 0 in row 2
    assert run("[VS.SYSBP] / 0 > 1", frame) == [NA] * 5
    assert run("1 / 0 > 1", frame) == [NA] * 5
    assert run("is_missing([VS.SYSBP] / [VS.WEIGHT])", frame) == [False, True, True, False, True]


@pytest.mark.parametrize("dtype", [object, "str"], ids=["object", "pandas-str"])
def test_text_equality_in_and_is_missing(dtype):
    # pandas 3 reads text as the `str` dtype (the engine's raw values are); object columns also occur
    frame = pd.DataFrame({"AE.AESEV": pd.Series(["MILD", "severe", " Moderate ", None, "", "  "], dtype=dtype)})
    assert run('[AE.AESEV] == "MILD"', frame) == [True, False, False, NA, NA, NA]
    assert run('[AE.AESEV] != "MILD"', frame) == [False, True, True, NA, NA, NA]
    # `in` compares text ignoring case and surrounding spaces
    assert run('[AE.AESEV] in ("mild", "MODERATE")', frame) == [True, False, True, NA, NA, NA]
    assert run('[AE.AESEV] not in ("mild", "MODERATE")', frame) == [False, True, False, NA, NA, NA]
    assert run("is_missing([AE.AESEV])", frame) == [False, False, False, True, True, True]
    assert run("not is_missing([AE.AESEV])", frame) == [True, True, True, False, False, False]


def test_is_missing_numbers_dates_and_absent_items(frame):
    frame["VS.NONE"] = pd.Series([None, 1.5, None, 2, None], dtype=object)
    assert run("is_missing([VS.SYSBP])", frame) == [False, False, True, False, False]
    assert run("is_missing([AE.AEENDAT])", frame) == [False, False, False, True, False]
    assert run("is_missing([VS.NONE])", frame) == [True, False, True, False, True]
    # an item with no value at all in the frame: missing everywhere, and unknown in comparisons
    assert run("is_missing([LB.NOTHING])", frame) == [True] * 5
    assert run("[LB.NOTHING] > 1", frame) == [NA] * 5


def test_in_with_numbers_including_negative_ones():
    frame = pd.DataFrame({"LB.GRADE": [-1.0, 0.0, 2.0, np.nan]})
    assert run("[LB.GRADE] in (-1, 0, 1)", frame) == [True, True, False, NA]
    assert run("[LB.GRADE] not in (-1, 0, 1)", frame) == [False, False, True, NA]


def test_chained_comparisons(frame):
    assert run("60 <= [VS.SYSBP] < 130", frame) == [True, False, NA, True, True]
    assert run("[VS.DIABP] < [VS.SYSBP] <= 150", frame) == [True, False, NA, NA, False]
    # a chain with an unknown link and a false link is false (Kleene and), not unknown
    assert run("[VS.DIABP] < [VS.SYSBP] < 100", pd.DataFrame({"VS.DIABP": [np.nan], "VS.SYSBP": [150.0]})) == [False]


# --- three-valued logic --------------------------------------------------------------------------

KLEENE = pd.DataFrame({"X.A": [True, True, True, False, False, False, None, None, None],
                       "X.B": [True, False, None, True, False, None, True, False, None]})
# The columns are written as comparisons: 1 (true), 0 (false), missing (unknown)
KLEENE_FRAME = pd.DataFrame({c: KLEENE[c].map({True: 1.0, False: 0.0, None: np.nan}) for c in KLEENE})


def test_kleene_and():
    assert run("[X.A] == 1 and [X.B] == 1", KLEENE_FRAME) == [True, False, NA, False, False, False, NA, False, NA]


def test_kleene_or():
    assert run("[X.A] == 1 or [X.B] == 1", KLEENE_FRAME) == [True, True, True, True, False, NA, True, NA, NA]


def test_kleene_not():
    assert run("not [X.A] == 1", KLEENE_FRAME) == [False, False, False, True, True, True, NA, NA, NA]


def test_comparison_with_missing_is_unknown_on_either_side():
    frame = pd.DataFrame({"X.A": [np.nan, 1.0], "X.B": [1.0, np.nan]})
    for op in ("==", "!=", "<", "<=", ">", ">="):
        assert run(f"[X.A] {op} [X.B]", frame) == [NA, NA], op
        assert run(f"[X.A] {op} 1", frame)[0] is NA, op


def test_unknown_is_not_a_finding_but_is_missing_asks_for_one():
    """`[LB.HCG] > 0` over a missing value is unknown: the analyzer reports only False rows."""
    frame = pd.DataFrame({"DM.SEX": pd.Series(["F", "F", "M"], dtype=object), "LB.HCG": [np.nan, 5.0, np.nan]})
    assert run('[DM.SEX] != "F" or [LB.HCG] >= 0', frame) == [NA, True, True]
    assert run('[DM.SEX] != "F" or not is_missing([LB.HCG])', frame) == [False, True, True]


# --- non-boolean results ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[VS.SYSBP] + 1", "[VS.SYSBP]", "abs([VS.SYSBP])", "1", '"yes"',
                                  "days_between([AE.AESTDAT], [AE.AEENDAT])"])
def test_a_value_instead_of_a_condition_is_refused_at_evaluation(frame, text):
    parsed = parse(text)  # valid syntax
    with pytest.raises(ExpressionError, match="must be a condition"):
        parsed.evaluate(frame)


@pytest.mark.parametrize("text", ["[VS.SYSBP] and [VS.DIABP] > 1", "not [VS.SYSBP]"])
def test_logic_over_values_is_refused(frame, text):
    with pytest.raises(ExpressionError, match="must be a condition"):
        parse(text).evaluate(frame)


@pytest.mark.parametrize(("text", "message"), [
    ("[VS.SYSBP] > 1 == 1", None),  # (1 == 1) is fine: a chain
    ('"a" * 100000000 == "b"', "is not a number"),  # no string repetition (a memory bomb)
    ("(1 > 0) + 1 > 0", "condition cannot be used as a number"),
])
def test_values_of_the_wrong_kind(frame, text, message):
    if message is None:
        parse(text).evaluate(frame)
        return
    with pytest.raises(ExpressionError, match=message):
        parse(text).evaluate(frame)


# --- hostile or invalid input --------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("__import__('os')", "Only these functions can be called"),
    ("__import__('os').system('true') == 0", "Only these functions can be called"),
    ("[A.B].real.imag > 0", "Attribute access is not allowed"),
    ("open('/etc/passwd') == ''", "Only these functions can be called"),
    ("eval('1') == 1", "Only these functions can be called"),
    ("[A.B].real > 0", "Attribute access is not allowed"),
    ("'x'.join('y') == 'y'", "Only these functions can be called"),
    ("'x'.upper == 'X'", "Attribute access is not allowed"),
    ("[A.B][0] > 1", "a bracket here does not name one"),
    ("'abc'[0] == 'a'", "a bracket here does not name one"),
    ("[A.B][C.D] > 1", "Not a valid expression"),
    ("(lambda: 1)() == 1", "Only these functions can be called"),
    ("(lambda: 1) == 1", "A lambda is not allowed"),
    ("[x for x in (1, 2)] == 1", "a bracket here does not name one"),
    ("(x for x in (1, 2)) == 1", "A comprehension is not allowed"),
    ("{x for x in (1, 2)} == 1", "A comprehension is not allowed"),
    ("{1: 2} == 1", "A dict is not allowed"),
    ("foo > 1", "Unknown name 'foo'"),
    ("os > 1", "Unknown name 'os'"),
    ("sum((1, 2)) > 1", "Only these functions can be called"),
    ("abs == 1", "abs is a function"),
    ("min(1, 2, key=abs) > 0", r"min\(\) takes no keyword arguments"),
    ("abs(x=1) > 0", r"abs\(\) takes no keyword arguments"),
    ("abs(1, 2) > 0", r"abs\(\) takes 1 argument\."),
    ("abs() > 0", r"abs\(\) takes 1 argument\."),
    ("min(1) > 0", r"min\(\) takes 2 to 8 arguments"),
    ("days_between([A.X]) > 0", r"days_between\(\) takes 2 arguments"),
    ("is_missing([A.X], [A.Y])", r"is_missing\(\) takes 1 argument"),
    ("min(*(1, 2), 3) > 0", "Unpacking is not allowed"),
    ('f"{[A.X]}" == "1"', "An f-string is not allowed"),
    ("(y := 1) == 1", r"An assignment \(:=\) is not allowed"),
    ("1 if [A.X] > 1 else 2", "A conditional"),
    ("[A.X] ** 2 > 1", r"The \*\* operator is not allowed"),
    ("[A.X] // 2 > 1", "The // operator is not allowed"),
    ("[A.X] % 2 > 1", "The % operator is not allowed"),
    ("[A.X] > 1 & [A.Y] > 1", "The & operator"),
    ("[A.X] is 1", "`is`"),
    ("None == None", "The constant None is not allowed"),
    ("b'x' == b'x'", "is not allowed"),
    ("1j == 1j", "is not allowed"),
    ("[A.X] < 1" + "0" * 400, "cannot be this large"),
    ("[A.X] in [A.Y]", "`in` needs a literal list"),
    ("[A.X] in 'abc'", "`in` needs a literal list"),
    ("[A.X] in ([A.Y], 1)", "A list may hold only constants"),
    ("[A.X] in (1, 2) < 3", "must end a comparison"),
    ("abs((1, 2)) > 0", "A list can only follow `in`"),
    ("_item0 > 1", "Unknown name '_item0'"),
    ("[A.X] > _item0", "Unknown name '_item0'"),  # the placeholders are not nameable
    ("[A.X] > 1\x00", "Not a valid expression"),
])
def test_hostile_or_invalid_input_is_refused_with_a_clear_message(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse(text)


def test_too_long_text_is_refused():
    with pytest.raises(ExpressionError, match=f"longer than {MAX_LENGTH} characters"):
        parse("[VS.SYSBP] > " + "1" * MAX_LENGTH)


@pytest.mark.parametrize("text", [
    "(" * 500,
    "(" * 500 + "1" + ")" * 500 + " > 0",
    "[A.X] > " + "-" * 1990 + "1",
    "not " * 495 + "[A.X] > 1",
    " + ".join(["[A.X]"] * 300) + " > 1",
    "abs(" * 190 + "[A.X]" + ")" * 190 + " > 1",
])
def test_deep_nesting_is_an_expression_error_not_a_crash(text):
    with pytest.raises(ExpressionError):
        parse(text)


def test_nesting_within_the_limits_evaluates(frame):
    assert run("(" * 150 + "[VS.WEIGHT]" + ")" * 150 + " > 75", frame) == [False, False, True, True, NA]
    # up to MAX_NODES parts: unary minus is two nodes (the operator and its operand)
    depth = MAX_NODES // 2 - 10
    assert run("-" * (2 * (depth // 2)) + "[VS.WEIGHT] > 75", frame) == [False, False, True, True, NA]


def test_evaluate_on_an_empty_frame():
    assert parse("[A.X] > 1 and is_missing([A.Y])").evaluate(pd.DataFrame(index=pd.Index([]))).empty
