"""Benchmark: cost of one synaptic-filtering sweep point (Pravin et al. 2024 study).

Prints a table of seconds per sweep point (one filtered network evaluated clean + adversarial)
for torchvision ResNet-18 on 1-channel 32 x 32 inputs, in the memory formats and attack
modes the study offers:

    .venv/bin/python bench/filtering_sweep.py [--images 100] [--threads 1] [--repeats 3]

Not a test: it never asserts a timing. The numbers back the `channels_last` default and the
size of the default config (config/config.yaml, synaptic_filtering).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from netperturb.filtering import AttackSpec, Evaluator
from netperturb.filters import LowPassFilter
from netperturb.models import get_model


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.images, 1, 32, 32)
    y = torch.arange(args.images) % 10
    print(f"resnet18, {args.images} images of 1 x 32 x 32, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'memory format':<15} {'attack mode':<12} {'wall s/point':>13} {'cpu s/point':>12}")
    for channels_last in (False, True):
        model = get_model("resnet18", num_classes=10, in_channels=1).eval().requires_grad_(False)
        xx = x
        if channels_last:
            model.to(memory_format=torch.channels_last)
            xx = x.contiguous(memory_format=torch.channels_last)
        name = "layer1.0.conv1.weight"
        w = dict(model.named_parameters())[name]
        flt = LowPassFilter()
        qs = torch.quantile(w.detach().flatten(), torch.linspace(0.05, 0.5, args.repeats + 1)).tolist()
        for mode in ("regenerate", "reuse"):
            ev = Evaluator(model, xx, y, AttackSpec(eps=0.1, mode=mode), batch_size=256)
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
            fmt = "channels_last" if channels_last else "contiguous"
            print(f"{fmt:<15} {mode:<12} {min(walls):>13.3f} {min(cpus):>12.3f}")


if __name__ == "__main__":
    main()
