# %% [markdown]
# # Synaptic filtering: fragility, robustness and antifragility (Pravin et al. 2024)
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
# **Filtering scores** (our definition; the paper's normalisation is not recoverable): with
# A_c, A_a the clean and adversarial accuracy of the unfiltered checkpoint,
# f_clean = Simpson integral of (acc_clean(t) - A_c) / A_c over t,
# f_adv = integral of (acc_adv(t) - A_a) / A_c, f_diff = f_adv - f_clean (the adversarial minus
# clean curve against its unfiltered value). Below -tolerance: **fragile**; above +tolerance:
# **antifragile**; else **robust**. Source: arXiv 2312.09821; the authors' notebooks
# (SynapFilter/InferLink).

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

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from netperturb.core.merge import read_table
from netperturb.core.report import save_figure
from netperturb.studies.pravin2024.figures import (
    FILTER_TITLES,
    class_table,
    full_filter_table,
    layers_by_class,
    plot_class_maps,
    plot_layer_curves,
    plot_network_curves,
    plot_score_heatmaps,
    retraining_summary,
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
first = sw.iloc[0]
display(Markdown(
    f"**{len(sw):,} measurements** on {dataset}: {len(models)} model(s), {sw['init'].nunique()} initialisation(s), "
    f"checkpoints at epochs {sorted(sw['epoch'].unique())}, filters {sorted(sw['perturbation'].unique())}, "
    f"{sw['step'].max() + 1} thresholds per sweep, {int(first['n_images'])} evaluation images; attack {first['attack']} "
    f"eps {first['eps']:g} ({first['attack_mode']}); device {first['device']}."))

# %% [markdown]
# ## Training and the unfiltered checkpoints

# %%
last = hist.sort_values("epoch").groupby(["model", "init"]).tail(1)
display(last[["model", "arch", "init", "epoch", "train_loss", "test_top1"]].style.format(precision=4).hide(axis="index"))
bw = base.pivot_table(index=["model", "init", "epoch"], columns="data", values=metric).reset_index()
bw.to_csv(Path(tables) / "checkpoints.csv", index=False)
bw.style.format(precision=4).hide(axis="index")

# %% [markdown]
# ## Per-layer filtering: accuracy against normalised alpha
#
# One line per layer (colour by depth), mean over initialisations; dotted: the unfiltered network, dashed: chance.

# %%
for model in models:
    epochs = sorted(sw.loc[(sw["model"] == model) & (sw["mode"] == "layer"), "epoch"].unique())
    for e in epochs:
        fig = plot_layer_curves(sw, model, e, metric=metric, chance=chance, baseline=base)
        save_figure(fig, Path(figures) / f"{model}_layers_epoch{e}")
        if e == epochs[-1]:
            display(fig)
        plt.close(fig)

# %% [markdown]
# ## Whole-network filtering
#
# Every layer filtered at once at each threshold of the shared grid; solid: clean, dashed: adversarial.

# %%
for model in models:
    if (sw.loc[sw["model"] == model, "mode"] == "network").any():
        fig = plot_network_curves(sw, model, metric=metric, chance=chance)
        save_figure(fig, Path(figures) / f"{model}_network")
        display(fig)
        plt.close(fig)

# %% [markdown]
# ## Filtering scores (layer x epoch)

# %%
for model in models:
    fig = plot_score_heatmaps(sc, model, tolerance=tolerance)
    save_figure(fig, Path(figures) / f"{model}_scores")
    display(fig)
    plt.close(fig)

# %% [markdown]
# ## Classes: fragile, robust, antifragile

# %%
classes = pd.concat([class_table(sc, m, tolerance).assign(model=m) for m in models])
classes.to_csv(Path(tables) / "classes.csv", index=False)
for model in models:
    fig = plot_class_maps(sc, model, tolerance)
    save_figure(fig, Path(figures) / f"{model}_classes")
    display(fig)
    plt.close(fig)
counts = classes.groupby(["model", "perturbation", "score", "epoch", "class"]).size().unstack("class", fill_value=0)
display(counts)
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
# ## Fully filtered layers
#
# Accuracy with every weight of one layer set to zero (the last point of the low filter), against
# the unfiltered network; `recovery` = clean accuracy / unfiltered clean accuracy. In a ResNet a
# residual-branch convolution can be removed while the identity shortcut carries the signal; the
# stem convolution cannot.

# %%
full = full_filter_table(sw, base, metric=metric)
full.to_csv(Path(tables) / "fully_filtered.csv", index=False)
display(full.groupby(["model", "epoch", "role"])[["clean", "adversarial", "recovery"]].mean().style.format(precision=3))
full.style.format(precision=3, subset=["clean", "adversarial", "unfiltered_clean", "unfiltered_adversarial", "recovery"]).hide(axis="index")

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
