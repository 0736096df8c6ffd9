"""One-shot GPU check (issue 16, point 3): the engine on one CUDA GPU, in one command, one table.

Run through ``bench/gpu.sh`` (which checks for the repository's ``.venv``; run ``make env``
first, or carry ``.venv`` to the GPU machine). Everything works offline: a random-init
torchvision AlexNet (``torch.manual_seed(0)``) and the benchmark's own JPEG folder
(scikit-learn's bundled digits, :func:`engine_vs_naive.write_jpeg_folder`). Steps:

1. **tests** -- ``tests/perturb/test_engine.py`` (``pytest.main`` in this process) with
   ``NETPERTURB_TEST_DEVICE=<device>``: the engine tests put their models there;
2. **engine** -- ``bench/engine_vs_naive.py`` engine-only over every AlexNet layer, in fp32 and
   in bf16: images/s and the fraction of the FLOP floor per layer;
3. **naive** -- the same script with the naive loop, on a subset of layers (the naive loop
   decodes every JPEG again per cell, so all layers would not fit the time): seconds, ratio,
   and whether every cell's counts are identical;
4. **agreement** -- a slice of the same grid (same seeds; evenly spaced images) through
   :func:`netperturb.perturb.engine.runners.run_fast` in fp32 on the device and on the CPU,
   compared cell by cell on the exact :class:`netperturb.core.evaluate.Counts` (``n``, top-1
   and top-5 credit as Fractions) and the largest mean-loss difference;
5. **projection** -- the engine time of the paper grid's AlexNet part
   (``config/cheney2017-imagenet.yaml``: its levels and repeats, every layer) on 50,000 images,
   from each measured (layer, perturbation) job: compute per cell per image x 50,000 plus the
   draws per cell (which do not scale with the images), times the paper's cells.

It writes ONE text table, ``<out>/gpu_check-<device name>-<UTC date>.txt``, and exits 1 when a
test or a step fails (not for time, nor for a CPU/GPU difference, which it reports).

    bash bench/gpu.sh --device cuda                 # the real check: < 8 min on one GPU
    bash bench/gpu.sh --device cpu --quick          # the dry path (CI): same steps, tiny sizes

Sizes, full (``--quick``): 2,048 (8) images; engine grid 3 (2) levels x 2 (1) repeats over all
layers (conv5, fc8); naive on conv1, conv5, fc6, fc8 at 3 levels x 1 repeat (conv5, fc8 at 2
levels: the same grid as step 2, so that one run gives both); agreement on conv1, fc6, fc8 (fc8)
with 256 (8) images; every engine test (the quick ones, :data:`QUICK_TESTS`). The sizes were
chosen, not measured on a GPU: the step times are in the table, so the next run can resize them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import math
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

PAPER_CONFIG = REPO / "config" / "cheney2017-imagenet.yaml"
PAPER_IMAGES = 50_000
# engine tests run by --quick: the quick ones (replicas bit for bit, autocast, MACs, memory
# budget, errors), about 10 s on the CPU; step 3 checks engine = naive there
QUICK_TESTS = "bit_for_bit or autocast or macs or memory_budget or bad_engine"


@dataclass
class Sizes:
    """What each step runs (module docstring); :data:`FULL` and :data:`QUICK`."""

    images: int
    levels: int
    repeats: int
    layers: list[str] = field(default_factory=lambda: ["all"])
    naive_layers: list[str] = field(default_factory=list)
    naive_levels: int = 3
    agree_layers: list[str] = field(default_factory=list)
    agree_images: int = 256
    tests: str | None = None  # pytest -k expression (None: the whole file)


FULL = Sizes(images=2048, levels=3, repeats=2, naive_layers=["conv1", "conv5", "fc6", "fc8"], naive_levels=3,
             agree_layers=["conv1", "fc6", "fc8"], agree_images=256)  # fmt: skip
QUICK = Sizes(images=8, levels=2, repeats=1, layers=["conv5", "fc8"], naive_layers=["conv5", "fc8"], naive_levels=2,
              agree_layers=["fc8"], agree_images=8, tests=QUICK_TESTS)  # fmt: skip


def load_engine_vs_naive():
    """bench/engine_vs_naive.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("engine_vs_naive", REPO / "bench" / "engine_vs_naive.py")
    mod = sys.modules["engine_vs_naive"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------
# pure helpers (tests/perturb/test_gpu_check.py)
# ------------------------------------------------------------------------------------------


def matmul_tflops(text: str) -> float:
    """The matmul throughput engine_vs_naive.py printed ("... (fp32): 0.117 TFLOP/s").

    Raises:
        ValueError: the line is not in ``text``.
    """
    m = re.search(r"matmul throughput measured on this device \(\w+\): ([0-9.]+) TFLOP/s", text)
    if not m:
        raise ValueError("no 'matmul throughput measured on this device' line in engine_vs_naive's output")
    return float(m.group(1))


def compare_counts(a: list, b: list) -> dict[str, float]:
    """Cell-by-cell comparison of two lists of :class:`~netperturb.core.evaluate.Counts`
    (same grid, e.g. GPU and CPU): cells, cells with identical ``n``, ``top1`` and ``top5``
    (exact Fractions), the largest top-1 / top-5 difference in images, the largest mean-loss
    difference (nats).

    Raises:
        ValueError: the lists differ in length (not the same grid).
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} cells against {len(b)}: not the same grid")
    same = sum(x.n == y.n and x.top1 == y.top1 and x.top5 == y.top5 for x, y in zip(a, b))
    d1 = max((abs(float(x.top1 - y.top1)) for x, y in zip(a, b)), default=0.0)
    d5 = max((abs(float(x.top5 - y.top5)) for x, y in zip(a, b)), default=0.0)
    dl = max((abs(float(x.loss_sum - y.loss_sum)) / max(x.n, 1) for x, y in zip(a, b)), default=0.0)
    return {"cells": len(a), "identical": same, "max_dtop1_images": d1, "max_dtop5_images": d5, "max_dloss": dl}


def paper_grid(path: Path = PAPER_CONFIG) -> dict:
    """The Cheney grid of the paper config: ``{"models": [...], "repeats": 5, "levels": {name: [levels]}}``."""
    from netperturb.core.config import expand_levels, load_config_file

    cfg = load_config_file(path)
    study = cfg["cheney2017"]
    levels = {name: expand_levels(p["levels"], f"cheney2017.perturbations.{name}.levels")
              for name, p in study["perturbations"].items()}  # fmt: skip
    return {"models": list(cfg["models"]), "repeats": int(study["repeats"]), "levels": levels}


def project_paper_grid(jobs: list[dict], n_images: int, grid: dict, n_target: int = PAPER_IMAGES) -> float:
    """Seconds of the engine for the paper grid on ``n_target`` images, from measured jobs
    (engine_vs_naive.py's CSV rows: ``layer``, ``perturbation``, ``cells``, ``engine_s``,
    ``draw_s``, on ``n_images`` images): per job, compute per cell per image x ``n_target``
    plus draws per cell, times the paper's cells (levels x repeats) for that perturbation.
    Only the measured layers count (all of them, in the check)."""
    total = 0.0
    for r in jobs:
        compute = max(r["engine_s"] - r["draw_s"], 0.0) / r["cells"] / n_images
        cells = len(grid["levels"][r["perturbation"]]) * grid["repeats"]
        total += cells * (compute * n_target + r["draw_s"] / r["cells"])
    return total


def layer_rows(df, n_images: int, tflops: float) -> dict[str, dict]:
    """Per layer label: cells, engine seconds, images/s, fraction of the FLOP floor (as
    engine_vs_naive.py's table computes them); and "total"."""
    out = {}
    for label, g in list(df.groupby("label", sort=False)) + [("total", df)]:
        s = g["engine_s"].sum()
        out[label] = {"cells": int(g["cells"].sum()), "engine_s": s, "img_s": g["cells"].sum() * n_images / s,
                      "floor": g["engine_flop"].sum() / s / (tflops * 1e12)}  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------


class _Tally:
    """pytest plugin: the outcome counts and failing test ids of one in-process run."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.failed: list[str] = []

    def pytest_terminal_summary(self, terminalreporter) -> None:
        stats = terminalreporter.stats
        self.counts = {k: len(stats[k]) for k in ("passed", "failed", "error", "skipped", "deselected") if stats.get(k)}
        self.failed = [f"{k.upper()} {r.nodeid}" for k in ("failed", "error") for r in stats.get(k, [])]


def run_tests(device: str, k: str | None) -> tuple[dict, str, float]:
    """tests/perturb/test_engine.py with NETPERTURB_TEST_DEVICE=device, in this process (torch is
    imported once; the tests' conftest caps torch's threads, so they are restored after).
    Returns (outcome counts, failing test ids, seconds)."""
    import pytest
    import torch

    os.environ["NETPERTURB_TEST_DEVICE"] = device
    threads = torch.get_num_threads()
    args = [str(REPO / "tests" / "perturb" / "test_engine.py"), "-q", "-p", "no:cacheprovider"] + (["-k", k] if k else [])
    tally = _Tally()
    t = time.perf_counter()
    try:
        rc = pytest.main(args, plugins=[tally])
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - t
    counts = dict(tally.counts)
    if rc not in (0, pytest.ExitCode.OK) and not counts.get("failed") and not counts.get("error"):
        counts["error"] = 1  # collection or usage error: pytest's own output above says which
    return counts, "\n".join(tally.failed[:20]), wall


def run_bench(evn, argv: list[str]) -> tuple["object", float, float]:
    """engine_vs_naive.main(argv); returns (its per-job CSV as a DataFrame, TFLOP/s, seconds)."""
    import pandas as pd

    out = Path(argv[argv.index("--out") + 1])
    t = time.perf_counter()
    rc = evn.main(argv)
    wall = time.perf_counter() - t
    if rc:
        raise RuntimeError(f"engine_vs_naive.py {' '.join(argv)} exited {rc}")
    return pd.read_csv(out.with_suffix(".csv")), matmul_tflops(out.read_text()), wall


def run_agreement(evn, device, sizes: Sizes, seed: int) -> tuple[dict, float]:
    """The slice of the grid in fp32 on ``device`` and on the CPU (module docstring, step 4)."""
    import torch
    import torchvision
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    from netperturb.core.layers import find_layers, select_layers
    from netperturb.perturb.engine.runners import run_fast
    from netperturb.perturb.grid import LayerJob
    from netperturb.perturb.registry import make_perturbation

    t = time.perf_counter()
    root = evn.write_jpeg_folder(REPO / "bench" / "out" / f"jpeg-{sizes.images}", sizes.images)
    ds = ImageFolder(str(root), transform=v2.Compose(evn.pil_transforms(None)))
    n = min(sizes.agree_images, len(ds))
    pick = range(0, len(ds), len(ds) // n)[:n]  # evenly spaced: every class (the folder is sorted by class)
    images = torch.stack([ds[i][0] for i in pick])
    labels = torch.tensor([ds[i][1] for i in pick], dtype=torch.long)
    torch.manual_seed(0)
    cpu_model = torchvision.models.get_model("alexnet", weights=None).eval().requires_grad_(False)
    dev_model = torchvision.models.get_model("alexnet", weights=None).eval().requires_grad_(False)
    dev_model.load_state_dict(cpu_model.state_dict())
    dev_model.to(device)
    got: dict[str, list] = {"dev": [], "cpu": []}
    for layer in select_layers(find_layers(cpu_model), sizes.agree_layers):
        for name, top in evn.PERTURBATIONS.items():
            levels = [round(top * i / max(sizes.levels - 1, 1), 10) for i in range(sizes.levels)]
            job = LayerJob(study="bench", dataset="jpeg", model="alexnet", layer=layer, perturbation=make_perturbation(name),
                           levels=levels, repeats=1, study_seed=seed)  # fmt: skip
            for key, model in (("dev", dev_model), ("cpu", cpu_model)):
                got[key] += run_fast(job, model, images, labels, evn.IMAGENET, batch_size=min(n, 128), progress=False)
    res = compare_counts(got["dev"], got["cpu"])
    res["images"] = n
    return res, time.perf_counter() - t


# ------------------------------------------------------------------------------------------


def device_label(device) -> str:
    import torch

    if device.type == "cuda":
        return re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(device)).strip("-").lower()
    return "cpu"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (the check), cpu (dry path), or e.g. cuda:1")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (8 images, 2 layers, 2 levels, 1 torch thread): the dry path")
    ap.add_argument("--out", default=None, help="folder for the table (default bench/tables; with --quick bench/out)")
    ap.add_argument("--seed", type=int, default=2017, help="study seed (as engine_vs_naive.py)")
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    from netperturb.core.evaluate import resolve_device

    device = resolve_device(args.device)
    sizes = QUICK if args.quick else FULL
    if args.quick:
        torch.set_num_threads(1)  # 8 images: more threads only contend (2 cores: 52 CPU-s instead of 28)
    out_dir = Path(args.out) if args.out else REPO / "bench" / ("out" if args.quick else "tables")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = REPO / "bench" / "out" / "gpu_check"
    work.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    name = f"gpu_check-{device_label(device)}-{now:%Y-%m-%d}{'-quick' if args.quick else ''}.txt"
    t_start = time.perf_counter()
    evn = load_engine_vs_naive()
    lines: list[str] = []
    failures: list[str] = []

    def say(s: str = "") -> None:
        print(f"[gpu_check] {s}" if s else "", flush=True)
        lines.append(s)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    say(f"# one-shot GPU check (bench/gpu.sh{' --quick' if args.quick else ''}), {now.isoformat(timespec='seconds')}")
    say(f"host {platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}"
        f"{', CUDA ' + str(torch.version.cuda) if device.type == 'cuda' else ''}, device {device} ({dev_name})")  # fmt: skip
    say(f"model: alexnet, random init (torch.manual_seed(0)); images: {sizes.images} digit JPEGs (engine_vs_naive.py's folder)")
    say()

    # 1. the engine tests on the device
    summary, detail, wall = run_tests(str(device), sizes.tests)
    ok = summary.get("passed", 0) > 0 and not summary.get("failed") and not summary.get("error")
    say(f"1. tests/perturb/test_engine.py on {device}{' (-k ' + repr(sizes.tests) + ')' if sizes.tests else ''}: "
        f"{', '.join(f'{v} {k}' for k, v in summary.items()) or 'no result'} in {wall:.1f} s -- {'ok' if ok else 'FAILED'}")  # fmt: skip
    if not ok:
        failures.append("tests")
        for l in detail.splitlines():
            say(f"     {l}")
    say()

    common = ["--model", "alexnet", "--images", str(sizes.images), "--device", str(device), "--pytorchfi", "off",
              "--seed", str(args.seed)]  # fmt: skip
    results = {}
    # the quick path: the naive run (step 3) is the same grid, so its engine column is step 2's fp32
    naive_is_grid = sizes.naive_layers == sizes.layers and sizes.naive_levels == sizes.levels and sizes.repeats == 1
    argv_n = common + ["--levels", str(sizes.naive_levels), "--repeats", "1", "--layers", *sizes.naive_layers,
                       "--precision", "fp32", "--out", str(work / "naive-fp32.txt")]  # fmt: skip
    naive = None
    try:
        naive = run_bench(evn, argv_n)
    except Exception as e:  # noqa: BLE001 -- reported in the table, the other steps still run
        failures.append("naive")
        naive_error = f"{type(e).__name__}: {e}"
    for prec in ("fp32", "bf16"):
        if prec == "fp32" and naive_is_grid:
            if naive is not None:
                results[prec] = naive
            continue
        argv_p = common + ["--levels", str(sizes.levels), "--repeats", str(sizes.repeats), "--layers", *sizes.layers,
                           "--precision", prec, "--skip-naive", "--out", str(work / f"engine-{prec}.txt")]  # fmt: skip
        try:
            results[prec] = run_bench(evn, argv_p)
        except Exception as e:  # noqa: BLE001 -- reported in the table, the other steps still run
            failures.append(f"engine {prec}")
            say(f"2. engine {prec}: FAILED ({type(e).__name__}: {e})")
    n = sizes.images
    if results:
        rows = {p: layer_rows(df, n, tf) for p, (df, tf, _) in results.items()}
        say(f"2. engine, {sizes.levels} levels x {sizes.repeats} repeats x 3 perturbations per layer, {n} images "
            f"(bench/engine_vs_naive.py); floor = fraction of the FLOP floor at the measured matmul rate")  # fmt: skip
        for p, (_, tf, wall) in results.items():
            say(f"   {p}: matmul {tf:.2f} TFLOP/s, step {wall:.1f} s{' (the run of step 3)' if p == 'fp32' and naive_is_grid else ''}")
        head = f"   {'layer':<8}{'cells':>6}"
        for p in rows:
            head += f"{p + ' s':>10}{'img/s':>10}{'floor':>8}"
        say(head)
        for label in next(iter(rows.values())):
            line = f"   {label:<8}{next(iter(rows.values()))[label]['cells']:>6}"
            for p in rows:
                r = rows[p][label]
                line += f"{r['engine_s']:>10.2f}{r['img_s']:>10.0f}{r['floor']:>8.1%}"
            say(line)
        say()

    # 3. naive loop against the engine on a few layers (fp32)
    if naive is None:
        say(f"3. naive vs engine: FAILED ({naive_error})")
    else:
        df, _, wall = naive
        g = df.groupby("label", sort=False).agg(cells=("cells", "sum"), naive_s=("naive_s", "sum"),
                                                engine_s=("engine_s", "sum"), identical=("identical", "all"))  # fmt: skip
        say(f"3. naive loop vs engine (fp32, {sizes.naive_levels} levels x 1 repeat, {n} images; step {wall:.1f} s)")
        say(f"   {'layer':<8}{'cells':>6}{'naive s':>10}{'engine s':>10}{'ratio':>8}{'identical':>11}")
        for label, r in list(g.iterrows()) + [("total", g.sum(numeric_only=True))]:
            ident = g["identical"].all() if label == "total" else r["identical"]
            say(f"   {label:<8}{int(r['cells']):>6}{r['naive_s']:>10.2f}{r['engine_s']:>10.2f}"
                f"{r['naive_s'] / r['engine_s']:>8.2f}{'yes' if ident else 'NO':>11}")  # fmt: skip
        if not g["identical"].all():
            failures.append("naive != engine")
    say()

    # 4. fp32 counts on the device against the CPU
    try:
        agree, wall = run_agreement(evn, device, sizes, args.seed)
        say(f"4. fp32 counts, {device} against the CPU{' (dry path: the CPU against itself)' if device.type == 'cpu' else ''}: "
            f"layers {', '.join(sizes.agree_layers)} x 3 perturbations x {sizes.levels} levels x 1 repeat, "
            f"{agree['images']} images (same seeds as step 2; step {wall:.1f} s)")  # fmt: skip
        say(f"   cells identical (n, top-1, top-5 as exact Fractions): {agree['identical']}/{agree['cells']}; "
            f"largest difference: top-1 {agree['max_dtop1_images']:g} images, top-5 {agree['max_dtop5_images']:g} images, "
            f"mean loss {agree['max_dloss']:.2e} nats")  # fmt: skip
    except Exception as e:  # noqa: BLE001
        failures.append("agreement")
        say(f"4. fp32 agreement with the CPU: FAILED ({type(e).__name__}: {e})")
    say()

    # 5. projection to the paper grid on 50,000 images
    if results:
        grid = paper_grid()
        cells = sum(len(v) for v in grid["levels"].values()) * grid["repeats"]
        layers = int(next(iter(results.values()))[0]["layer"].nunique())
        say(f"5. projected engine time, paper grid ({PAPER_CONFIG.relative_to(REPO)}: {cells} cells per layer = "
            f"levels {'/'.join(str(len(v)) for v in grid['levels'].values())} x {grid['repeats']} repeats) on "
            f"{PAPER_IMAGES:,} images, AlexNet's {layers} measured layers:")  # fmt: skip
        for p, (df, _, _) in results.items():
            s = project_paper_grid(df.to_dict("records"), n, grid)
            say(f"   {p}: {s / 60:.1f} min (draws {df['draw_s'].sum():.1f} s per measured grid, the rest x {PAPER_IMAGES / n:.0f})")
        others = [m for m in grid["models"] if m != "alexnet"]
        if others:
            say(f"   not measured here: {', '.join(others)} (bench/engine_vs_naive.py --model {others[0]} --skip-naive ...)")
        if args.quick:
            say("   (--quick: 2 layers, tiny batches -- the figure is a dry-path number, not a projection)")
        say()

    total = time.perf_counter() - t_start
    say(f"total {total:.0f} s (target < 480 s on one GPU, < 60 s for --device cpu --quick); "
        f"{'all steps ok' if not failures else 'FAILED: ' + ', '.join(failures)}")
    path = out_dir / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    print(f"\n[gpu_check] written: {path}", flush=True)
    _ = pd  # pandas is imported here so that a missing .venv fails before the steps
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
