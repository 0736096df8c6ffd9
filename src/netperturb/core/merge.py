"""Merge per-job tables into one tidy table (CSV, and Parquet when asked): the one table merge
every study uses."""

from __future__ import annotations

import os
from typing import Sequence

import pandas as pd

from netperturb.core.io import write_csv, write_parquet

__all__ = ["read_table", "concat_tables", "merge_tables"]


def read_table(path: str | os.PathLike, *, empty_is_nan: bool = False) -> pd.DataFrame:
    """Read a job CSV: ``NaN`` / ``nan`` are missing values; an empty field stays an empty
    string unless ``empty_is_nan``."""
    na = ["NaN", "nan", ""] if empty_is_nan else ["NaN", "nan"]
    return pd.read_csv(path, keep_default_na=False, na_values=na)


def concat_tables(
    inputs: Sequence[str | os.PathLike],
    columns: Sequence[str] | None = None,
    *,
    sort_by: Sequence[str] | None = None,
    empty_is_nan: bool = False,
) -> pd.DataFrame:
    """Concatenate CSV tables (each must have ``columns``, if given), sorted stably by
    ``sort_by`` if given.

    Raises:
        ValueError: no inputs, or an input lacks a column (names the file and the columns).
    """
    if not inputs:
        raise ValueError("merge: no input tables")
    frames = []
    for path in inputs:
        df = read_table(path, empty_is_nan=empty_is_nan)
        missing = [c for c in (columns or []) if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        frames.append(df)
    merged = pd.concat(frames, ignore_index=True)
    if sort_by:
        merged = merged.sort_values(list(sort_by), kind="stable").reset_index(drop=True)
    return merged


def merge_tables(
    inputs: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_parquet: str | os.PathLike | None = None,
    *,
    columns: Sequence[str] | None = None,
    sort_by: Sequence[str] | None = None,
    empty_is_nan: bool = False,
) -> pd.DataFrame:
    """:func:`concat_tables`, written atomically as CSV (and Parquet if ``out_parquet``).

    Raises:
        ValueError: see :func:`concat_tables`.
    """
    merged = concat_tables(inputs, columns, sort_by=sort_by, empty_is_nan=empty_is_nan)
    write_csv(merged, out_csv)
    if out_parquet is not None:
        write_parquet(merged, out_parquet)
    return merged
