"""The KRI engine: group (site, country, study) totals from subject-level input, scores, flags and
accrual masking, computed with numpy over every group at once. Plain arrays in, arrays out: no
Django here, so the same code runs on the database's input, on gsm's published input files and in
the benchmark.

The statistics are those of Gilead's gsm (gsm.core), which the tests reproduce to 1e-9:
- Transform: N and D summed per group; a group whose D is 0 has no metric and is dropped.
- Normal approximation (funnel plot): p = sum N / sum D over the kept groups; unadjusted
  z0 = (M - p) / sqrt(v / D) with v = p (rates) or p (1 - p) (proportions), 0 where p is 0 (or 1);
  over-dispersion phi = mean(z0^2); score z = (M - p) / sqrt(phi v / D), 0 where p is 0 (or 1) or
  phi is 0.
- Poisson: the deviance residual of an intercept-only log-linear model with offset log D, whose
  fit is exactly mu = D sum N / sum D (so no iterative fitting is needed).
- Identity: the score is the metric. Fisher: the two-sided exact p-value of the group against all
  other groups pooled.
- Flags: thresholds sorted ascending cut the score into len(thresholds) + 1 buckets, closed on the
  left (a score equal to a threshold goes to the bucket above it).
- Accrual: score and flag are blanked (NaN) where the numerator, the denominator or their
  difference is below the accrual threshold.
- Funnel bounds (gsm's Analyze_NormalApprox_PredictBounds): p + z sqrt(phi v / D) over 250 steps
  of the denominators' range, for each threshold z and 0; only bounds with a non-negative
  numerator are kept.
- Quality tolerance limits (gsm 1.8.4's QTL workflows): the exact (Clopper-Pearson) binomial
  confidence interval of a study-level proportion, whose lower bound is compared with the limit.
"""

import math
from dataclasses import dataclass, field

import numpy as np

ANALYSES = ("normal_rate", "normal_binary", "poisson", "identity", "fisher")
ACCRUAL_METRICS = ("numerator", "denominator", "difference")
DEFAULT_FLAGS = {4: (-2, -1, 0, 1, 2), 2: (0, 1, 2)}


class KriInputError(ValueError):
    """A KRI that cannot be computed from its input (said in plain words, never a traceback)."""


@dataclass(frozen=True)
class KriMethod:
    """How one KRI turns group totals into scores and flags."""

    analysis: str
    thresholds: tuple[float, ...]
    flags: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    accrual_threshold: float | None = None
    accrual_metric: str | None = None
    score_of: str = "metric"  # identity only: score the metric, or the numerator (gsm's ScoreCol)

    def __post_init__(self):
        if self.analysis not in ANALYSES:
            raise KriInputError(f"unknown analysis {self.analysis!r}; one of {', '.join(ANALYSES)}")
        # gsm sorts the thresholds but keeps the flags in the order given (ParseThreshold bSort).
        object.__setattr__(self, "thresholds", tuple(sorted(_numbers(self.thresholds, "thresholds"))))
        if not self.thresholds:
            raise KriInputError("a KRI needs at least one threshold")
        flags = tuple(_numbers(self.flags, "flags")) or DEFAULT_FLAGS.get(len(self.thresholds), ())
        if len(flags) != len(self.thresholds) + 1:
            raise KriInputError(f"{len(self.thresholds)} thresholds need {len(self.thresholds) + 1} flags, "
                                f"not {len(flags)}")
        object.__setattr__(self, "flags", tuple(int(f) for f in flags))
        object.__setattr__(self, "weights", tuple(_numbers(self.weights, "weights")))
        if self.weights and len(self.weights) != len(flags):
            raise KriInputError(f"{len(flags)} flags need as many risk-score weights, not {len(self.weights)}")
        if self.accrual_metric is not None and self.accrual_metric not in ACCRUAL_METRICS:
            raise KriInputError(f"unknown accrual metric {self.accrual_metric!r}; one of {', '.join(ACCRUAL_METRICS)}")
        if self.accrual_threshold is not None:
            object.__setattr__(self, "accrual_threshold", _numbers([self.accrual_threshold], "accrual threshold")[0])
        if self.score_of not in ("metric", "numerator"):
            raise KriInputError(f"score_of is metric or numerator, not {self.score_of!r}")


def _numbers(values, what: str) -> list[float]:
    """Numbers from a definition (JSON written by people): a clear error for anything else."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise KriInputError(f"{what} must be a list of numbers, not {values!r}")
    out = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise KriInputError(f"{what}: {value!r} is not a number") from None
        if isinstance(value, bool) or math.isnan(number):
            raise KriInputError(f"{what}: {value!r} is not a number")
        out.append(number)
    return out


@dataclass
class KriResult:
    """One row per kept group, in the order of `groups` (groups with D = 0 are left out and listed
    in `dropped`). `score`, `flag` and `weight` are NaN where accrual masks them."""

    groups: np.ndarray
    numerator: np.ndarray
    denominator: np.ndarray
    metric: np.ndarray
    score: np.ndarray
    flag: np.ndarray
    weight: np.ndarray
    overall: float = math.nan  # p, the study-wide metric
    factor: float = math.nan  # phi, the over-dispersion factor (normal approximation)
    dropped: list = field(default_factory=list)

    def as_rows(self) -> list[dict]:
        return [{"group": g, "numerator": float(n), "denominator": float(d), "metric": float(m),
                 "score": None if math.isnan(s) else float(s), "flag": None if math.isnan(f) else int(f)}
                for g, n, d, m, s, f in zip(self.groups, self.numerator, self.denominator, self.metric, self.score,
                                            self.flag, strict=True)]


def group_totals(codes: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum of `values` per group code (0 .. n_groups - 1): one pass, no Python loop."""
    return np.bincount(codes, weights=np.asarray(values, dtype="float64"), minlength=n_groups)


def kri_from_subjects(*, codes: np.ndarray, groups, numerator: np.ndarray, denominator: np.ndarray,
                      method: KriMethod) -> KriResult:
    """Subject-level input (a group code, N and D per subject) to scored, flagged groups."""
    if len(codes) == 0:
        raise KriInputError("no subjects")
    if np.isnan(numerator).any() or np.isnan(denominator).any():
        raise KriInputError("a subject has no numerator or denominator value")
    n_groups = len(groups)
    return kri_from_groups(groups=np.asarray(groups, dtype=object),
                           numerator=group_totals(codes, numerator, n_groups),
                           denominator=group_totals(codes, denominator, n_groups), method=method)


def kri_from_groups(*, groups, numerator, denominator, method: KriMethod) -> KriResult:
    groups = np.asarray(groups, dtype=object)
    numerator = np.asarray(numerator, dtype="float64")
    denominator = np.asarray(denominator, dtype="float64")
    if np.isnan(denominator).any():
        raise KriInputError("a group has no denominator: " + ", ".join(map(str, groups[np.isnan(denominator)][:5])))
    kept = denominator != 0
    if not kept.any():
        raise KriInputError("every denominator is 0")
    dropped = [str(g) for g in groups[~kept]]
    groups, numerator, denominator = groups[kept], numerator[kept], denominator[kept]
    metric = numerator / denominator
    overall, factor = float(numerator.sum() / denominator.sum()), math.nan
    if method.analysis in ("normal_rate", "normal_binary"):
        score, factor = _normal_approximation(metric, denominator, overall, binary=method.analysis == "normal_binary")
    elif method.analysis == "poisson":
        score = _poisson_deviance_residuals(numerator, denominator, overall)
    elif method.analysis == "fisher":
        score = _fisher_p_values(numerator, denominator)
    else:
        score = numerator.copy() if method.score_of == "numerator" else metric.copy()
    flag = kri_flag(score, method)
    masked = _accrual_masked(numerator, denominator, method)
    score[masked] = np.nan
    flag[masked] = np.nan
    weight = np.full(len(flag), np.nan)
    if method.weights:
        known = ~np.isnan(flag)
        positions = np.searchsorted(method.thresholds, score[known], side="right")
        weight[known] = np.asarray(method.weights, dtype="float64")[positions]
    return KriResult(groups=groups, numerator=numerator, denominator=denominator, metric=metric, score=score,
                     flag=flag, weight=weight, overall=overall, factor=factor, dropped=dropped)


def _normal_approximation(metric, denominator, p, *, binary: bool) -> tuple[np.ndarray, float]:
    variance = p * (1 - p) if binary else p
    degenerate = p == 0 or (binary and p == 1)
    if degenerate:
        return np.zeros(len(metric)), 0.0
    z0 = (metric - p) / np.sqrt(variance / denominator)
    phi = float(np.mean(z0**2))
    if phi == 0:
        return np.zeros(len(metric)), phi
    return (metric - p) / np.sqrt(phi * variance / denominator), phi


def _poisson_deviance_residuals(numerator, denominator, rate) -> np.ndarray:
    expected = denominator * rate
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(numerator > 0, numerator * np.log(numerator / expected), 0.0)
    deviance = np.maximum(2 * (term - (numerator - expected)), 0.0)
    return np.sign(numerator - expected) * np.sqrt(deviance)


def _log_hypergeometric(x, n_success, n_failure, n_drawn):
    """log P(X = x) for a hypergeometric X (vectorised over x)."""
    lgamma = np.vectorize(math.lgamma)

    def log_choose(n, k):
        return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)

    return log_choose(n_success, x) + log_choose(n_failure, n_drawn - x) - log_choose(n_success + n_failure, n_drawn)


def _fisher_p_values(numerator, denominator) -> np.ndarray:
    """Two-sided Fisher exact test of each group against the others pooled (as R's fisher.test:
    the tables no more likely than the observed one, with a relative tolerance of 1e-7)."""
    total_n, total_d = numerator.sum(), denominator.sum()
    out = np.empty(len(numerator))
    for i, (n, d) in enumerate(zip(numerator, denominator, strict=True)):
        successes, failures, drawn = total_n, total_d - total_n, d
        low, high = max(0, drawn - failures), min(drawn, successes)
        support = np.arange(low, high + 1)
        log_p = _log_hypergeometric(support, successes, failures, drawn)
        observed = log_p[int(n - low)]
        out[i] = min(1.0, float(np.exp(log_p[log_p <= observed + np.log1p(1e-7)]).sum()))
    return out


def kri_flag(score: np.ndarray, method: KriMethod) -> np.ndarray:
    """The flag of each score: the bucket of the sorted thresholds it falls in (closed on the left)."""
    positions = np.searchsorted(np.asarray(method.thresholds), score, side="right")
    flag = np.asarray(method.flags, dtype="float64")[np.minimum(positions, len(method.flags) - 1)]
    flag[np.isnan(score)] = np.nan
    return flag


def _accrual_masked(numerator, denominator, method: KriMethod) -> np.ndarray:
    if method.accrual_threshold is None or method.accrual_metric is None:
        return np.zeros(len(numerator), dtype=bool)
    volume = {"numerator": numerator, "denominator": denominator,
              "difference": denominator - numerator}[method.accrual_metric]
    return volume < method.accrual_threshold


def site_risk_score(flag_weights: np.ndarray, max_weights: np.ndarray) -> np.ndarray:
    """Site risk score per site (rows) over KRIs (columns): 100 x sum of the weights of its flags
    / sum of the maximum weights of the KRIs it has a result for (masked KRIs count in neither)."""
    known = ~np.isnan(flag_weights)
    top = np.where(known, max_weights[np.newaxis, :], 0.0).sum(axis=1)
    got = np.where(known, flag_weights, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(top > 0, 100.0 * got / top, 0.0)


def funnel_bounds(*, denominator: np.ndarray, overall: float, factor: float, binary: bool,
                  thresholds=(-3, -2, 2, 3), step: float | None = None) -> dict[str, np.ndarray]:
    """The funnel plot's bounds over the range of the kept groups' denominators, from the KRI's
    study-wide metric p (`overall`) and over-dispersion phi (`factor`), as gsm draws them:
    metric = p + z sqrt(phi v / D) for each threshold z and for 0 (the expected metric), on a
    grid of 250 steps from min D - step to max D + step (R's seq), D > 0 and numerator >= 0."""
    denominator = np.asarray(denominator, dtype="float64")
    low, high = float(denominator.min()), float(denominator.max())
    if step is None:
        step = (high - low) / 250 if high != low else 1.0
    count = int(math.floor((high + step - (low - step)) / step + 1e-10))
    grid = (low - step) + np.arange(count + 1) * step
    levels = list(dict.fromkeys([*(float(t) for t in thresholds), 0.0]))
    z = np.repeat(np.asarray(levels), len(grid))
    d = np.tile(grid, len(levels))
    keep = d > 0
    z, d = z[keep], d[keep]
    variance = overall * (1 - overall) if binary else overall
    metric = overall + z * np.sqrt(factor * variance / d)
    numerator = metric * d
    keep = numerator >= 0
    return {"threshold": z[keep], "denominator": d[keep], "metric": metric[keep], "numerator": numerator[keep]}


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for numerator in (even, odd):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function (the binomial's tails in closed form:
    P(X >= k) = I_p(k, n - k + 1))."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _beta_continued_fraction(b, a, 1 - x) / b


def _bisect(function, target: float, increasing: bool) -> float:
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if (function(middle) < target) == increasing:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def binomial_interval(x: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) confidence interval of x successes in n, as R's binom.test:
    the lower bound L solves P(X >= x | L) = alpha / 2 and the upper bound U solves
    P(X <= x | U) = alpha / 2, found by bisection on the binomial tails (incomplete beta)."""
    x, n = int(x), int(n)
    if n <= 0 or not 0 <= x <= n:
        raise KriInputError(f"no binomial interval for {x} of {n}")
    alpha = (1 - level) / 2
    # P(X >= x | p) = I_p(x, n - x + 1) grows with p; P(X <= x | p) = I_(1-p)(n - x, x + 1) falls.
    lower = 0.0 if x == 0 else _bisect(lambda p: regularized_beta(x, n - x + 1, p), alpha, increasing=True)
    upper = 1.0 if x == n else _bisect(lambda p: regularized_beta(n - x, x + 1, 1 - p), alpha, increasing=False)
    return lower, upper
