"""Damage checks for files made earlier (checkpoints, downloaded weights) before they are used.

When such a file is written, a sidecar ``<file>.sha256`` records its sha256, size and
modification time (:func:`record_digest`). :func:`find_damage` is cheap when the file still has
the recorded size and time (nothing to hash); otherwise it hashes the file and compares. Without
a sidecar, a file whose name carries a sha256 prefix (torchvision weights) is checked against
it, and a PyTorch file (``.pt`` / ``.pth``) must at least be a complete zip archive (a truncated
one has lost the archive's end record). Chosen: the workflow runs this when it plans the jobs
(issue 13), so a damaged input stops the run before any job starts, and before Snakemake deletes
the outputs of jobs it was about to rerun.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from netperturb.core.io import sha256_file, write_json

__all__ = ["DamagedFileError", "sidecar_path", "record_digest", "find_damage"]

SIDECAR_SUFFIX = ".sha256"
_CACHE: dict[tuple, str | None] = {}


class DamagedFileError(ValueError):
    """A file made earlier is no longer what was written (truncated, overwritten)."""


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<path>.sha256``, the record :func:`record_digest` writes."""
    return Path(f"{os.fspath(path)}{SIDECAR_SUFFIX}")


def record_digest(path: str | os.PathLike, digest: str | None = None) -> dict:
    """Write the sidecar of ``path`` atomically: ``{"sha256", "size", "mtime_ns"}``.

    Args:
        path: an existing file, just written.
        digest: its hex sha256 if already computed (else it is computed here).

    Returns:
        The record written.
    """
    st = os.stat(path)
    rec = {"sha256": digest or sha256_file(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    write_json(rec, sidecar_path(path))
    return rec


def _read_sidecar(path: str | os.PathLike) -> dict | None:
    try:
        rec = json.loads(sidecar_path(path).read_text())
        return rec if isinstance(rec, dict) and isinstance(rec.get("sha256"), str) else None
    except (OSError, ValueError):
        return None


def find_damage(path: str | os.PathLike, *, sha256_prefix: str | None = None) -> str | None:
    """Why the file at ``path`` is damaged, or None when it looks intact (or does not exist).

    Args:
        path: the file.
        sha256_prefix: hex prefix its sha256 must start with (torchvision weights), if known.

    Returns:
        None, or a sentence naming what is wrong (e.g. ``"sha256 ab12... differs from the
        ef34... recorded in lenet5.pt.sha256 when it was written (size 100 B, was 240 B)"``).
        Results are cached per (path, size, mtime, record's mtime, prefix) in the process.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        side = os.stat(sidecar_path(path)).st_mtime_ns
    except FileNotFoundError:
        side = None
    key = (os.fspath(path), st.st_size, st.st_mtime_ns, side, sha256_prefix)
    if key not in _CACHE:
        _CACHE[key] = _damage(Path(path), st, sha256_prefix)
    return _CACHE[key]


def _damage(path: Path, st: os.stat_result, sha256_prefix: str | None) -> str | None:
    rec = _read_sidecar(path)
    if rec is not None and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
        return None  # unchanged since it was written and recorded
    if rec is not None or sha256_prefix:
        digest = sha256_file(path)
        if rec is not None and digest != rec["sha256"]:
            return (
                f"sha256 {digest[:16]}... differs from the {rec['sha256'][:16]}... recorded in "
                f"{sidecar_path(path).name} when it was written (size {st.st_size} B, was {rec.get('size')} B)"
            )
        if sha256_prefix and not digest.startswith(sha256_prefix):
            return f"sha256 {digest[:16]}... does not start with {sha256_prefix}, the prefix in its name"
        return None
    if path.suffix in (".pt", ".pth") and not zipfile.is_zipfile(path):
        return f"not a complete PyTorch file ({st.st_size} B; a file torch.save writes is a zip archive with an end record)"
    return None
