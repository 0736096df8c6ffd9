"""Compare the merged tables of two runs value for value (e.g. before and after a refactor
that must not change numbers).

    python bench/compare_results.py OLD_RESULTS_DIR NEW_RESULTS_DIR [--old-layout]

Each directory is a run's results folder (``results/<run>``). With ``--old-layout`` the first
one is in the layout before the per-study restructure (Cheney tables at the run's root,
Min-Max tables under ``minmax/``). Prints one line per table (rows, columns, identical or the
first difference) and exits non-zero if any table differs or is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

#: Merged tables of the default run: (study folder, file).
TABLES = [
    ("cheney2017", "perturbation.csv"), ("cheney2017", "baseline.csv"),
    ("shen2021", "history.csv"), ("shen2021", "tracking.parquet"), ("shen2021", "histograms.parquet"),
    ("shen2021", "robustness.csv"), ("shen2021", "perturbation.csv"),
    ("pravin2024", "sweeps.csv"), ("pravin2024", "baseline.csv"), ("pravin2024", "scores.csv"),
    ("pravin2024", "retraining.csv"), ("pravin2024", "training.csv"),
    ("faults", "perturbation.csv"), ("faults", "baseline.csv"),
]  # fmt: skip
OLD_FOLDERS = {"cheney2017": "", "shen2021": "minmax", "pravin2024": "pravin2024", "faults": "faults"}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--old-layout", action="store_true")
    args = ap.parse_args(argv)
    bad = 0
    for study, name in TABLES:
        old = args.old / (OLD_FOLDERS[study] if args.old_layout else study) / name
        new = args.new / study / name
        if not (old.exists() and new.exists()):
            print(f"MISSING   {study}/{name}: {old if not old.exists() else new}")
            bad += 1
            continue
        # NaN-aware: a NaN written as an empty field (before issue 13.1) equals one written "NaN"
        a, b = _read(old), _read(new)
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
            print(f"identical {study}/{name}: {len(b):,} rows x {b.shape[1]} columns")
        except AssertionError as e:
            print(f"DIFFERENT {study}/{name}: {str(e).splitlines()[0:3]}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
