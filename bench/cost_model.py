"""Benchmark: the constants of the engine's cost model (netperturb.perturb.engine.costs), measured.

Times each kind of work the cost model counts, on one device, in fp32, and prints the
seconds per unit next to the constants the engine uses (``costs.CPU`` / ``costs.CUDA``):

* ``conv_mac`` -- a convolution (torchvision AlexNet conv3 shape, 13 x 13, 384 -> 256 ... at
  --batch images) per multiply-accumulate;
* ``linear_mac`` -- a compute-bound matrix product (4096 x 4096 at 512 rows);
* ``weight_byte`` -- a dense layer at --batch rows (9216 x 4096): its time beyond its
  multiply-accumulates at the compute-bound rate, per byte of weights (read once per call);
* ``act_byte`` -- ReLU + max-pool over AlexNet-sized activations, per byte written;
* ``copy`` -- ``copy_`` of 37.7 M floats into a buffer, per element;
* ``scatter`` -- ``index_put_`` of 1 M random entries into 37.7 M floats, per entry;
* ``gather`` -- the sparse correction of a dense layer (``x[:, cols] * d`` + ``index_add_``)
  per multiply-add, and of a convolution (strided taps of the padded input);
* ``call`` -- a one-element operator call.

Medians of --repeat runs, in CPU seconds of the process on a CPU (wall seconds on a GPU). A benchmark, not a test: it asserts nothing. The table in
``bench/tables/cost_model-cpu.txt`` is what ``costs.CPU`` was set from.

    OMP_NUM_THREADS=1 python bench/cost_model.py --threads 1 --out bench/tables/cost_model-cpu.txt
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from netperturb.perturb.engine import costs  # noqa: E402


def timed(fn, repeat: int, device) -> float:
    """Median seconds of ``fn``: CPU seconds of this process on the CPU (so that other
    processes on a loaded machine inflate it less), wall seconds on a GPU."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(clock() - t)
    return statistics.median(out)


def measure(device: torch.device, batch: int, repeat: int) -> dict[str, float]:
    g = torch.Generator(device="cpu").manual_seed(0)
    r = {}
    with torch.inference_mode():
        x = torch.randn(batch, 384, 13, 13, generator=g).to(device)
        w = torch.randn(256, 384, 3, 3, generator=g).to(device)
        r["conv_mac"] = timed(lambda: F.conv2d(x, w, padding=1), repeat, device) / (batch * 256 * 13 * 13 * 384 * 9)
        a = torch.randn(512, 4096, generator=g).to(device)
        b = torch.randn(4096, 4096, generator=g).to(device)
        r["linear_mac"] = timed(lambda: F.linear(a, b), repeat, device) / (512 * 4096 * 4096)
        x1 = torch.randn(batch, 9216, generator=g).to(device)
        w6 = torch.randn(4096, 9216, generator=g).to(device)
        small = timed(lambda: F.linear(x1, w6), repeat, device)
        # what a dense layer at --batch rows costs beyond its multiply-adds, per byte of weights
        r["weight_byte"] = max(small - r["linear_mac"] * batch * w6.numel(), 0.0) / (w6.numel() * 4)
        act = torch.randn(batch, 192, 27, 27, generator=g).to(device)
        r["act_byte"] = timed(lambda: F.max_pool2d(F.relu(act), 3, 2), repeat, device) / (act.numel() * 4 * 1.25)
        big = torch.randn(37_748_736, generator=g).to(device)
        buf = torch.empty_like(big)
        r["copy"] = timed(lambda: buf.copy_(big), repeat, device) / big.numel()
        idx = torch.randint(0, big.numel(), (1 << 20,), generator=g).to(device)
        vals = torch.randn(1 << 20, generator=g).to(device)

        def scatter():
            big[idx] = vals

        r["scatter"] = timed(scatter, repeat, device) / idx.numel()
        xl = torch.randn(batch, 9216, generator=g).to(device)
        y = torch.randn(batch, 4096, generator=g).to(device)
        k = 100_000
        cols = torch.randint(0, 9216, (k,), generator=g).to(device)
        rows = torch.randint(0, 4096, (k,), generator=g).to(device)
        d = torch.randn(k, generator=g).to(device)
        r["gather_linear"] = timed(lambda: y.index_add_(1, rows, xl[:, cols] * d), repeat, device) / (batch * k)
        xp = torch.randn(batch, 384, 15, 15, generator=g).to(device)
        yc = torch.randn(batch, 256, 13, 13, generator=g).to(device)
        kc = 2000
        ch = torch.randint(0, 384, (kc,), generator=g).to(device)
        o = torch.randint(0, 256, (kc,), generator=g).to(device)
        hi = torch.randint(0, 3, (kc, 1), generator=g).to(device) + torch.arange(13, device=device)
        wi = torch.randint(0, 3, (kc, 1), generator=g).to(device) + torch.arange(13, device=device)
        dc = torch.randn(kc, generator=g).to(device)

        def conv_delta():
            patch = xp[:, ch[:, None, None], hi[:, :, None], wi[:, None, :]]
            yc.index_add_(1, o, patch * dc.view(1, -1, 1, 1))

        r["gather_conv"] = timed(conv_delta, repeat, device) / (batch * kc * 169)
        one = torch.ones(1, device=device)
        r["call"] = timed(lambda: [one + one for _ in range(1000)], repeat, device) / 1000
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    used = costs.cost_model(device)
    lines = [
        f"# cost model constants, measured: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"# host {platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"device {device}, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"# command: python bench/cost_model.py --device {args.device} --threads {args.threads} --batch {args.batch}",
        "",
        f"{'constant':14} {'measured s/unit':>16} {'engine uses':>12}",
    ]
    r = measure(device, args.batch, args.repeat)
    for name, value in r.items():
        key = "gather" if name == "gather_linear" else name
        lines.append(f"{name:14} {value:16.3e} {getattr(used, key):12.3e}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
