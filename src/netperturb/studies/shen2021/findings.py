"""The "Findings" block of the Shen et al. 2021 report: does fuzziness fall over plain training
(lambda = 0) by more than it does for a network that learned nothing (the driftless walk and
the shuffled-label controls, :mod:`netperturb.studies.shen2021.controls`), per reading of the
interval; and does lower fuzziness go with higher adversarial accuracy once lambda is held
fixed (:mod:`netperturb.studies.shen2021.link`)."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from netperturb.core.findings import Finding, assess, format_interval, t_interval
from netperturb.studies.shen2021.intervals import READINGS

__all__ = ["FALL_CLAIM", "CORRELATION_CLAIM", "READING_NAMES", "fall_finding", "margin_summary", "findings"]

FALL_CLAIM = "Plain training moves conv weights to the ends of their interval (the Min-Max property): fuzziness falls"
CORRELATION_CLAIM = "Lower fuzziness goes with higher adversarial robustness"
#: How each reading of the interval is named in the findings (what it measures:
#: :mod:`netperturb.studies.shen2021.intervals`).
READING_NAMES = {
    "current": "interval = the layer's current [min, max]",
    "init_bound": "interval = the initialisation bound +/- 1/sqrt(fan_in), weights still inside it",
    "trajectory": "interval = each weight's own range over training",
}


def margin_summary(margins: pd.DataFrame, *, ci: float = 0.95) -> pd.DataFrame:
    """Mean over seeds of every margin of :func:`~netperturb.studies.shen2021.controls.control_margins`
    (stacked over readings) with its Student t interval over seeds
    (:func:`netperturb.core.findings.t_interval`), per (reading, layer, comparator).

    Returns:
        columns ``interval, layer_index, layer_label, comparator, n_seeds, F0_mean,
        Fend_trained_mean, Fend_control_mean, margin_mean, margin_lo, margin_hi``.
    """
    rows = []
    for (reading, idx, label, comp), g in margins.groupby(["interval", "layer_index", "layer_label", "comparator"], sort=False):
        m, lo, hi = t_interval(g["margin"], ci)
        rows.append({"interval": reading, "layer_index": idx, "layer_label": label, "comparator": comp,
                     "n_seeds": int(g["margin"].notna().sum()), "F0_mean": g["F0"].mean(),
                     "Fend_trained_mean": g["Fend_trained"].mean(), "Fend_control_mean": g["Fend_control"].mean(),
                     "margin_mean": m, "margin_lo": lo, "margin_hi": hi})  # fmt: skip
    return pd.DataFrame(rows, columns=["interval", "layer_index", "layer_label", "comparator", "n_seeds", "F0_mean",
                                       "Fend_trained_mean", "Fend_control_mean", "margin_mean", "margin_lo",
                                       "margin_hi"])  # fmt: skip


def fall_finding(margins: pd.DataFrame, reading: str | None, *, ci: float = 0.95, source: str = "") -> Finding:
    """The fall finding of one reading, from its rows of
    :func:`~netperturb.studies.shen2021.controls.control_margins`.

    Per training seed, the smallest margin over the conv layers (the paper's claim is about
    conv weights) and every comparator present: the trained run's own fall ``F_0 - F_end``
    (not under ``trajectory``) and ``F_end(control) - F_end(trained)`` for the driftless walk
    and the shuffled-label control. The estimate is the mean of that per-seed minimum over
    seeds, with a Student t interval over seeds (:func:`netperturb.core.findings.t_interval`:
    with 3 seeds a bootstrap has 10 distinct resamples); the claim is ``> 0``: the trained
    conv weights end less fuzzy than their start *and* than every control, by more than the
    interval. Without controls in the table (``shen2021.controls`` off) only the own fall is
    compared, and the finding says so.
    """
    claim = FALL_CLAIM if reading is None else f"{FALL_CLAIM} ({READING_NAMES.get(reading, reading)})"
    m = margins if reading is None or "interval" not in margins else margins[margins["interval"] == reading]
    conv = m[m["layer_label"].astype(str).str.startswith("conv")]
    if conv.empty or conv["margin"].notna().sum() == 0:
        return Finding(claim, "No lambda = 0 run with conv layers (or no comparison possible).", "not tested", source)
    comparators = list(dict.fromkeys(conv["comparator"]))
    per_seed = conv.groupby("train_seed")["margin"].min()
    est, lo, hi = t_interval(per_seed, ci)
    parts = []
    for (label, comp), g in conv.groupby(["layer_label", "comparator"], sort=False):
        mm, ml, mh = t_interval(g["margin"], ci)
        if comp == "own fall":
            parts.append(f"{label}: F {g['F0'].mean():.3f} -> {g['Fend_trained'].mean():.3f}, fall {format_interval(mm, ml, mh)}")
        else:
            parts.append(f"{label} vs {comp} (F_end {g['Fend_control'].mean():.3f}): {format_interval(mm, ml, mh)}")
    dense = m[~m["layer_label"].astype(str).str.startswith("conv")]
    dense_txt = ""
    if len(dense):
        dmin = dense.groupby("layer_label", sort=False)["margin"].min()
        dense_txt = "; dense layers (not the claim), smallest margin: " + ", ".join(f"{k} {v:+.3f}" for k, v in dmin.items())
    controls = [c for c in comparators if c != "own fall"]
    control = ", ".join(controls) if controls else "none: the controls were not run (shen2021.controls), so diffusion is not ruled out"
    n = int(per_seed.notna().sum())
    return assess(
        claim,
        f"lambda = 0, {n} seeds; margins (mean over seeds [{ci:.0%} t interval]; > 0: the trained run ended less fuzzy): "
        + "; ".join(parts) + dense_txt + ".",
        source, quantity="smallest margin over conv layers and comparators (nats, mean over seeds)", estimate=est,
        lo=lo, hi=hi, interval=f"{ci:.0%} t interval over seeds of the per-seed smallest margin", n=n, threshold=0.0,
        direction=">", control=control)  # fmt: skip


def findings(
    margins: pd.DataFrame,
    link: pd.DataFrame,
    *,
    readings: Sequence[str] | None = None,
    ci: float = 0.95,
    change_source: str = "shen2021/report/tables/fuzziness_margins.csv",
    link_source: str = "shen2021/report/tables/robustness_link.csv",
) -> list[Finding]:
    """From the stacked :func:`~netperturb.studies.shen2021.controls.control_margins` of every
    reading (``margins``, column ``interval``) and
    :func:`~netperturb.studies.shen2021.link.robustness_link` (``link``).

    - Fall, one finding per reading of the interval (:func:`fall_finding`): ``readings``
      (default: those in ``margins``; a reading without margins is "not tested").
    - Robustness link, per attack: the partial correlation of final fuzziness and robust
      accuracy controlling for lambda, with its Fisher z interval; the claim is ``< 0``
      (less fuzzy, more robust). The seed pairs within each lambda and the pooled r over
      every run (which lambda drives) are named in the text.
    """
    out = []
    if readings is None:
        readings = [r for r in READINGS if "interval" in margins and r in set(margins["interval"])]
    for reading in readings or [None]:
        out.append(fall_finding(margins, reading, ci=ci, source=change_source))
    if link.empty:
        out.append(Finding(CORRELATION_CLAIM, "No robustness link could be computed (no attacked runs).", "not tested",
                           link_source))  # fmt: skip
    for r in link.itertuples():
        pairs = f"seed pairs within a lambda: {r.pairs_agree} agree, {r.pairs_disagree} disagree" + (
            f", {r.pairs_tied} tied" if r.pairs_tied else "")
        pooled = "" if r.pooled_r != r.pooled_r else f"; pooled over every run r = {r.pooled_r:+.2f} (lambda drives both: not the test)"
        if r.partial_r != r.partial_r or r.lo != r.lo:
            why = "a constant variable within lambda" if r.partial_r != r.partial_r else f"too few runs (n = {r.n} for {r.n_lambdas} lambdas)"
            out.append(Finding(CORRELATION_CLAIM, f"{r.attack} at eps {r.eps:g}: partial correlation undefined ({why}); "
                               f"{pairs}{pooled}.", "not tested", link_source))  # fmt: skip
            continue
        p = "" if r.p_value != r.p_value else f", p = {r.p_value:.2g}"
        out.append(assess(
            CORRELATION_CLAIM,
            f"{r.attack} at eps {r.eps:g}, {r.n} runs ({r.n_lambdas} lambdas): partial r = {r.partial_r:+.2f} "
            f"[{r.lo:+.2f}, {r.hi:+.2f}]{p} ({int(r.df)} d.f.); {pairs}{pooled}.",
            link_source, quantity="partial correlation of final fuzziness and robust accuracy, lambda held fixed",
            estimate=r.partial_r, lo=r.lo, hi=r.hi, interval=f"{ci:.0%} Fisher z interval", n=int(r.n), threshold=0.0,
            direction="<", control="lambda held fixed (centred within each lambda)"))  # fmt: skip
    return out
