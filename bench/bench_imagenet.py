"""Benchmarks of the Cheney et al. 2017 ImageNet run (``config/cheney2017-imagenet.yaml``;
prints tables, asserts nothing).

1. ImageNet shard preparation throughput (images/s) on synthetic JPEGs of a realistic size
   (default 500 x 375, the most common ImageNet val size; smooth colour fields plus noise,
   JPEG quality 95: about 118 KB, near the 130 KB mean of the real files), packed in the
   official archive formats, for 1 and 2 decoding threads.
2. One perturbation cell (synapse knockout 0.5 of one layer, full network forward) per 1,000
   images on this machine's CPU (and CUDA if present), for AlexNet and VGG16 with random
   weights, through the current engine (``netperturb.perturb.grid.run_layer_job``). Measured on
   ``--images`` images and scaled to 1,000.

    .venv/bin/python bench/bench_imagenet.py prepare --images 300 --threads 1 2
    .venv/bin/python bench/bench_imagenet.py cell --archs alexnet vgg16 --images 200 50
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _photo(rng: np.random.Generator, w: int, h: int) -> bytes:
    from PIL import Image

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.005, 0.03, 3)
    base = np.stack([127 + 100 * np.sin(xx * f[0] + yy * f[1]), 127 + 100 * np.cos(yy * f[2]), (xx + yy) * 255 / (w + h)], -1)
    arr = np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def bench_prepare(n: int, threads: list[int], size: tuple[int, int], n_classes: int = 10) -> None:
    from imagenet_archives import write_devkit, write_val_tar

    from netperturb.datasets.imagenet import prepare_imagenet
    from netperturb.models.weights import get_weights, transform_spec

    rng = np.random.default_rng(0)
    wnids = [f"n{10000000 + i:08d}" for i in range(n_classes)]
    ids = {w: i + 1 for i, w in enumerate(wnids)}
    truth = [int(v) for v in rng.integers(1, n_classes + 1, n)]
    images = {f"ILSVRC2012_val_{i:08d}.JPEG": _photo(rng, *size) for i in range(1, n + 1)}
    mean_kb = np.mean([len(b) for b in images.values()]) / 1024
    spec = transform_spec(get_weights("alexnet", "IMAGENET1K_V1"))
    print(f"\nShard preparation: {n} synthetic {size[0]}x{size[1]} JPEGs (mean {mean_kb:.0f} KB), "
          f"AlexNet/VGG transform (resize 256, crop 224), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'threads':>7}  {'seconds':>8}  {'images/s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tar = write_val_tar(tmp / "ILSVRC2012_img_val.tar", images)
        devkit = write_devkit(tmp / "ILSVRC2012_devkit_t12.tar.gz", ids, {w: w for w in wnids}, truth)
        for t in threads:
            torch.set_num_threads(t)
            start = time.perf_counter()
            prepare_imagenet(tmp / f"out{t}", spec, val_tar=tar, devkit=devkit, verify_checksums=False,
                             threads=t, progress=False)  # fmt: skip
            s = time.perf_counter() - start
            print(f"{t:>7}  {s:>8.2f}  {n / s:>9.1f}")


def bench_cell(archs: list[str], counts: list[int], threads: int) -> None:
    import torchvision

    from netperturb.core.layers import find_layers
    from netperturb.models.loaded import LoadedModel
    from netperturb.models.weights import get_weights, weights_preprocess
    from netperturb.perturb.grid import LayerJob, run_layer_job
    from netperturb.perturb.registry import make_perturbation

    torch.set_num_threads(threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"\nOne perturbation cell (synapse knockout 0.5, full forward), random weights, {threads} CPU threads, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'arch':<8} {'layer':<6} {'device':<6} {'images':>6} {'batch':>5} {'seconds':>8} {'s per 1,000 images':>19}")
    for arch, n in zip(archs, counts):
        torch.manual_seed(0)
        model = torchvision.models.get_model(arch, weights=None).eval().requires_grad_(False)
        pre = weights_preprocess(get_weights(arch, "IMAGENET1K_V1"))
        x = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8)
        y = torch.randint(0, 1000, (n,))
        layer = find_layers(model)[0]
        for dev in devices:
            loaded = LoadedModel(model=model.to(dev), preprocess=pre, arch=arch, weights="random", meta={})
            xd, yd = (x.to(dev), y.to(dev)) if dev == "cuda" else (x, y)
            job = LayerJob(study="bench", dataset="imagenet", model=arch, layer=layer,
                           perturbation=make_perturbation("synapse_knockout"), levels=[0.5], repeats=1, study_seed=0)  # fmt: skip
            batch = 50
            run_layer_job(job, loaded, xd[:batch], yd[:batch], batch_size=batch, progress=False)  # warm-up
            if dev == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run_layer_job(job, loaded, xd, yd, batch_size=batch, progress=False)
            if dev == "cuda":
                torch.cuda.synchronize()
            s = time.perf_counter() - start
            print(f"{arch:<8} {layer.label:<6} {dev:<6} {n:>6} {batch:>5} {s:>8.2f} {s * 1000 / n:>19.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("prepare")
    s.add_argument("--images", type=int, default=300)
    s.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    s.add_argument("--size", type=int, nargs=2, default=[500, 375])
    s = sub.add_parser("cell")
    s.add_argument("--archs", nargs="+", default=["alexnet", "vgg16"])
    s.add_argument("--images", type=int, nargs="+", default=[200, 50])
    s.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.cmd == "prepare":
        bench_prepare(a.images, a.threads, tuple(a.size))
    else:
        bench_cell(a.archs, a.images, a.threads)


if __name__ == "__main__":
    main()
