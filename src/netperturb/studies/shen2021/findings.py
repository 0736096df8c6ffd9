"""The "Findings" block of the Shen et al. 2021 report: does fuzziness fall over plain training
(lambda = 0), per layer and per reading of the interval; does lower fuzziness go with higher
adversarial accuracy."""

from __future__ import annotations

import pandas as pd

from netperturb.core.report import Finding
from netperturb.studies.shen2021.intervals import READINGS

__all__ = ["FALL_CLAIM", "CORRELATION_CLAIM", "READING_NAMES", "findings"]

FALL_CLAIM = "Plain training moves conv weights to the ends of their interval (the Min-Max property): fuzziness falls"
CORRELATION_CLAIM = "Lower fuzziness goes with higher adversarial robustness"
#: How each reading of the interval is named in the findings.
READING_NAMES = {
    "current": "interval = the layer's current [min, max]",
    "init_bound": "interval = the initialisation bound +/- 1/sqrt(fan_in)",
    "trajectory": "interval = each weight's own range over training",
}


def _fall(change: pd.DataFrame, reading: str | None, source: str) -> Finding:
    """The fall finding of one reading (``None``: a table without readings)."""
    claim = FALL_CLAIM if reading is None else f"{FALL_CLAIM} ({READING_NAMES.get(reading, reading)})"
    c0 = change[change["lam"] == 0].sort_values("layer_index") if "lam" in change else change.iloc[:0]
    if c0.empty:
        return Finding(claim, "No run with lambda = 0 (plain training).", "not tested", source)
    fell = c0["n_fell"] > c0["n_seeds"] / 2
    each = "; ".join(
        f"{r.layer_label} {r.F0_mean:.3f} -> {r.Fend_mean:.3f} ({'fell' if f else 'did not fall'}, {r.n_fell}/{r.n_seeds} seeds)"
        for r, f in zip(c0.itertuples(), fell))  # fmt: skip
    if "endsend_mean" in c0:
        each += "; near an end after training: " + ", ".join(
            f"{r.layer_label} {r.endsend_mean:.0%} (reference {r.ends0_mean:.0%})" for r in c0.itertuples())
    if reading == "init_bound" and "outsideend_mean" in c0 and c0["outsideend_mean"].notna().all():
        each += "; beyond the bound (counted as at its end): " + ", ".join(
            f"{r.layer_label} {r.outsideend_mean:.0%}" for r in c0.itertuples())
    conv = c0["layer_label"].str.startswith("conv")
    if not conv.any():
        verdict = "not tested"
    elif fell[conv].all():
        verdict = "holds"
    elif not fell[conv].any():
        verdict = "does not hold"
    else:
        verdict = "mixed"
    ref = str(c0["reference"].iloc[0]) if "reference" in c0 else "initialisation"
    start = "at initialisation" if ref == "initialisation" else f"of the reference ({ref})"
    return Finding(claim, f"lambda = 0, fuzziness {start} -> after training: {each}.", verdict, source)


def findings(
    change: pd.DataFrame,
    correlation: pd.DataFrame,
    *,
    alpha: float = 0.05,
    change_source: str = "shen2021/report/tables/fuzziness_change_readings.csv",
    correlation_source: str = "shen2021/report/tables/fuzziness_robust_correlation.csv",
) -> list[Finding]:
    """From :func:`~netperturb.studies.shen2021.figures.fuzziness_change` (layer scope) and the
    correlation table of :func:`~netperturb.studies.shen2021.figures.fuzziness_robustness`.

    - Fall, one finding per reading of the interval (``change`` from
      :func:`~netperturb.studies.shen2021.figures.readings_change`, column ``interval``; a table
      without that column is the ``current`` reading alone): a layer's fuzziness fell when it
      ended below the reference (the initialisation; for ``trajectory`` a driftless random
      walk, see :func:`~netperturb.studies.shen2021.figures.fuzziness_change`) in more than
      half of the seeds at lambda = 0. The verdict is on the conv layers (the paper's claim):
      holds if it fell in every one, does not hold if in none, mixed otherwise; the dense
      layers are listed too.
    - Correlation, per attack, over all runs (Pearson): holds when r < 0 with p < ``alpha``,
      does not hold when r > 0 with p < ``alpha``, "not shown" otherwise.
    """
    out = []
    if "interval" in change and len(change):
        order = [r for r in READINGS if r in set(change["interval"])]
        for reading in order:
            out.append(_fall(change[change["interval"] == reading], reading, change_source))
    else:
        out.append(_fall(change, None, change_source))
    rows = correlation[correlation["subset"] == "all runs"] if len(correlation) else correlation
    if rows.empty:
        out.append(Finding(CORRELATION_CLAIM, "No correlation could be computed (fewer than 3 runs).", "not tested",
                           correlation_source))  # fmt: skip
    for r in rows.itertuples():
        if r.pearson_r != r.pearson_r:  # NaN: constant fuzziness or accuracy
            verdict, how = "not tested", "undefined (a constant variable)"
        else:
            sig = r.pearson_p < alpha
            verdict = ("holds" if r.pearson_r < 0 else "does not hold") if sig else "not shown"
            how = f"Pearson r = {r.pearson_r:+.2f} (p = {r.pearson_p:.2g}), Spearman rho = {r.spearman_rho:+.2f}"
        out.append(Finding(CORRELATION_CLAIM,
                           f"{r.attack} at eps {r.eps:g}, {r.n} runs (every lambda and seed): {how}; "
                           "lambda drives both, see the within-lambda rows of the table.",
                           verdict, correlation_source))  # fmt: skip
    return out
