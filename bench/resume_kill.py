"""Kill a job with ``kill -9`` at a random point, resume it with Snakemake, compare its table (issue 13).

For a Cheney et al. perturbation job, a Pravin et al. filtering sweep job, a Shen et al.
Min-Max run's perturbation and attack jobs and a fault job of transient activation bit flips
(issue 27), on the tiny ``.test/config_<study>`` configs in a temporary ``--directory``:

1. run the job uninterrupted (``snakemake <job output>``) and keep its CSV as the reference;
2. ``--kills`` times: start the job again (``--forcerun <rule>``), wait until its partial file
   ``<output>.partial.jsonl`` holds a random number of finished cells (between 1 and all but
   one), ``kill -9`` the job's process (Snakemake itself sees a failed job), then run the
   resume command ``snakemake --rerun-incomplete <job output>`` and compare the CSV with the
   reference byte for byte; report the cells the killed run left and the resumed job's log line.

The configs are the tiny ones with more levels / sweep points / images and (Cheney) two replicas
per fast-engine group, so that a job has enough cells to be killed in the middle (printed
below as "overrides"). Not a test (no assertions on timings); exits 1 if a table differs.

    OMP_NUM_THREADS=1 .venv/bin/python bench/resume_kill.py [--studies cheney2017 pravin2024 shen2021 faults] [--kills 3]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def _idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(str(path) + ".gz", "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _mnist(d: Path) -> dict:
    """Tiny MNIST idx files (as tests/workflow/test_shen2021_workflow.py makes them)."""
    rng = np.random.default_rng(0)
    raw = d / "mnist"
    raw.mkdir()
    for prefix, n in (("train", 64), ("t10k", 300)):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 28, 28))
        x[np.arange(n), 2 + 2 * y] = 255
        _idx(raw / f"{prefix}-images-idx3-ubyte", x)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return {"datasets": {"mnist": {"root": str(raw), "verify_checksums": False}}}


# study -> (overrides, [(rule, job output, cells)])
CASES = {
    "cheney2017": (
        {"cheney2017": {"repeats": 3, "max_replicas": 2, "batch_size": 20, "layers_per_job": 1,
                        "perturbations": {"gaussian_noise": {"levels": {"start": 0.0, "stop": 2.0, "step": 0.02}}}}},
        [("cheney2017_perturb", "results/tiny/cheney2017/runs/lenet5/gaussian_noise/layers_3of5.csv", 101 * 3)],
    ),
    "pravin2024": (
        {"pravin2024": {"steps": 40, "eval_images": 300}},
        [("pravin2024_sweep_layers", "results/tinyf/pravin2024/runs/lenet5/init0/epoch1/layers_1of2.csv", 3 * 40)],
    ),
    "shen2021": (
        {"shen2021": {"attacks": {"eps": [0, 0.05, 0.1, 0.15, 0.2], "report_eps": 0.1, "pgd_steps": 2}}},
        [("shen2021_evaluate", "results/mm/shen2021/runs/lam0_seed0/perturbation.csv", 1 + 2 * 2 * 2 * 2),
         ("shen2021_evaluate", "results/mm/shen2021/runs/lam0_seed0/robustness.csv", 2 * 5)],
    ),
    "faults": (
        {"faults": {"repeats": 3, "batch_size": 20, "max_replicas": 2, "layers_per_job": 1,
                    "perturbations": {"activation_word": {"levels": [0.0] + [round(1e-3 * k, 6) for k in range(1, 21)]}}}},
        [("faults_perturb", "results/tiny/faults/runs/alexnet_digits/activation_word/layers_1of3.csv", 21 * 3)],
    ),
}  # fmt: skip


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _snakemake(workdir: Path, *args: str) -> list[str]:
    return [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile", str(workdir / "config.yaml"),
            "--directory", str(workdir), "--cores", "1", *args]  # fmt: skip


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return r


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _job_pid(snakemake_pid: int) -> int | None:
    """The process running the rule's script (``python .snakemake/scripts/tmp*.py``)."""
    for pid in _descendants(snakemake_pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if ".snakemake/scripts/" in cmd:
            return pid
    return None


def _cells(partial: Path) -> int:
    try:
        return partial.read_bytes().count(b'"key"')
    except FileNotFoundError:
        return 0


def _reuse_line(workdir: Path, name: str) -> str:
    hits = []
    for log in (workdir / "logs").rglob("*.log"):
        hits += [(log.stat().st_mtime, line.strip()) for line in log.read_text(errors="replace").splitlines()
                 if f"resume: {name}:" in line and "cells reused" in line]  # fmt: skip
    return re.sub(r"^\S+ \S+ ", "", max(hits)[1]) if hits else "(no resume line in the logs)"


def kill_and_resume(workdir: Path, rule: str, target: str, total: int, ref: bytes, rng: random.Random) -> bool:
    out = workdir / target
    partial = Path(str(out) + ".partial.jsonl")
    for _attempt in range(5):
        stop = rng.randint(1, total - 1)
        proc = subprocess.Popen(_snakemake(workdir, target, "--forcerun", rule), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        killed = pid = None
        while proc.poll() is None and pid is None:  # the job's process, while it starts up
            pid = _job_pid(proc.pid)
            time.sleep(0.05)
        while proc.poll() is None and pid is not None:
            if _cells(partial) >= stop:
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
            time.sleep(0.001)
        proc.wait()
        if killed is None or out.exists():
            print(f"    (job finished before the kill at {stop} cells; again)")
            continue
        left = _cells(partial)
        cmd = _snakemake(workdir, "--rerun-incomplete", target)
        t0 = time.perf_counter()
        _run(cmd)
        same = out.read_bytes() == ref
        print(f"    kill -9 {killed} once >= {stop} of {total} cells were stored: the partial file held {left} cells")
        print(f"    resume: snakemake ... --rerun-incomplete {target}  ({time.perf_counter() - t0:.0f} s)")
        print(f"    log: {_reuse_line(workdir, out.name)}")
        print(f"    table byte-identical to the uninterrupted run: {same}; partial file left: {partial.exists()}")
        return same
    print("    could not kill the job before it finished (5 attempts)")
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=None, help="for the kill points (default: random)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    print(f"kill points drawn with seed {seed}")
    ok = True
    for study in a.studies:
        overrides, jobs = CASES[study]
        workdir = Path(tempfile.mkdtemp(prefix=f"resume-{study}-"))
        cfg = yaml.safe_load((REPO / ".test" / f"config_{study}" / "config.yaml").read_text())
        extra = _mnist(workdir) if study == "shen2021" else {}
        (workdir / "config.yaml").write_text(yaml.safe_dump(_merge(_merge(cfg, overrides), extra), sort_keys=False))
        print(f"\n== {study}: .test/config_{study}/config.yaml + overrides {overrides}; --directory {workdir}")
        for rule, target, total in jobs:
            t0 = time.perf_counter()
            _run(_snakemake(workdir, target))
            ref = (workdir / target).read_bytes()
            print(f"  {rule}: {target} ({total} cells), uninterrupted run incl. its inputs {time.perf_counter() - t0:.0f} s")
            for k in range(a.kills):
                print(f"  kill {k + 1}:")
                ok &= kill_and_resume(workdir, rule, target, total, ref, rng)
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\nall tables identical" if ok else "\nSOME TABLE DIFFERS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
