# %% [markdown]
# # Hardware faults: bit flips, stuck-at bits and noise in weights and activations
#
# Per layer, **bit flips** in the stored weights (fp32, or the network stored in int8 by
# symmetric per-channel quantization), restricted to bit groups (exponent, mantissa, sign) or
# over the whole word, and **bit flips in a layer's output activations** (a new pattern per
# image). The level is the **bit error rate**: each eligible bit flips independently with that
# probability (`count: binomial`, the default: a Binomial(eligible bits, rate) number of flips per
# draw), or, with `count: exact`, exactly floor(rate x eligible bits) flip (the `count` column
# says which per variant, and the summary below). Accuracy is a fraction in [0, 1];
# **SDC-1** is the share of the images the fault-free network gets right whose top-1 changes,
# **DUE** the share with a NaN or Inf logit. The fault-free reference of the int8 variants is
# the quantized network. Fault models: `netperturb.perturb.faults`; this page shows results
# only, the executed notebook `faults.ipynb` beside it holds the code.

# %% tags=["parameters"]
# Parameters (papermill injects the real values after this cell)
run = "digits"
perturbation = "results/digits/faults/perturbation.csv"
baseline = "results/digits/faults/baseline.csv"
figures = "results/digits/faults/report/figures"
tables = "results/digits/faults/report/tables"
metric = "top1"
compare_rate = 0.001
n_boot = 1000

# %%
from pathlib import Path

from IPython.display import Markdown, display

from netperturb.core.findings import findings_frame, findings_markdown
from netperturb.core.merge import read_table
from netperturb.core.report import show_figure
from netperturb.studies.faults.figures import (
    bit_positions_table,
    compare_at_rate,
    plot_bit_positions,
    plot_metric_vs_rate,
    plot_vulnerability,
    vulnerability,
)
from netperturb.studies.faults.findings import findings, word_variant

df = read_table(perturbation)
base = read_table(baseline)
Path(figures).mkdir(parents=True, exist_ok=True)
Path(tables).mkdir(parents=True, exist_ok=True)
models = list(dict.fromkeys(df["model"]))
variants = list(dict.fromkeys(df["perturbation"]))

# %%
# Findings: the field's known results checked on this run's tables (netperturb.studies.faults.findings)
found = findings(df, base, rate=compare_rate, n_boot=n_boot)
findings_frame(found).to_csv(Path(tables) / "findings.csv", index=False)
display(Markdown(findings_markdown(found)))
counts = df.drop_duplicates("perturbation").set_index("perturbation")["count"].fillna("").astype(str)
display(Markdown(f"**{len(df):,} cells**: {len(models)} model(s), {len(variants)} fault variants, "
                 f"{df.groupby('model')['layer'].nunique().sum()} layers, {df['repeat'].nunique()} repeats, "
                 f"{int(df['n_images'].iloc[0])} test images; device {df['device'].iloc[0]}. Bits hit per draw: "
                 + "; ".join(f"{v} {c}" for v, c in counts.items() if c) + "."))

# %% [markdown]
# ## Fault-free reference networks
#
# `fp32` is the trained network; `int8_channel` stores every conv / dense weight as an int8
# code with one scale per output channel (symmetric, codes in [-127, 127]) -- the reference of
# the int8 variants.

# %%
base[["model", "reference", "format", "n_images", "top1", "top5", "loss"]].style.format(precision=4).hide(axis="index")

# %% [markdown]
# ## Accuracy and SDC against fault rate, per layer
#
# One panel per fault variant, one line per layer (dark: input side, yellow: output side); the
# line is the mean over repeats and the band spans the lowest to the highest repeat. Dotted:
# the variant's fault-free network; dashed: half of it (the vulnerability threshold below).

# %%
for model in models:
    for m in (metric, "sdc1"):
        fig = plot_metric_vs_rate(df, base, model, metric=m)
        show_figure(fig, Path(figures) / f"{model}_{m}")

# %% [markdown]
# ## Per-layer vulnerability
#
# The rate at which top-1 falls to half its fault-free value (interpolated in log rate), with
# a 95% bootstrap interval over repeats; rank 1 is the most vulnerable layer of a variant.
# "below grid": already at half at the lowest rate that flips anything; "above grid": never.

# %%
vul = vulnerability(df, base, metric=metric, n_boot=n_boot)
vul.to_csv(Path(tables) / "vulnerability.csv", index=False)
for model in models:
    fig = plot_vulnerability(vul, model)
    show_figure(fig, Path(figures) / f"{model}_vulnerability")
vul.style.format({"clean": "{:.3f}", "half_rate": "{:.3g}", "lo": "{:.3g}", "hi": "{:.3g}"}).hide(axis="index")

# %% [markdown]
# ## fp32 against int8 at one rate
#
# Whole-word weight bit flips at the same rate per stored bit: top-1 of each layer relative
# to its own fault-free network (fp32 or the quantized network), SDC-1 and DUE.

# %%
pair = [v for v in (word_variant(df, "fp32"), word_variant(df, "int8")) if v is not None]
side = compare_at_rate(df, base, compare_rate, metric=metric, perturbations=pair)
side.to_csv(Path(tables) / "fp32_vs_int8.csv", index=False)
if len(pair) == 2:
    for model in models:
        fig = plot_metric_vs_rate(df, base, model, metric=metric, perturbations=pair, ncols=2)
        show_figure(fig, Path(figures) / f"{model}_fp32_vs_int8")
side.pivot_table(index=["model", "layer_index", "layer_label"], columns="perturbation",
                 values=["relative", "sdc1", "due"]).style.format("{:.3f}")

# %% [markdown]
# ## Which bit positions matter
#
# fp32 weight bit flips restricted to one group of positions (sign: bit 31; exponent: bits
# 23-30; mantissa: bits 0-22; or a list), at the comparison rate per eligible bit: the top-1
# drop per layer. Flipping the exponent's most significant bit (30) of a weight below 2 in
# magnitude multiplies it by 2^128 -- the one flip that matters most.

# %%
bp = bit_positions_table(df, base, compare_rate, metric=metric)
bp.to_csv(Path(tables) / "bit_positions.csv", index=False)
for model in models:
    fig = plot_bit_positions(bp, model, compare_rate)
    show_figure(fig, Path(figures) / f"{model}_bit_positions")
bp.pivot_table(index=["model", "layer_index", "layer_label"], columns="bits", values="drop").style.format("{:.3f}")
