"""Merge per-job tables into one tidy table (CSV, and Parquet when asked): the one table merge
every study uses, checked against the plan before anything is written.

A per-job table is an input the merge checks against what made it (:func:`check_tables`):
complete (a table cut off in the middle of a row has lost its last newline), exactly the
planned cells (levels x repeats), every provenance field filled, and across all tables of the
merge one ``weights`` id per model and one ``data_digest`` per dataset (a checkpoint or a
shard folder replaced between two jobs would otherwise mix two networks or two data sets in
one table). Any violation names the file and the remedy and merges nothing. A merged table
is an output: :func:`write_merged` records its sha256 beside it
(:func:`netperturb.core.integrity.record_digest`), so a hand edit is found before a report
reads it (:func:`netperturb.core.integrity.find_damage`)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Mapping, Sequence

import pandas as pd

from netperturb.core.io import is_parquet, write_csv, write_parquet

__all__ = [
    "NUMERIC_COLUMNS", "TEXT_IDS", "PROVENANCE", "MergeError", "read_table", "read_tables", "check_tables", "concat_tables",
    "merge_tables", "merge_planned", "write_merged",
]  # fmt: skip

#: Columns of ids that :func:`read_table` keeps as text whatever they look like.
TEXT_IDS = ("weights", "data_digest", "netperturb_version")

#: Provenance columns that every row of a per-job table must fill (where the table has them).
PROVENANCE = ("weights", "data_digest", "precision", "device", "netperturb_version")


class MergeError(ValueError):
    """Per-job tables that do not match their plan or each other; nothing was merged."""

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
    The id columns of :data:`TEXT_IDS` stay text whatever they look like (the weights id
    ``123e45678901`` is not the number inf).

    A ``.parquet`` file is read as it was written (its columns keep their types).

    Raises:
        ValueError: a field of a numeric column is not a number (names the file, the column
            and the value); a Parquet file that cannot be read.
    """
    if is_parquet(path):
        try:
            return pd.read_parquet(path)
        except Exception as e:  # pyarrow's errors (ArrowInvalid, OSError) differ by version
            raise ValueError(f"{path}: not a readable Parquet table ({type(e).__name__}: {e})") from None
    na = ["NaN", "nan", ""] if empty_is_nan else ["NaN", "nan"]
    # ids stay text: a 12-hex-digit weights id or data digest may look like a number (012345678901, 123e45678901)
    df = pd.read_csv(path, keep_default_na=False, na_values=na, dtype={c: str for c in TEXT_IDS})
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
    frames: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Concatenate tables (CSV or Parquet, each whole and with ``columns``, if given: :func:`read_tables`),
    sorted stably by ``sort_by`` if given.

    Raises:
        ValueError: no inputs. MergeError: an input is cut off, unreadable or lacks a column
            (names the file, the columns and the remedy).
    """
    if not inputs:
        raise ValueError("merge: no input tables")
    if frames is None:  # (``frames``: the tables already read by read_tables)
        frames = read_tables(inputs, columns, empty_is_nan=empty_is_nan)
    merged = pd.concat([frames[str(p)] for p in inputs], ignore_index=True)
    if sort_by:
        merged = merged.sort_values(list(sort_by), kind="stable").reset_index(drop=True)
    return merged


def merge_tables(
    inputs: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike | None,
    out_parquet: str | os.PathLike | None = None,
    *,
    columns: Sequence[str] | None = None,
    sort_by: Sequence[str] | None = None,
    empty_is_nan: bool = False,
    one_per: Sequence[tuple[str, str | Sequence[str]]] = (("weights", "model"), ("data_digest", "dataset")),
) -> pd.DataFrame:
    """:func:`concat_tables` after :func:`check_tables` (provenance filled, ``one_per``), written
    atomically as CSV (unless ``out_csv`` is None) and as Parquet (if ``out_parquet``), each with
    its sha256 record (:func:`write_merged`). The inputs may be CSV or Parquet files.

    Raises:
        ValueError: see :func:`concat_tables`. MergeError: see :func:`check_tables`.
    """
    if not inputs:
        raise ValueError("merge: no input tables")
    frames = read_tables(inputs, columns, empty_is_nan=empty_is_nan)
    check_tables(frames, one_per=one_per)
    merged = concat_tables(inputs, columns, sort_by=sort_by, frames=frames)
    write_merged(merged, out_csv, out_parquet)
    return merged


def _complete(path: str | os.PathLike) -> str | None:
    """Why the table at ``path`` is not complete as :func:`~netperturb.core.io.write_table`
    writes it (a CSV ends with a newline, a Parquet file with its footer's magic ``PAR1``), or None."""
    size = os.path.getsize(path)
    if size == 0:
        return "is empty"
    if is_parquet(path):
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
        if size < 8 or head != b"PAR1" or tail != b"PAR1":
            return f"is not a whole Parquet file ({size} B; one written whole starts and ends with PAR1: cut off?)"
        return None
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            return f"ends in the middle of a row (cut off at {size} B; a table written whole ends with a newline)"
    return None


def read_tables(
    inputs: Sequence[str | os.PathLike], columns: Sequence[str] | None = None, *, empty_is_nan: bool = False
) -> dict[str, pd.DataFrame]:
    """path -> :func:`read_table` of each input, each checked to be whole (ends with a newline)
    and to have ``columns``.

    Raises:
        MergeError: every input that is cut off, unreadable or lacks columns, each named with the
            remedy; nothing is returned then.
    """
    frames, problems = {}, []
    for path in map(str, inputs):
        why = _complete(path)
        if why is None:
            try:
                df = read_table(path, empty_is_nan=empty_is_nan)
            except ValueError as e:
                why = str(e).removeprefix(f"{path}: ")
            else:
                missing = [c for c in (columns or []) if c not in df.columns]
                if missing:
                    why = f"lacks the columns {missing} (made by an older netperturb?)"
                frames[path] = df
        if why:
            problems.append((path, why))
    if problems:
        raise _merge_error(problems)
    return frames


def _cell(values: Sequence) -> tuple:
    return tuple(round(float(v), 10) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values)


def check_tables(
    frames: Mapping[str, pd.DataFrame],
    *,
    planned: Mapping[str, Sequence[Sequence]] | None = None,
    cell_columns: Sequence[str] = ("level", "repeat"),
    provenance: Sequence[str] = PROVENANCE,
    one_per: Sequence[tuple[str, str | Sequence[str]]] = (("weights", "model"), ("data_digest", "dataset")),
) -> None:
    """Check per-job tables (path -> table) against their plan and each other.

    Args:
        planned: path -> the cells its job computes (tuples of ``cell_columns`` values; e.g.
            every (level, repeat) of levels x repeats); the table must hold each exactly once
            and nothing else. Levels compare rounded to 10 decimals (as
            :func:`netperturb.core.config.expand_levels` makes them).
        provenance: columns whose every field must be filled (no NaN, no empty text).
        one_per: (value column, key column(s)) pairs: across all tables, each key (a model, a
            dataset; or a tuple of columns, e.g. model, init, epoch) has one value (one
            ``weights`` id, one ``data_digest``).

    Raises:
        MergeError: every violation, each naming the file(s), with the remedy.
    """
    problems: list[tuple[str, str]] = []
    for path, df in frames.items():
        if planned is not None and path in planned:
            cols = [c for c in cell_columns if c in df.columns]
            have = Counter(_cell(r) for r in zip(*(df[c].to_numpy().tolist() for c in cols))) if cols else Counter()
            want = Counter(_cell(c) for c in planned[path])
            missing, extra = sorted((want - have).elements()), sorted((have - want).elements())
            if missing or extra or len(cols) < len(cell_columns):
                what = [f"{len(df)} rows for {sum(want.values())} planned cells ({', '.join(cell_columns)})"]
                if missing:
                    what.append(f"missing {_few(map(_show, missing))}")
                if extra:
                    what.append(f"not planned or repeated {_few(map(_show, extra))}")
                problems.append((path, "; ".join(what)))
        for col in provenance:
            if col in df.columns:
                blank = [i for i, v in enumerate(df[col].to_numpy().tolist()) if _blank(v)]
                if blank:
                    problems.append((path, f"no {col} in row {blank[0] + 2} of the file "
                                           f"({len(blank)} row(s)): its provenance is lost"))  # fmt: skip
    for value_col, key_cols in one_per:
        key_cols = (key_cols,) if isinstance(key_cols, str) else tuple(key_cols)
        key_col = "/".join(key_cols)
        seen: dict[str, dict[str, list[str]]] = {}
        for path, df in frames.items():
            if value_col in df.columns and all(c in df.columns for c in key_cols):
                pairs = set(zip(zip(*(df[c].to_numpy().tolist() for c in key_cols)), df[value_col].to_numpy().tolist()))
                for key, value in pairs:
                    if not _blank(value):  # a blank field is reported above
                        seen.setdefault("/".join(map(str, key)), {}).setdefault(str(value), []).append(path)
        for key, values in seen.items():
            if len(values) > 1:
                groups = sorted(values.items(), key=lambda kv: -len(kv[1]))
                desc = "; ".join(f"{v} in {len(ps)} table(s) ({_few(sorted(ps), 3)})" for v, ps in groups)
                problems.append((f"{key_col} {key}", f"{len(values)} {value_col} ids: {desc}. The tables of one "
                                 f"{key_col} must come from one {value_col} (the file changed between two jobs); delete "
                                 f"the tables of the {value_col} that is not the one in place now, or all of them"))  # fmt: skip
    if problems:
        raise _merge_error(problems)


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() in ("", "nan", "NaN")


def _show(cell: tuple) -> str:
    return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in cell) + ")"


def _few(items, n: int = 4) -> str:
    items = list(items)
    text = ", ".join(str(i) for i in items[:n])
    return text + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _merge_error(problems: Sequence[tuple[str, str]]) -> MergeError:
    files = [p for p, _ in problems if not p.startswith(("model ", "dataset "))]
    lines = "\n  ".join(f"{where}: {why}" for where, why in problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    rm = f"rm {' '.join(dict.fromkeys(files[:10]))}{' ...' if len(files) > 10 else ''}" if files else "rm the tables named"
    return MergeError(
        f"merge: {len(problems)} problem(s) in the per-job tables; nothing was merged:\n  {lines}{more}\n"
        f"Remedy: delete the tables named ({rm}) and run the same command again: their jobs run again from the "
        "inputs in place now (a per-job table is an output of its job, never an input to edit)."
    )


def write_merged(df: pd.DataFrame, out_csv: str | os.PathLike | None, out_parquet: str | os.PathLike | None = None) -> None:
    """Write a merged table atomically as CSV and / or Parquet (a None path is not written), each with its sha256 record
    ``<file>.sha256`` (:func:`netperturb.core.integrity.record_digest`): a report finds a
    hand edit of it before reading it."""
    from netperturb.core.integrity import record_digest, sidecar_path

    for path, write in ((out_csv, write_csv), (out_parquet, write_parquet)):
        if path is not None:
            sidecar_path(path).unlink(missing_ok=True)  # never a stale record beside a new file
            write(df, path)
            record_digest(path)


def merge_planned(
    runs: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_parquet: str | os.PathLike | None = None,
    *,
    columns: Sequence[str],
    sort_by: Sequence[str],
    planned: Mapping[str, Sequence[Sequence]] | None = None,
    cell_columns: Sequence[str] = ("level", "repeat"),
    baselines: Sequence[str | os.PathLike] = (),
    out_baseline: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Merge a study's per-job tables (``runs``) and its baseline tables, after checking all of
    them together (:func:`read_tables`, :func:`check_tables`: each run table has exactly its
    ``planned`` cells, tuples of ``cell_columns`` such as (level, repeat) or (layer, level,
    repeat); each baseline the one cell (layer ``""``, level 0, repeat 0); one ``weights`` id per
    model and one ``data_digest`` per dataset across runs and baselines). Each merged table is
    sorted stably by ``sort_by`` and written with its sha256 record (:func:`write_merged`).

    Returns:
        The merged run table.

    Raises:
        ValueError: no run tables. MergeError: see :func:`read_tables`, :func:`check_tables`;
            nothing is written then.
    """
    if not runs:
        raise ValueError("merge: no input tables")
    runs, baselines = [str(p) for p in runs], [str(p) for p in baselines]
    frames = read_tables([*runs, *baselines], columns)
    plan = None
    if planned is not None:
        clean = tuple({"layer": "", "level": 0.0, "repeat": 0}[c] for c in cell_columns)
        plan = {str(k): v for k, v in planned.items()} | {b: [clean] for b in baselines}
    check_tables(frames, planned=plan, cell_columns=cell_columns)

    def merged(paths: Sequence[str]) -> pd.DataFrame:
        df = pd.concat([frames[p] for p in paths], ignore_index=True)
        return df.sort_values(list(sort_by), kind="stable").reset_index(drop=True)

    out = merged(runs)
    write_merged(out, out_csv, out_parquet)
    if baselines and out_baseline is not None:
        write_merged(merged(baselines), out_baseline)
    return out
