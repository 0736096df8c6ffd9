"""The "Findings" block of the Shen et al. 2021 report: does fuzziness fall over plain training
(lambda = 0), per layer; does lower fuzziness go with higher adversarial accuracy."""

from __future__ import annotations

import pandas as pd

from netperturb.core.report import Finding

__all__ = ["FALL_CLAIM", "CORRELATION_CLAIM", "findings"]

FALL_CLAIM = "Plain training moves conv weights to the ends of their interval (the Min-Max property): fuzziness falls"
CORRELATION_CLAIM = "Lower fuzziness goes with higher adversarial robustness"


def findings(
    change: pd.DataFrame,
    correlation: pd.DataFrame,
    *,
    alpha: float = 0.05,
    change_source: str = "shen2021/report/tables/fuzziness_change_layer.csv",
    correlation_source: str = "shen2021/report/tables/fuzziness_robust_correlation.csv",
) -> list[Finding]:
    """From :func:`~netperturb.studies.shen2021.figures.fuzziness_change` (layer scope) and the
    correlation table of :func:`~netperturb.studies.shen2021.figures.fuzziness_robustness`.

    - Fall: a layer's fuzziness fell when it fell in more than half of the seeds at lambda = 0.
      The verdict is on the conv layers (the paper's claim): holds if it fell in every one, does
      not hold if in none, mixed otherwise; the dense layers are listed too.
    - Correlation, per attack, over all runs (Pearson): holds when r < 0 with p < ``alpha``,
      does not hold when r > 0 with p < ``alpha``, "not shown" otherwise.
    """
    out = []
    c0 = change[change["lam"] == 0].sort_values("layer_index") if "lam" in change else change.iloc[:0]
    if c0.empty:
        out.append(Finding(FALL_CLAIM, "No run with lambda = 0 (plain training).", "not tested", change_source))
    else:
        fell = c0["n_fell"] > c0["n_seeds"] / 2
        each = "; ".join(
            f"{r.layer_label} {r.F0_mean:.3f} -> {r.Fend_mean:.3f} ({'fell' if f else 'did not fall'}, {r.n_fell}/{r.n_seeds} seeds)"
            for r, f in zip(c0.itertuples(), fell))  # fmt: skip
        conv = c0["layer_label"].str.startswith("conv")
        if not conv.any():
            verdict = "not tested"
        elif fell[conv].all():
            verdict = "holds"
        elif not fell[conv].any():
            verdict = "does not hold"
        else:
            verdict = "mixed"
        out.append(Finding(FALL_CLAIM, f"lambda = 0, fuzziness at initialisation -> after training: {each}.", verdict,
                           change_source))  # fmt: skip
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
