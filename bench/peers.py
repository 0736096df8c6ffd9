"""Benchmark: netperturb (engine and naive loop) against MRFI and PyTorchFI on the same weight bit flips.

Part 1, time. For every conv / dense layer of each model (torchvision AlexNet and ResNet-18,
random init, ``torch.manual_seed(0)``), on the same ``--images`` random 224 x 224 images (labels
mostly the clean network's own top-1), the same fp32 whole-word bit flips at ``--rates`` x
``--repeats``, one torch thread, four tools, interleaved layer by layer so that machine load
hits them alike:

* **engine** -- :func:`netperturb.perturb.engine.run_fast` as the workflow runs it (binomial
  counts; the sparse paths and K from the cost model);
* **naive** -- :func:`netperturb.perturb.engine.run_naive` (deepcopy, flip in place, full forward);
* **MRFI** 2.1.0 -- ``MRFI(model, EasyConfig)`` with a weight fault on the layer
  (``RandomPositionByRate`` at value rate 32 r with a Poisson count, ``FloatRandomBitFlip``):
  MRFI's own bit-error model, its weights restored by MRFI before each forward pass;
* **PyTorchFI** 0.6.0 -- it has no weight bit flip, so its custom-function path
  (``declare_weight_fi(function=...)``): the flipped (weight, bit) pairs drawn as netperturb
  draws them (a Binomial(n x 32, r) count, uniform without replacement, numpy), one call of the
  function per flipped bit. Cells whose injections exceed ``--pytorchfi-max-injections`` are
  not run but estimated from the layer's measured cost per evaluation and per injection
  (marked ``est``).

It prints CPU seconds per faulty evaluation for each tool side by side (CPU time of the
process: a loaded machine inflates it much less than wall time; wall seconds are in the CSV),
the engine's speed-up over each peer, whether the engine's counts equal the naive loop's cell
for cell, the engine's plan (K, cells per path), and the *suffix floor*: the seconds of one
clean forward pass through the network above the layer on the same images (what no tool can
avoid without skipping the network above the fault), as a share of the engine's time per
evaluation; and (``+job``) the same share of that floor plus the one clean pass through the
network *below* the layer that any tool caching the layer's input needs once per job, shared
by the job's cells (``floor + (full pass - floor) / cells``). The totals row sums every layer.

Part 2, statistics (``--stats-repeats`` > 0). On the digit AlexNet (the default run's trained
checkpoint with ``--digits-run``, else a random-init one on scikit-learn digits labelled by
itself) at ``--stats-layers`` x ``--stats-rates``: top-1 over that many repeats per tool
(engine, MRFI, PyTorchFI as above), their means and the two-sided Mann-Whitney U p-value of
netperturb against each peer per cell; and netperturb's ``count: exact`` mean for contrast.

It writes the text table and a CSV to ``--out``. A benchmark, not a test: it asserts nothing.

    OMP_NUM_THREADS=1 nice python bench/peers.py --digits-run .              # the acceptance run
    python bench/peers.py --models alexnet --layers conv1 fc6 --repeats 1 --stats-repeats 0   # a quick look
    python bench/peers.py --render bench/tables/peers-resnet18-32-cpu.csv                    # a table again
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from netperturb.core.evaluate import count_logits  # noqa: E402
from netperturb.core.layers import find_layers  # noqa: E402
from netperturb.core.preprocess import Preprocess  # noqa: E402
from netperturb.core.seeds import cell_seed  # noqa: E402
from netperturb.perturb.engine.graph import split_at_layer, widen_roles  # noqa: E402
from netperturb.perturb.engine.runners import FastPlan, run_fast, run_naive  # noqa: E402
from netperturb.perturb.grid import LayerJob  # noqa: E402
from netperturb.perturb.registry import make_perturbation  # noqa: E402

IMAGENET = Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=None)
TOOLS = ("engine", "naive", "mrfi", "pytorchfi")


# --------------------------------------------------------------------------------------
# The peers
# --------------------------------------------------------------------------------------


class Mrfi:
    """MRFI 2.1.0 with one weight fault config on one layer (its own bit-error model)."""

    def __init__(self, model: nn.Module, path: str):
        from mrfi import MRFI, EasyConfig

        logging.getLogger().setLevel(logging.WARNING)
        cfg = EasyConfig.load_string(
            "faultinject:\n"
            "  - type: weight\n    name: [weight]\n    enabled: True\n"
            "    selector: {method: RandomPositionByRate, poisson: True, rate: 1.0e-3}\n"
            "    error_mode: {method: FloatRandomBitFlip, floattype: float32}\n"
            f"    module_fullname: ['{path}']\n"
        )
        self.fi = MRFI(copy.deepcopy(model), cfg)
        self.args = self.fi.get_configs("weights.0.selector.args", module_fullname=[path])
        assert len(self.args) == 1, path

    def logits(self, x: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
        self.args[0]["rate"] = 32 * rate  # MRFI's rate is per value; 32 bits per fp32 value
        torch.manual_seed(seed % (1 << 63))
        np.random.seed(seed % (1 << 32))  # scipy.stats.poisson.rvs draws from numpy's global generator
        return self.fi(x)


def draw_pairs(n_values: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(value index, bit) pairs of fp32 whole-word flips at bit error rate ``rate``: a
    Binomial(32 n, rate) count, uniform without replacement (numpy; the PyTorchFI runs)."""
    rng = np.random.default_rng(seed)
    pop = n_values * 32
    k = int(rng.binomial(pop, rate))
    chosen = np.unique(rng.integers(0, pop, size=k + k // 8 + 8))
    while chosen.size < k:
        chosen = np.unique(np.concatenate([chosen, rng.integers(0, pop, size=k)]))
    chosen = rng.permutation(chosen)[:k]
    return chosen // 32, chosen % 32


class PyTorchFI:
    """PyTorchFI 0.6.0 weight injection through its custom-function path, one call per bit."""

    def __init__(self, model: nn.Module, layer_module: nn.Module, batch: int, input_shape):
        from pytorchfi.core import fault_injection

        logging.getLogger().setLevel(logging.WARNING)
        self.pfi = fault_injection(model, batch, input_shape=list(input_shape), layer_types=[nn.Conv2d, nn.Linear])
        mods = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.layer_num = next(i for i, m in enumerate(mods) if m is layer_module)
        self.shape = tuple(layer_module.weight.shape)

    def n_injections(self, rate: float, seed: int) -> int:
        return len(draw_pairs(int(np.prod(self.shape)), rate, seed)[0])

    def logits(self, x: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
        values, bits = draw_pairs(int(np.prod(self.shape)), rate, seed)
        coords = np.unravel_index(values, self.shape)
        dims = [c.tolist() for c in coords] + [[None] * len(values)] * (4 - len(self.shape))
        it = iter(bits.tolist())

        def flip(data, location):
            b = next(it)
            v = np.array([float(data[location].reshape(-1)[0])], dtype=np.float32).view(np.uint32)
            v ^= np.uint32(1 << b)
            return torch.tensor(float(v.view(np.float32)[0]))

        model = self.pfi.declare_weight_fi(function=flip, layer_num=[self.layer_num] * len(values), k=dims[0],
                                           dim1=dims[1], dim2=dims[2], dim3=dims[3])  # fmt: skip
        with torch.no_grad():
            return model(x)


# --------------------------------------------------------------------------------------
# Part 1: time
# --------------------------------------------------------------------------------------


def clocked(fn):
    """(result, CPU seconds of the process, wall seconds)."""
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def suffix_floor(model, layer, x) -> tuple[float, float]:
    """CPU seconds of one clean pass through the network above ``layer`` (the suffix, on the
    layer's clean output) and of one full forward pass, medians of 3."""
    with torch.inference_mode():
        split = split_at_layer(model, layer, x[:2])
        live = split.prefix(x)
        u = split.unit(live[split.unit_input], widen_roles([split.clean_tensors()], split), 1)
        rest = [live[i] for i in split.suffix_live]
        floor = statistics.median(clocked(lambda: split.suffix(u.clone(), *[v.clone() for v in rest]))[1] for _ in range(3))
        full = statistics.median(clocked(lambda: model(x))[1] for _ in range(3))
    return floor, full


def model_and_images(name: str, n: int):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=1000).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x8 = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        y = model(IMAGENET(x8)).argmax(1)
    y[::4] = torch.randint(0, 1000, (len(y[::4]),), generator=g)
    return model, x8, y


def time_layer(name, model, x8, y, layer, args, rows, lines):
    fault = make_perturbation("bit_flip", format="fp32", bits="all")
    job = LayerJob(study="peers", dataset="random", model=name, layer=layer, perturbation=fault, levels=args.rates,
                   repeats=args.repeats, study_seed=2024)  # fmt: skip
    cells = list(job.cells())
    x = IMAGENET(x8)
    with torch.no_grad():
        golden = model(x)
    module = model.get_submodule(layer.path)
    res: dict[str, dict] = {}
    plan = FastPlan()
    eng, c, w = clocked(lambda: run_fast(job, model, x8, y, IMAGENET, batch_size=len(y), progress=False, plan=plan))
    res["engine"] = {"cpu": c, "wall": w}
    if "naive" in args.tools:
        nai, c, w = clocked(lambda: run_naive(job, model, x8, y, IMAGENET, batch_size=len(y), progress=False))
        res["naive"] = {"cpu": c, "wall": w}
        same = all((a.n, a.top1, a.top5, a.due, a.sdc1, a.sdc5) == (b.n, b.top1, b.top5, b.due, b.sdc1, b.sdc5)
                   for a, b in zip(eng, nai))  # fmt: skip
    else:
        same = None
    if "mrfi" in args.tools:
        tool = Mrfi(model, layer.path)
        _, c, w = clocked(lambda: [count_logits(tool.logits(x, lv, s), y, golden) for lv, _, s in cells])
        res["mrfi"] = {"cpu": c, "wall": w}
    if "pytorchfi" in args.tools:
        tool = PyTorchFI(model, module, len(y), x.shape[1:])
        k = [tool.n_injections(lv, s) for lv, _, s in cells]
        run = [i for i, kk in enumerate(k) if kk <= args.pytorchfi_max_injections]
        cpu = wall = 0.0
        per_eval, per_inj = None, None
        if run:
            times = []
            for i in run:
                _, c, w = clocked(lambda i=i: count_logits(tool.logits(x, cells[i][0], cells[i][2]), y, golden))
                times.append((k[i], c, w))
                cpu, wall = cpu + c, wall + w
            ks = np.array([t[0] for t in times], float)
            cs = np.array([t[1] for t in times], float)
            if len(set(ks)) > 1:
                per_inj, per_eval = np.polyfit(ks, cs, 1)
            else:
                per_eval, per_inj = float(cs.mean()), 0.0
        est = [i for i in range(len(cells)) if i not in run]
        if est:
            if per_inj is None or per_inj <= 0:  # measure the cost of an injection on this layer
                probe = min(args.pytorchfi_max_injections, 2000)
                lv = probe / (np.prod(module.weight.shape) * 32)
                _, c1, _ = clocked(lambda: tool.logits(x, lv, 1))
                n1 = tool.n_injections(lv, 1)
                _, c0, _ = clocked(lambda: tool.logits(x, 0.0, 1))
                per_eval, per_inj = c0, max((c1 - c0) / max(n1, 1), 0.0)
            cpu += sum(per_eval + per_inj * k[i] for i in est)
            wall = float("nan")
        res["pytorchfi"] = {"cpu": cpu, "wall": wall, "estimated": len(est)}
    floor, full = suffix_floor(model, layer, x)
    n_cells = len(cells)
    per = {t: res[t]["cpu"] / n_cells for t in res}
    row = {"model": name, "layer": layer.label, "path": layer.path, "cells": n_cells, "images": len(y),
           **{f"{t}_s": per.get(t, float("nan")) for t in TOOLS},
           **{f"{t}_wall_s": res[t]["wall"] / n_cells for t in res},
           "pytorchfi_estimated": res.get("pytorchfi", {}).get("estimated", 0), "identical": same,
           "floor_s": floor, "full_s": full, "K": plan.replicas,
           "paths": " ".join(f"{p}:{c}" for p, c in sorted(plan.paths.items())), "fallback": plan.fallback}  # fmt: skip
    rows.append(row)
    lines.append(fmt_row(row))
    print(lines[-1], flush=True)


def fmt_row(r) -> str:
    def s(v):
        return f"{v:9.3f}" if v == v else f"{'-':>9}"

    def ratio(t):
        v = r[f"{t}_s"] / r["engine_s"] if r["engine_s"] > 0 else float("nan")
        return f"{v:6.2f}" if v == v else f"{'-':>6}"

    est = f"{'est' if r['pytorchfi_estimated'] else '':>4}"
    ident = {True: "yes", False: "NO", None: "-"}[r["identical"]]
    return (f"{r['model']:9} {r['layer']:8} {r['cells']:5} {s(r['engine_s'])} {s(r['naive_s'])} {s(r['mrfi_s'])} "
            f"{s(r['pytorchfi_s'])}{est} {ratio('mrfi')} {ratio('pytorchfi')} {ratio('naive')} {ident:>5} "
            f"{s(r['floor_s'])} {100 * r['floor_s'] / r['engine_s']:5.0f}% {100 * job_floor(r) / r['engine_s']:5.0f}% "
            f"{r['K']:3} {r['paths']}")  # fmt: skip


def job_floor(r) -> float:
    """Seconds per evaluation of the suffix floor plus the one clean pass through the network
    below the layer that a job of ``cells`` cells needs (to cache the layer's input), shared
    by its cells: ``floor + (full - floor) / cells``."""
    if "job_floor_s" in r:
        return r["job_floor_s"]
    return r["floor_s"] + (r["full_s"] - r["floor_s"]) / r["cells"]


HEADER = (f"{'model':9} {'layer':8} {'cells':>5} {'engine s':>9} {'naive s':>9} {'MRFI s':>9} {'PyTFI s':>9}    "
          f"{'xMRFI':>6} {'xPyFI':>6} {'xnaive':>6} {'ident':>5} {'floor s':>9} {'floor':>6} {'+job':>6} {'K':>3} paths")  # fmt: skip


def totals(df: pd.DataFrame, name: str) -> str:
    sub = df[df["model"] == name]
    tot = {t: (sub[f"{t}_s"] * sub["cells"]).sum() for t in TOOLS}
    cells = int(sub["cells"].sum())
    row = {"model": name, "layer": "total", "cells": cells, **{f"{t}_s": tot[t] / cells for t in TOOLS},
           "pytorchfi_estimated": int(sub["pytorchfi_estimated"].sum()), "identical": bool(sub["identical"].all())
           if sub["identical"].notna().all() else None, "floor_s": (sub["floor_s"] * sub["cells"]).sum() / cells,
           "job_floor_s": (sub["floor_s"] * sub["cells"] + sub["full_s"] - sub["floor_s"]).sum() / cells,
           "K": 0, "paths": ""}  # fmt: skip
    share = (sub["floor_s"].sum() / sub["full_s"].sum()) if sub["full_s"].sum() > 0 else float("nan")
    return fmt_row(row) + f"\n{'':9} suffix above each layer, summed: {100 * share:.0f}% of the full passes " \
        f"(at most {1 / share:.1f}x for a tool that runs the whole network per fault)"


# --------------------------------------------------------------------------------------
# Part 2: statistics on the digit AlexNet
# --------------------------------------------------------------------------------------


def digits_model(run_dir: str | None):
    """(model, uint8 images, labels, preprocess, what) of the digit AlexNet."""
    if run_dir:
        from netperturb.models.checkpoints import load_model
        from netperturb.models.loading import eval_data

        root = Path(run_dir)
        ckpt = next(iter(sorted(root.glob("results/*/models/alexnet_digits.pt"))), None)
        shards = root / "resources" / "data" / "digits" / "shards"
        if ckpt is not None and shards.exists():
            loaded = load_model(ckpt, "cpu")
            x, y = eval_data(shards, "test", loaded, torch.device("cpu"))
            return loaded.model.eval().requires_grad_(False), x, y, loaded.preprocess, f"trained: {ckpt}"
    from sklearn.datasets import load_digits

    from netperturb.models.registry import get_model

    torch.manual_seed(0)
    model = get_model("alexnet_digits", num_classes=10, in_channels=1).eval().requires_grad_(False)
    d = load_digits()
    x = torch.tensor(d.images[-540:] * (255 / 16), dtype=torch.uint8).unsqueeze(1)
    pre = Preprocess(scale=1 / 255, mean=(0.5,), std=(0.5,), size=32)
    with torch.no_grad():
        y = model(pre(x)).argmax(1)
    return model, x, y, pre, "random init (no --digits-run checkpoint), labels = its own top-1"


def stats_part(args, lines):
    from scipy.stats import mannwhitneyu

    model, x8, y, pre, what = digits_model(args.digits_run)
    lines += ["", f"## statistics: digit AlexNet ({what}), {len(y)} images, {args.stats_repeats} repeats per tool", "",
              f"{'layer':7} {'rate':>7} {'netperturb':>11} {'exact':>7} {'MRFI':>7} {'PyTorchFI':>9} {'p MRFI':>8} "
              f"{'p PyTFI':>8}"]  # fmt: skip
    print("\n".join(lines[-4:]), flush=True)
    x = pre(x8)
    with torch.no_grad():
        golden = model(x)
    layers = {l.label: l for l in find_layers(model)}
    out = []
    for label in args.stats_layers:
        layer = layers[label]
        for rate in args.stats_rates:
            vals = {}
            for count in ("binomial", "exact"):
                job = LayerJob(study="peers", dataset="digits", model="alexnet_digits", layer=layer,
                               perturbation=make_perturbation("bit_flip", count=count), levels=[rate],
                               repeats=args.stats_repeats, study_seed=7)  # fmt: skip
                counts = run_fast(job, model, x8, y, pre, batch_size=len(y), progress=False)
                vals[count] = np.array([c.metrics()["top1"] for c in counts])
            seeds = [cell_seed(11, "digits", layer.path, "peer", rate, r) for r in range(args.stats_repeats)]
            mr = Mrfi(model, layer.path)
            vals["mrfi"] = np.array([count_logits(mr.logits(x, rate, s), y, golden).metrics()["top1"] for s in seeds])
            pf = PyTorchFI(model, model.get_submodule(layer.path), len(y), x.shape[1:])
            vals["pytorchfi"] = np.array([count_logits(pf.logits(x, rate, s), y, golden).metrics()["top1"] for s in seeds])

            def p(other):
                a, b = vals["binomial"], vals[other]
                return 1.0 if np.array_equal(np.sort(a), np.sort(b)) or (a.std() == 0 and b.std() == 0 and a[0] == b[0]) \
                    else float(mannwhitneyu(a, b, alternative="two-sided").pvalue)

            row = {"layer": label, "rate": rate, **{f"{k}_mean": v.mean() for k, v in vals.items()},
                   "p_mrfi": p("mrfi"), "p_pytorchfi": p("pytorchfi")}  # fmt: skip
            out.append(row)
            lines.append(f"{label:7} {rate:7.0e} {row['binomial_mean']:11.4f} {row['exact_mean']:7.4f} "
                         f"{row['mrfi_mean']:7.4f} {row['pytorchfi_mean']:9.4f} {row['p_mrfi']:8.3f} "
                         f"{row['p_pytorchfi']:8.3f}")  # fmt: skip
            print(lines[-1], flush=True)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["alexnet", "resnet18"])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--rates", type=float, nargs="+", default=[1e-7, 1e-6, 1e-5, 1e-4, 1e-3])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", nargs="*", default=None, help="layer labels (default: every conv / dense layer)")
    ap.add_argument("--tools", nargs="+", default=list(TOOLS[1:]), help="peers to run besides the engine")
    ap.add_argument("--pytorchfi-max-injections", type=int, default=20000)
    ap.add_argument("--stats-repeats", type=int, default=100)
    ap.add_argument("--stats-layers", nargs="+", default=["conv1", "conv3", "fc6"])
    ap.add_argument("--stats-rates", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3])
    ap.add_argument("--digits-run", default=None, help="a run folder with results/*/models/alexnet_digits.pt and "
                    "resources/data/digits/shards (the default run's checkout)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "tables"))
    ap.add_argument("--render", metavar="CSV", help="print part 1's table from a CSV this script wrote, and exit")
    args = ap.parse_args(argv)
    if args.render:
        df = pd.read_csv(args.render)
        df["identical"] = df["identical"].astype(object).where(df["identical"].notna(), None)
        print(HEADER)
        for name in dict.fromkeys(df["model"]):
            for r in df[df["model"] == name].to_dict("records"):
                print(fmt_row(r))
            print(totals(df, name))
        return 0
    torch.set_num_threads(args.threads)
    import mrfi
    import pytorchfi

    stamp = dt.datetime.now().isoformat(timespec="seconds")
    lines = [
        f"# peers: netperturb engine / naive vs MRFI / PyTorchFI, fp32 weight bit flips, {stamp}",
        f"host {platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"cpu; MRFI {getattr(mrfi, '__version__', '?')} (package 2.1.0), PyTorchFI {getattr(pytorchfi, '__version__', '0.6.0')}",
        f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"command: python bench/peers.py {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"grid: {', '.join(args.models)}; {args.images} images; rates {', '.join(f'{r:g}' for r in args.rates)}; "
        f"{args.repeats} repeats; one job per layer",
        "",
        "CPU seconds per faulty evaluation (x = peer / engine); ident = engine counts == naive counts cell for cell;",
        "floor = one clean pass through the network above the layer, and its share of the engine's time per evaluation;",
        "+job = the same share with the one clean pass below the layer that the job needs added, shared by its cells;",
        "K = cells per suffix call; paths = the engine's cells per path (delta / inplace / dense / clean = no flip).",
        "",
        HEADER,
    ]
    print("\n".join(lines), flush=True)
    rows: list[dict] = []
    for name in args.models:
        model, x8, y = model_and_images(name, args.images)
        for layer in find_layers(model):
            if args.layers and layer.label not in args.layers:
                continue
            time_layer(name, model, x8, y, layer, args, rows, lines)
        df = pd.DataFrame(rows)
        lines.append(totals(df, name))
        print(lines[-1], flush=True)
    tag = f"{'-'.join(args.models)}-{args.images}-cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / f"peers-{tag}.csv", index=False)
    if args.stats_repeats > 0:
        stats_part(args, lines).to_csv(out / f"peers-{tag}-stats.csv", index=False)
    lines.append(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    (out / f"peers-{tag}.txt").write_text("\n".join(lines) + "\n")
    print(lines[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
