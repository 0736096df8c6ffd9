"""Benchmark: the engine against the naive loop on today's architectures, side by side.

For each architecture of the test matrix (torchvision resnet18, mobilenet_v3_small,
efficientnet_b0, convnext_tiny, vit_b_16, swin_t; timm resnet18 and vit_tiny_patch16_224 when
timm is installed), random init, on the same random images, a few chosen layers (the first, a
middle one, the last, the first attention in_proj, the first depthwise conv) with one
perturbation grid each, three ways, interleaved layer by layer so that machine load hits
all alike:

* **naive** -- per cell ``copy.deepcopy`` the model, perturb the copy in place, full forward
  pass (:func:`netperturb.perturb.engine.run_naive`);
* **engine** -- :func:`netperturb.perturb.engine.run_fast` with its defaults (on the CPU the
  suffix runs once per replica: the numbers equal the naive loop's bit for bit);
* **engine, batched suffix** -- ``run_fast(..., exact=False)``: one suffix call for the K
  replicas (the GPU default; a logit's last bits may differ).

It prints per layer the path the engine took (graph split / hook path / functional), K, the
cells, seconds of each (CPU seconds of this process: the machine may be loaded), the naive /
engine ratio, and whether every cell's counts are identical to the naive loop's (top-1,
top-5, exact loss sum, SDC, DUE; for the batched suffix: top-1 / top-5 identical and the
largest relative loss difference). This is a benchmark, not a test: it asserts nothing.

    python bench/architectures.py                          # 64 images at 64 x 64, one thread
    python bench/architectures.py --size native --threads 2  # each architecture's own input size
    python bench/architectures.py --archs vit_b_16 swin_t --images 64
    python bench/architectures.py --archs timm_vit_tiny_patch16_224 --all-paths   # graph vs hooks vs functional

``--all-paths`` adds the engine forced onto the hook path
(:mod:`netperturb.perturb.engine.hooks`) and the functional engine (per cell the whole network
with the perturbed tensors swapped in), to see what each path costs on the same layers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from netperturb.core.evaluate import Counts  # noqa: E402
from netperturb.core.layers import find_layers  # noqa: E402
from netperturb.core.preprocess import Preprocess  # noqa: E402
from netperturb.perturb.engine.runners import FastPlan, run_fast, run_functional, run_naive  # noqa: E402
from netperturb.perturb.grid import LayerJob  # noqa: E402
from netperturb.perturb.registry import make_perturbation  # noqa: E402

IMAGENET = Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=None)

# name -> (library, model name, native input side, keyword for a smaller input or None, patch multiple)
ARCHS = {
    "resnet18": ("torchvision", "resnet18", 224, None, 32),
    "mobilenet_v3_small": ("torchvision", "mobilenet_v3_small", 224, None, 32),
    "efficientnet_b0": ("torchvision", "efficientnet_b0", 224, None, 32),
    "convnext_tiny": ("torchvision", "convnext_tiny", 224, None, 32),
    "vit_b_16": ("torchvision", "vit_b_16", 224, "image_size", 16),
    "swin_t": ("torchvision", "swin_t", 224, None, 32),
    "timm_resnet18": ("timm", "resnet18", 224, None, 32),
    "timm_vit_tiny_patch16_224": ("timm", "vit_tiny_patch16_224", 224, "img_size", 16),
}


def build(arch: str, side: int, classes: int) -> torch.nn.Module:
    """Random-init model (``torch.manual_seed(0)``) taking ``side`` x ``side`` images."""
    lib, name, native, kw, _ = ARCHS[arch]
    extra = {kw: side} if kw and side != native else {}
    torch.manual_seed(0)
    if lib == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=classes, **extra).eval().requires_grad_(False)
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=classes, **extra).eval().requires_grad_(False)


def chosen(layers):
    """The first layer, a middle one, the last, the first in_proj, the first depthwise conv and
    the first attention qkv."""
    pick = {layers[0].path, layers[len(layers) // 2].path, layers[-1].path}
    pick.update([l.path for l in layers if l.kind == "in_proj"][:1])
    pick.update([l.path for l in layers if l.groups > 1][:1])
    pick.update([l.path for l in layers if l.path.endswith("attn.qkv")][:1])  # Swin: read by shifted_window_attention
    return [l for l in layers if l.path in pick]


def compare(ref: list[Counts], got: list[Counts]) -> tuple[str, float]:
    """("yes" if every count is identical, "top-k" if top-1 / top-5 are, else "NO"), and
    the largest relative difference of the loss sums."""
    rel = max(abs(float(a.loss_sum) - float(b.loss_sum)) / max(abs(float(a.loss_sum)), 1e-30) for a, b in zip(ref, got))
    if ref == got:
        return "yes", rel
    same_topk = all((a.n, a.top1, a.top5) == (b.n, b.top1, b.top5) for a, b in zip(ref, got))
    return ("top-k" if same_topk else "NO"), rel


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", default="64", help="input side in pixels, or 'native' (each architecture's own, 224)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--perturbation", default="gaussian_noise")
    ap.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-replicas", type=int, default=4)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--all-paths", action="store_true",
                    help="two more columns: the engine forced onto the hook path, and the functional engine")
    ap.add_argument("--out", default=None, help="table file (default bench/out/architectures-<n>-<size>-cpu-fp32.txt)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    load0 = os.getloadavg()
    say(f"# engine vs naive per architecture: {args.images} images, input {args.size}, {dt.datetime.now().isoformat(timespec='seconds')}")
    say(f"host {platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, fp32")
    say(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    say(f"grid per layer: {args.perturbation}, levels {args.levels}, {args.repeats} repeats; batch {args.batch_size}; "
        f"K <= {args.max_replicas}; random init, {args.classes} classes")  # fmt: skip
    say("seconds: CPU seconds of this process (time.process_time), each engine on the same images, interleaved per layer")
    say()
    header = (f"{'arch':<26} {'layer':<54} {'kind':<7} {'path':<6} {'K':>2} {'cells':>5} {'naive s':>8} {'engine s':>8} "
              f"{'ratio':>6} {'identical':>9} {'batched s':>9} {'ratio':>6} {'batched same':>12} {'max rel loss':>12}")  # fmt: skip
    say(header)
    rows = []
    for arch in args.archs:
        lib = ARCHS[arch][0]
        if lib == "timm":
            try:
                import timm  # noqa: F401
            except ImportError:
                say(f"{arch:<26} (timm not installed: skipped)")
                continue
        native, multiple = ARCHS[arch][2], ARCHS[arch][4]
        side = native if args.size == "native" else max(multiple, int(args.size) // multiple * multiple)
        model = build(arch, side, args.classes)
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 256, (args.images, 3, side, side), dtype=torch.uint8, generator=g)
        with torch.inference_mode():
            y = torch.cat([model(IMAGENET(x[s : s + args.batch_size])).argmax(1) for s in range(0, len(x), args.batch_size)])
        for layer in chosen(find_layers(model)):
            job = LayerJob(study="bench", dataset="random", model=arch, layer=layer,
                           perturbation=make_perturbation(args.perturbation), levels=args.levels, repeats=args.repeats,
                           study_seed=2017)  # fmt: skip
            kw = dict(batch_size=args.batch_size, progress=False)
            t = time.process_time()
            naive = run_naive(job, model, x, y, IMAGENET, **kw)
            t_naive = time.process_time() - t
            plan = FastPlan()
            t = time.process_time()
            fast = run_fast(job, model, x, y, IMAGENET, max_replicas=args.max_replicas, plan=plan, **kw)
            t_fast = time.process_time() - t
            plan_b = FastPlan()
            t = time.process_time()
            batched = run_fast(job, model, x, y, IMAGENET, max_replicas=args.max_replicas, plan=plan_b, exact=False, **kw)
            t_batched = time.process_time() - t
            extra = ""
            if args.all_paths:
                plan_h = FastPlan()
                t = time.process_time()
                hooked = run_fast(job, model, x, y, IMAGENET, max_replicas=args.max_replicas, plan=plan_h, path="hooks", **kw)
                t_hooks = time.process_time() - t
                t = time.process_time()
                functional = run_functional(job, model, x, y, IMAGENET, **kw)
                t_func = time.process_time() - t
                same_h, same_f = compare(naive, hooked)[0], compare(naive, functional)[0]
                extra = (f" | hooks {t_hooks:>7.1f} s ({plan_h.path}, {t_naive / t_hooks:.2f}x, {same_h})"
                         f" | functional {t_func:>7.1f} s ({t_naive / t_func:.2f}x, {same_f})")  # fmt: skip
            same, _ = compare(naive, fast)
            same_b, rel_b = compare(naive, batched)
            cells = len(naive)
            row = dict(arch=arch, side=side, layer=layer.path, kind=layer.kind, path=plan.path, replicas=plan.replicas,
                       cells=cells, naive_s=t_naive, engine_s=t_fast, ratio=t_naive / t_fast, identical=same,
                       batched_s=t_batched, batched_ratio=t_naive / t_batched, batched_same=same_b, batched_rel_loss=rel_b)  # fmt: skip
            rows.append(row)
            say(f"{arch:<26} {layer.path:<54} {layer.kind:<7} {plan.path:<6} {plan.replicas:>2} {cells:>5} "
                f"{t_naive:>8.1f} {t_fast:>8.1f} {t_naive / t_fast:>6.2f} {same:>9} {t_batched:>9.1f} "
                f"{t_naive / t_batched:>6.2f} {same_b:>12} {rel_b:>12.1e}{extra}")  # fmt: skip
        del model
    df = pd.DataFrame(rows)
    if len(df):
        say()
        for arch, d in df.groupby("arch", sort=False):
            c = d["cells"].sum()
            say(f"{arch:<26} input {int(d['side'].iloc[0])} px, {c} cells: naive {d['naive_s'].sum():.1f} s "
                f"({d['naive_s'].sum() / c:.2f} s/cell), engine {d['engine_s'].sum():.1f} s ({d['engine_s'].sum() / c:.2f} s/cell, "
                f"{d['naive_s'].sum() / d['engine_s'].sum():.2f}x), batched suffix {d['batched_s'].sum():.1f} s "
                f"({d['batched_s'].sum() / c:.2f} s/cell, {d['naive_s'].sum() / d['batched_s'].sum():.2f}x); "
                f"identical: {', '.join(sorted(set(d['identical'])))}")  # fmt: skip
        say(f"{'total':<26} naive {df['naive_s'].sum():.1f} s, engine {df['engine_s'].sum():.1f} s "
            f"({df['naive_s'].sum() / df['engine_s'].sum():.2f}x), batched suffix {df['batched_s'].sum():.1f} s "
            f"({df['naive_s'].sum() / df['batched_s'].sum():.2f}x)")  # fmt: skip
    load1 = os.getloadavg()
    say(f"\nload average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    say("identical: yes = every cell's counts (top-1, top-5, exact loss sum, SDC, DUE) equal the naive loop's; "
        "top-k = top-1 / top-5 equal, loss sums differ by 'max rel loss' at most")
    out = Path(args.out) if args.out else REPO / "bench" / "out" / f"architectures-{args.images}-{args.size}-cpu-fp32.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    df.to_csv(out.with_suffix(".csv"), index=False)
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
