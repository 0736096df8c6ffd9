"""Atomic output files and checksums.

Every output of the workflow is written to a temporary file in the same folder and renamed
into place (``os.replace`` is atomic on POSIX), so an interrupted job never leaves a half
file that a rerun would trust (the Design page of the docs, "Reliability rules").
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


#: ``errno`` values of a write that failed for a reason outside the program: the disk or the
#: quota is full, the file system is read-only, the folder is not writable, the file is too big.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO})


def write_error(path: str | os.PathLike, error: OSError, kept: str = "") -> OSError:
    """An ``OSError`` (same ``errno``) whose message names ``path``, the cause and the remedy:
    ``[Errno 28] cannot write results/x.csv: No space left on device<kept>. Remedy: free space on
    that file system (or raise the quota), then run the same command again``. ``kept`` (e.g.
    "; the 12 cells finished before are kept there") says what was not lost."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        remedy = "free space on that file system (or raise the quota), then run the same command again"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        remedy = ("make its folder writable (remount the file system read-write, or chmod u+w the folder), "
                  "then run the same command again")  # fmt: skip
    else:
        remedy = "fix the cause, then run the same command again"
    out = OSError(error.errno, f"cannot write {os.fspath(path)}: {error.strerror or error}{kept}. Remedy: {remedy}")
    out.filename = os.fspath(path)
    out.netperturb_named = True
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The parent folder is created. On any exception the temporary file is removed and
    ``path`` is left as it was (absent, or its previous content).

    Raises:
        OSError: the folder or the file cannot be written (:data:`WRITE_ERRNOS`: a full disk, a
            read-only file system, ...); the message names ``path`` and the remedy
            (:func:`write_error`).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise write_error(path, e) from None
        raise
    tmp_path = Path(tmp)
    try:
        os.close(fd)
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
        _fsync(tmp_path)  # the data is on disk before the name points at it
        os.replace(tmp_path, path)
    except BaseException as e:
        try:
            tmp_path.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS and not getattr(e, "netperturb_named", False):
            raise write_error(path, e) from None
        raise
    _fsync(path.parent, directory=True)  # the rename itself survives a power cut


def _fsync(path: Path, *, directory: bool = False) -> None:
    """``fsync`` a file (or, best effort, a folder: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` as CSV (no index) atomically.

    A missing value of a numeric column is written ``NaN`` (the Design page of the docs, "Result schema": never
    an empty field, which a reader would take for a string); ``inf`` / ``-inf`` as such. A
    missing value of a text column stays an empty field (e.g. ``layers_trained`` of the
    ``none`` retraining strategy), so text columns read back as text.
    """
    text = [c for c in df.columns if not _is_numeric(df[c]) and df[c].isna().any()]
    if text:
        df = df.copy()
        for c in text:
            df[c] = df[c].astype(object).where(df[c].notna(), "")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, na_rep="NaN")


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` as Parquet (no index) atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def is_parquet(path: str | os.PathLike) -> bool:
    """Whether a table's file name says Parquet (``.parquet``); every other table is CSV."""
    return os.fspath(path).endswith(".parquet")


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` atomically in the format its file name says (:func:`is_parquet`):
    :func:`write_parquet` or :func:`write_csv`."""
    (write_parquet if is_parquet(path) else write_csv)(df, path)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, with the same bytes for the same ``obj`` wherever it is written.

    ``torch.save`` given a file *name* names the records inside its zip archive after that
    file, here a random temporary name, so equal objects would give files with different
    sha256 (and a checkpoint's ``weights`` id would depend on the run). Given an open file it
    uses the fixed name ``archive``.
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
