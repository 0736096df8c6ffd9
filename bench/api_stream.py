"""Benchmark: one perturbation job fed four ways -- what streaming data costs the fast engine.

The job: torchvision ResNet-18 (random init, ``torch.manual_seed(0)``, 10 classes) on
``--images`` random uint8 images of ``--size`` px (labels mostly the clean network's own
top-1), layer ``--layer``, synapse knockout at levels 0, 0.25, 0.5, 0.75 x ``--repeats``. The
same cells, computed

* **tensors** -- the workflow's path: uint8 images in memory, normalised per batch
  (:class:`netperturb.core.stream.TensorStream`), prefix outputs cached;
* **loader** -- a ``DataLoader`` over the same uint8 tensors with ``preprocess``
  (:class:`netperturb.core.stream.LoaderStream`), prefix outputs cached;
* **stream, no cache** -- the same batches from an ``IterableDataset`` of unknown length: the
  engine cannot tell whether the prefix outputs fit, so it does not cache them and reads the
  stream once for the clean reference and once per group of replicas (what a data set that
  does not fit in memory costs), with the same K;
* **naive** -- the reference loop on the tensors (copy, perturb, full forward per cell).

It prints seconds (wall and this process's CPU) per way, their ratios to **tensors** (on a
loaded machine the CPU ratio is the one to read), and
whether every cell's counts are identical to it. A benchmark, not a test: it asserts nothing
about time.

    OMP_NUM_THREADS=1 nice python bench/api_stream.py
    python bench/api_stream.py --images 64 --repeats 1      # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from netperturb.core.layers import find_layers  # noqa: E402
from netperturb.core.preprocess import Preprocess  # noqa: E402
from netperturb.core.stream import LoaderStream  # noqa: E402
from netperturb.perturb.engine.runners import FastPlan, run_fast, run_naive  # noqa: E402
from netperturb.perturb.grid import LayerJob  # noqa: E402
from netperturb.perturb.registry import make_perturbation  # noqa: E402

IMAGENET = Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--layer", default="layer3.0.conv1")
    args = ap.parse_args(argv)

    import torchvision
    from torch.utils.data import DataLoader, IterableDataset, TensorDataset

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        y = model(IMAGENET(x)).argmax(1)
    y[::3] = torch.randint(0, 10, (len(y[::3]),), generator=g)
    layer = {l.path: l for l in find_layers(model)}[args.layer]
    job = LayerJob(study="bench", dataset="random", model="resnet18", layer=layer,
                   perturbation=make_perturbation("synapse_knockout"), levels=[0.0, 0.25, 0.5, 0.75],
                   repeats=args.repeats, study_seed=1)  # fmt: skip

    def loader():
        return LoaderStream(DataLoader(TensorDataset(x, y), batch_size=args.batch), IMAGENET)

    class Batches(IterableDataset):  # no __len__: a stream of unknown length
        def __iter__(self):
            for s in range(0, args.images, args.batch):
                yield x[s : s + args.batch], y[s : s + args.batch]

    def unknown():
        return LoaderStream(DataLoader(Batches(), batch_size=None), IMAGENET)

    ways = {
        "tensors": lambda p: run_fast(job, model, x, y, IMAGENET, batch_size=args.batch, progress=False, plan=p),
        "loader": lambda p: run_fast(job, model, loader(), progress=False, plan=p),
        "stream, no cache": lambda p: run_fast(job, model, unknown(), progress=False, plan=p),
        "naive": lambda p: run_naive(job, model, x, y, IMAGENET, batch_size=args.batch, progress=False),
    }
    print(f"# api_stream: resnet18 {args.layer}, {args.images} images of {args.size} px, batch {args.batch}, "
          f"synapse knockout 4 levels x {args.repeats} repeats; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {dt.date.today()}")  # fmt: skip
    print(f"{'way':<18} {'wall s':>8} {'cpu s':>8} {'wall x':>7} {'cpu x':>6} {'cached':>7} {'K':>3} {'same counts':>12}")
    base = None
    for name, fn in ways.items():
        plan = FastPlan()
        w0, c0 = time.perf_counter(), time.process_time()
        counts = fn(plan)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if base is None:
            base = (wall, counts, cpu)
        same = all(
            (a.n, a.top1, a.top5, a.sdc1, a.sdc5, a.due) == (b.n, b.top1, b.top5, b.sdc1, b.sdc5, b.due)
            for a, b in zip(counts, base[1])
        )
        k = plan.replicas if name != "naive" else 1
        print(f"{name:<18} {wall:8.2f} {cpu:8.2f} {wall / base[0]:7.2f} {cpu / base[2]:6.2f} {str(plan.cached_prefix):>7} "
              f"{k:>3} {str(same):>12}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
