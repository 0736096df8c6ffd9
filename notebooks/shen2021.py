# %% [markdown]
# # The Min-Max property of conv weights (Shen, Chen, Wang 2021), operationalised
#
# Claim (IJMLC 12 (2021) 1853, arXiv 2011.13719, abstract): during backprop training of LeNet,
# conv weights move away from the centre of their interval towards its minimum or maximum; this
# equals lower *fuzziness* of the parameters; models with the property are more robust to
# adversarial examples, so it can be built into the loss.
# This page shows results only: the executed notebook `shen2021.ipynb` beside it holds the code.

# %% tags=["parameters"]
# Parameters (papermill injects the real values after this cell)
run = "digits"
dataset = "digits"
history = "results/digits/shen2021/history.csv"
control_history = "results/digits/shen2021/control_history.csv"
tracking = "results/digits/shen2021/tracking.parquet"
histograms = "results/digits/shen2021/histograms.parquet"
robustness = "results/digits/shen2021/robustness.csv"
perturbation = "results/digits/shen2021/perturbation.csv"
figures = "results/digits/shen2021/report/figures"
tables = "results/digits/shen2021/report/tables"
num_classes = 10
report_eps = 0.1
end_fraction = 0.1
regularized = ["conv*"]

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from netperturb.core.findings import findings_frame, findings_markdown
from netperturb.core.report import show_figure
from netperturb.studies.shen2021.controls import control_margins
from netperturb.studies.shen2021.findings import READING_NAMES, findings, margin_summary
from netperturb.studies.shen2021.link import robustness_link
from netperturb.studies.shen2021.figures import (
    fuzziness_change,
    fuzziness_robustness,
    perturbation_auc,
    perturbation_summary,
    plot_fuzziness_vs_epoch,
    plot_fuzziness_vs_robust,
    plot_histogram_evolution,
    plot_perturbation_by_lambda,
    plot_robust_vs_eps,
    readings_change,
    robust_summary,
)

hist = pd.read_csv(history)
controls_hist = pd.read_csv(control_history)
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
    show_figure(fig, Path(figures) / name)


# %%
# Findings: the paper's claims checked on this run's tables, against the controls (netperturb.studies.shen2021.findings)
readings = readings_change(track, "layer", end_fraction)
readings.to_csv(Path(tables) / "fuzziness_change_readings.csv", index=False)
present = [r for r in READING_NAMES if r in set(track["interval"].unique())]
margins = pd.concat([control_margins(track, r) for r in present], ignore_index=True)
margins.to_csv(Path(tables) / "fuzziness_margins.csv", index=False)
points, corr = fuzziness_robustness(hist, rob, report_eps)
link = robustness_link(points.assign(eps=report_eps))
link.to_csv(Path(tables) / "robustness_link.csv", index=False)
found = findings(margins, link, readings=present)
findings_frame(found).to_csv(Path(tables) / "findings.csv", index=False)
display(Markdown(findings_markdown(found)))
ctl = controls_hist[controls_hist["epoch"] == controls_hist["epoch"].max()] if len(controls_hist) else controls_hist
display(Markdown(f"**{hist['model'].nunique()} runs** of {hist['arch'].iloc[0]} on {dataset}: lambda in {[float(l) for l in lams]}, "
                 f"seeds {[int(s) for s in seeds]}, {epochs} epochs; {track['epoch'].nunique()} weight snapshots per run; "
                 f"regularised layers {regularized}; device {rob['device'].iloc[0]}. Controls: "
                 + (f"{len(ctl)} shuffled-label runs (test top-1 {ctl['test_top1'].min():.3f}-{ctl['test_top1'].max():.3f}, "
                    f"chance {1 / num_classes:.3f})" if len(ctl) else "no shuffled-label runs")
                 + (", the driftless walk of every run." if "driftless walk" in set(track["control"].unique() if "control" in track else []) else ", no driftless walk.")))

# %% [markdown]
# ## Fuzziness against epoch, per layer (layer interval, then kernel intervals)
#
# One line per lambda (the weight of the fuzziness term; 0 = plain training); the line is the
# mean over training seeds and the shaded band +/- one standard deviation over those seeds: a
# band that covers another lambda's line means the seeds do not separate them. Dashed: ln 2 (every
# weight at the centre of its interval); dotted: 1/2 (positions spread uniformly, the start).

# %%
show(plot_fuzziness_vs_epoch(track, "layer", "fuzziness"), "fuzziness_vs_epoch_layer")
show(plot_fuzziness_vs_epoch(track, "kernel", "fuzziness"), "fuzziness_vs_epoch_kernel")

# %% [markdown]
# ## What is measured
#
# The paper's formulas are not public; what is measured here is **our operationalisation**
# (`netperturb.studies.shen2021.minmax`): position in the interval `mu = (w - min) / (max - min)` (interval of the
# whole layer, or of each kernel = output unit: the `current` reading; the two other readings are in the
# section above), fuzziness `F = -mean(mu ln mu + (1 - mu) ln(1 - mu))`
# (De Luca-Termini; 0 with every weight at an end, ln 2 at the centre, 1/2 for uniform `mu`),
# "near an end" = `mu` within `end_fraction` of 0 or 1, and the loss
# `CE + lambda * mean over the regularised layers of F` with gradients through min and max.
# Attacks: white-box FGSM and L-inf PGD on the test split, eps in units of the [0, 1] pixel range.

# %% [markdown]
# ## The verdict depends on what "the interval" is, and on the controls
#
# The paper does not say (in the parts we could read) which interval the weights move away
# from the centre of, so the same runs are read three ways (`netperturb.studies.shen2021.intervals`):
#
# - **current**: the layer's own `[min W, max W]` at each snapshot (the reading of every other
#   section of this page, and of the loss term); it measures the shape of the weight
#   distribution between its own extremes;
# - **init_bound**: the fixed interval of PyTorch's default initialisation, `+/- 1/sqrt(fan_in)`:
#   where the weights still inside it sit; the weights that left it are counted in
#   "beyond the bound", not as at an end (counting them as F = 0 made the fuzziness fall whenever
#   the spread grew, for a driftless walk too);
# - **trajectory**: each weight's own range over the values it took so far; `mu = 1` means it is
#   at the largest value it ever had. Its table reference is a Monte Carlo driftless random walk of
#   as many steps; the real test is the run's own driftless walk below.
#
# Every reading is also taken on two **controls** with the same optimiser, epochs and seeds
# (`netperturb.studies.shen2021.controls`): the **driftless walk** (each weight takes the run's
# own update at every step with a random sign: the same step sizes and spread, no drift) and a
# network trained on **shuffled labels** (it learns nothing that generalises). A fall that the
# controls show too is diffusion or spread, not learning.
#
# Plain training (lambda = 0), layer scope, mean over seeds; `n_fell` = seeds in which F ended
# below the reference. Near an end = `mu` within `end_fraction` of 0 or 1.

# %%
r0 = readings[readings["lam"] == 0]
display(Markdown("\n".join(
    f"- **{READING_NAMES[r]}**, {c} (reference: {g['reference'].iloc[0]}): "
    + "; ".join(f"{x.layer_label} F {x.F0_mean:.3f} -> {x.Fend_mean:.3f} ({x.n_fell}/{x.n_seeds}), "
                f"near an end {x.ends0_mean:.0%} -> {x.endsend_mean:.0%}"
                + (f", beyond the bound {x.outsideend_mean:.0%}" if r == "init_bound" else "") for x in g.itertuples())
    for (r, c), g in r0.groupby(["interval", "control"], sort=False))))
r0.pivot_table(index=["layer_index", "layer_label"], columns=["interval", "control"], values="Fend_mean",
               sort=False).style.format(precision=3)

# %% [markdown]
# ### Margins against the controls, seed by seed
#
# For each reading, conv and dense layer: the trained run's own fall `F_0 - F_end` and
# `F_end(control) - F_end(trained)` for each control, paired by seed (the runs of a seed start
# from the same weights); mean over seeds with a 95% Student t interval over seeds. Above 0 by
# more than the interval: the trained weights end less fuzzy than the comparator. The finding
# of a reading holds only when every conv layer's margins all do.

# %%
msum = margin_summary(margins)
msum.to_csv(Path(tables) / "fuzziness_margins_summary.csv", index=False)
msum.style.format(precision=3, subset=[c for c in msum.columns if c.endswith(("mean", "lo", "hi"))]).hide(axis="index")

# %%
for reading in [r for r in ("init_bound", "trajectory") if r in set(track["interval"].unique() if "interval" in track else [])]:
    show(plot_fuzziness_vs_epoch(track, "layer", "fuzziness", interval=reading), f"fuzziness_vs_epoch_{reading}")
    show(plot_histogram_evolution(hists, "layer", interval=reading), f"histogram_evolution_{reading}")

# %% [markdown]
# ## Training: clean test accuracy and the regularised fuzziness after the last epoch

# %%
last = hist[hist["epoch"] == epochs]
train_tab = last.groupby("lam").agg(top1_mean=("test_top1", "mean"), top1_sd=("test_top1", "std"),
                                    F_mean=("reg_fuzziness", "mean"), F_sd=("reg_fuzziness", "std"), n=("model", "count")).reset_index()
train_tab.to_csv(Path(tables) / "training.csv", index=False)
train_tab.style.format(precision=4).hide(axis="index")

# %% [markdown]
# ## Does fuzziness fall over training?
#
# Fuzziness at initialisation (epoch 0) and after the last epoch, per layer, mean +/- s.d. over
# seeds; `n_fell` = seeds in which it fell. Rows with lambda = 0 answer the paper's question
# (plain training); the other rows show what the loss term does. PyTorch's default
# (Kaiming-uniform) initialisation spreads `mu` uniformly, so every layer starts near F = 1/2;
# a weight distribution that becomes bell-shaped during training raises F, one that piles up at
# both ends lowers it.

# %%
change = {scope: fuzziness_change(track, scope) for scope in ("layer", "kernel")}
for scope, tab in change.items():
    tab.to_csv(Path(tables) / f"fuzziness_change_{scope}.csv", index=False)
c0 = change["layer"][change["layer"]["lam"] == 0]
if len(c0):
    lines = [f"- **{r.layer_label}**: F {pm(r.F0_mean, r.F0_sd)} -> {pm(r.Fend_mean, r.Fend_sd)} "
             f"(fell in {r.n_fell}/{r.n_seeds} seeds); near an end {r.ends0_mean:.1%} -> {r.endsend_mean:.1%}" for r in c0.itertuples()]
    display(Markdown("Plain training (lambda = 0), layer interval:\n\n" + "\n".join(lines)))
change["layer"].style.format(precision=3).hide(axis="index")

# %%
change["kernel"].style.format(precision=3).hide(axis="index")

# %% [markdown]
# ### Fraction of weights near an end of the layer interval

# %%
show(plot_fuzziness_vs_epoch(track, "layer", "frac_ends"), "ends_vs_epoch_layer")

# %% [markdown]
# ### Histogram of the interval position over training
#
# Each panel: x = weight snapshot (the first-epoch points, then every epoch), y = `mu`, colour =
# fraction of the layer's weights in the bin (mean over seeds). The Min-Max property would show
# as mass leaving the middle rows for the top and bottom rows.

# %%
show(plot_histogram_evolution(hists, "layer"), "histogram_evolution_layer")
show(plot_histogram_evolution(hists, "kernel"), "histogram_evolution_kernel")

# %% [markdown]
# ## Adversarial robustness against eps, per lambda
#
# FGSM takes one signed-gradient step; PGD iterates from a random start and is the stronger
# test. Should a lambda raise FGSM accuracy while lowering PGD accuracy, the term makes the
# one-step gradient less useful to the attacker rather than the network more robust (the
# signature of gradient masking, Athalye, Carlini, Wagner 2018).

# %%
show(plot_robust_vs_eps(rob, chance=1 / num_classes), "robust_vs_eps")
robust = robust_summary(rob, report_eps)
robust.to_csv(Path(tables) / "robust_at_eps.csv", index=False)
display(Markdown(f"At eps = {report_eps:g}: accuracy mean / s.d. over seeds, and the difference to lambda = 0 "
                 "paired by seed (`n_higher` = seeds where lambda beats lambda = 0)."))
robust.style.format(precision=3).hide(axis="index")

# %% [markdown]
# ## Fuzziness against robust accuracy
#
# One point per run (every lambda and seed): the final fuzziness of the regularised layers against
# the accuracy at `report_eps`. Lambda drives both variables, so the correlation pooled over every
# run shows what the loss term does, not a link; the finding reads the link with lambda held
# fixed (`netperturb.studies.shen2021.link`): the **partial correlation controlling for lambda**
# (both variables centred within each lambda; 95% Fisher z interval) and the **seed pairs within
# each lambda** (does the less fuzzy run of a pair have the higher accuracy?). The pooled and
# per-lambda Pearson / Spearman correlations follow for reference.

# %%
points.to_csv(Path(tables) / "fuzziness_vs_robust_points.csv", index=False)
corr.to_csv(Path(tables) / "fuzziness_robust_correlation.csv", index=False)
show(plot_fuzziness_vs_robust(points, corr), "fuzziness_vs_robust")
display(link.style.format(precision=3).hide(axis="index"))
corr.style.format(precision=3).hide(axis="index")

# %% [markdown]
# ## Cross-study link: internal perturbation of the regularised models
#
# The Cheney et al. grid (synapse knockout, node knockout, Gaussian weight noise) on every layer of
# every run. Every lambda of one seed meets the same knockout masks and noise draws, so the
# comparison is paired. Table: mean accuracy over the levels > 0 per layer and perturbation.

# %%
psum = perturbation_summary(pert)
show(plot_perturbation_by_lambda(psum, chance=1 / num_classes), "perturbation_by_lambda")
auc = perturbation_auc(pert)
auc.to_csv(Path(tables) / "perturbation_mean_accuracy.csv", index=False)
auc.style.format(precision=3).hide(axis="index")

# %% [markdown]
# ## Answers, from the numbers above

# %%
out = []
for f in found:
    out.append(f"- **{f.claim}**: {f.verdict}" + (f" ({f.quantity} {f.summary}; {f.interval})." if f.summary else "."))
if len(c0):
    fell = c0[c0["delta_mean"] < 0]["layer_label"].tolist()
    rose = c0[c0["delta_mean"] >= 0]["layer_label"].tolist()
    out.append(f"- **Fuzziness over plain training (lambda = 0, layer interval)**: fell in {fell or 'no layer'}, "
               f"did not fall in {rose or 'no layer'} (start -> end above).")
for r in robust[robust["lam"] > 0].itertuples():
    out.append(f"- **{r.attack.upper()} at eps {r.eps:g}, lambda {r.lam:g}**: {pm(r.mean, r.sd)} "
               f"vs lambda 0: difference {pm(r.diff_mean, r.diff_sd)} (higher in {r.n_higher}/{r.n_seeds} seeds).")
for r in corr[corr["subset"] == "all runs"].itertuples():
    out.append(f"- **Pooled correlation, {r.attack.upper()}** (n = {r.n}, every lambda: driven by lambda): Pearson r = "
               f"{r.pearson_r:.2f} (p = {r.pearson_p:.2g}), Spearman rho = {r.spearman_rho:.2f} (p = {r.spearman_p:.2g}).")
a = auc[auc["lam"] > 0].groupby("lam")["diff_mean"].mean()
for lam, d in a.items():
    out.append(f"- **Internal perturbation, lambda {lam:g}**: mean accuracy over levels, layers and perturbations "
               f"differs from lambda 0 by {d:+.3f}.")
pd.DataFrame({"answer": out}).to_csv(Path(tables) / "answers.csv", index=False)
display(Markdown("\n".join(out)))
