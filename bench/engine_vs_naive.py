"""Benchmark: the perturbation grid through the naive loop and through netperturb's engine.

One command runs the same grid (model x layers x perturbations x levels x repeats) on the
same images two ways, interleaved job by job so that machine load hits both alike:

* **naive** -- how the seeds' authors and PyTorchFI users run it: per cell
  ``copy.deepcopy`` the model, perturb the copy in place, decode the JPEGs again through a
  torchvision ``ImageFolder`` ``DataLoader`` and run the full forward pass
  (:func:`netperturb.perturb.engine.naive_cells`);
* **engine** -- :func:`netperturb.perturb.engine.run_fast` on the images decoded once into uint8
  (clean-prefix reuse, batched replicas, masks in bulk, normalisation on the device);
* **pytorchfi** (synapse knockout only, when ``pytorchfi`` is importable) -- the same
  knocked-out weights injected with ``pytorchfi.core.fault_injection.declare_weight_fi``
  (one Python-level injection per weight); cells whose injections would take longer than
  ``--pytorchfi-max-s`` are not run but estimated from the measured cost per injection.

It prints, per layer, seconds for each, their ratio, and whether every cell's top-1 and
top-5 counts are identical, and writes the table (text + per-job CSV) to ``--out``. It
also prints images/s, the fraction of the FLOP floor reached (MACs of prefix + suffix
counted with ``FlopCounterMode``, against the throughput of a large matrix product
measured on the same device and precision) and the projected time of the same grid on
50,000 images. This is a benchmark, not a test: it asserts nothing about time.

    python bench/engine_vs_naive.py --model alexnet --images 32            # the acceptance run
    python bench/engine_vs_naive.py --images 64 --levels 3 --repeats 1     # a quick look
    python bench/engine_vs_naive.py --device cuda --images 2048 --precision bf16

``bench/gpu.sh`` (the one-shot GPU check, ``bench/gpu_check.py``) runs it in fp32 and bf16 on a GPU.

Without ``--image-dir`` it writes its own JPEG folder (scikit-learn's handwritten digits
scaled to 224 x 224 with colour and noise, one folder per class); a folder of another size
is resized (256) and centre-cropped (224) the way torchvision's ImageNet weights expect.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from netperturb.core.evaluate import Counts, resolve_device  # noqa: E402
from netperturb.core.layers import find_layers, select_layers  # noqa: E402
from netperturb.core.preprocess import Preprocess  # noqa: E402
from netperturb.core.seeds import cell_generator  # noqa: E402
from netperturb.perturb.base import n_chosen  # noqa: E402
from netperturb.perturb.draws import choose_mask, stream_key  # noqa: E402
from netperturb.perturb.engine.graph import macs_per_image, split_at_layer  # noqa: E402
from netperturb.perturb.engine.runners import FastPlan, naive_cells, run_fast  # noqa: E402
from netperturb.perturb.grid import LayerJob  # noqa: E402
from netperturb.perturb.registry import make_perturbation  # noqa: E402

IMAGENET = Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=None)
PERTURBATIONS = {"synapse_knockout": 1.0, "node_knockout": 1.0, "gaussian_noise": 2.0}  # max level


def write_jpeg_folder(root: Path, n: int, seed: int = 0, size: int = 224) -> Path:
    """n JPEGs (size x size RGB, quality 90) from scikit-learn's digits, one folder per class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    done = root / f".complete-{n}-{size}"
    if done.exists():
        return root
    for i in range(n):
        j = i % len(digits.images)
        img = Image.fromarray((digits.images[j] * 255 / 16).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        gray = np.asarray(img, dtype=np.float32) / 255
        tint = rng.uniform(0.3, 1.0, size=3)
        rgb = gray[..., None] * tint * 200 + rng.uniform(0, 55, size=3) + rng.normal(0, 8, size=(size, size, 3))
        out = root / str(digits.target[j]) / f"{i:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(out, quality=90)
    done.touch()
    return root


def pil_transforms(size: int | None):
    """uint8 (C, H, W) from a PIL image; Resize(256)+CenterCrop(224) unless already size x size."""
    from torchvision.transforms import v2

    steps = [v2.PILToTensor()]
    if size is not None:
        steps = [v2.Resize(256), v2.CenterCrop(224)] + steps
    return steps


def peak_tflops(device: torch.device, precision: str) -> float:
    """Throughput of a large matrix product on ``device`` in ``precision`` (TFLOP/s)."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    n = 8192 if device.type == "cuda" else 1024
    if device.type == "cpu":
        dtype = torch.float32 if precision == "fp32" else dtype
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < 1.0:
        a @ b
        reps += 1
        sync()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def _inject(pfi, layer_num, shape, idx):
    """pytorchfi weight injections setting the flat entries ``idx`` of the layer to 0."""
    k = int(idx.numel())
    coords = [c.tolist() for c in np.unravel_index(idx.numpy(), shape)] if k else [[] for _ in shape]
    while len(coords) < 4:
        coords.append([None] * k)
    return pfi.declare_weight_fi(layer_num=[layer_num] * k, k=coords[0], dim1=coords[1], dim2=coords[2],
                                 dim3=coords[3], value=[0.0] * k)  # fmt: skip


def pytorchfi_cells(job, model, loader, layer_num, max_s, naive_cell_s):
    """Synapse knockout through pytorchfi's weight injection (``declare_weight_fi``: a model
    deepcopy and one Python-level assignment per knocked-out weight), with the same draws as
    :class:`netperturb.perturb.knockouts.SynapseKnockout` (biases zeroed on the corrupted copy,
    which pytorchfi does not reach). Cells whose injections would take more than ``max_s``
    are estimated: injections x measured seconds per injection + the naive cell time.

    Returns:
        (counts or None per cell, seconds measured + estimated, whether any was estimated)
    """
    from pytorchfi.core import fault_injection

    from netperturb.core.evaluate import count_logits

    mod = model.get_submodule(job.layer.path)
    shape, n = tuple(mod.weight.shape), mod.weight.numel()
    dev = next(model.parameters()).device
    x0, _ = next(iter(loader))
    pfi = fault_injection(model, batch_size=x0.shape[0], input_shape=list(x0.shape[1:]),
                          layer_types=[torch.nn.Conv2d, torch.nn.Linear], use_cuda=dev.type == "cuda")  # fmt: skip
    calib = torch.randperm(n)[: min(n, 2000)]
    t = time.perf_counter()
    _inject(pfi, layer_num, shape, calib)
    t_copy = time.perf_counter()
    _inject(pfi, layer_num, shape, calib[:0])
    t_copy = time.perf_counter() - t_copy
    per_inj = max(time.perf_counter() - t - 2 * t_copy, 0.0) / max(int(calib.numel()), 1)
    out, total, estimated = [], 0.0, False
    for level, _repeat, seed in job.cells():
        g = cell_generator(seed)
        k = n_chosen(level, n)
        if k * per_inj > max_s:
            total += k * per_inj + naive_cell_s
            estimated = True
            out.append(None)
            continue
        t = time.perf_counter()
        net = _inject(pfi, layer_num, shape, torch.nonzero(choose_mask(n, k, stream_key(g))).squeeze(1))
        if job.perturbation.include_bias and mod.bias is not None:
            b = net.get_submodule(job.layer.path).bias
            with torch.no_grad():
                b.view(-1)[choose_mask(b.numel(), n_chosen(level, b.numel()), stream_key(g))] = 0
        counts = Counts()
        with torch.no_grad():
            for x, y in loader:
                counts += count_logits(net(x.to(dev)), y.to(dev))
        out.append(counts)
        total += time.perf_counter() - t
    return out, total, estimated


def same_counts(a: list[Counts], b: list[Counts]) -> tuple[bool, float]:
    ok = all(x.top1 == y.top1 and x.top5 == y.top5 and x.n == y.n for x, y in zip(a, b)) and len(a) == len(b)
    dloss = max((abs(x.loss_sum - y.loss_sum) / max(x.n, 1) for x, y in zip(a, b)), default=0.0)
    return ok, dloss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="alexnet", help="torchvision classifier (random init unless --weights)")
    ap.add_argument("--weights", default=None, help="state_dict file for the model (e.g. torchvision's .pth)")
    ap.add_argument("--images", type=int, default=32, help="number of images")
    ap.add_argument("--image-dir", default=None, help="ImageFolder root (default: write digit JPEGs)")
    ap.add_argument("--levels", type=int, default=11, help="levels per perturbation: 0..1 (knockouts), 0..2 (noise)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--perturbations", nargs="+", default=list(PERTURBATIONS), choices=list(PERTURBATIONS))
    ap.add_argument("--layers", nargs="+", default=["all"], help="paths, labels or globs (default all)")
    ap.add_argument("--batch-size", type=int, default=None, help="images per batch (default: all, max 256)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="engine precision")
    ap.add_argument("--max-replicas", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers of the naive loop (default: 0 on CPU, 8 on GPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=2017, help="study seed (cell seeds derive from it)")
    ap.add_argument("--pytorchfi", choices=["auto", "off"], default="auto", help="third column for synapse knockout")
    ap.add_argument("--pytorchfi-max-s", type=float, default=20.0, help="estimate pytorchfi cells that would take longer")
    ap.add_argument("--skip-naive", action="store_true", help="engine only (projections on a big GPU run)")
    ap.add_argument("--out", default=None, help="table file (default bench/out/engine_vs_naive-<model>-<n>-<device>.txt)")
    args = ap.parse_args(argv)

    import torchvision
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels (both paths)
    out = Path(args.out or REPO / "bench" / "out" / f"engine_vs_naive-{args.model}-{args.images}-{device.type}-{args.precision}.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    load0 = os.getloadavg()
    say(f"# engine vs naive: {args.model}, {args.images} images, {dt.datetime.now().isoformat(timespec='seconds')}")
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    say(f"host {platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"device {device} ({dev_name}), engine precision {args.precision}")  # fmt: skip
    say(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")

    # images: a JPEG folder, decoded once into uint8 for the engine
    if args.image_dir:
        root = Path(args.image_dir)
    else:
        root = write_jpeg_folder(REPO / "bench" / "out" / f"jpeg-{args.images}", args.images)
    probe = ImageFolder(str(root))
    first = probe.loader(probe.samples[0][0])
    resize = None if first.size == (224, 224) else 224
    ds_u8 = ImageFolder(str(root), transform=v2.Compose(pil_transforms(resize)))
    n = min(args.images, len(ds_u8))
    subset = torch.utils.data.Subset(ds_u8, range(n))
    t = time.perf_counter()
    images = torch.stack([subset[i][0] for i in range(n)])
    labels = torch.tensor([subset[i][1] for i in range(n)], dtype=torch.long)
    t_decode = time.perf_counter() - t
    say(f"images: {root} ({n} JPEGs, {len(probe.classes)} classes); decoded once into uint8 {tuple(images.shape)} "
        f"in {t_decode:.2f} s")  # fmt: skip
    bs = args.batch_size or min(n, 256)

    naive_tf = v2.Compose(pil_transforms(resize) + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET.mean, IMAGENET.std)])
    ds_f = torch.utils.data.Subset(ImageFolder(str(root), transform=naive_tf), range(n))
    workers = args.workers if args.workers is not None else (0 if device.type == "cpu" else min(8, os.cpu_count() or 1))
    loader = DataLoader(ds_f, batch_size=bs, shuffle=False, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=device.type == "cuda")  # fmt: skip
    xb, _ = next(iter(loader))
    same_input = torch.equal(xb, IMAGENET(images[: xb.shape[0]]))
    say(f"naive input pipeline: ImageFolder + DataLoader(batch {bs}, {workers} workers), PILToTensor, ToDtype(scale), "
        f"Normalize; identical to the engine's on-device Preprocess: {'yes' if same_input else 'NO'}")  # fmt: skip

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None, **({"aux_logits": False, "init_weights": False} if args.model in ("googlenet", "inception_v3") else {}))
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model = model.eval().requires_grad_(False).to(device)
    say(f"model: {args.model} ({'weights ' + args.weights if args.weights else 'random init, torch.manual_seed(0)'})")
    layers = select_layers(find_layers(model), args.layers if args.layers != ["all"] else "all")

    pfi_ok = False
    if args.pytorchfi == "auto":
        try:
            import pytorchfi  # noqa: F401

            pfi_ok = "synapse_knockout" in args.perturbations and not args.skip_naive
        except ImportError:
            say("pytorchfi: not importable (pip install pytorchfi) -- column omitted")
    peak = peak_tflops(device, args.precision)
    say(f"matmul throughput measured on this device ({args.precision}): {peak:.3f} TFLOP/s")
    say(f"grid: {len(layers)} layers x {len(args.perturbations)} perturbations x {args.levels} levels x "
        f"{args.repeats} repeats = {len(layers) * len(args.perturbations) * args.levels * args.repeats} cells")  # fmt: skip
    say()

    rows = []
    x_one = IMAGENET(images[:1]).to(device)
    for layer in layers:
        split = split_at_layer(model, layer, IMAGENET(images[:2]).to(device))
        macs = macs_per_image(split, x_one)
        for name in args.perturbations:
            top = PERTURBATIONS[name]
            levels = [round(top * i / max(args.levels - 1, 1), 10) for i in range(args.levels)]
            job = LayerJob(study="bench", dataset="jpeg", model=args.model, layer=layer,
                           perturbation=make_perturbation(name), levels=levels, repeats=args.repeats,
                           study_seed=args.seed)  # fmt: skip
            n_cells = len(levels) * args.repeats
            row = {"layer": layer.path, "label": layer.label, "perturbation": name, "cells": n_cells,
                   "prefix_macs": macs["prefix"], "suffix_macs": macs["suffix"]}  # fmt: skip
            if not args.skip_naive:
                t = time.perf_counter()
                naive = naive_cells(job, model, lambda: loader, progress=False)
                row["naive_s"] = time.perf_counter() - t
            plan = FastPlan()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fast = run_fast(job, model, images, labels, IMAGENET, batch_size=bs, precision=args.precision,
                            max_replicas=args.max_replicas, progress=False, plan=plan)  # fmt: skip
            if device.type == "cuda":
                torch.cuda.synchronize()
            row["engine_s"] = time.perf_counter() - t
            row["replicas"], row["draw_s"] = plan.replicas, plan.draw_seconds
            if not args.skip_naive:
                row["identical"], row["max_dloss"] = same_counts(naive, fast)
            if pfi_ok and name == "synapse_knockout":
                pc, row["pytorchfi_s"], row["pytorchfi_estimated"] = pytorchfi_cells(
                    job, model, loader, layer.index - 1, args.pytorchfi_max_s, row["naive_s"] / n_cells
                )
                ran = [(a, b) for a, b in zip(naive, pc) if b is not None]
                row["pytorchfi_identical"] = same_counts([a for a, _ in ran], [b for _, b in ran])[0]
            # work the engine had to do at least: prefix once, the rest of the network per
            # computed cell (perturbed, not copied from an identical one) and one clean pass;
            # the layer itself once per group of K when node knockout reuses the clean output
            computed = sum(1 for lv in levels if lv != 0) * args.repeats - plan.deduplicated
            unit_calls = math.ceil(computed / plan.replicas) if plan.reuse_clean_unit else computed
            row["engine_flop"] = 2 * n * (macs["prefix"] + (macs["suffix"] - macs["unit"]) * (computed + 1)
                                          + macs["unit"] * (unit_calls + 1))  # fmt: skip
            rows.append(row)
            msg = f"{layer.label:>6} {name:<17} engine {row['engine_s']:8.2f} s (K={plan.replicas})"
            if "naive_s" in row:
                msg += f"  naive {row['naive_s']:8.2f} s  x{row['naive_s'] / row['engine_s']:.2f}  identical {row['identical']}"
            if "pytorchfi_s" in row:
                msg += f"  pytorchfi {row['pytorchfi_s']:8.1f} s{' (est.)' if row['pytorchfi_estimated'] else ''}"
            print(msg, flush=True)

    df = pd.DataFrame(rows)
    df.to_csv(out.with_suffix(".csv"), index=False)
    load1 = os.getloadavg()
    say()
    say(table(df, n, peak, args))
    say()
    say(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten: {out} and {out.with_suffix('.csv')}")
    return 0


def table(df: pd.DataFrame, n: int, peak: float, args) -> str:
    """The per-layer table, totals, and throughput figures."""
    has_naive = "naive_s" in df
    g = df.groupby(["layer", "label"], sort=False)
    agg = g.agg(cells=("cells", "sum"), engine_s=("engine_s", "sum"), replicas=("replicas", "max"),
                suffix_macs=("suffix_macs", "first"), prefix_macs=("prefix_macs", "first"),
                engine_flop=("engine_flop", "sum"))  # fmt: skip
    if has_naive:
        agg["naive_s"] = g["naive_s"].sum()
        agg["identical"] = g["identical"].all()
    if "pytorchfi_s" in df:
        syn = df[df["perturbation"] == "synapse_knockout"].set_index("layer")
    buf = io.StringIO()
    head = f"{'layer':<8}{'path':<16}{'cells':>6}{'suffix MMAC':>12}"
    if has_naive:
        head += f"{'naive s':>10}{'engine s':>10}{'ratio':>8}{'identical':>11}"
    else:
        head += f"{'engine s':>10}"
    head += f"{'K':>4}{'img/s':>10}{'floor':>7}"
    if "pytorchfi_s" in df:
        head += f"  | synapse knockout:{'naive s':>9}{'engine s':>9}{'pytorchfi s':>13}"
    print(head, file=buf)
    for (path, label), r in agg.iterrows():
        line = f"{label:<8}{path:<16}{r.cells:>6}{r.suffix_macs / 1e6:>12.1f}"
        if has_naive:
            line += f"{r.naive_s:>10.1f}{r.engine_s:>10.1f}{r.naive_s / r.engine_s:>8.2f}{'yes' if r.identical else 'NO':>11}"
        else:
            line += f"{r.engine_s:>10.1f}"
        line += f"{r.replicas:>4}{r.cells * n / r.engine_s:>10.0f}{r.engine_flop / r.engine_s / (peak * 1e12):>7.1%}"
        if "pytorchfi_s" in df and path in syn.index:
            s = syn.loc[path]
            est = " est." if s["pytorchfi_estimated"] else ("" if s["pytorchfi_identical"] else " DIFF")
            line += f"  | {'':>17}{s['naive_s']:>9.1f}{s['engine_s']:>9.1f}{s['pytorchfi_s']:>13.1f}{est}"
        print(line, file=buf)
    tot_e = agg["engine_s"].sum()
    line = f"{'total':<24}{int(agg['cells'].sum()):>6}{'':>12}"
    if has_naive:
        tot_n = agg["naive_s"].sum()
        line += f"{tot_n:>10.1f}{tot_e:>10.1f}{tot_n / tot_e:>8.2f}{'yes' if agg['identical'].all() else 'NO':>11}"
    else:
        line += f"{tot_e:>10.1f}"
    line += f"{'':>4}{agg['cells'].sum() * n / tot_e:>10.0f}{agg['engine_flop'].sum() / tot_e / (peak * 1e12):>7.1%}"
    print(line, file=buf)
    # projection to 50,000 images: draws are per cell, the rest scales with the images
    draw = df["draw_s"].sum()
    proj = (tot_e - draw) * 50_000 / n + draw
    print(
        f"\nimg/s = cells x images / engine seconds; floor = FLOPs the engine must do (prefix once, unit + suffix per "
        f"computed cell - the unit once per group when node knockout reuses the clean layer - and one clean pass) / "
        f"engine seconds / measured matmul throughput ({peak:.3f} TFLOP/s).\n"
        f"projected engine time for this grid on 50,000 images: {proj / 60:.1f} min "
        f"(draws {draw:.1f} s per grid, the rest x {50_000 / n:.0f})",
        file=buf,
    )
    if has_naive:
        print(f"projected naive time on 50,000 images: {agg['naive_s'].sum() * 50_000 / n / 3600:.1f} h", file=buf)
    return buf.getvalue().rstrip()


if __name__ == "__main__":
    sys.exit(main())
