"""How many repeats / images the findings need (issue 25): measurements, not tests (prints
tables, asserts nothing).

1. ``conv1``: the Cheney et al. conv1 finding (synapse knockout at 70% of the first conv layer
   "near chance") on a trained checkpoint of the default run: ``--repeats`` draws of that one
   cell (repeat indices 0.., the grid's own seeds), then for n = 5, 10, 20, ... repeats: the
   verdict of the first n repeats (the interval the report would show), and over ``--subsets``
   random subsets of n of the draws how often each verdict comes out (the stability), next to
   the power helper's estimate (:func:`netperturb.core.findings.repeats_needed`).

       .venv/bin/python bench/findings_power.py conv1 results/digits/models/alexnet_digits.pt \\
           resources/data/digits/shards --repeats 200

2. ``images``: the Pravin et al. score intervals of a run (``results/<run>/pravin2024``): the
   interval half-widths at the run's images per sweep point and at subsets of them (the
   evaluation images subsampled without replacement, ``--fractions``), the fraction of curves
   classed undetermined at each, and the images per point the 1 / sqrt(n) law says the
   classes need (:func:`netperturb.studies.pravin2024.intervals.images_table`).

       .venv/bin/python bench/findings_power.py images results/digits/pravin2024

3. ``steps``: the Pravin et al. scores of a run at every ``--every``-th threshold of its sweeps
   (S = 25 -> 13 for ``--every 2``: the same thresholds, a subset, so Simpson's rule stays the
   authors' for odd S), against the scores of all its thresholds (both recomputed here with
   the same image resamples): the change of each score, the classes that move, and the
   interval widths. It measures what a coarser default grid costs without
   a second run. It is exactly what ``pravin2024.steps: 13`` with ``pulse_steps: 25`` computes
   (the pulse band of the 25-point sweep; tests/studies/pravin2024/test_pulse_steps.py); with
   the band following S (no ``pulse_steps``) the pulse scores change more than this shows.

       .venv/bin/python bench/findings_power.py steps results/digits/pravin2024 --every 2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd


def conv1(args) -> None:
    import torch

    from netperturb.core.findings import bootstrap_mean, decide, repeats_needed
    from netperturb.core.layers import find_layers
    from netperturb.models.checkpoints import load_model
    from netperturb.models.loading import eval_data
    from netperturb.perturb.grid import LayerJob, baseline_table, run_layer_job
    from netperturb.perturb.registry import make_perturbation

    torch.set_num_threads(1)
    loaded = load_model(args.checkpoint, torch.device("cpu"), None)
    images, labels = eval_data(args.shards, args.split, loaded, torch.device("cpu"))
    layer = find_layers(loaded.model)[0]
    clean = float(baseline_table(loaded, images, labels, study="cheney2017", dataset="digits", model=args.model,
                                 study_seed=args.seed)["top1"].iloc[0])  # fmt: skip
    chance = 1 / int(labels.max().item() + 1)  # top-1 chance of the dataset's classes
    job = LayerJob(study="cheney2017", dataset="digits", model=args.model, layer=layer,
                   perturbation=make_perturbation("synapse_knockout", include_bias=True), levels=[args.level],
                   repeats=args.repeats, study_seed=args.seed)  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    df = run_layer_job(job, loaded, images, labels, batch_size=540, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    acc = df["top1"].to_numpy(float)
    way = (acc - chance) / (clean - chance)
    print(f"\n{args.model} {layer.label} synapse knockout {args.level:g}: {len(acc)} repeats on {len(labels)} images "
          f"({cpu / len(acc):.3f} CPU s per repeat, {wall:.1f} s wall, load {os.getloadavg()[0]:.1f}); clean {clean:.3f}, "
          f"chance {chance:.3f}; accuracy mean {acc.mean():.3f}, s.d. {acc.std(ddof=1):.3f}, min {acc.min():.3f}, "
          f"max {acc.max():.3f}; way from chance to clean {way.mean():.3f} (threshold < {args.near_chance:g})")  # fmt: skip
    print(f"power helper on all {len(acc)} repeats: {repeats_needed(way, args.near_chance):g} repeats needed")
    rng = np.random.default_rng(0)
    print(f"\n{'n':>4}  {'first n: way [95% interval]':>32}  {'verdict':>13}  "
          f"{'holds':>6} {'undet.':>6} {'not':>6}  (of {args.subsets} random subsets of n)  needed(first n)")  # fmt: skip
    for n in [n for n in (5, 10, 20, 40, 80, 160, 320) if n <= len(acc)]:
        m, lo, hi = (float(x) for x in bootstrap_mean(way[:n], n_boot=2000))
        subsets = np.stack([rng.choice(len(way), n, replace=False) for _ in range(args.subsets)])
        _, slo, shi = bootstrap_mean(way[subsets], n_boot=1000)
        verdicts = [decide(a, b, args.near_chance, "<") for a, b in zip(slo, shi)]
        share = {v: verdicts.count(v) / len(verdicts) for v in ("holds", "undetermined", "does not hold")}
        print(f"{n:>4}  {m:>14.3f} [{lo:.3f}, {hi:.3f}]  {decide(lo, hi, args.near_chance, '<'):>13}  "
              f"{share['holds']:>6.0%} {share['undetermined']:>6.0%} {share['does not hold']:>6.0%}"
              f"{'':38}{repeats_needed(way[:n], args.near_chance):g}")  # fmt: skip
    if args.out:
        df.to_csv(args.out, index=False)
        print(f"\ncells written to {args.out}")


def images(args) -> None:
    from netperturb.core.merge import read_table
    from netperturb.studies.pravin2024.intervals import images_table
    from netperturb.studies.pravin2024.scores import filtering_scores

    d = Path(args.study_dir)
    sw, base = read_table(d / "sweeps.csv"), read_table(d / "baseline.csv")
    tol = args.tolerance
    n_all = int(sw["n_images"].iloc[0])
    print(f"\nPravin et al. score intervals over evaluation images ({d}; {n_all} images per point, tolerance {tol:g}, "
          f"{args.n_boot} resamples; load {os.getloadavg()[0]:.1f})")  # fmt: skip
    rows = []
    rng = np.random.default_rng(0)
    for frac in sorted(set(args.fractions) | {1.0}):
        n = max(2, int(round(frac * n_all)))
        keep = np.sort(rng.choice(n_all, n, replace=False)) if n < n_all else np.arange(n_all)
        sub_sw, sub_base = _subsample(sw, keep), _subsample(base, keep)
        t0 = time.process_time()
        sc = filtering_scores(sub_sw, sub_base, tolerance=tol, n_boot=args.n_boot, seed=args.seed)
        cpu = time.process_time() - t0
        need = images_table(sc, tol)
        for r in need.itertuples():
            rows.append({"n_images": n, "mode": r.mode, "score": r.score, "curves": r.n_curves,
                         "undetermined": r.undetermined, "half_width_q50": r.half_width_q50,
                         "half_width_q90": r.half_width_q90, "needed_q50": r.images_needed_q50,
                         "needed_q90": r.images_needed_q90, "cpu_s": cpu})  # fmt: skip
    out = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(out.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


def steps(args) -> None:
    from netperturb.core.merge import read_table
    from netperturb.studies.pravin2024.scores import filtering_scores

    d = Path(args.study_dir)
    sw, base = read_table(d / "sweeps.csv"), read_table(d / "baseline.csv")
    s_full = int(sw["step"].max()) + 1
    if (s_full - 1) % args.every:
        raise SystemExit(f"--every {args.every} does not divide the {s_full - 1} intervals of the run's S = {s_full} grid")
    kw = dict(tolerance=args.tolerance, n_boot=args.n_boot, seed=args.seed)
    full = filtering_scores(sw, base, **kw)
    sub = sw[sw["step"] % args.every == 0].copy()
    sub["step"] //= args.every
    coarse = filtering_scores(sub, base, **kw)
    s_sub = int(sub["step"].max()) + 1
    key = ["model", "init", "epoch", "mode", "layer", "perturbation", "score"]
    m = full.merge(coarse, on=key, suffixes=("_full", "_sub"))
    m["abs_change"] = (m["value_sub"] - m["value_full"]).abs()
    print(f"\nPravin et al. scores at S = {s_sub} (one threshold in {args.every}) against S = {s_full}, same sweeps "
          f"({d}; {len(m)} scores, {args.n_boot} image resamples, tolerance {args.tolerance:g})")  # fmt: skip
    q = m["abs_change"].quantile([0.5, 0.9, 1.0])
    print(f"|score change|: median {q[0.5]:.4f}, q90 {q[0.9]:.4f}, max {q[1.0]:.4f}")
    w_full, w_sub = (m["hi_full"] - m["lo_full"]).median(), (m["hi_sub"] - m["lo_sub"]).median()
    print(f"interval width, median: {w_full:.4f} (S = {s_full}) -> {w_sub:.4f} (S = {s_sub})")
    print(f"classes that move: {(m['class_full'] != m['class_sub']).sum()} of {len(m)}")
    print(pd.crosstab(m["class_full"], m["class_sub"], rownames=[f"S = {s_full}"], colnames=[f"S = {s_sub}"]).to_string())
    for score, g in m.groupby("score", sort=False):
        print(f"{score:>12}: S = {s_full} {g['class_full'].value_counts().to_dict()}; "
              f"S = {s_sub} {g['class_sub'].value_counts().to_dict()}")  # fmt: skip


def _subsample(df: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """The table as if only the images ``keep`` had been evaluated (per-image credits and the
    accuracies recomputed from them)."""
    from netperturb.studies.pravin2024.images import decode_credits, encode_fractions

    df = df.copy()
    for metric in ("top1", "top5"):
        col = f"{metric}_images"
        vals = [decode_credits(t, int(n))[keep] for t, n in zip(df[col], df["n_images"])]
        df[metric] = [v.mean() for v in vals]
        # re-encode (credits here are 0/1 or fractions p/q; keep exact fractions via a common denominator of 2520)
        df[col] = [encode_fractions(np.round(v * 2520).astype(int), np.full(len(v), 2520)) for v in vals]
    df["n_images"] = len(keep)
    return df


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("conv1")
    c.add_argument("checkpoint")
    c.add_argument("shards")
    c.add_argument("--model", default="alexnet_digits")
    c.add_argument("--split", default="test")
    c.add_argument("--level", type=float, default=0.7)
    c.add_argument("--repeats", type=int, default=200)
    c.add_argument("--near-chance", type=float, default=0.2)
    c.add_argument("--subsets", type=int, default=500)
    c.add_argument("--seed", type=int, default=2017)
    c.add_argument("--out")
    c.set_defaults(fn=conv1)
    i = sub.add_parser("images")
    i.add_argument("study_dir")
    i.add_argument("--tolerance", type=float, default=0.05)
    i.add_argument("--n-boot", type=int, default=1000)
    i.add_argument("--seed", type=int, default=2017)
    i.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    i.set_defaults(fn=images)
    s = sub.add_parser("steps")
    s.add_argument("study_dir")
    s.add_argument("--every", type=int, default=2)
    s.add_argument("--tolerance", type=float, default=0.05)
    s.add_argument("--n-boot", type=int, default=1000)
    s.add_argument("--seed", type=int, default=2017)
    s.set_defaults(fn=steps)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
