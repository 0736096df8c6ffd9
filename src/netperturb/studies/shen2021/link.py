"""The robustness link of the Min-Max claim (Shen et al. 2021, abstract: models with lower
fuzziness are more robust to adversarial examples), read with lambda held fixed.

The weight ``lambda`` of the fuzziness term drives both the final fuzziness and the robust
accuracy, so a correlation pooled over every lambda shows what the loss term does, not that
lower fuzziness goes with robustness. Two readings that hold lambda fixed, over the runs'
training seeds (one point per lambda x seed: the final fuzziness of the regularised layers and
the accuracy at the report's eps, :func:`~netperturb.studies.shen2021.figures.fuzziness_robustness`):

- **partial correlation controlling for lambda** (:func:`partial_correlation`): Pearson's r of
  fuzziness and accuracy after subtracting each lambda's mean from both (lambda as a
  categorical covariate, ``k = L - 1`` dummies for ``L`` lambdas), with the Fisher z interval
  ``tanh(atanh(r) +- z_{(1+ci)/2} / sqrt(n - k - 3))`` and the t-test p-value on
  ``n - k - 2`` degrees of freedom (e.g. Cohen, Cohen, West & Aiken 2003, *Applied Multiple
  Regression/Correlation Analysis*, 3rd ed., Sec. 3.3 and 2.8.2);
- **seed pairs within each lambda** (:func:`seed_pairs`): every pair of seeds of the same
  lambda, compared: the pair *agrees* with the claim when the less fuzzy run is the more
  robust one, *disagrees* when it is the less robust one (a stratified Kendall-type count).
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd

__all__ = ["partial_correlation", "seed_pairs", "robustness_link", "LINK_COLUMNS"]

#: Columns of :func:`robustness_link`.
LINK_COLUMNS = ["attack", "eps", "n", "n_lambdas", "partial_r", "lo", "hi", "p_value", "df", "pairs_agree",
                "pairs_disagree", "pairs_tied", "pooled_r"]  # fmt: skip


def partial_correlation(x, y, groups, *, ci: float = 0.95) -> dict[str, float]:
    """Pearson's r of ``x`` and ``y`` within ``groups`` (each centred on its group mean), its
    Fisher z interval and its p-value (module docstring).

    Args:
        x, y: (n,) values; groups: (n,) labels (e.g. lambda).
        ci: coverage of the interval.

    Returns:
        ``{"r", "lo", "hi", "p_value", "n", "k", "df"}``; r, the interval and p are NaN when a
        centred variable is constant, and the interval / p when ``n - k - 3 < 1``.
    """
    from scipy.stats import norm, t

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    g = pd.Series(np.asarray(groups))
    xc = x - pd.Series(x).groupby(g).transform("mean").to_numpy()
    yc = y - pd.Series(y).groupby(g).transform("mean").to_numpy()
    n, k = len(x), g.nunique() - 1
    out = {"r": math.nan, "lo": math.nan, "hi": math.nan, "p_value": math.nan, "n": n, "k": k, "df": n - k - 2}
    sx, sy = math.sqrt(float(xc @ xc)), math.sqrt(float(yc @ yc))
    if n < 3 or sx < 1e-15 * max(1.0, float(np.abs(x).max())) or sy < 1e-15 * max(1.0, float(np.abs(y).max())):
        return out
    r = float(np.clip(xc @ yc / (sx * sy), -1.0, 1.0))
    out["r"] = r
    df = n - k - 2
    if df >= 1 and abs(r) < 1:
        out["p_value"] = float(2 * t.sf(abs(r) * math.sqrt(df / (1 - r * r)), df))
    elif df >= 1:
        out["p_value"] = 0.0
    if n - k - 3 >= 1:
        z, half = math.atanh(np.clip(r, -0.999999999, 0.999999999)), norm.ppf((1 + ci) / 2) / math.sqrt(n - k - 3)
        out["lo"], out["hi"] = math.tanh(z - half), math.tanh(z + half)
    return out


def seed_pairs(points: pd.DataFrame) -> dict[str, int]:
    """Every pair of runs of the same lambda (and attack), compared (module docstring):
    ``{"agree", "disagree", "tied"}`` counts. ``points``: ``lam, fuzziness, accuracy``."""
    out = {"agree": 0, "disagree": 0, "tied": 0}
    for _, g in points.groupby("lam"):
        f, a = g["fuzziness"].to_numpy(float), g["accuracy"].to_numpy(float)
        for i, j in combinations(range(len(g)), 2):
            s = (f[i] - f[j]) * (a[i] - a[j])
            out["agree" if s < 0 else "disagree" if s > 0 else "tied"] += 1
    return out


def robustness_link(points: pd.DataFrame, *, ci: float = 0.95) -> pd.DataFrame:
    """Per attack: the partial correlation of final fuzziness and robust accuracy controlling
    for lambda, with its interval, the seed pairs within each lambda, and (for comparison
    only) the pooled Pearson r over every run.

    Args:
        points: ``attack, lam, train_seed, fuzziness, accuracy`` (and ``eps``), one row per run
            and attack (:func:`~netperturb.studies.shen2021.figures.fuzziness_robustness`).

    Returns:
        :data:`LINK_COLUMNS`, one row per attack.
    """
    rows = []
    for attack, sub in points.groupby("attack", sort=True):
        pc = partial_correlation(sub["fuzziness"], sub["accuracy"], sub["lam"], ci=ci)
        pairs = seed_pairs(sub)
        pooled = (float(np.corrcoef(sub["fuzziness"], sub["accuracy"])[0, 1])
                  if len(sub) >= 3 and sub["fuzziness"].nunique() > 1 and sub["accuracy"].nunique() > 1 else math.nan)  # fmt: skip
        rows.append({"attack": attack, "eps": float(sub["eps"].iloc[0]) if "eps" in sub else math.nan, "n": pc["n"],
                     "n_lambdas": pc["k"] + 1, "partial_r": pc["r"], "lo": pc["lo"], "hi": pc["hi"],
                     "p_value": pc["p_value"], "df": pc["df"], "pairs_agree": pairs["agree"],
                     "pairs_disagree": pairs["disagree"], "pairs_tied": pairs["tied"], "pooled_r": pooled})  # fmt: skip
    return pd.DataFrame(rows, columns=LINK_COLUMNS)
