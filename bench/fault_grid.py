"""Benchmark: a weight bit-flip grid through the naive loop and through netperturb's engine.

The grid: torchvision AlexNet (random init, ``torch.manual_seed(0)``), every Conv2d and Linear
layer, fp32 whole-word bit flips at ``--rates`` (default 6 rates, 1e-7 .. 1e-2) x ``--repeats``
(default 3), on ``--images`` random 224 x 224 images whose labels are mostly the clean network's
own top-1 (so that accuracy starts high and every fault that matters moves it). Per layer it
runs the same cells two ways, interleaved so machine load hits both alike:

* **naive** -- how PyTorchFI / TensorFI2 users run a campaign: per cell ``copy.deepcopy`` the
  model, flip the bits of the copy in place, full forward pass from the images, the golden
  (clean) predictions computed once (:func:`netperturb.perturb.engine.run_naive`);
* **engine** -- :func:`netperturb.perturb.engine.run_fast`: the clean prefix once per batch,
  K faulty copies of the layer per suffix call.

It prints, per layer, seconds for each, their ratio, and whether every cell's top-1, top-5,
SDC and DUE counts are identical, and writes the table to ``--out``. A benchmark, not a test:
it asserts nothing about time.

    OMP_NUM_THREADS=1 nice python bench/fault_grid.py                 # the table in bench/tables/
    python bench/fault_grid.py --images 8 --rates 1e-4 1e-2 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from netperturb.core.layers import find_layers  # noqa: E402
from netperturb.core.preprocess import Preprocess  # noqa: E402
from netperturb.perturb.engine.runners import FastPlan, run_fast, run_naive  # noqa: E402
from netperturb.perturb.grid import LayerJob  # noqa: E402
from netperturb.perturb.registry import make_perturbation  # noqa: E402

IMAGENET = Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--rates", type=float, nargs="+", default=[1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bits", default="all", help="all | sign | exponent | mantissa")
    ap.add_argument("--out", default=str(REPO / "bench" / "tables"))
    args = ap.parse_args(argv)

    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.alexnet(num_classes=1000).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (args.images, 3, 224, 224), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        y = model(IMAGENET(x)).argmax(1)
    y[::4] = torch.randint(0, 1000, (len(y[::4]),), generator=g)
    fault = make_perturbation("bit_flip", format="fp32", bits=args.bits)

    lines = [
        f"# bit-flip grid, engine vs naive: alexnet, {args.images} images, {dt.datetime.now().isoformat(timespec='seconds')}",
        f"host {platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, cpu",
        f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"grid: {len(find_layers(model))} layers x {len(args.rates)} rates ({', '.join(f'{r:g}' for r in args.rates)}) "
        f"x {args.repeats} repeats, fp32 bit_flip bits={args.bits}",
        "",
        f"{'layer':7} {'path':14} {'cells':>5} {'flips/cell (max)':>17} {'naive s':>9} {'engine s':>9} {'ratio':>6} {'identical':>10} {'K':>3}",
    ]
    print("\n".join(lines), flush=True)
    tot_n = tot_e = 0.0
    all_same = True
    for layer in find_layers(model):
        job = LayerJob(study="bench", dataset="random", model="alexnet", layer=layer, perturbation=fault,
                       levels=args.rates, repeats=args.repeats, study_seed=2017)  # fmt: skip
        t0 = time.perf_counter()
        naive = run_naive(job, model, x, y, IMAGENET, batch_size=args.images, progress=False)
        t1 = time.perf_counter()
        plan = FastPlan()
        fast = run_fast(job, model, x, y, IMAGENET, batch_size=args.images, progress=False, plan=plan)
        t2 = time.perf_counter()
        key = lambda c: (c.n, c.top1, c.top5, c.sdc1, c.sdc1_of, c.sdc5, c.sdc5_of, c.due)
        same = [key(a) for a in naive] == [key(b) for b in fast]
        all_same &= same
        flips = int(max(args.rates) * layer_numel(model, layer.path) * 32)
        tot_n, tot_e = tot_n + t1 - t0, tot_e + t2 - t1
        line = (f"{layer.label:7} {layer.path:14} {len(naive):5d} {flips:17,d} {t1 - t0:9.1f} {t2 - t1:9.1f} "
                f"{(t1 - t0) / (t2 - t1):6.2f} {'yes' if same else 'NO':>10} {plan.replicas:3d}")  # fmt: skip
        print(line, flush=True)
        lines.append(line)
    total = f"{'total':22} {'':5} {'':17} {tot_n:9.1f} {tot_e:9.1f} {tot_n / tot_e:6.2f} {'yes' if all_same else 'NO':>10}"
    lines += [total, "", "identical: every cell's n, top-1 and top-5 credit, SDC-1 / SDC-5 numerators and denominators "
              "and DUE count are equal (==) between the two paths.",
              f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"]  # fmt: skip
    print("\n".join(lines[-4:]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"fault_grid-alexnet-{args.images}-cpu-fp32.txt").write_text("\n".join(lines) + "\n")
    return 0


def layer_numel(model, path: str) -> int:
    return model.get_submodule(path).weight.numel()


if __name__ == "__main__":
    raise SystemExit(main())
