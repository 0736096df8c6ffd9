"""Regenerate the report templates in this folder from the cell sources below.

The .ipynb files are committed (papermill executes them); this script is how they are
edited, so that diffs stay readable: change a cell here, run `python notebooks/make_notebooks.py`.
"""

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent


def notebook(cells: list[tuple[str, str, list[str]]], name: str = "nb") -> nbf.NotebookNode:
    """A notebook of (kind, source, tags) cells with stable ids ``<name>-NN`` (regenerating
    an unchanged template gives no diff)."""
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src, tags in cells:
        cell = nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = tags
        cell.id = f"{name}-{len(nb.cells):02d}"
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
    ("code", """# Pretrained torchvision weights only: clean accuracy against torchvision's published numbers.
check = report.baseline_check(base, tolerance_points=0.5)
if len(check):
    check.to_csv(Path(tables) / "baseline_check.csv", index=False)
    display(Markdown(
        "### Against torchvision's published accuracy\\n\\n"
        "Published: `weights.meta['_metrics']['ImageNet-1K']` (50,000 validation images, the weights' own "
        "preprocessing). A difference above 0.5 points means wrong labels or preprocessing"
        + (" -- or, here, a subset of the images." if (check["n_images"] < 50_000).any() else ".")))
    for _, r in check[check["flagged"]].iterrows():
        display(Markdown(f"**FLAGGED: {r['model']} differs from the published accuracy by "
                         f"{r['top1_diff']:+.2f} (top-1) / {r['top5_diff']:+.2f} (top-5) points "
                         f"on {r['n_images']:,} images.**"))
    display(check.style.format({"top1": "{:.4f}", "top1_published": "{:.4f}", "top5": "{:.4f}",
                                "top5_published": "{:.4f}", "top1_diff": "{:+.2f}", "top5_diff": "{:+.2f}"}
                               ).hide(axis="index"))""", []),
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
headline.style.format(precision=3).hide(axis="index")""", []),
]



SHEN2021 = [
    ("md", """# The Min-Max property of conv weights (Shen, Chen, Wang 2021), operationalised

Claim (IJMLC 12 (2021) 1853, arXiv 2011.13719, abstract): during backprop training of LeNet,
conv weights move away from the centre of their interval towards its minimum or maximum; this
equals lower *fuzziness* of the parameters; models with the property are more robust to
adversarial examples, so it can be built into the loss.

The paper's formulas are not public; what is measured here is **our operationalisation**
(`netperturb.minmax`): position in the interval `mu = (w - min) / (max - min)` (interval of the
whole layer, or of each kernel = output unit), fuzziness `F = -mean(mu ln mu + (1 - mu) ln(1 - mu))`
(De Luca-Termini; 0 with every weight at an end, ln 2 at the centre, 1/2 for uniform `mu`),
"near an end" = `mu` within `end_fraction` of 0 or 1, and the loss
`CE + lambda * mean over the regularised layers of F` with gradients through min and max.
Attacks: white-box FGSM and L-inf PGD on the test split, eps in units of the [0, 1] pixel range.""", []),
    ("code", """# Parameters (papermill injects the real values after this cell)
study = "digits"
dataset = "digits"
history = "results/digits/minmax/history.csv"
tracking = "results/digits/minmax/tracking.parquet"
histograms = "results/digits/minmax/histograms.parquet"
robustness = "results/digits/minmax/robustness.csv"
perturbation = "results/digits/minmax/perturbation.csv"
figures = "results/digits/report/figures/shen2021"
tables = "results/digits/report/tables/shen2021"
num_classes = 10
report_eps = 0.1
end_fraction = 0.1
regularized = ["conv*"]""", ["parameters"]),
    ("code", """from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from netperturb import minmax_report as mr
from netperturb import report

hist = pd.read_csv(history)
track = pd.read_parquet(tracking)
hists = pd.read_parquet(histograms)
rob = pd.read_csv(robustness)
pert = pd.read_csv(perturbation)
Path(figures).mkdir(parents=True, exist_ok=True)
Path(tables).mkdir(parents=True, exist_ok=True)
lams = sorted(hist["lam"].unique())
seeds = sorted(hist["train_seed"].unique())
epochs = int(hist["epoch"].max())
pm = lambda m, s: f"{m:.3f} +/- {s:.3f}" if s == s else f"{m:.3f}"


def show(fig, name):
    report.save_figure(fig, Path(figures) / name)
    display(fig)
    plt.close(fig)


display(Markdown(f"**{hist['model'].nunique()} runs** of {hist['arch'].iloc[0]} on {dataset}: lambda in {[float(l) for l in lams]}, "
                 f"seeds {[int(s) for s in seeds]}, {epochs} epochs; {track['epoch'].nunique()} weight snapshots per run; "
                 f"regularised layers {regularized}; device {rob['device'].iloc[0]}."))""", []),
    ("md", "## Training: clean test accuracy and the regularised fuzziness after the last epoch", []),
    ("code", """last = hist[hist["epoch"] == epochs]
train_tab = last.groupby("lam").agg(top1_mean=("test_top1", "mean"), top1_sd=("test_top1", "std"),
                                    F_mean=("reg_fuzziness", "mean"), F_sd=("reg_fuzziness", "std"), n=("model", "count")).reset_index()
train_tab.to_csv(Path(tables) / "training.csv", index=False)
train_tab.style.format(precision=4).hide(axis="index")""", []),
    ("md", """## Does fuzziness fall over training?

Fuzziness at initialisation (epoch 0) and after the last epoch, per layer, mean +/- s.d. over
seeds; `n_fell` = seeds in which it fell. Rows with lambda = 0 answer the paper's question
(plain training); the other rows show what the loss term does. PyTorch's default
(Kaiming-uniform) initialisation spreads `mu` uniformly, so every layer starts near F = 1/2;
a weight distribution that becomes bell-shaped during training raises F, one that piles up at
both ends lowers it.""", []),
    ("code", """change = {scope: mr.fuzziness_change(track, scope) for scope in ("layer", "kernel")}
for scope, tab in change.items():
    tab.to_csv(Path(tables) / f"fuzziness_change_{scope}.csv", index=False)
c0 = change["layer"][change["layer"]["lam"] == 0]
if len(c0):
    lines = [f"- **{r.layer_label}**: F {pm(r.F0_mean, r.F0_sd)} -> {pm(r.Fend_mean, r.Fend_sd)} "
             f"(fell in {r.n_fell}/{r.n_seeds} seeds); near an end {r.ends0_mean:.1%} -> {r.endsend_mean:.1%}" for r in c0.itertuples()]
    display(Markdown("Plain training (lambda = 0), layer interval:\\n\\n" + "\\n".join(lines)))
change["layer"].style.format(precision=3).hide(axis="index")""", []),
    ("code", """change["kernel"].style.format(precision=3).hide(axis="index")""", []),
    ("md", "### Fuzziness against epoch, per layer (layer interval, then kernel intervals)", []),
    ("code", """show(mr.plot_fuzziness_vs_epoch(track, "layer", "fuzziness"), "fuzziness_vs_epoch_layer")
show(mr.plot_fuzziness_vs_epoch(track, "kernel", "fuzziness"), "fuzziness_vs_epoch_kernel")""", []),
    ("md", "### Fraction of weights near an end of the layer interval", []),
    ("code", """show(mr.plot_fuzziness_vs_epoch(track, "layer", "frac_ends"), "ends_vs_epoch_layer")""", []),
    ("md", """### Histogram of the interval position over training

Each panel: x = weight snapshot (the first-epoch points, then every epoch), y = `mu`, colour =
fraction of the layer's weights in the bin (mean over seeds). The Min-Max property would show
as mass leaving the middle rows for the top and bottom rows.""", []),
    ("code", """show(mr.plot_histogram_evolution(hists, "layer"), "histogram_evolution_layer")
show(mr.plot_histogram_evolution(hists, "kernel"), "histogram_evolution_kernel")""", []),
    ("md", """## Adversarial robustness against eps, per lambda

FGSM takes one signed-gradient step; PGD iterates from a random start and is the stronger
test. Should a lambda raise FGSM accuracy while lowering PGD accuracy, the term makes the
one-step gradient less useful to the attacker rather than the network more robust (the
signature of gradient masking, Athalye, Carlini, Wagner 2018).""", []),
    ("code", """show(mr.plot_robust_vs_eps(rob, chance=1 / num_classes), "robust_vs_eps")
robust = mr.robust_summary(rob, report_eps)
robust.to_csv(Path(tables) / "robust_at_eps.csv", index=False)
display(Markdown(f"At eps = {report_eps:g}: accuracy mean / s.d. over seeds, and the difference to lambda = 0 "
                 "paired by seed (`n_higher` = seeds where lambda beats lambda = 0)."))
robust.style.format(precision=3).hide(axis="index")""", []),
    ("md", """## Fuzziness against robust accuracy

One point per run (every lambda and seed): the final fuzziness of the regularised layers against
the accuracy at `report_eps`. Pearson and Spearman correlations with two-sided p-values over all
runs, and within each lambda where there are at least 3 seeds (lambda drives both variables, so
the across-lambda correlation alone does not show a mechanism).""", []),
    ("code", """points, corr = mr.fuzziness_robustness(hist, rob, report_eps)
points.to_csv(Path(tables) / "fuzziness_vs_robust_points.csv", index=False)
corr.to_csv(Path(tables) / "fuzziness_robust_correlation.csv", index=False)
show(mr.plot_fuzziness_vs_robust(points, corr), "fuzziness_vs_robust")
corr.style.format(precision=3).hide(axis="index")""", []),
    ("md", """## Cross-study link: internal perturbation of the regularised models

The Cheney et al. grid (synapse knockout, node knockout, Gaussian weight noise) on every layer of
every run. Every lambda of one seed meets the same knockout masks and noise draws, so the
comparison is paired. Table: mean accuracy over the levels > 0 per layer and perturbation.""", []),
    ("code", """psum = mr.perturbation_summary(pert)
show(mr.plot_perturbation_by_lambda(psum, chance=1 / num_classes), "perturbation_by_lambda")
auc = mr.perturbation_auc(pert)
auc.to_csv(Path(tables) / "perturbation_mean_accuracy.csv", index=False)
auc.style.format(precision=3).hide(axis="index")""", []),
    ("md", "## Answers, from the numbers above", []),
    ("code", """out = []
if len(c0):
    fell = c0[c0["delta_mean"] < 0]["layer_label"].tolist()
    rose = c0[c0["delta_mean"] >= 0]["layer_label"].tolist()
    out.append(f"- **Fuzziness over plain training (lambda = 0, layer interval)**: fell in {fell or 'no layer'}, "
               f"did not fall in {rose or 'no layer'} (start -> end above).")
for r in robust[robust["lam"] > 0].itertuples():
    out.append(f"- **{r.attack.upper()} at eps {r.eps:g}, lambda {r.lam:g}**: {pm(r.mean, r.sd)} "
               f"vs lambda 0: difference {pm(r.diff_mean, r.diff_sd)} (higher in {r.n_higher}/{r.n_seeds} seeds).")
for r in corr[corr["subset"] == "all runs"].itertuples():
    out.append(f"- **Correlation, {r.attack.upper()}** (n = {r.n}): Pearson r = {r.pearson_r:.2f} (p = {r.pearson_p:.2g}), "
               f"Spearman rho = {r.spearman_rho:.2f} (p = {r.spearman_p:.2g}); negative = less fuzzy, more robust.")
a = auc[auc["lam"] > 0].groupby("lam")["diff_mean"].mean()
for lam, d in a.items():
    out.append(f"- **Internal perturbation, lambda {lam:g}**: mean accuracy over levels, layers and perturbations "
               f"differs from lambda 0 by {d:+.3f}.")
pd.DataFrame({"answer": out}).to_csv(Path(tables) / "answers.csv", index=False)
display(Markdown("\\n".join(out)))""", []),
]


#: template file -> cells; every report rule executes one of these.
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


NOTEBOOKS = {"cheney2017": CHENEY, "pravin2024": PRAVIN, "shen2021": SHEN2021}

if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        nbf.write(notebook(cells, name), HERE / f"{name}.ipynb")
