"""One findings model for every study: a claim of a paper checked on a run's tables, with an
estimate, an interval (and which one), the number of units behind it, the threshold it is
compared with, the control it was tested against, and a verdict in {holds, does not hold,
undetermined} ("not tested" where the run cannot check it).

The verdict comes from the interval, never from the point estimate alone
(:func:`decide`): a claim "estimate < threshold" holds when the whole interval lies below the
threshold, does not hold when the whole interval lies at or above it, and is *undetermined*
when the interval straddles it (more repeats, images or seeds would be needed; the power
helper :func:`repeats_needed` says how many).

Intervals (each :class:`Finding` names its own in ``interval``):

- :func:`bootstrap` / :func:`bootstrap_mean`: percentile bootstrap over units (repeats of a
  perturbation, evaluation images, training seeds, initialisations), seeded and vectorised
  (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13, the percentile
  interval); the resamples of several tables that share their units can be drawn jointly
  (the same resampled repeats / seeds for every layer), so a statistic of several means, such
  as the worst of several layers, gets one interval.
- :func:`t_interval`: Student's t interval of a mean over few units (e.g. 3 training seeds,
  where a bootstrap has only 10 distinct resamples and its interval is too narrow).

The table every report writes is :func:`findings_frame` (:data:`FINDING_COLUMNS`, the report's
``tables/findings.csv``); :func:`findings_markdown` is the block a report opens with, the
interval next to every number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "VERDICTS", "DIRECTIONS", "FINDING_COLUMNS", "VERDICT_COLORS", "Finding", "decide", "assess",
    "resample_indices", "resample_counts", "bootstrap", "bootstrap_mean", "percentile_interval", "t_interval", "repeats_needed",
    "format_interval", "findings_frame", "findings_markdown",
]  # fmt: skip

#: Verdicts, in report order. "undetermined": the interval straddles the threshold; "not tested":
#: the run has no data for the claim.
VERDICTS = ("holds", "does not hold", "undetermined", "not tested")
#: ``direction`` of a claim: ``"<"`` (the claim is "estimate below the threshold"), ``">"`` (above).
DIRECTIONS = ("<", ">")
#: Columns of every study's ``findings.csv``, one row per finding.
FINDING_COLUMNS = ["claim", "quantity", "estimate", "lo", "hi", "interval", "n", "threshold", "direction",
                   "verdict", "control", "found", "source"]  # fmt: skip
#: Verdict colours of the reports and the index page (text, not emoji).
VERDICT_COLORS = {"holds": "#1a7f37", "does not hold": "#cf222e", "undetermined": "#9a6700", "not tested": "#6e7781"}


@dataclass(frozen=True)
class Finding:
    """One claim checked on a run's tables.

    Attributes:
        claim: the paper's claim, in words.
        found: what this run found, in words (the numbers of every layer / control behind it).
        verdict: one of :data:`VERDICTS`; made by :func:`decide` from ``lo, hi, threshold,
            direction`` (:func:`assess` builds a finding that way).
        source: the table(s) the numbers come from, relative to the run's results folder.
        quantity: what ``estimate`` is, with its unit (e.g. "relative top-1 drop of the worst
            top layer, fraction of the clean accuracy").
        estimate: the point estimate (NaN when not tested).
        lo, hi: the interval (NaN when not tested; ``lo == hi == estimate`` for a quantity
            without sampling error, e.g. an exact count).
        interval: which interval, e.g. "95% percentile bootstrap over repeats (2000
            resamples)", "95% t interval over seeds", "exact".
        n: units behind the interval (repeats, images, seeds, initialisations); 0 if none.
        threshold: the value the claim compares the estimate with.
        direction: ``"<"`` (the claim: estimate below threshold) or ``">"`` (above).
        control: what the estimate was tested against where the claim needs a control
            (a network that learned nothing would otherwise satisfy it), "" where none.
    """

    claim: str
    found: str
    verdict: str
    source: str
    quantity: str = ""
    estimate: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    interval: str = ""
    n: int = 0
    threshold: float = math.nan
    direction: str = ""
    control: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"Finding verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.direction not in ("", *DIRECTIONS):
            raise ValueError(f"Finding direction must be '<' or '>' (or '' when not tested), got {self.direction!r}")

    @property
    def summary(self) -> str:
        """``estimate [lo, hi], n = ...`` and the comparison, e.g. ``0.352 [0.30, 0.41], n = 20
        repeats; threshold < 0.2``; empty when nothing was estimated."""
        if not np.isfinite(self.estimate):
            return ""
        n = f", n = {self.n}" if self.n else ""
        thr = f"; claim: {self.direction} {self.threshold:.3g}" if self.direction and np.isfinite(self.threshold) else ""
        return f"{format_interval(self.estimate, self.lo, self.hi)}{n}{thr}"


def decide(lo: float, hi: float, threshold: float, direction: str) -> str:
    """The verdict of a claim from its interval.

    ``direction "<"`` (the claim: the quantity is below ``threshold``): holds when
    ``hi < threshold``, does not hold when ``lo >= threshold``, undetermined when the interval
    straddles the threshold. ``">"``: holds when ``lo > threshold``, does not hold when
    ``hi <= threshold``, else undetermined. A NaN bound or threshold: "not tested".

    Raises:
        ValueError: ``direction`` not ``"<"`` or ``">"``, or ``lo > hi``.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be '<' or '>', got {direction!r}")
    if any(v != v for v in (lo, hi, threshold)):
        return "not tested"
    if lo > hi:
        raise ValueError(f"interval lower bound {lo} above its upper bound {hi}")
    if direction == "<":
        return "holds" if hi < threshold else "does not hold" if lo >= threshold else "undetermined"
    return "holds" if lo > threshold else "does not hold" if hi <= threshold else "undetermined"


def assess(
    claim: str, found: str, source: str, *, quantity: str, estimate: float, lo: float, hi: float, interval: str,
    n: int, threshold: float, direction: str, control: str = "",
) -> Finding:  # fmt: skip
    """A :class:`Finding` whose verdict is :func:`decide` of its interval and threshold."""
    return Finding(claim, found, decide(float(lo), float(hi), float(threshold), direction), source,
                   quantity=quantity, estimate=float(estimate), lo=float(lo), hi=float(hi), interval=interval,
                   n=int(n), threshold=float(threshold), direction=direction, control=control)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# intervals


def percentile_interval(replicates: np.ndarray, ci: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``(1 - ci) / 2`` and ``(1 + ci) / 2`` quantiles of bootstrap replicates along
    ``axis`` (numpy's linear interpolation), NaN replicates ignored (all NaN: NaN).

    Raises:
        ValueError: ``ci`` not in (0, 1).
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    import warnings

    r = np.asarray(replicates, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as documented
        lo, hi = np.nanquantile(r, [(1 - ci) / 2, (1 + ci) / 2], axis=axis)
    return lo, hi


def resample_indices(n: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(n_boot, n) indices of ``n`` units drawn with replacement, ``n_boot`` times, from
    ``numpy.random.default_rng(seed)``: the resamples of :func:`bootstrap` and
    :func:`bootstrap_mean` (the same seed gives the same resamples in both).

    Raises:
        ValueError: ``n < 1`` or ``n_boot < 1``.
    """
    if n < 1:
        raise ValueError("bootstrap: no units to resample")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(int(n_boot), int(n)))


def resample_counts(n: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(n_boot, n) int: how often each unit is drawn in each resample of
    :func:`resample_indices` (rows sum to ``n``). A mean over resampled units is then one
    matrix product, ``counts @ x / n``, whatever the number of units."""
    idx = resample_indices(n, n_boot, seed)
    counts = np.zeros((idx.shape[0], n), dtype=np.int64)
    np.add.at(counts, (np.arange(idx.shape[0])[:, None], idx), 1)
    return counts


def bootstrap(
    data: Sequence[np.ndarray] | np.ndarray,
    statistic: Callable[..., np.ndarray],
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    axis: int = -1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Percentile bootstrap of ``statistic`` over the units on ``axis``, seeded, vectorised.

    The units (repeats, images, seeds) are resampled with replacement ``n_boot`` times
    (:func:`resample_indices`); every array in ``data`` is resampled with the *same* indices
    (paired units: the same seeds for a trained run and its controls, the same images for a
    clean and an adversarial curve, the same repeat indices for every layer).
    ``statistic(*arrays)`` gets arrays whose ``axis`` holds the units and must reduce that
    axis; it is called once on the data (the estimate) and once on a stack of all resamples
    (a new leading axis of length ``n_boot``), so it must broadcast over leading axes and
    ``axis`` must be negative (``x.mean(-1)``). Source: Efron & Tibshirani 1993, *An
    Introduction to the Bootstrap*, ch. 13 (the percentile interval).

    Args:
        data: one array or a sequence of arrays with the same number of units on ``axis``.
        statistic: vectorised function of the arrays, reducing ``axis``.
        n_boot: resamples (>= 1).
        ci: coverage of the interval, in (0, 1).
        seed: seed of ``numpy.random.default_rng``: the same seed gives the same interval.
        axis: the units' axis of every array, negative.

    Returns:
        ``(estimate, lo, hi, replicates)``: the statistic of the data, the interval bounds
        (NaN replicates ignored) and the ``(n_boot, ...)`` replicates.

    Raises:
        ValueError: no data or units, arrays with different numbers of units, ``n_boot < 1``,
            ``axis >= 0``.
    """
    if axis >= 0:
        raise ValueError(f"bootstrap: give the units' axis as a negative index, got {axis}")
    arrays = [np.asarray(data, dtype=float)] if isinstance(data, np.ndarray) else [np.asarray(a, dtype=float) for a in data]
    if not arrays:
        raise ValueError("bootstrap: no data")
    sizes = {a.shape[axis] for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"bootstrap: arrays with different numbers of units on axis {axis}: {sorted(sizes)}")
    idx = resample_indices(sizes.pop(), n_boot, seed)
    resampled = [np.moveaxis(np.moveaxis(np.moveaxis(a, axis, -1)[..., idx], -2, 0), -1, axis) for a in arrays]
    estimate = np.asarray(statistic(*arrays), dtype=float)
    reps = np.asarray(statistic(*resampled), dtype=float)
    lo, hi = percentile_interval(reps, ci, axis=0)
    return estimate, lo, hi, reps


def bootstrap_mean(
    values: np.ndarray, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0, axis: int = -1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over ``axis`` and its percentile bootstrap interval, for every position of the
    other axes at once (e.g. (layers, levels, repeats) -> (layers, levels)), with the
    resamples of :func:`bootstrap` (same seed, same resamples) computed as one matrix
    product (:func:`resample_counts`). A single unit gives ``lo == hi == mean``; NaN values
    propagate to their position.

    Returns:
        ``(mean, lo, hi)``, arrays of the other axes' shape.
    """
    v = np.moveaxis(np.asarray(values, dtype=float), axis, -1)
    n = v.shape[-1]
    counts = resample_counts(n, n_boot, seed)
    reps = np.moveaxis(v @ counts.T.astype(float), -1, 0) / n
    lo, hi = percentile_interval(reps, ci, axis=0)
    return v.mean(-1), lo, hi


def t_interval(values: Sequence[float], ci: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student t interval ``mean +/- t_{(1+ci)/2, n-1} s / sqrt(n)``
    (s with ddof = 1). For few units (e.g. 3 training seeds), where the percentile
    bootstrap is too narrow. NaN values are dropped; fewer than 2 left: ``(mean, nan, nan)``.

    Raises:
        ValueError: ``ci`` not in (0, 1).
    """
    from scipy.stats import t

    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    half = float(t.ppf((1 + ci) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def repeats_needed(values: Sequence[float], threshold: float, *, ci: float = 0.95, max_n: int = 100_000) -> float:
    """The power helper: how many units (repeats, seeds) make the interval of the mean exclude
    ``threshold``, if the mean and the s.d. stay what ``values`` show.

    The smallest ``n >= 2`` with ``t_{(1+ci)/2, n-1} * s / sqrt(n) < |mean - threshold|``
    (the t interval of :func:`t_interval` just clear of the threshold; s with ddof = 1). A
    planning figure, not a guarantee: a rerun with ``n`` units has a fresh mean and s.d.
    (with ``n`` the interval excludes the threshold about half of the time when the true
    mean is the one seen here; the normal-approximation sample size for 80% power is
    ``((z_{(1+ci)/2} + z_{0.8}) s / |mean - threshold|)^2``, about 2x as many).

    Returns:
        ``n`` as a float; ``1.0`` when every value is the same and differs from the threshold
        (no sampling error); ``inf`` when the mean equals the threshold, or no ``n <= max_n``
        is enough; NaN for fewer than 2 values.
    """
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return math.nan
    gap, s = abs(float(v.mean()) - float(threshold)), float(v.std(ddof=1))
    if gap == 0:
        return math.inf
    if s == 0:
        return 1.0
    n = np.arange(2, max_n + 1)
    ok = t.ppf((1 + ci) / 2, n - 1) * s / np.sqrt(n) < gap
    return float(n[np.argmax(ok)]) if ok.any() else math.inf


# ---------------------------------------------------------------------------------------------
# tables and text


def format_interval(estimate: float, lo: float, hi: float, fmt: str = "{:.3f}") -> str:
    """``0.352 [0.301, 0.407]``; the estimate alone when the interval is NaN or a point."""
    e = fmt.format(estimate)
    if lo != lo or hi != hi or (lo == hi == estimate):
        return e
    return f"{e} [{fmt.format(lo)}, {fmt.format(hi)}]"


def findings_frame(findings: Sequence[Finding]):
    """The findings as a table, :data:`FINDING_COLUMNS` (a report's ``tables/findings.csv``)."""
    import pandas as pd

    return pd.DataFrame([asdict(f) for f in findings], columns=FINDING_COLUMNS)


def findings_markdown(findings: Sequence[Finding], title: str = "Findings") -> str:
    """The block a report opens with: one entry per finding, the verdict first (coloured),
    then the claim, the estimate with its interval and n, the threshold and the control, this
    run's numbers, and the source table."""
    lines = [f"## {title}", ""]
    if not findings:
        lines.append("_No finding could be computed from this run's tables._")
    one_source = len({f.source for f in findings}) == 1  # then named once, below the list
    for f in findings:
        color = VERDICT_COLORS.get(f.verdict, "#24292f")
        head = f'- <strong style="color:{color}">{f.verdict}</strong> -- *{f.claim}*'
        if f.summary:
            what = f"{f.quantity}: " if f.quantity else ""
            head += f"  \n  **{what}{f.summary}** <small>({f.interval})</small>" if f.interval else f"  \n  **{what}{f.summary}**"
        if f.control:
            head += f"  \n  <small>control: {f.control}</small>"
        lines.append(head + f"  \n  {f.found}" + ("" if one_source else f"  \n  <small>source: `{f.source}`</small>"))
    if findings and one_source:
        lines += ["", f"<small>source: `{findings[0].source}`</small>"]
    return "\n".join(lines) + "\n"
