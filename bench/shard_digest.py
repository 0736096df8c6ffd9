"""What checking the shards costs a job (issue 27): load a split as 0.2.0 did (``torch.load`` of each
shard file, unchecked) and as every job does now (each file read once, the sha256 of those bytes
compared with the manifest's, then deserialised from memory), side by side, and extrapolate to the
paper-size ImageNet validation shards (50,000 images x 3 x 224 x 224 uint8 = 7.53 GB).

Not a test (no assertions on timings). CPU seconds (process time) are given beside wall seconds,
as wall time on a shared machine says little; the files are in the page cache for both paths
(each is read once before timing), so the figures are the CPU cost, not the disk's.

    .venv/bin/python bench/shard_digest.py [--images 2000] [--shard-size 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import torch

from netperturb.datasets.shards import load_split, read_manifest, write_shards

PAPER_BYTES = 50_000 * 3 * 224 * 224


def _old_load(shard_dir: Path, split: str) -> None:
    """0.2.0's default path: torch.load of each file, no digest."""
    xs = []
    for entry in read_manifest(shard_dir)["splits"][split]["shards"]:
        xs.append(torch.load(shard_dir / entry["file"], map_location="cpu", weights_only=True)["images"])
    torch.cat(xs)


def _timed(fn, repeats: int) -> tuple[float, float]:
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        best_cpu, best_wall = min(best_cpu, time.process_time() - c0), min(best_wall, time.perf_counter() - w0)
    return best_cpu, best_wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (a.images, 3, 224, 224), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 1000, (a.images,), generator=g)
        write_shards(d, {"val": (x, y)}, dataset="bench", num_classes=1000, shard_size=a.shard_size)
        del x
        size = sum(p.stat().st_size for p in d.glob("val-*.pt"))
        _old_load(d, "val")  # warm the page cache
        rows = [
            ("0.2.0: torch.load(path), unchecked", _timed(lambda: _old_load(d, "val"), a.repeats)),
            ("now: read once, sha256, load from memory", _timed(lambda: load_split(d, "val"), a.repeats)),
            ("now, verify=False (read once, load from memory)", _timed(lambda: load_split(d, "val", verify=False), a.repeats)),
        ]
        blob = (d / "val-00000.pt").read_bytes()
        sha = _timed(lambda: hashlib.sha256(blob).hexdigest(), a.repeats)
        per_gb = sha[0] / (len(blob) / 1e9)
    print(f"{a.images} images 3 x 224 x 224 uint8 in {a.images // a.shard_size} shards, {size / 1e9:.3f} GB; best of {a.repeats}")
    print(f"{'path':<50} {'CPU s':>8} {'wall s':>8} {'CPU s / GB':>11}")
    for name, (cpu, wall) in rows:
        print(f"{name:<50} {cpu:8.3f} {wall:8.3f} {cpu / (size / 1e9):11.3f}")
    print(f"{'sha256 alone (hashlib, one shard in memory)':<50} {sha[0]:8.3f} {sha[1]:8.3f} {per_gb:11.3f}")
    extra = rows[1][1][0] - rows[0][1][0]
    print(f"\nchecking adds {extra:.3f} CPU s for {size / 1e9:.3f} GB ({extra / (size / 1e9):.3f} s/GB);")
    print(f"paper-size ImageNet shards ({PAPER_BYTES / 1e9:.2f} GB): about {extra / size * PAPER_BYTES:.1f} CPU s per job "
          f"(sha256 alone: {per_gb * PAPER_BYTES / 1e9:.1f} s), once per job, in the job that loads them")


if __name__ == "__main__":
    main()
