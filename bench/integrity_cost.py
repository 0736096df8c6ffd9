"""What the integrity checks of issue 27 cost the default run (config/config.yaml), side by side with
the work they guard. Not a test (no assertions on timings); CPU seconds (process time) beside wall
seconds, as wall time on a shared machine says little.

1. Planning: ``check_run_config`` (strict YAML, names, schema with defaults, dataset folders, every
   study's plan, the run folder), which every ``snakemake`` invocation runs once; the part that is
   new in 0.3.0 (names, dataset folders, run folder) is given on its own.
2. Shards: the digits test split loaded as 0.2.0 did (``torch.load`` of the file) and as a job does
   now (read once, sha256, load from memory): once per job (the default run has ~140 jobs).
3. Merges: the default run's per-job tables (cheney2017: 39 tables of 55 rows; faults: 40 tables of
   21 rows) read and concatenated as 0.2.0 did, and read + checked against the plan as now.

    .venv/bin/python bench/integrity_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]


def _timed(fn, repeats: int) -> tuple[float, float]:
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        best = (min(best[0], time.process_time() - c0), min(best[1], time.perf_counter() - w0))
    return best


def _tables(d: Path, n_tables: int, levels: int, repeats: int) -> tuple[list[str], dict]:
    from netperturb.core.io import write_csv
    from netperturb.perturb.grid import COLUMNS

    paths, planned = [], {}
    for t in range(n_tables):
        rows = [{c: 0.5 for c in COLUMNS} | {"model": "m", "dataset": "digits", "level": lv / 10, "repeat": r,
                                              "weights": "e76a7af730b0", "data_digest": "6f2cea2cf6aa",
                                              "precision": "fp32", "device": "cpu", "netperturb_version": "0.3.0"}
                for lv in range(levels) for r in range(repeats)]  # fmt: skip
        p = d / f"t{t}.csv"
        write_csv(pd.DataFrame(rows, columns=COLUMNS), p)
        paths.append(str(p))
        planned[str(p)] = [[lv / 10, r] for lv in range(levels) for r in range(repeats)]
    return paths, planned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from netperturb.core.config import check_names, load_config_files, validate_config
    from netperturb.core.merge import check_tables, concat_tables, read_table, read_tables
    from netperturb.core.runfolder import check_run_folder
    from netperturb.runconfig import SCHEMA, check_dataset_inputs, check_run_config, plan_run, used_datasets

    rows = []
    base = load_config_files([REPO / "config" / "config.yaml"])
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        rows.append(("planning: check_run_config, all of it", _timed(
            lambda: check_run_config(copy.deepcopy(base), files=[str(REPO / "config/config.yaml")], workdir=d), a.repeats)))
        cfg = validate_config(copy.deepcopy(base), SCHEMA)
        rows.append(("  schema validation with defaults (as before)", _timed(lambda: validate_config(copy.deepcopy(base), SCHEMA), a.repeats)))
        rows.append(("  every study's plan (as before)", _timed(lambda: plan_run(cfg), a.repeats)))
        rows.append(("  new: names, dataset folders, run folder", _timed(lambda: (
            check_names(cfg, d), check_dataset_inputs(cfg, d), check_run_folder(d / "results" / "digits", cfg, [], used_datasets(cfg))), a.repeats)))

        from netperturb.datasets.digits import prepare_digits
        from netperturb.datasets.shards import load_split

        shards = d / "shards"
        prepare_digits(shards)
        old = lambda: torch.load(shards / "test-00000.pt", map_location="cpu", weights_only=True)  # noqa: E731
        rows.append(("shards, digits test split: 0.2.0 (torch.load, unchecked)", _timed(old, a.repeats)))
        rows.append(("shards, digits test split: now (read, sha256, load)", _timed(lambda: load_split(shards, "test"), a.repeats)))

        for study, n, levels, reps in (("cheney2017", 39, 11, 5), ("faults", 40, 7, 3)):
            sub = d / study
            sub.mkdir()
            paths, planned = _tables(sub, n, levels, reps)
            def before(paths=paths):
                return pd.concat([read_table(p) for p in paths])

            def now(paths=paths, planned=planned):
                frames = read_tables(paths)
                check_tables(frames, planned=planned)
                return concat_tables(paths, frames=frames)

            rows.append((f"merge {study} ({n} tables x {levels * reps} rows): 0.2.0 read + concat", _timed(before, a.repeats)))
            rows.append((f"merge {study}: now read + check against the plan + concat", _timed(now, a.repeats)))
    print(f"best of {a.repeats}; torch threads 1")
    print(f"{'what':<72} {'CPU s':>7} {'wall s':>7}")
    for name, (cpu, wall) in rows:
        print(f"{name:<72} {cpu:7.3f} {wall:7.3f}")


if __name__ == "__main__":
    main()
