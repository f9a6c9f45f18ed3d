"""A lab report page as rows (test name, result, unit, reference range, flag), laid out from word
boxes rather than read as one string, so a value is always the one printed on its test's line.

Words are grouped into lines by their vertical centres (a line is as tall as its words), then
read left to right: the test name is the words before the first number, the result that number
(a flag or a unit glued to it is split off), then the unit, the reference range ("3.5 - 5.1",
"(3.5-5.1)", "< 5.2") and the flag (H, L, HH, LL, *, A). Lines with no number after a name are
not rows (titles, addresses, headers). A header line (Test, Result, Units, Reference range,
Flag) is recognised and skipped; the rows do not depend on it, so reports without one read too.
"""

import re
from dataclasses import asdict, dataclass

from sdv.verification.units import number_parse

_FLAGS = {"h", "l", "hh", "ll", "a", "aa", "n", "*", "**", "high", "low", "abnormal", "crit", "c", "+", "-",
          "↑", "↓", "!", "(h)", "(l)", "[h]", "[l]"}
_HEADER_WORDS = {"test", "tests", "analyte", "parameter", "investigation", "examination", "result", "results",
                 "value", "unit", "units", "reference", "range", "normal", "ref", "flag", "interval"}
_GLUED = re.compile(r"^([<>]=?|≤|≥)?([-+]?(?:\d+(?:[.,]\d+)?|[.,]\d+))([.,]?[A-Za-zµ%/*↑↓!^].*)?$")
_RANGE_ONE = re.compile(r"^\(?\[?([<>]=?|≤|≥)?\s*(\d+(?:[.,]\d+)?)(?:\s*(?:-|–|—|to)\s*(\d+(?:[.,]\d+)?))?\)?\]?$")
_DASH = {"-", "–", "—", "to"}


@dataclass
class Row:
    name: str
    value: str
    confidence: float  # of the value's word(s), 0-100
    value_box: tuple[int, int, int, int]
    name_box: tuple[int, int, int, int]
    box: tuple[int, int, int, int]
    unit: str = ""
    range: str = ""
    flag: str = ""
    text: str = ""
    name_confidence: float = 100.0
    second: str = ""  # the value read a second time (ocr.values_reread), "" when not
    second_confidence: float = 0.0

    def as_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _is_flag(token: str) -> bool:
    return token.strip(".,:;").lower() in _FLAGS and token not in ("-", "+")


def _union(boxes) -> tuple[int, int, int, int]:
    boxes = list(boxes)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def lines_of(words: list) -> list[list]:
    """Words (text, confidence, x0, y0, x1, y1) grouped into lines, each left to right."""
    if not words:
        return []
    heights = sorted(w[5] - w[3] for w in words)
    typical = max(1, heights[len(heights) // 2])
    lines: list[list] = []
    for word in sorted(words, key=lambda w: (w[3] + w[5]) / 2):
        centre = (word[3] + word[5]) / 2
        if lines:
            line = lines[-1]
            line_centre = sum((w[3] + w[5]) / 2 for w in line) / len(line)
            if abs(centre - line_centre) <= 0.5 * typical:
                line.append(word)
                continue
        lines.append([word])
    return [sorted(line, key=lambda w: w[2]) for line in lines]


_NAME_AND_NUMBER = re.compile(r"^([A-Za-z]{4,})(\d+(?:[.,]\d+)?)$")
GLUED_VALUE_CONFIDENCE = 50.0  # at most, for a result split off its name (a digit may be lost in the seam)


def _split_glued_names(line: list) -> list:
    """"aminotransferase46": a name and its result read as one word (the gap was lost): two words,
    the box split in proportion. Short letter runs stay whole (B12, A1c, Ca2+). Where tesseract lost
    the gap it may have lost a digit too, merged into the last letter ("aminotransferase34" read
    "aminotransferasa4"): the word's confidence is the name's as much as the value's, so the value
    keeps at most GLUED_VALUE_CONFIDENCE (below the review threshold) until a second reading
    confirms it."""
    out = []
    for word in line:
        match = _NAME_AND_NUMBER.match(word[0])
        if not match:
            out.append(word)
            continue
        name, number = match.groups()
        x0, x1 = word[2], word[4]
        cut = x0 + round((x1 - x0) * len(name) / len(word[0]))
        out += [(name, word[1], x0, word[3], cut, word[5]),
                (number, min(word[1], GLUED_VALUE_CONFIDENCE), cut, word[3], x1, word[5])]
    return out


def _merge_split_decimals(line: list) -> list:
    """"13" ".5" read as two words (a speck split them) are one number again; "10" "*9/L" is a
    unit read as two words (the power of ten is no result)."""
    out = []
    for word in line:
        if out and out[-1][0] in ("10", "x10") and re.match(r"^[*^°º][0-9⁰-⁹]", word[0]):
            previous = out.pop()
            out.append((previous[0] + word[0], min(previous[1], word[1]), previous[2], min(previous[3], word[3]),
                        word[4], max(previous[5], word[5])))
            continue
        if out and re.fullmatch(r"[.,]\d+", word[0]) and re.fullmatch(r"\d+", out[-1][0]) \
                and word[2] - out[-1][4] <= 0.4 * (word[5] - word[3]):
            previous = out.pop()
            word = (previous[0] + word[0], min(previous[1], word[1]), previous[2], min(previous[3], word[3]),
                    word[4], max(previous[5], word[5]))
        out.append(word)
    return out


def _is_header(line: list) -> bool:
    words = {re.sub(r"[^a-z]", "", w[0].lower()) for w in line}
    return len(words & _HEADER_WORDS) >= 2


def _range_of(tokens: list[str]) -> tuple[str, int]:
    """A reference range at the start of `tokens`: its text and how many tokens it took."""
    for size in (3, 2, 1):
        if len(tokens) < size:
            continue
        part = tokens[:size]
        if size == 3 and part[1] not in _DASH:
            continue
        text = " ".join(part) if size == 3 else "".join(part)
        if _RANGE_ONE.match(text.replace(" ", "") if size < 3 else f"{part[0]}-{part[2]}"):
            if size == 1 and not re.search(r"[-–—<>≤≥(]|to", text):
                continue  # a lone number is not a range
            return text, size
    return "", 0


def _starts_range(tokens: list[str], index: int) -> bool:
    """Is the number at `index` the start of a reference range ("3.4 - 20.5", "3.4-20.5", "< 5.2")?"""
    token = tokens[index]
    if re.match(r"^\(?\d+(?:[.,]\d+)?\s*[-–—]\s*\d", token) or (index and tokens[index - 1] in ("<", ">", "<=", ">=")):
        return True
    return index + 2 < len(tokens) and tokens[index + 1] in _DASH and number_parse(tokens[index + 2]) is not None


def _unit_like(token: str) -> bool:
    return bool(re.search(r"[/%]|^(?:fl|pg|g|mg|ml)$", token.lower()))


def row_of(line: list) -> Row | None:
    """The lab row a line holds, or None."""
    line = _merge_split_decimals(_split_glued_names(line))
    tokens = [w[0] for w in line]
    for index, word in enumerate(line):
        if index == 0:
            continue  # a row starts with its test name
        if _RANGE_ONE.match(word[0]) and re.search(r"\d\s*[-–—]\s*\d", word[0]):
            return _unreadable_row(line, index)  # a range ("8-61") before any result
        glued = _GLUED.match(word[0])
        if not glued or number_parse((glued.group(1) or "") + glued.group(2)) is None:
            continue
        if re.match(r"^x?10[*^°º][0-9⁰-⁹]", word[0]):
            continue  # a unit's power of ten ("10*9/L"), not a result
        if _starts_range(tokens, index):
            return _unreadable_row(line, index)
        name_words = line[:index]
        name = " ".join(w[0] for w in name_words).strip(" :.")
        if not re.search(r"[A-Za-z]", name):
            return None
        value = (glued.group(1) or "") + glued.group(2)
        rest_tokens = tokens[index + 1:]
        glued_tail = glued.group(3) or ""
        flag = unit = ""
        if _is_flag(glued_tail):
            flag = glued_tail.strip(".,:;")
        elif glued_tail:
            unit = glued_tail.lstrip(".,")
        if rest_tokens and _is_flag(rest_tokens[0]) and not flag:
            flag = rest_tokens.pop(0).strip(".,:;")
        if not unit and rest_tokens and not _range_of(rest_tokens)[1] and not _is_flag(rest_tokens[0]):
            unit = rest_tokens.pop(0)
        reference, used = _range_of(rest_tokens)
        rest_tokens = rest_tokens[used:]
        if rest_tokens and _is_flag(rest_tokens[-1]) and not flag:
            flag = rest_tokens[-1].strip(".,:;")
        return Row(name=name, value=value, confidence=float(word[1]), value_box=tuple(word[2:6]),
                   name_box=_union(w[2:6] for w in name_words), box=_union(w[2:6] for w in line),
                   unit=unit, range=reference, flag=flag, text=" ".join(tokens),
                   name_confidence=min(float(w[1]) for w in name_words))
    return None


def _unreadable_row(line: list, range_index: int) -> Row | None:
    """A row whose first number is its reference range: its result was not read as a number
    ("A5" for 4.5). The word before the unit (or before the range) is the result, kept as read,
    so the value is reported illegible rather than taken from the range or lost."""
    before = line[:range_index]
    if before and before[-1][0] in ("<", ">", "<=", ">="):
        before = before[:-1]
    unit_at = next((i for i in range(len(before) - 1, 0, -1) if _unit_like(before[i][0])), None)
    value_at = (unit_at - 1) if unit_at else len(before) - 1
    if value_at < 1:
        return None
    name_words, value_word = before[:value_at], before[value_at]
    reference, _ = _range_of([w[0] for w in line[range_index - (len(line[:range_index]) - len(before)):]])
    return Row(name=" ".join(w[0] for w in name_words).strip(" :."), value=value_word[0], confidence=0.0,
               value_box=tuple(value_word[2:6]), name_box=_union(w[2:6] for w in name_words),
               box=_union(w[2:6] for w in line), unit=before[unit_at][0] if unit_at else "", range=reference,
               text=" ".join(w[0] for w in line), name_confidence=min(float(w[1]) for w in name_words))


def page_rows(words: list) -> list[Row]:
    """The lab rows of a page, top to bottom."""
    rows = []
    for line in lines_of(words):
        if _is_header(line):
            continue
        row = row_of(line)
        if row is not None:
            rows.append(row)
    return rows
