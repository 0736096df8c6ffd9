"""Merge per-job tables into one tidy table (CSV, and Parquet when asked): the one table merge
every study uses."""

from __future__ import annotations

import os
from typing import Sequence

import pandas as pd

from netperturb.core.io import write_csv, write_parquet

__all__ = ["NUMERIC_COLUMNS", "read_table", "concat_tables", "merge_tables"]

#: Columns that are numbers in every table of every study (measurements, levels, counts,
#: scores). :func:`read_table` returns them as numbers whatever their fields hold: ``NaN`` /
#: ``nan`` / an empty field (written by older versions for NaN) are NaN, ``inf`` is inf.
NUMERIC_COLUMNS = frozenset({
    "level", "repeat", "seed", "n_images", "top1", "top5", "loss", "sdc1", "sdc5", "due",
    "layer_index", "init", "epoch", "position", "step", "lo", "hi", "n_weights", "n_filtered",
    "eps", "value", "tolerance", "n_points", "baseline_clean", "baseline_adversarial",
    "retrain_epochs", "n_layers_trained", "n_params_trained", "n_params", "lam", "train_seed",
})  # fmt: skip


def read_table(path: str | os.PathLike, *, empty_is_nan: bool = False) -> pd.DataFrame:
    """Read a result CSV.

    ``NaN`` / ``nan`` are missing values, other text stays text (a model or layer named
    ``NA`` or ``None`` stays that name, not a missing value); an empty field of a text column
    stays an empty string unless ``empty_is_nan``. The columns of :data:`NUMERIC_COLUMNS`
    come back as numbers, NaN where the field is ``NaN``, ``nan`` or empty, so one diverged
    cell never turns a whole column into text (and the merged Parquet keeps float columns).

    Raises:
        ValueError: a field of a numeric column is not a number (names the file, the column
            and the value).
    """
    na = ["NaN", "nan", ""] if empty_is_nan else ["NaN", "nan"]
    df = pd.read_csv(path, keep_default_na=False, na_values=na)
    for col in df.columns:
        if col not in NUMERIC_COLUMNS or pd.api.types.is_numeric_dtype(df[col]):
            continue
        text = df[col].astype(object)
        blank = text.isna() | text.astype(str).str.strip().isin(["", "NaN", "nan"])
        values = pd.to_numeric(text.where(~blank, float("nan")), errors="coerce")
        bad = values.isna() & ~blank
        if bad.any():
            raise ValueError(
                f"{path}: column {col!r} must hold numbers, found {text[bad].iloc[0]!r} "
                f"(row {int(bad.to_numpy().argmax()) + 2} of the file)"
            )
        df[col] = values.astype(float)
    return df


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
