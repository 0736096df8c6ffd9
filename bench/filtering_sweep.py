"""Benchmark: cost of synaptic-filtering sweep points (Pravin et al. 2024 study).

One sweep point = one filtered network evaluated on clean images and on adversarial ones
(FGSM regenerated against it, or a fixed set in reuse mode). For torchvision ResNet-18 on
1-channel 32 x 32 inputs (the model and size of the ``pravin2024`` defaults) it prints, per
layer and attack mode, side by side in one process, the seconds per point of the paths
chosen with ``--paths`` (default ``prefix batched``):

- ``whole``: the whole network per point (config ``pravin2024.reuse_prefix: false``,
  functional_call with the filtered weight; the reference path);
- ``prefix``: clean-prefix reuse, one point at a time
  (``netperturb.studies.pravin2024.prefix.PrefixReuse``; ``pravin2024.max_replicas: 1``);
- ``batched``: K points of a layer as K replicas of the layer in one call
  (``netperturb.studies.pravin2024.batched.BatchedSweep``; ``max_replicas`` = ``--replicas``,
  the default run's path),

the ratio first path / last path, and whether every row (clean / adversarial top-1, top-5,
loss as exact floats, and the provenance columns) is identical across the paths. With
``--memory-formats`` a second table compares the memory formats (it backs the
``pravin2024.channels_last`` default). Not a test: it never asserts a timing.

    .venv/bin/python bench/filtering_sweep.py [--checkpoint results/digits/pravin2024/models/resnet18/init0/epoch4.pt]
        [--images 100] [--steps 25] [--threads 1] [--layers conv1 fc ...] [--modes regenerate reuse]
        [--paths prefix batched] [--replicas 4] [--memory-formats]

Without ``--checkpoint`` the network is randomly initialised (torch.manual_seed(0)) and the
images are random; with it, the checkpoint's network runs on the digits test images the
study uses (``resources/data/digits/shards``). Writes the table to ``bench/out/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import time
from pathlib import Path

import torch

from netperturb.core.layers import find_layers, select_layers
from netperturb.models import get_model
from netperturb.perturb.filters import LowPassFilter
from netperturb.studies.pravin2024.evaluator import AttackSpec, Evaluator, input_box
from netperturb.studies.pravin2024.sweeps import layer_sweep

DEFAULT_LAYERS = ["conv1", "layer1.0.conv1", "layer2.0.downsample.0", "layer3.1.conv2", "layer4.1.conv2", "fc"]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load(args):
    """(model in eval mode, channels_last, on the CPU), inputs (N, 1, 32, 32) in model space, labels, box."""
    if args.checkpoint:
        from netperturb.models.checkpoints import load_checkpoint
        from netperturb.studies.pravin2024.jobs import eval_subset

        loaded = load_checkpoint(args.checkpoint, "cpu")
        images, y = eval_subset(args.shards, "test", args.images, study_seed=args.seed, dataset="digits")
        model, x, box = loaded.model, loaded.preprocess(images), input_box(loaded.preprocess)
    else:
        torch.manual_seed(0)
        model = get_model("resnet18", num_classes=10, in_channels=1).eval().requires_grad_(False)
        x, y, box = torch.randn(args.images, 1, 32, 32), torch.arange(args.images) % 10, None
    return model, x, y, box


PATHS = {
    "whole": "whole network per point (reuse_prefix false)",
    "prefix": "clean-prefix reuse, one point at a time (max_replicas 1)",
    "batched": "batched sweep, K points as K replicas (max_replicas R)",
}


def _sweep(args, model, x, y, box, layer, mode, path):
    ev = Evaluator(model, x, y, AttackSpec(eps=args.eps, mode=mode), box=box, study_seed=args.seed,
                   model_key="bench", batch_size=args.batch_size)  # fmt: skip
    ev.x_adv()  # reuse mode: the fixed set is made once per job, outside the points
    t, c = time.perf_counter(), cpu_seconds()
    rows = layer_sweep(ev, layer, args.filters, args.steps, progress=False, reuse_prefix=path != "whole",
                       max_replicas=args.replicas if path == "batched" else 1)  # fmt: skip
    return rows, (time.perf_counter() - t, cpu_seconds() - c)


def sweep_table(args, model, x, y, box) -> list[str]:
    model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    layers = select_layers(find_layers(model), args.layers)
    paths = args.paths
    lines = [f"{'layer':<8} {'path':<24} {'attack mode':<11} {'points':>6} "
             + " ".join(f"{p + ' s/pt':>13}" for p in paths) + f" {'ratio':>6} "
             + " ".join(f"{p + ' cpu-s/pt':>15}" for p in paths) + f" {'ratio':>6} {'identical':>9}"]  # fmt: skip
    print(lines[-1], flush=True)
    totals = {m: [[(0.0, 0.0)] * len(paths), 0, True] for m in args.modes}

    def cols(secs, n):
        wall = " ".join(f"{t[0] / n:>13.3f}" for t in secs) + f" {secs[0][0] / secs[-1][0]:>6.2f} "
        return wall + " ".join(f"{t[1] / n:>15.3f}" for t in secs) + f" {secs[0][1] / secs[-1][1]:>6.2f}"

    for mode in args.modes:
        for layer in layers:
            res, secs = [], []
            for p in paths:
                r, t = _sweep(args, model, x, y, box, layer, mode, p)
                res.append(r)
                secs.append(t)
            n = len(res[0]) // 2
            # every row (counts, losses as exact floats, provenance) equal across the paths
            same = all(r == res[0] for r in res[1:])
            tot = totals[mode]
            tot[0] = [(a[0] + b[0], a[1] + b[1]) for a, b in zip(tot[0], secs)]
            tot[1] += n
            tot[2] = tot[2] and same
            lines.append(f"{layer.label:<8} {layer.path:<24} {mode:<11} {n:>6} {cols(secs, n)} {'yes' if same else 'NO':>9}")
            print(lines[-1], flush=True)
    for mode, (secs, n, same) in totals.items():
        lines.append(f"{'total':<8} {'':<24} {mode:<11} {n:>6} {cols(secs, n)} {'yes' if same else 'NO':>9}")
        print(lines[-1], flush=True)
    return lines


def memory_format_table(args, model, x, y, box) -> list[str]:
    lines = [f"{'memory format':<15} {'attack mode':<12} {'wall s/point':>13} {'cpu s/point':>12}"]
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model.to(memory_format=fmt)
        xx = x.contiguous(memory_format=fmt)
        name = "layer1.0.conv1.weight"
        w = dict(model.named_parameters())[name]
        flt = LowPassFilter()
        qs = torch.quantile(w.detach().flatten(), torch.linspace(0.05, 0.5, args.repeats + 1)).tolist()
        for mode in ("regenerate", "reuse"):
            ev = Evaluator(model, xx, y, AttackSpec(eps=args.eps, mode=mode), box=box, batch_size=args.batch_size)
            ev.x_adv()
            walls, cpus = [], []
            for i in range(args.repeats + 1):
                alpha = qs[i]  # a different zero set each time: no cache hit
                new = flt({"weight": w}, alpha)
                t, c = time.perf_counter(), cpu_seconds()
                ev({name: new["weight"]}, {name: flt.mask(w, alpha)}, seed=i)
                if i:  # the first call warms up
                    walls.append(time.perf_counter() - t)
                    cpus.append(cpu_seconds() - c)
            lines.append(f"{'channels_last' if channels_last else 'contiguous':<15} {mode:<12} {min(walls):>13.3f} {min(cpus):>12.3f}")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="a checkpoint of the study (default: random ResNet-18, random images)")
    ap.add_argument("--shards", default="resources/data/digits/shards")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--filters", nargs="+", default=["low", "high", "pulse"])
    ap.add_argument("--layers", nargs="+", default=DEFAULT_LAYERS)
    ap.add_argument("--modes", nargs="+", default=["regenerate", "reuse"], choices=["regenerate", "reuse"])
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=2017)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="points timed per memory format")
    ap.add_argument("--paths", nargs="+", default=["prefix", "batched"], choices=list(PATHS),
                    help="paths compared, side by side; ratio = first / last")
    ap.add_argument("--replicas", type=int, default=4, help="max_replicas of the batched path (config pravin2024.max_replicas)")
    ap.add_argument("--memory-formats", action="store_true", help="also the memory-format table (one point at a time)")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, x, y, box = load(args)
    head = [
        f"# filter sweeps: {' vs '.join(args.paths)}, {dt.datetime.now().isoformat(timespec='seconds')}",
        f"host {platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s), cpu ({platform.machine()})",
        f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"model: resnet18, {'checkpoint ' + args.checkpoint if args.checkpoint else 'random init'}; "
        f"{len(y)} images of 1 x 32 x 32 (batch size {args.batch_size}); FGSM eps {args.eps}; filters {' '.join(args.filters)}, S = {args.steps}",
        *[f"{p}: {PATHS[p]}".replace("max_replicas R", f"max_replicas {args.replicas}") for p in args.paths],
        "",
    ]
    print("\n".join(head), flush=True)
    lines = head + sweep_table(args, model, x, y, box)
    lines += ["", f"s/pt = wall seconds per sweep point (clean + adversarial evaluation), cpu-s/pt = CPU seconds of the process "
              f"(user + system) per point, all paths in the same process; "
              f"ratio = {args.paths[0]} / {args.paths[-1]}; identical = every row (top1, top5, loss, ...) equal.", ""]
    print("\n".join(lines[-3:]), flush=True)
    if args.memory_formats:
        lines += memory_format_table(args, model, x, y, box)
    lines.append(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (f"filtering_sweep-resnet18-{len(y)}-{'checkpoint' if args.checkpoint else 'random'}"
                  f"-{'-'.join(args.paths)}-{args.threads}t.txt")
    path.write_text("\n".join(lines) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
