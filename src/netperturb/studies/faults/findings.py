"""The "Findings" block of the hardware-fault report: the field's known results checked on this
run's merged tables -- exponent flips dominate the damage of fp32 weight bit flips, int8
weights tolerate bit flips better than fp32, and layers differ in vulnerability -- each with a
percentile bootstrap interval over repeats (:mod:`netperturb.core.findings`; the draws of
different (layer, variant) cells are independent, so each cell's repeats are resampled on
their own)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from netperturb.core.findings import Finding, assess, percentile_interval, resample_counts
from netperturb.studies.faults.figures import bit_positions_table, compare_at_rate, vulnerability

__all__ = ["EXPONENT_CLAIM", "INT8_CLAIM", "LAYER_CLAIM", "findings", "word_variant"]

EXPONENT_CLAIM = "Exponent-bit flips cause (almost) all of the damage of fp32 weight bit flips"
INT8_CLAIM = "int8-quantized weights tolerate bit flips better than fp32 weights"
LAYER_CLAIM = "Layers differ in vulnerability to weight bit flips"


def word_variant(df: pd.DataFrame, fmt: str) -> str | None:
    """The first weight ``bit_flip`` variant in format ``fmt`` over every bit (None if none)."""
    v = df[(df["fault"] == "bit_flip") & (df["format"] == fmt) & (df["bits"] == "all") & (df["target"] == "weights")]
    return None if v.empty else str(v["perturbation"].iloc[0])


def _rate_text(rate: float) -> str:
    return f"rate {rate:g} per eligible bit"


def _cell_means(sub: pd.DataFrame, rate: float, perturbation: str, layers, n_boot: int, seed: int,
                metric: str = "top1") -> tuple[np.ndarray, np.ndarray, int]:  # fmt: skip
    """Per layer of ``layers``: the mean of ``metric`` over repeats at ``rate`` (L,), its
    (n_boot, L) bootstrap replicates (each cell's repeats resampled on its own) and the
    smallest number of repeats of a cell."""
    at = sub[np.isclose(sub["level"], rate, rtol=1e-9, atol=0) & (sub["perturbation"] == perturbation)]
    means, reps, n_min = [], [], None
    for i, layer in enumerate(layers):
        v = at.loc[at["layer"] == layer, metric].to_numpy(float)
        means.append(v.mean())
        reps.append(resample_counts(len(v), n_boot, seed + i) @ v / len(v))
        n_min = len(v) if n_min is None else min(n_min, len(v))
    return np.array(means), np.stack(reps, axis=1), int(n_min or 0)


def findings(
    perturbation: pd.DataFrame, baseline: pd.DataFrame, *, rate: float, exponent_share: float = 0.9,
    n_boot: int = 1000, ci: float = 0.95, seed: int = 0, source: str = "faults/perturbation.csv, faults/baseline.csv",
) -> list[Finding]:  # fmt: skip
    """Three findings per model, from the fp32 and int8 whole-word weight bit-flip variants
    and the fp32 variants restricted to bit groups, at ``rate`` (config
    ``faults.report.compare_rate``):

    - exponent: the top-1 drop (fault-free minus faulty, mean over repeats, summed over the
      layers) of exponent-only flips is at least ``exponent_share`` of the whole-word drop
      (the rate is per eligible bit, so both hit the exponent bits equally often) -- the
      known result (e.g. Li et al. 2017, SC'17, "Understanding error propagation in DNN
      accelerators"; Reagen et al. 2018, DAC, Ares). The interval: each (layer, variant)
      cell's repeats resampled, the share recomputed (a few flips of the exponent's top bit
      do most of the damage, so with few repeats the share is noisy: the interval says how
      noisy); holds when it lies above ``exponent_share``;
    - int8: the mean over layers of top-1 relative to the fault-free network is higher for
      int8 than for fp32 (Li et al. 2017: a narrow data type limits the value a flip makes):
      the estimate is the difference int8 - fp32, the claim ``> 0``;
    - layers: the most and the least vulnerable layer by half-accuracy rate of the fp32
      whole-word variant (:func:`~netperturb.studies.faults.figures.vulnerability`): the
      estimate is log10(least / most), its interval from the two layers' intervals (lo:
      least.lo / most.hi); holds when they do not overlap.

    A run without the variants a finding needs gets "not tested".
    """
    out: list[Finding] = []
    fp32, int8 = word_variant(perturbation, "fp32"), word_variant(perturbation, "int8")
    for model, sub in perturbation.groupby("model", sort=False):
        base = baseline[baseline["model"] == model]
        # exponent
        bits = bit_positions_table(sub, base, rate)
        common = bits.groupby("layer")["bits"].agg(set)
        common = common[common.map(lambda b: {"all", "exponent"} <= b)].index  # layers both variants cover
        groups = bits[bits["layer"].isin(common)].groupby("bits")["drop"].sum()
        if "all" not in groups or "exponent" not in groups:
            out.append(Finding(EXPONENT_CLAIM, f"{model}: needs fp32 bit_flip variants with bits all and exponent at "
                               f"{_rate_text(rate)}.", "not tested", source))  # fmt: skip
        elif groups["all"] <= 0.01:
            out.append(Finding(EXPONENT_CLAIM, f"{model}, {_rate_text(rate)}: whole-word flips cost no accuracy "
                               f"(summed drop {groups['all']:.3f}), nothing to attribute.", "not tested", source))  # fmt: skip
        else:
            share = groups["exponent"] / groups["all"]
            others = ", ".join(f"{b} {groups[b]:.2f}" for b in groups.index if b not in ("all", "exponent"))
            layers = list(common)
            var = bits[bits["layer"].isin(common)].groupby("bits")["perturbation"].first()
            clean = bits[bits["layer"].isin(common)].groupby("layer")["clean"].first().reindex(layers).to_numpy(float)
            _, rep_all, n_all = _cell_means(sub, rate, var["all"], layers, n_boot, seed)
            _, rep_exp, n_exp = _cell_means(sub, rate, var["exponent"], layers, n_boot, seed + 1000)
            with np.errstate(divide="ignore", invalid="ignore"):
                reps = (clean - rep_exp).sum(1) / (clean - rep_all).sum(1)
            lo, hi = percentile_interval(reps, ci)
            out.append(assess(
                EXPONENT_CLAIM,
                f"{model}, {_rate_text(rate)}: top-1 drop summed over layers: whole word {groups['all']:.2f}, exponent "
                f"only {groups['exponent']:.2f} ({share:.0%} of it)" + (f"; {others}" if others else "") + ".",
                source, quantity="exponent-only share of the whole-word top-1 drop", estimate=share, lo=lo, hi=hi,
                interval=f"{ci:.0%} percentile bootstrap over repeats ({n_boot} resamples)", n=min(n_all, n_exp),
                threshold=exponent_share, direction=">"))  # fmt: skip
        # int8 against fp32
        if fp32 is None or int8 is None:
            out.append(Finding(INT8_CLAIM, f"{model}: needs whole-word bit_flip variants in fp32 and int8.", "not tested",
                               source))  # fmt: skip
        else:
            t = compare_at_rate(sub, base, rate, perturbations=[fp32, int8])
            rel = t.groupby("perturbation")["relative"].mean()
            if fp32 not in rel or int8 not in rel:
                out.append(Finding(INT8_CLAIM, f"{model}: no cells at {_rate_text(rate)}.", "not tested", source))
            else:
                cl = t.groupby("perturbation")["clean"].first()
                layers = sorted(set(t.loc[t["perturbation"] == fp32, "layer"]) & set(t.loc[t["perturbation"] == int8, "layer"]))
                _, r32, n32 = _cell_means(sub, rate, fp32, layers, n_boot, seed)
                _, r8, n8 = _cell_means(sub, rate, int8, layers, n_boot, seed + 1000)
                reps = (r8 / cl[int8]).mean(1) - (r32 / cl[fp32]).mean(1)
                est = float(t[(t["perturbation"] == int8) & t["layer"].isin(layers)]["relative"].mean()
                            - t[(t["perturbation"] == fp32) & t["layer"].isin(layers)]["relative"].mean())  # fmt: skip
                lo, hi = percentile_interval(reps, ci)
                out.append(assess(
                    INT8_CLAIM,
                    f"{model}, {_rate_text(rate)}: top-1 relative to the fault-free network, mean over layers: fp32 "
                    f"{rel[fp32]:.3f} (clean {cl[fp32]:.3f}), int8 {rel[int8]:.3f} (clean, quantized {cl[int8]:.3f}).",
                    source, quantity="int8 minus fp32 relative top-1, mean over layers", estimate=est, lo=lo, hi=hi,
                    interval=f"{ci:.0%} percentile bootstrap over repeats ({n_boot} resamples)", n=min(n32, n8),
                    threshold=0.0, direction=">"))  # fmt: skip
        # layers
        if fp32 is None:
            out.append(Finding(LAYER_CLAIM, f"{model}: needs an fp32 whole-word bit_flip variant.", "not tested", source))
            continue
        v = vulnerability(sub[sub["perturbation"] == fp32], base, n_boot=n_boot)
        if len(v) < 2:
            out.append(Finding(LAYER_CLAIM, f"{model}: fewer than two layers.", "not tested", source))
            continue
        most, least = v.iloc[0], v.iloc[-1]
        def fmt(r) -> str:
            if not np.isfinite(r["half_rate"]):
                return f"{r['layer_label']} (never at half on the grid)"
            at = "<= " if r["censored"] == "below grid" else ""
            return f"{r['layer_label']} {at}{r['half_rate']:.2g} [{r['lo']:.2g}, {r['hi']:.2g}]"

        with np.errstate(divide="ignore"):
            est = float(np.log10(least["half_rate"]) - np.log10(most["half_rate"]))
            lo = float(np.log10(least["lo"]) - np.log10(most["hi"])) if np.isfinite(most["hi"]) else -np.inf
            hi = float(np.log10(least["hi"]) - np.log10(most["lo"]))
        out.append(assess(
            LAYER_CLAIM,
            f"{model}, {fp32}: rate at which top-1 falls to half (95% bootstrap interval over repeats; <= : already at "
            "half at the lowest rate of the grid): most vulnerable "
            f"{fmt(most)}, least vulnerable {fmt(least)}.",
            source, quantity="log10 of the least over the most vulnerable layer's half-accuracy rate", estimate=est,
            lo=min(lo, est), hi=max(hi, est), interval="from the two layers' 95% percentile bootstrap intervals over "
            f"repeats ({n_boot} resamples): lo = least.lo / most.hi, hi = least.hi / most.lo", n=int(most["n_repeats"]),
            threshold=0.0, direction=">"))  # fmt: skip
    return out
