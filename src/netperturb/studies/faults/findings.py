"""The "Findings" block of the hardware-fault report: the field's known results checked on this
run's merged tables -- exponent flips dominate the damage of fp32 weight bit flips, int8
weights tolerate bit flips better than fp32, and layers differ in vulnerability."""

from __future__ import annotations

import numpy as np
import pandas as pd

from netperturb.core.report import Finding
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


def findings(
    perturbation: pd.DataFrame, baseline: pd.DataFrame, *, rate: float, exponent_share: float = 0.9,
    n_boot: int = 1000, source: str = "faults/perturbation.csv, faults/baseline.csv",
) -> list[Finding]:  # fmt: skip
    """Three findings per model, from the fp32 and int8 whole-word weight bit-flip variants
    and the fp32 variants restricted to bit groups, at ``rate`` (config
    ``faults.report.compare_rate``):

    - exponent: the top-1 drop (fault-free minus faulty, mean over repeats, summed over the
      layers) of exponent-only flips is at least ``exponent_share`` of the whole-word drop
      (the rate is per eligible bit, so both hit the exponent bits equally often) -- the
      known result (e.g. Li et al. 2017, SC'17, "Understanding error propagation in DNN
      accelerators"; Reagen et al. 2018, DAC, Ares); "mixed" when the share is in [0.5,
      ``exponent_share``) (a few flips of the exponent's top bit do most of the damage, so
      with few repeats the share is noisy);
    - int8: the mean over layers of top-1 relative to the fault-free network is higher for
      int8 than for fp32 (Li et al. 2017: a narrow data type limits the value a flip makes);
    - layers: the most and the least vulnerable layer by half-accuracy rate of the fp32
      whole-word variant (:func:`~netperturb.studies.faults.figures.vulnerability`); holds
      when their bootstrap intervals do not overlap.

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
            out.append(Finding(
                EXPONENT_CLAIM,
                f"{model}, {_rate_text(rate)}: top-1 drop summed over layers: whole word {groups['all']:.2f}, exponent "
                f"only {groups['exponent']:.2f} ({share:.0%} of it)" + (f"; {others}" if others else "") + ".",
                "holds" if share >= exponent_share else "mixed" if share >= 0.5 else "does not hold", source))  # fmt: skip
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
                out.append(Finding(
                    INT8_CLAIM,
                    f"{model}, {_rate_text(rate)}: top-1 relative to the fault-free network, mean over layers: fp32 "
                    f"{rel[fp32]:.3f} (clean {cl[fp32]:.3f}), int8 {rel[int8]:.3f} (clean, quantized {cl[int8]:.3f}).",
                    "holds" if rel[int8] > rel[fp32] else "does not hold", source))  # fmt: skip
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

        separate = np.isfinite(most["hi"]) and (most["hi"] < least["lo"])
        out.append(Finding(
            LAYER_CLAIM,
            f"{model}, {fp32}: rate at which top-1 falls to half (95% bootstrap interval over repeats; <= : already at "
            "half at the lowest rate of the grid): most vulnerable "
            f"{fmt(most)}, least vulnerable {fmt(least)}.",
            "holds" if separate else "not shown", source))  # fmt: skip
    return out
