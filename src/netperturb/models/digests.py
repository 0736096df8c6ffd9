"""The sha256 of a user's model file, computed once, and the check that it has not changed
since the workflow was planned.

A model given as a file (``models.<name>.weights_file`` / ``.file``) is the user's: the
workflow never writes beside it (no ``<file>.sha256`` record as for the files it makes,
:mod:`netperturb.core.integrity`) and never tells the user to delete it. Its digest is kept
in a cache under ``$XDG_CACHE_HOME/netperturb/digests`` (default ``~/.cache``), keyed by the
file's absolute path, size and modification time, so that a large file is hashed once (when the
workflow plans the jobs), not once per job. The digest planned goes into every job's
parameters; a job that finds another digest stops with :class:`FileChangedError` (the file was
replaced while the run was going), and a rerun of the same command plans the jobs again with
the new file (changed parameters: Snakemake reruns the jobs that used the old one).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from netperturb.core.io import sha256_file, write_json

__all__ = ["FileChangedError", "cache_dir", "file_digest", "check_unchanged"]

_MEMO: dict[tuple, str] = {}


class FileChangedError(ValueError):
    """A user's model file is not the one the workflow planned the jobs with."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/netperturb/digests`` (``~/.cache/netperturb/digests``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "netperturb" / "digests"


def file_digest(path: str | os.PathLike) -> str:
    """The hex sha256 of the file at ``path``, from the cache when the file still has the size
    and modification time recorded there (else hashed, and recorded; a cache that cannot be
    written is skipped).

    Raises:
        FileNotFoundError: no such file.
    """
    p = Path(path).resolve()
    st = os.stat(p)
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key in _MEMO:
        return _MEMO[key]
    entry = cache_dir() / (hashlib.sha256(str(p).encode()).hexdigest()[:32] + ".json")
    try:
        rec = json.loads(entry.read_text())
        if [rec.get("path"), rec.get("size"), rec.get("mtime_ns")] == list(key) and isinstance(rec.get("sha256"), str):
            _MEMO[key] = rec["sha256"]
            return rec["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(p)
    try:
        write_json({"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}, entry)
    except OSError:
        pass
    _MEMO[key] = digest
    return digest


def check_unchanged(path: str | os.PathLike, planned: str | None, key: str) -> str:
    """The file's digest, checked against the one the jobs were planned with.

    Args:
        path: the user's file.
        planned: hex sha256 recorded when the workflow was planned (None: nothing to check,
            e.g. the command line).
        key: the config key that names the file, for the message.

    Returns:
        The hex sha256.

    Raises:
        FileNotFoundError: the file is gone (names the key).
        FileChangedError: another digest; the message says which and that a rerun of the same
            command uses the new file (nothing to delete).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{key}: {path} does not exist")
    digest = file_digest(path)
    if planned and digest != planned:
        raise FileChangedError(
            f"{key}: {path} changed since the workflow was planned (sha256 now {digest[:16]}..., planned with "
            f"{planned[:16]}...): it was replaced while the run was going. Remedy: run the same command again; "
            "the jobs are planned again with the file as it is now and those that used the old one rerun "
            "(your file stays as it is)."
        )
    return digest
