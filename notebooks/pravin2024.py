# %% [markdown]
# # Synaptic filtering: fragility, robustness and antifragility (Pravin et al. 2024)
#
# Which weights can a trained network lose, on clean and on adversarial inputs? Filtering scores
# sort layers into fragile, robust and antifragile ones (arXiv 2312.09821).
#
# This page shows results only: the executed notebook `pravin2024.ipynb` beside it holds the code.

# %% tags=["parameters"]
# Parameters (papermill injects the real values after this cell)
run = "digits"
sweeps = "results/digits/pravin2024/sweeps.csv"
baseline = "results/digits/pravin2024/baseline.csv"
scores = "results/digits/pravin2024/scores.csv"
retraining = "results/digits/pravin2024/retraining.csv"
training = "results/digits/pravin2024/training.csv"
figures = "results/digits/pravin2024/report/figures"
tables = "results/digits/pravin2024/report/tables"
dataset = "digits"
num_classes = 10
tolerance = 0.05
metric = "top1"
score_normalise = "first_point"
score_baseline = "density"
score_n_boot = 1000
score_ci = 0.95
seed = 2017

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from netperturb.core.findings import findings_frame, findings_markdown
from netperturb.core.merge import read_table
from netperturb.core.report import show_figure
from netperturb.studies.pravin2024.findings import findings
from netperturb.studies.pravin2024.intervals import images_table, pooled_scores, recovery_replicates
from netperturb.studies.pravin2024.scores import filtering_scores
from netperturb.studies.pravin2024.figures import (
    FILTER_TITLES,
    MANY_LAYERS,
    class_table,
    definition_classes,
    full_filter_table,
    layer_baseline,
    layers_by_class,
    network_definition_table,
    plot_class_maps,
    plot_layer_curves,
    plot_layer_heatmap,
    plot_network_curves,
    plot_score_heatmaps,
    retraining_summary,
    scores_by_definition,
)

sw = read_table(sweeps)
base = read_table(baseline)
sc = read_table(scores)
rt = read_table(retraining)
hist = pd.read_csv(training)
Path(figures).mkdir(parents=True, exist_ok=True)
Path(tables).mkdir(parents=True, exist_ok=True)
chance = 1 / num_classes if metric == "top1" else min(5, num_classes) / num_classes
models = list(dict.fromkeys(sw["model"]))

# %%
# Findings: the paper's claims checked on this run's tables, with intervals over the evaluation
# images (netperturb.studies.pravin2024.findings, .intervals)
_, reps = filtering_scores(sw, base, tolerance=tolerance, metric=metric, normalise=score_normalise, baseline=score_baseline,
                           n_boot=score_n_boot, ci=score_ci, seed=seed, return_replicates=True)
pooled = pooled_scores(sc, reps, tolerance=tolerance, ci=score_ci, seed=seed)
pooled.to_csv(Path(tables) / "scores_pooled.csv", index=False)
full = full_filter_table(sw, base, metric=metric, n_boot=score_n_boot, ci=score_ci, seed=seed)
full.to_csv(Path(tables) / "fully_filtered.csv", index=False)
rec = {}
for (model, epoch), g in full.groupby(["model", "epoch"]):
    res = g[g["role"] == "residual branch"]
    if len(res) and score_n_boot > 0:
        rec[(model, int(epoch))] = recovery_replicates(sw, layer_baseline(sw, base), model=model, epoch=int(epoch),
                                                       layers=list(res["layer"]), metric=metric, n_boot=score_n_boot, seed=seed)
classes = pd.concat([class_table(pooled, m, tolerance).assign(model=m) for m in models])
found = findings(classes, full, tolerance=tolerance, recovery_replicates=rec, ci=score_ci,
                 definition=f"scores: normalise {score_normalise}, baseline {score_baseline}")
findings_frame(found).to_csv(Path(tables) / "findings.csv", index=False)
display(Markdown(findings_markdown(found)))
first = sw.iloc[0]
display(Markdown(
    f"**{len(sw):,} measurements** on {dataset}: {len(models)} model(s), {sw['init'].nunique()} initialisation(s), "
    f"checkpoints at epochs {sorted(int(e) for e in sw['epoch'].unique())}, filters {sorted(sw['perturbation'].unique())}, "
    f"{sw['step'].max() + 1} thresholds per sweep, {int(first['n_images'])} evaluation images; attack {first['attack']} "
    f"eps {', '.join(f'{e:g}' for e in sorted(sw['eps'].unique()))} of the pixel range ({first['attack_mode']}); "
    f"scores: normalise {score_normalise}, baseline {score_baseline}; device {first['device']}."))

# %% [markdown]
# ## Per-layer filtering: accuracy against normalised alpha
#
# Each layer filtered on its own, at the last checkpoint (figures of every checkpoint are saved in
# `figures/`). With up to 10 layers: one line per layer (colour by depth, dark = input side), the
# mean over initialisations; dotted: the unfiltered network, dashed: chance. With more layers:
# a heat map, one row per layer (input side on top), one column per threshold, colour = accuracy
# from 0 (dark) to 1 (yellow); a row that stays bright to the right is a layer the network does
# not need, a row that darkens early is a fragile one. The line plots are saved too.

# %%
for model in models:
    layer_sw = sw[(sw["model"] == model) & (sw["mode"] == "layer")]
    epochs = sorted(layer_sw["epoch"].unique())
    many = layer_sw["layer"].nunique() > MANY_LAYERS
    for e in epochs:
        fig = plot_layer_curves(sw, model, e, metric=metric, chance=chance, baseline=base)
        show_figure(fig, Path(figures) / f"{model}_layers_epoch{e}", display=e == epochs[-1] and not many)
        if many:
            fig = plot_layer_heatmap(sw, model, e, metric=metric, baseline=base)
            show_figure(fig, Path(figures) / f"{model}_layers_heatmap_epoch{e}", display=e == epochs[-1])

# %% [markdown]
# ## What is measured
#
# Networks trained here are **filtered**: weights are set to zero by signed threshold alpha -
# *low* zeroes w <= alpha, *high* zeroes w >= alpha, *pulse* zeroes the band
# [alpha - h, alpha + h) with h = (max - min) / (2 S) - one layer at a time (alpha over S
# points of that layer's [min, max]) and over the whole network at once (a shared grid).
# Every filtered network is evaluated in `eval()` mode on clean test images and on adversarial
# ones (FGSM or PGD, by default regenerated against the filtered network itself).
# Accuracy is a fraction in [0, 1]; the x axis is the normalised alpha (sweep position t in
# [0, 1], from "almost nothing removed" to "every weight removed").
#
# **Filtering scores**, the authors' definition (`rob_value` in their notebook
# `model_trainer (rob value).ipynb`, SynapFilter/InferLink; `score.normalise: first_point`,
# `score.baseline: density`, the default): each curve is divided by its own first sweep point,
# and compared with dens_bar(t) = the fraction of the layer's (whole network: all filtered
# layers') weights still in place at that point,
# f_clean = Simpson integral of (acc_clean(t) / acc_clean(0) - dens_bar(t)) over t,
# f_adv = the same for the adversarial curve, f_diff = f_adv - f_clean (the adversarial minus
# the clean curve; dens_bar cancels). A score above 0 means the accuracy held up better than
# the fraction of weights left. Below -tolerance: **fragile**; above +tolerance:
# **antifragile**; else **robust**. The option `normalise: clean, baseline: constant` (this
# project's earlier definition) divides both curves by the unfiltered clean accuracy A_c and
# compares them with the unfiltered network's own value: f_clean = integral of
# (acc_clean(t) - A_c) / A_c, f_adv = integral of (acc_adv(t) - A_a) / A_c. Both are shown
# side by side below. Attack budgets are in pixel units (a fraction of the [0, 1] range),
# divided by the input normalisation's std per channel. Source: arXiv 2312.09821.

# %% [markdown]
# ## Training and the unfiltered checkpoints

# %%
last = hist.sort_values("epoch").groupby(["model", "init"]).tail(1)
display(last[["model", "arch", "init", "epoch", "train_loss", "test_top1"]].style.format(precision=4).hide(axis="index"))
bw = base.pivot_table(index=["model", "init", "epoch"], columns="data", values=metric).reset_index()
bw.to_csv(Path(tables) / "checkpoints.csv", index=False)
bw.style.format(precision=4).hide(axis="index")

# %% [markdown]
# ## Whole-network filtering
#
# Every layer filtered at once at each threshold of the shared grid; solid: clean, dashed: adversarial.

# %%
for model in models:
    if (sw.loc[sw["model"] == model, "mode"] == "network").any():
        fig = plot_network_curves(sw, model, metric=metric, chance=chance)
        show_figure(fig, Path(figures) / f"{model}_network")

# %% [markdown]
# ## Filtering scores (layer x epoch)
#
# Scores of the configured definition (see "What is measured"). Blue: the score is above 0 (the
# accuracy stayed above the baseline), red: below; the number in a cell is the score; within
# +/- tolerance a layer counts as robust.

# %%
for model in models:
    fig = plot_score_heatmaps(sc, model, tolerance=tolerance)
    show_figure(fig, Path(figures) / f"{model}_scores")

# %% [markdown]
# ## Classes: fragile, robust, antifragile -- or undetermined
#
# Every score has a 95% percentile bootstrap interval over the evaluation images (the images of
# a checkpoint resampled with replacement, the same resample for every point and both curves,
# `scores.csv` columns `lo`, `hi`; with several initialisations the mean over them, each
# resample drawing initialisations too: `tables/scores_pooled.csv`). A (layer, filter) pair gets
# a class only when its interval excludes the neighbouring classes; otherwise it is
# **undetermined** (white). `class_point` keeps the class of the score alone (the paper's rule).

# %%
classes.to_csv(Path(tables) / "classes.csv", index=False)
for model in models:
    fig = plot_class_maps(pooled, model, tolerance)
    show_figure(fig, Path(figures) / f"{model}_classes")
counts = classes.groupby(["model", "perturbation", "score", "epoch", "class"]).size().unstack("class", fill_value=0)
display(counts)
display(Markdown("Against the classes of the point scores alone:"))
display(classes.groupby(["model", "score", "epoch", "class_point"]).size().unstack("class_point", fill_value=0))
for model in models:
    c = classes[(classes["model"] == model) & (classes["epoch"] == classes.loc[classes["model"] == model, "epoch"].max())]
    if "lo" in c:
        display(Markdown(f"{model}, last checkpoint: every score with its 95% interval over the evaluation images "
                         "(the class it allows in brackets: F fragile, R robust, A antifragile, ? undetermined):"))
        short = {"fragile": "F", "robust": "R", "antifragile": "A", "undetermined": "?"}
        c = c.assign(cell=[f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}] {short.get(k, k)}" for v, lo, hi, k in
                           zip(c["value"], c["lo"], c["hi"], c["class"])])
        display(c.pivot_table(index=["layer_index", "layer_label"], columns=["perturbation", "score"], values="cell",
                              aggfunc="first"))
rows = []
for model in models:
    last = int(classes.loc[classes["model"] == model, "epoch"].max())
    for flt in FILTER_TITLES:
        for score in ("clean", "adversarial", "difference"):
            by = layers_by_class(classes[classes["model"] == model], flt, score, last)
            if any(by.values()):
                rows.append({"model": model, "epoch": last, "filter": flt, "score": score, **{c: ", ".join(v) for c, v in by.items()}})
layer_classes = pd.DataFrame(rows)
layer_classes.to_csv(Path(tables) / "layers_by_class.csv", index=False)
display(Markdown("Layers by class at the last checkpoint:"))
layer_classes.style.hide(axis="index")

# %% [markdown]
# ## How many evaluation images do the classes need?
#
# Measured from this run's intervals: per score, the half-width of the intervals (median and
# 90th percentile over the curves) and the images per sweep point that would bring it down to
# the tolerance (`images_needed`: `n * (half-width / tolerance)^2`, the `1 / sqrt(n)` law of a
# mean), with the fraction of curves classed undetermined at this run's images per point.

# %%
need = images_table(sc, tolerance)
need.to_csv(Path(tables) / "images_needed.csv", index=False)
need.style.format(precision=3).hide(axis="index")

# %% [markdown]
# ## The classes under both score definitions
#
# The same sweeps scored the authors' way (`authors`: each curve over its first point, against
# the fraction of weights remaining) and this project's earlier way (`ours (before)`: over the
# unfiltered clean accuracy, against the unfiltered network's value). Under the earlier
# definition every sweep that ends with all weights removed is pulled towards "fragile" on
# clean and adversarial data; the authors' baseline expects the accuracy to fall as the
# weights go. Whole-network filters first, then the per-layer classes counted over
# (layer, filter) pairs.

# %%
by_def = scores_by_definition(sw, base, tolerance=tolerance, metric=metric)
by_def.to_csv(Path(tables) / "scores_by_definition.csv", index=False)
net_def = network_definition_table(by_def, tolerance)
net_def.to_csv(Path(tables) / "network_classes_by_definition.csv", index=False)
if len(net_def):
    display(Markdown("Whole-network filters:"))
    display(net_def.style.format(precision=3, subset=[c for c in net_def.columns if c.endswith("value")]).hide(axis="index"))
layer_def = definition_classes(by_def, tolerance)
layer_def.to_csv(Path(tables) / "layer_classes_by_definition.csv", index=False)
display(Markdown("Per-layer mode, (layer, filter) pairs per class:"))
layer_def.style.hide(axis="index")

# %% [markdown]
# ## Fully filtered layers
#
# Accuracy with every weight of one layer set to zero (the last point of the low filter), against
# the unfiltered network; `recovery` = clean accuracy / unfiltered clean accuracy, with its 95% bootstrap
# interval over the evaluation images (`recovery_lo`, `recovery_hi`). In a ResNet a
# residual-branch convolution can be removed while the identity shortcut carries the signal; the
# stem convolution cannot.

# %%
display(full.groupby(["model", "epoch", "role"])[["clean", "adversarial", "recovery"]].mean().style.format(precision=3))
full.style.format(precision=3, subset=["clean", "adversarial", "unfiltered_clean", "unfiltered_adversarial", "recovery",
                                       "recovery_lo", "recovery_hi"]).hide(axis="index")

# %% [markdown]
# ## Selective retraining
#
# `selective`: only the layers whose retraining score class is robust or antifragile are trained
# (everything else frozen, BatchNorm statistics included); `full`: every parameter; both for the
# same epochs from the same checkpoint; `none`: the checkpoint itself. Clean and adversarial
# accuracy on the whole test split.

# %%
summary = retraining_summary(rt, metric=metric)
summary.to_csv(Path(tables) / "retraining.csv", index=False)
summary.style.format(precision=4, subset=[c for c in summary.columns if c.endswith(metric)]).hide(axis="index")
