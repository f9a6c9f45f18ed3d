"""The expression language of study-specific edit checks: a small, safe subset of Python's
expression syntax over the study's items, evaluated over whole columns at once.

    [VS.SYSBP] > [VS.DIABP]
    [DM.SEX] != "F" or not is_missing([LB.HCG])
    days_between([AE.AESTDAT], [AE.AEENDAT]) >= 0 and abs([VS.WEIGHT] - [VS.WEIGHT_SCR]) < 20

`[OID]` names an item; its value is a number (integer and float items), a date (date items) or
text. Operators: arithmetic (+ - * /), comparisons (chained too), `in` / `not in` a literal
list, `and`, `or`, `not`. Functions: abs, min, max, is_missing, days_between(earlier, later).

Missing values follow SQL's three-valued logic: a comparison with a missing value is unknown,
`unknown and False` is False, `unknown or True` is True. The analyzer only reports the rows
where the expression is False; unknown is not a discrepancy (is_missing() asks for one).

The text is parsed with Python's `ast` and only the nodes listed here are accepted: no names
other than items, no attribute access, subscripts, calls other than the functions above,
lambdas or comprehensions. Nothing is ever passed to eval()."""

import ast
import operator
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MAX_LENGTH = 2000
MAX_NODES = 300
VARIABLE = re.compile(r"\[\s*([A-Za-z][A-Za-z0-9_.\-]{0,159})\s*\]")
# A string literal (left as it is: brackets in it are text), an item, or any other bracket
_TOKENS = re.compile(r"""(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
                     rf"|(?P<item>{VARIABLE.pattern})|(?P<bracket>[\[\]])")


class ExpressionError(ValueError):
    """An expression that is not valid: the message says where and why."""


_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
FUNCTIONS = {"abs": (1, 1), "min": (2, 8), "max": (2, 8), "is_missing": (1, 1), "days_between": (2, 2)}


@dataclass
class Expression:
    text: str
    tree: ast.Expression
    names: dict[str, str] = field(default_factory=dict)  # placeholder -> item OID

    @property
    def variables(self) -> list[str]:
        """The item OIDs the expression reads, in order of first use."""
        return list(dict.fromkeys(self.names.values()))

    def evaluate(self, frame: pd.DataFrame) -> pd.Series:
        """A nullable boolean per row of `frame` (a column per item OID): True, False or <NA>."""
        result = _Evaluator(frame, self.names).visit(self.tree.body)
        return _as_boolean(result, frame.index)


def parse(text: str) -> Expression:
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("The expression is empty.")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"The expression is longer than {MAX_LENGTH} characters.")
    names: dict[str, str] = {}
    prefix = "_item"
    while prefix in text:  # a placeholder the text itself cannot name
        prefix = "_" + prefix

    def placeholder(match: re.Match) -> str:
        if match.group("string") is not None:
            return match.group("string")
        if match.group("bracket") is not None:
            raise ExpressionError("Items are written [FORM.ITEM]; a bracket here does not name one.")
        oid = VARIABLE.fullmatch(match.group("item")).group(1)
        name = next((n for n, o in names.items() if o == oid), f"{prefix}{len(names)}")
        names[name] = oid
        return f" {name} "  # spaced: "[A.X][B.Y]" is two names, not one

    source = _TOKENS.sub(placeholder, text)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"Not a valid expression ({error.msg}).") from None
    except (ValueError, RecursionError, MemoryError):  # null bytes; nesting too deep for the parser
        raise ExpressionError("Not a valid expression (nested too deeply, or not text).") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ExpressionError(f"The expression is too long (over {MAX_NODES} parts).")
    callees = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
    choices = {id(c) for n in nodes if isinstance(n, ast.Compare)
               for op, c in zip(n.ops, n.comparators, strict=True) if isinstance(op, ast.In | ast.NotIn)}
    for node in nodes:
        _check_node(node, names, callees=callees, choices=choices)
    return Expression(text=text, tree=tree, names=names)


_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp,
            ast.Compare, ast.In, ast.NotIn, ast.Call, ast.Name, ast.Load, ast.Constant, ast.List, ast.Tuple,
            *_COMPARE, *_ARITHMETIC)


def _check_node(node: ast.AST, names: dict[str, str], *, callees: set[int], choices: set[int]) -> None:
    if not isinstance(node, _ALLOWED):
        raise ExpressionError(f"{_describe(node)} is not allowed in an edit check.")
    if isinstance(node, ast.Name):
        if node.id in FUNCTIONS and id(node) not in callees:
            raise ExpressionError(f"{node.id} is a function: call it, e.g. {node.id}(...).")
        if node.id not in names and node.id not in FUNCTIONS and node.id not in ("True", "False"):
            raise ExpressionError(f"Unknown name {node.id!r}: write items as [FORM.ITEM].")
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, int | float | str | bool):
            raise ExpressionError(f"The constant {node.value!r} is not allowed.")
        if isinstance(node.value, int) and not isinstance(node.value, bool) and abs(node.value) > 2 ** 53:
            raise ExpressionError("A number in an edit check cannot be this large.")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ExpressionError(f"Only these functions can be called: {', '.join(FUNCTIONS)}.")
        if node.keywords:
            raise ExpressionError(f"{node.func.id}() takes no keyword arguments.")
        low, high = FUNCTIONS[node.func.id]
        if not low <= len(node.args) <= high:
            raise ExpressionError(f"{node.func.id}() takes {low if low == high else f'{low} to {high}'} "
                                  f"argument{'s' if high > 1 else ''}.")
    if isinstance(node, ast.Compare):
        for n, (op, right) in enumerate(zip(node.ops, node.comparators, strict=True)):
            if isinstance(op, ast.In | ast.NotIn) and not isinstance(right, ast.List | ast.Tuple):
                raise ExpressionError("`in` needs a literal list, e.g. [AE.AESEV] in (\"MILD\", \"MODERATE\").")
            if isinstance(op, ast.In | ast.NotIn) and n < len(node.ops) - 1:
                raise ExpressionError("`in` (a literal list) must end a comparison.")
    if isinstance(node, ast.List | ast.Tuple):
        if id(node) not in choices:
            raise ExpressionError("A list can only follow `in`, e.g. [AE.AESEV] in (\"MILD\", \"MODERATE\").")
        if not all(_is_literal(e) for e in node.elts):
            raise ExpressionError("A list may hold only constants.")


def _is_literal(node: ast.AST) -> bool:
    """A constant, or a signed number (-1 is a unary minus on 1)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, int | float) \
            and not isinstance(node.operand.value, bool)
    return isinstance(node, ast.Constant)


def _literal(node: ast.AST):
    if isinstance(node, ast.UnaryOp):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    return node.value


_DESCRIPTIONS = {
    ast.Attribute: "Attribute access", ast.Subscript: "Subscript", ast.Lambda: "A lambda",
    ast.IfExp: "A conditional (x if c else y)", ast.Starred: "Unpacking", ast.NamedExpr: "An assignment (:=)",
    ast.JoinedStr: "An f-string", ast.FormattedValue: "An f-string", ast.ListComp: "A comprehension",
    ast.SetComp: "A comprehension", ast.DictComp: "A comprehension", ast.GeneratorExp: "A comprehension",
    ast.Dict: "A dict", ast.Set: "A set", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.Pow: "The ** operator", ast.FloorDiv: "The // operator", ast.Mod: "The % operator",
    ast.MatMult: "The @ operator", ast.LShift: "The << operator", ast.RShift: "The >> operator",
    ast.BitAnd: "The & operator (write and)", ast.BitOr: "The | operator (write or)",
    ast.BitXor: "The ^ operator", ast.Invert: "The ~ operator (write not)",
    ast.Is: "`is` (write ==)", ast.IsNot: "`is not` (write !=)",
}


def _describe(node: ast.AST) -> str:
    return _DESCRIPTIONS.get(type(node), type(node).__name__)


def _is_text(series: pd.Series) -> bool:
    """Text: object columns, and pandas' string dtypes (pandas 3 reads text as `str`)."""
    return series.dtype == object or isinstance(series.dtype, pd.StringDtype)


def _missing(value) -> pd.Series | bool:
    if isinstance(value, pd.Series):
        missing = value.isna()
        if _is_text(value):
            missing |= (value.astype(object).astype(str).str.strip().eq("") & value.notna()).astype(bool)
        return missing.astype(bool)
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _as_boolean(value, index: pd.Index) -> pd.Series:
    if isinstance(value, pd.Series):
        if value.dtype == "boolean":
            return value
        if value.dtype == bool:
            return value.astype("boolean")
        raise ExpressionError("The expression must be a condition (true or false), not a value.")
    if isinstance(value, bool | np.bool_):
        return pd.Series(bool(value), index=index, dtype="boolean")
    raise ExpressionError("The expression must be a condition (true or false), not a value.")


def _numeric(value):
    if isinstance(value, pd.Series):
        if pd.api.types.is_datetime64_any_dtype(value):
            raise ExpressionError("Dates cannot be used in arithmetic: use days_between().")
        if value.dtype == "boolean" or value.dtype == bool:
            raise ExpressionError("A condition cannot be used as a number.")
        return pd.to_numeric(value, errors="coerce").astype(float)
    if isinstance(value, bool):
        raise ExpressionError("A condition cannot be used as a number.")
    if isinstance(value, int | float):
        return float(value)
    raise ExpressionError(f"{value!r} is not a number.")


class _Evaluator(ast.NodeVisitor):
    def __init__(self, frame: pd.DataFrame, names: dict[str, str]):
        self.frame = frame
        self.names = names

    def generic_visit(self, node):
        raise ExpressionError(f"{_describe(node)} is not allowed in an edit check.")

    def visit_Constant(self, node):
        return node.value

    def visit_Name(self, node):
        if node.id in ("True", "False"):
            return node.id == "True"
        oid = self.names[node.id]
        if oid not in self.frame.columns:
            return pd.Series(np.nan, index=self.frame.index, dtype=object)  # no value for this item at all
        return self.frame[oid]

    def visit_BoolOp(self, node):
        values = [_as_boolean(self.visit(v), self.frame.index) for v in node.values]
        result = values[0]
        for value in values[1:]:
            result = (result & value) if isinstance(node.op, ast.And) else (result | value)  # Kleene logic
        return result

    def visit_UnaryOp(self, node):
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return ~_as_boolean(operand, self.frame.index)
        number = _numeric(operand)
        return -number if isinstance(node.op, ast.USub) else number

    def visit_BinOp(self, node):
        left, right = _numeric(self.visit(node.left)), _numeric(self.visit(node.right))
        if isinstance(node.op, ast.Div):
            right = right.where(right != 0) if isinstance(right, pd.Series) else (np.nan if right == 0 else right)
        result = _ARITHMETIC[type(node.op)](left, right)
        return result if isinstance(result, pd.Series) else pd.Series(result, index=self.frame.index, dtype=float)

    def visit_Compare(self, node):
        left = self.visit(node.left)
        result = None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                step = self._member(left, [_literal(e) for e in comparator.elts], negate=isinstance(op, ast.NotIn))
                right = None
            else:
                right = self.visit(comparator)
                step = self._compare(_COMPARE[type(op)], left, right)
            result = step if result is None else (result & step)
            left = right
        return result

    def _member(self, value, choices: list, *, negate: bool) -> pd.Series:
        series = self._series(value)
        if _is_text(series):
            texts = {str(c).strip().lower() for c in choices}
            found = series.astype(object).astype(str).str.strip().str.lower().isin(texts)
        else:
            found = series.isin([c for c in choices if not isinstance(c, str)])
        out = pd.Series(found, index=self.frame.index, dtype="boolean")
        out[_missing(series)] = pd.NA
        return ~out if negate else out

    def _compare(self, op, left, right) -> pd.Series:
        left, right = self._series(left), self._series(right)
        left, right = _comparable(left, right)
        missing = _missing(left) | _missing(right)
        out = pd.Series(pd.NA, index=self.frame.index, dtype="boolean")
        present = ~missing
        if present.any():
            try:
                out[present] = op(left[present], right[present]).astype(bool)
            except TypeError as error:
                raise ExpressionError(f"Cannot compare these values ({error}).") from None
        return out

    def _series(self, value) -> pd.Series:
        if isinstance(value, pd.Series):
            return value
        return pd.Series([value] * len(self.frame.index), index=self.frame.index,
                         dtype=object if isinstance(value, str) else None)

    def visit_Call(self, node):
        name = node.func.id
        args = [self.visit(a) for a in node.args]
        if name == "is_missing":
            missing = _missing(self._series(args[0]))
            return pd.Series(missing, index=self.frame.index).astype("boolean")
        if name == "abs":
            return _numeric(self._series(args[0])).abs()
        if name in ("min", "max"):
            numbers = pd.concat([_numeric(self._series(a)) for a in args], axis=1)
            return numbers.min(axis=1, skipna=False) if name == "min" else numbers.max(axis=1, skipna=False)
        earlier, later = (pd.to_datetime(self._series(a), errors="coerce") for a in args)
        return (later - earlier).dt.days.astype(float)


def _comparable(left: pd.Series, right: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Numbers compare as numbers and dates as dates, even where one side is a literal."""
    def kind(s: pd.Series) -> str:
        if pd.api.types.is_datetime64_any_dtype(s):
            return "date"
        if pd.api.types.is_numeric_dtype(s) and s.dtype != "boolean" and s.dtype != bool:
            return "number"
        return "other"

    kinds = {kind(left), kind(right)}
    if "date" in kinds:
        return pd.to_datetime(left, errors="coerce"), pd.to_datetime(right, errors="coerce")
    if "number" in kinds:
        return pd.to_numeric(left, errors="coerce"), pd.to_numeric(right, errors="coerce")
    return left, right
