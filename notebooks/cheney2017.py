# %% [markdown]
# # Internal perturbation of CNNs (Cheney, Schrimpf, Kreiman 2017)
#
# Per-layer **synapse knockout** (a fraction of weight entries set to 0), **node knockout**
# (a fraction of output units removed with their biases) and **Gaussian weight noise**
# (s.d. = level x the layer's weight s.d.), every Conv2d and Linear layer, several repeats
# per level. Accuracy is a fraction in [0, 1]; bands are 95% percentile bootstrap intervals of the
# mean over repeats.
# Source: arXiv 1703.08245, Fig. 1; the authors' code kreimanlab/neural_net_robustness.
# This page shows results only: the executed notebook `cheney2017.ipynb` beside it holds the code.

# %% tags=["parameters"]
# Parameters (papermill injects the real values after this cell)
run = "digits"
perturbation = "results/digits/cheney2017/perturbation.csv"
baseline = "results/digits/cheney2017/baseline.csv"
figures = "results/digits/cheney2017/report/figures"
tables = "results/digits/cheney2017/report/tables"
num_classes = 10
metric = "top1"
drop_level = 0.7
ranksum_level = None

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from netperturb.core.findings import findings_frame, findings_markdown
from netperturb.core.merge import read_table
from netperturb.core.report import show_figure
from netperturb.studies.cheney2017.findings import finding_cells, findings, repeats_table
from netperturb.studies.cheney2017.figures import (
    baseline_check,
    first_layer_ranksum,
    plot_accuracy_vs_level,
    relative_drop,
)

df = pd.read_csv(perturbation)
base = read_table(baseline)
Path(figures).mkdir(parents=True, exist_ok=True)
Path(tables).mkdir(parents=True, exist_ok=True)
models = list(dict.fromkeys(df["model"]))
chance = {"top1": 1 / num_classes, "top5": min(5, num_classes) / num_classes}

# %%
# Findings: the paper's headline checked on this run's tables (netperturb.studies.cheney2017.findings)
found = findings(df, base, num_classes=num_classes, level=drop_level, metric=metric)
findings_frame(found).to_csv(Path(tables) / "findings.csv", index=False)
display(Markdown(findings_markdown(found)))
need = repeats_table(finding_cells(df, base, num_classes=num_classes, level=drop_level, metric=metric))
need.to_csv(Path(tables) / "repeats_needed.csv", index=False)
display(Markdown(f"**{len(df):,} cells**: {len(models)} models, {df['perturbation'].nunique()} perturbations, "
                 f"{df.groupby('model')['layer'].nunique().sum()} layers, {df['repeat'].nunique()} repeats, "
                 f"{int(df['n_images'].iloc[0])} test images; device {df['device'].iloc[0]}, precision {df['precision'].iloc[0]}."))

# %% [markdown]
# ## Accuracy against perturbation level, per layer
#
# One line per layer, coloured by depth (dark: input side, yellow: output side); each point is
# the mean over repeats, and the shaded band around a line is the 95% percentile bootstrap
# interval of that mean over the repeats (different random knockouts / noise draws at the same
# level, resampled with replacement): a wide band means the result depends on which weights
# were hit. Dashed: chance; dotted: the clean network.

# %%
for model in models:
    b = base.set_index("model")
    for m in dict.fromkeys([metric, "top5" if metric == "top1" else "top1"]):
        fig = plot_accuracy_vs_level(df, model, metric=m, chance=chance[m], baseline=float(b.loc[model, m]))
        show_figure(fig, Path(figures) / f"{model}_{m}", display=m == metric)

# %% [markdown]
# ## Clean accuracy

# %%
base[["model", "arch", "n_images", "top1", "top5", "loss", "weights"]].style.format(precision=4).hide(axis="index")

# %%
# Pretrained torchvision weights only: clean accuracy against torchvision's published numbers.
check = baseline_check(base, tolerance_points=0.5)
if len(check):
    check.to_csv(Path(tables) / "baseline_check.csv", index=False)
    display(Markdown(
        "### Against torchvision's published accuracy\n\n"
        "Published: `weights.meta['_metrics']['ImageNet-1K']` (50,000 validation images, the weights' own "
        "preprocessing). A difference above 0.5 points means wrong labels or preprocessing"
        + (" -- or, here, a subset of the images." if (check["n_images"] < 50_000).any() else ".")))
    for _, r in check[check["flagged"]].iterrows():
        display(Markdown(f"**FLAGGED: {r['model']} differs from the published accuracy by "
                         f"{r['top1_diff']:+.2f} (top-1) / {r['top5_diff']:+.2f} (top-5) points "
                         f"on {r['n_images']:,} images.**"))
    display(check.style.format({"top1": "{:.4f}", "top1_published": "{:.4f}", "top5": "{:.4f}",
                                "top5_published": "{:.4f}", "top1_diff": "{:+.2f}", "top5_diff": "{:+.2f}"}
                               ).hide(axis="index"))

# %% [markdown]
# ## Relative drop at the chosen level
#
# `1 - accuracy(level) / accuracy(clean)`, mean over repeats; rows are layers in depth order. The
# second table gives each drop with its 95% percentile bootstrap interval over repeats and the
# number of repeats behind it.

# %%
drop = relative_drop(df, base, level=drop_level, metric=metric)
drop.to_csv(Path(tables) / "relative_drop.csv", index=False)
wide = drop.pivot_table(index=["model", "layer_index", "layer_label"], columns="perturbation", values="relative_drop")
levels_used = drop.groupby("perturbation")["level_used"].first().to_dict()
display(Markdown("Levels used: " + ", ".join(f"{k} {v:g}" for k, v in levels_used.items())))
display(wide.style.format("{:.1%}").background_gradient(cmap="Reds", vmin=0, vmax=1))
drop.assign(interval=[f"{d:.1%} [{a:.1%}, {b:.1%}] (n = {n})" for d, a, b, n in
                      zip(drop["relative_drop"], drop["drop_lo"], drop["drop_hi"], drop["n_repeats"])]).pivot_table(
    index=["model", "layer_index", "layer_label"], columns="perturbation", values="interval", aggfunc="first")

# %% [markdown]
# ## Repeats the findings need
#
# The power helper (`netperturb.core.findings.repeats_needed`): from the spread of the repeats at
# the findings' level, how many repeats would make the 95% t interval of the mean clear the
# finding's threshold (relative drop 30% for the top layers; 20% of the way from chance to
# clean for conv1) if the mean and the s.d. stayed what this run shows. `inf`: the mean sits
# on the threshold; a number at or below `n_repeats`: this run has enough.

# %%
need.style.format({"threshold": "{:g}", "mean": "{:.3f}", "sd": "{:.3f}", "repeats_needed": "{:g}"}).hide(axis="index")

# %% [markdown]
# ## First conv layer against every other layer (Wilcoxon rank-sum)
#
# Repeats of the first perturbed layer against the repeats of every other layer, two-sided, at
# one level per perturbation: `ranksum_level`, or by default the highest level at which the
# repeats still differ (the knockouts: the highest level below 1, since at 1 every repeat is
# the same empty layer; Gaussian noise: the top of its grid), as the authors' `maxPerturbation`.
# `tied`: every repeat of both layers gave the same accuracy, so the test cannot separate them.

# %%
rs = first_layer_ranksum(df, metric=metric, level=ranksum_level)
rs.to_csv(Path(tables) / "ranksum_first_layer.csv", index=False)
rs[["model", "perturbation", "level", "first_layer", "layer_label", "first_mean", "layer_mean", "statistic", "p_value", "tied"]].style.format(
    {"level": "{:g}", "first_mean": "{:.3f}", "layer_mean": "{:.3f}", "statistic": "{:.2f}", "p_value": "{:.3g}"}).hide(axis="index")

# %% [markdown]
# ## The headline, checked
#
# Cheney et al.: removing >70% of the weights of the top conv or dense layers costs <30% of
# top-5 accuracy, while the same in conv1 gives near-chance accuracy. Below: synapse knockout
# at the drop level, first conv layer against the last conv layer and the dense layers.

# %%
sk = drop[drop["perturbation"] == "synapse_knockout"]
rows = []
for model, sub in sk.groupby("model", sort=False):
    convs = sub[sub["layer_label"].str.startswith("conv")]
    if convs.empty:  # no conv layer perturbed in this model
        continue
    first, last = convs.iloc[0], convs.iloc[-1]
    dense = sub[sub["layer_label"].str.startswith("fc")]
    rows.append({"model": model, "level": first["level_used"], "clean": first["baseline"],
                 "first conv": first["accuracy"], "last conv": last["accuracy"],
                 "dense (mean)": dense["accuracy"].mean(), "chance": chance[metric],
                 "first-conv drop": first["relative_drop"], "last-conv drop": last["relative_drop"],
                 "max dense drop": dense["relative_drop"].max()})
headline = pd.DataFrame(rows)
headline.to_csv(Path(tables) / "headline.csv", index=False)
headline.style.format(precision=3).hide(axis="index")
