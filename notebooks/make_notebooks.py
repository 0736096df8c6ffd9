"""Regenerate the report templates in this folder from the cell sources below.

The .ipynb files are committed (papermill executes them); this script is how they are
edited, so that diffs stay readable: change a cell here, run `python notebooks/make_notebooks.py`.
"""

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent


def notebook(cells: list[tuple[str, str, list[str]]]) -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src, tags in cells:
        cell = nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


CHENEY = [
    ("md", """# Internal perturbation of CNNs (Cheney, Schrimpf, Kreiman 2017)

Per-layer **synapse knockout** (a fraction of weight entries set to 0), **node knockout**
(a fraction of output units removed with their biases) and **Gaussian weight noise**
(s.d. = level x the layer's weight s.d.), every Conv2d and Linear layer, several repeats
per level. Accuracy is a fraction in [0, 1]; bands are +/- s.e.m. over repeats.
Source: arXiv 1703.08245, Fig. 1; the authors' code kreimanlab/neural_net_robustness.""", []),
    ("code", """# Parameters (papermill injects the real values after this cell)
study = "digits"
perturbation = "results/digits/perturbation.csv"
baseline = "results/digits/baseline.csv"
figures = "results/digits/report/figures/cheney2017"
tables = "results/digits/report/tables/cheney2017"
num_classes = 10
metric = "top1"
drop_level = 0.7""", ["parameters"]),
    ("code", """from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from netperturb import report

df = pd.read_csv(perturbation)
base = pd.read_csv(baseline, keep_default_na=False)
Path(figures).mkdir(parents=True, exist_ok=True)
Path(tables).mkdir(parents=True, exist_ok=True)
models = list(dict.fromkeys(df["model"]))
chance = {"top1": 1 / num_classes, "top5": min(5, num_classes) / num_classes}
display(Markdown(f"**{len(df):,} cells**: {len(models)} models, {df['perturbation'].nunique()} perturbations, "
                 f"{df.groupby('model')['layer'].nunique().sum()} layers, {df['repeat'].nunique()} repeats, "
                 f"{int(df['n_images'].iloc[0])} test images; device {df['device'].iloc[0]}, precision {df['precision'].iloc[0]}."))""", []),
    ("md", "## Clean accuracy", []),
    ("code", """base[["model", "arch", "n_images", "top1", "top5", "loss", "weights"]].style.format(precision=4).hide(axis="index")""", []),
    ("md", "## Accuracy against perturbation level, per layer", []),
    ("code", """for model in models:
    b = base.set_index("model")
    for m in dict.fromkeys([metric, "top5" if metric == "top1" else "top1"]):
        fig = report.plot_accuracy_vs_level(df, model, metric=m, chance=chance[m], baseline=float(b.loc[model, m]))
        report.save_figure(fig, Path(figures) / f"{model}_{m}")
        if m == metric:
            display(fig)
        plt.close(fig)""", []),
    ("md", "## Relative drop at the chosen level\n\n`1 - accuracy(level) / accuracy(clean)`, mean over repeats; rows are layers in depth order.", []),
    ("code", """drop = report.relative_drop(df, base, level=drop_level, metric=metric)
drop.to_csv(Path(tables) / "relative_drop.csv", index=False)
wide = drop.pivot_table(index=["model", "layer_index", "layer_label"], columns="perturbation", values="relative_drop")
levels_used = drop.groupby("perturbation")["level_used"].first().to_dict()
display(Markdown("Levels used: " + ", ".join(f"{k} {v:g}" for k, v in levels_used.items())))
wide.style.format("{:.1%}").background_gradient(cmap="Reds", vmin=0, vmax=1)""", []),
    ("md", "## First conv layer against every other layer at the highest level (Wilcoxon rank-sum)", []),
    ("code", """rs = report.first_layer_ranksum(df, metric=metric)
rs.to_csv(Path(tables) / "ranksum_first_layer.csv", index=False)
rs[["model", "perturbation", "level", "first_layer", "layer_label", "first_mean", "layer_mean", "statistic", "p_value"]].style.format(
    {"level": "{:g}", "first_mean": "{:.3f}", "layer_mean": "{:.3f}", "statistic": "{:.2f}", "p_value": "{:.3g}"}).hide(axis="index")""", []),
    ("md", """## The headline, checked

Cheney et al.: removing >70% of the weights of the top conv or dense layers costs <30% of
top-5 accuracy, while the same in conv1 gives near-chance accuracy. Below: synapse knockout
at the drop level, first conv layer against the last conv layer and the dense layers.""", []),
    ("code", """sk = drop[drop["perturbation"] == "synapse_knockout"]
rows = []
for model, sub in sk.groupby("model", sort=False):
    convs = sub[sub["layer_label"].str.startswith("conv")]
    first, last = convs.iloc[0], convs.iloc[-1]
    dense = sub[sub["layer_label"].str.startswith("fc")]
    rows.append({"model": model, "level": first["level_used"], "clean": first["baseline"],
                 "first conv": first["accuracy"], "last conv": last["accuracy"],
                 "dense (mean)": dense["accuracy"].mean(), "chance": chance[metric],
                 "first-conv drop": first["relative_drop"], "last-conv drop": last["relative_drop"],
                 "max dense drop": dense["relative_drop"].max()})
headline = pd.DataFrame(rows)
headline.to_csv(Path(tables) / "headline.csv", index=False)
headline.style.format(precision=3).hide(axis="index")""", []),
]

PRAVIN = [
    ("md", """# Synaptic filtering: fragility, robustness and antifragility (Pravin et al. 2024)

Networks trained here are **filtered**: weights are set to zero by signed threshold alpha -
*low* zeroes w <= alpha, *high* zeroes w >= alpha, *pulse* zeroes the band
[alpha - h, alpha + h) with h = (max - min) / (2 S) - one layer at a time (alpha over S
points of that layer's [min, max]) and over the whole network at once (a shared grid).
Every filtered network is evaluated in `eval()` mode on clean test images and on adversarial
ones (FGSM or PGD, by default regenerated against the filtered network itself).
Accuracy is a fraction in [0, 1]; the x axis is the normalised alpha (sweep position t in
[0, 1], from "almost nothing removed" to "every weight removed").

**Filtering scores** (our definition; the paper's normalisation is not recoverable): with
A_c, A_a the clean and adversarial accuracy of the unfiltered checkpoint,
f_clean = Simpson integral of (acc_clean(t) - A_c) / A_c over t,
f_adv = integral of (acc_adv(t) - A_a) / A_c, f_diff = f_adv - f_clean (the adversarial minus
clean curve against its unfiltered value). Below -tolerance: **fragile**; above +tolerance:
**antifragile**; else **robust**. Source: arXiv 2312.09821; the authors' notebooks
(SynapFilter/InferLink).""", []),
    ("code", """# Parameters (papermill injects the real values after this cell)
study = "digits"
sweeps = "results/digits/pravin2024/sweeps.csv"
baseline = "results/digits/pravin2024/baseline.csv"
scores = "results/digits/pravin2024/scores.csv"
retraining = "results/digits/pravin2024/retraining.csv"
training = "results/digits/pravin2024/training.csv"
figures = "results/digits/report/figures/pravin2024"
tables = "results/digits/report/tables/pravin2024"
dataset = "digits"
num_classes = 10
tolerance = 0.05
metric = "top1\"""", ["parameters"]),
    ("code", """from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from netperturb import report, report_filtering as rf

sw = pd.read_csv(sweeps, keep_default_na=False, na_values=["NaN", "nan"])
base = pd.read_csv(baseline, keep_default_na=False, na_values=["NaN", "nan"])
sc = pd.read_csv(scores, keep_default_na=False, na_values=["NaN", "nan"])
rt = pd.read_csv(retraining, keep_default_na=False, na_values=["NaN", "nan"])
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
    f"eps {first['eps']:g} ({first['attack_mode']}); device {first['device']}."))""", []),
    ("md", "## Training and the unfiltered checkpoints", []),
    ("code", """last = hist.sort_values("epoch").groupby(["model", "init"]).tail(1)
display(last[["model", "arch", "init", "epoch", "train_loss", "test_top1"]].style.format(precision=4).hide(axis="index"))
bw = base.pivot_table(index=["model", "init", "epoch"], columns="data", values=metric).reset_index()
bw.to_csv(Path(tables) / "checkpoints.csv", index=False)
bw.style.format(precision=4).hide(axis="index")""", []),
    ("md", "## Per-layer filtering: accuracy against normalised alpha\n\nOne line per layer (colour by depth), mean over initialisations; dotted: the unfiltered network, dashed: chance.", []),
    ("code", """for model in models:
    epochs = sorted(sw.loc[(sw["model"] == model) & (sw["mode"] == "layer"), "epoch"].unique())
    for e in epochs:
        fig = rf.plot_layer_curves(sw, model, e, metric=metric, chance=chance, baseline=base)
        report.save_figure(fig, Path(figures) / f"{model}_layers_epoch{e}")
        if e == epochs[-1]:
            display(fig)
        plt.close(fig)""", []),
    ("md", "## Whole-network filtering\n\nEvery layer filtered at once at each threshold of the shared grid; solid: clean, dashed: adversarial.", []),
    ("code", """for model in models:
    if (sw.loc[sw["model"] == model, "mode"] == "network").any():
        fig = rf.plot_network_curves(sw, model, metric=metric, chance=chance)
        report.save_figure(fig, Path(figures) / f"{model}_network")
        display(fig)
        plt.close(fig)""", []),
    ("md", "## Filtering scores (layer x epoch)", []),
    ("code", """for model in models:
    fig = rf.plot_score_heatmaps(sc, model, tolerance=tolerance)
    report.save_figure(fig, Path(figures) / f"{model}_scores")
    display(fig)
    plt.close(fig)""", []),
    ("md", "## Classes: fragile, robust, antifragile", []),
    ("code", """classes = pd.concat([rf.class_table(sc, m, tolerance).assign(model=m) for m in models])
classes.to_csv(Path(tables) / "classes.csv", index=False)
for model in models:
    fig = rf.plot_class_maps(sc, model, tolerance)
    report.save_figure(fig, Path(figures) / f"{model}_classes")
    display(fig)
    plt.close(fig)
counts = classes.groupby(["model", "perturbation", "score", "epoch", "class"]).size().unstack("class", fill_value=0)
display(counts)
rows = []
for model in models:
    last = int(classes.loc[classes["model"] == model, "epoch"].max())
    for flt in rf.FILTER_TITLES:
        for score in ("clean", "adversarial", "difference"):
            by = rf.layers_by_class(classes[classes["model"] == model], flt, score, last)
            if any(by.values()):
                rows.append({"model": model, "epoch": last, "filter": flt, "score": score, **{c: ", ".join(v) for c, v in by.items()}})
layer_classes = pd.DataFrame(rows)
layer_classes.to_csv(Path(tables) / "layers_by_class.csv", index=False)
display(Markdown("Layers by class at the last checkpoint:"))
layer_classes.style.hide(axis="index")""", []),
    ("md", """## Fully filtered layers

Accuracy with every weight of one layer set to zero (the last point of the low filter), against
the unfiltered network; `recovery` = clean accuracy / unfiltered clean accuracy. In a ResNet a
residual-branch convolution can be removed while the identity shortcut carries the signal; the
stem convolution cannot.""", []),
    ("code", """full = rf.full_filter_table(sw, base, metric=metric)
full.to_csv(Path(tables) / "fully_filtered.csv", index=False)
display(full.groupby(["model", "epoch", "role"])[["clean", "adversarial", "recovery"]].mean().style.format(precision=3))
full.style.format(precision=3, subset=["clean", "adversarial", "unfiltered_clean", "unfiltered_adversarial", "recovery"]).hide(axis="index")""", []),
    ("md", """## Selective retraining

`selective`: only the layers whose retraining score class is robust or antifragile are trained
(everything else frozen, BatchNorm statistics included); `full`: every parameter; both for the
same epochs from the same checkpoint; `none`: the checkpoint itself. Clean and adversarial
accuracy on the whole test split.""", []),
    ("code", """summary = rf.retraining_summary(rt, metric=metric)
summary.to_csv(Path(tables) / "retraining.csv", index=False)
summary.style.format(precision=4, subset=[c for c in summary.columns if c.endswith(metric)]).hide(axis="index")""", []),
]

if __name__ == "__main__":
    nbf.write(notebook(CHENEY), HERE / "cheney2017.ipynb")
    nbf.write(notebook(PRAVIN), HERE / "pravin2024.ipynb")
