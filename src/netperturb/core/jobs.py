"""Process set-up for one workflow job (used by ``workflow/scripts``; no Snakemake import).

A job's stderr -- logging, tqdm progress bars, and the traceback of an error, whose last
line is the one-line cause -- goes to the rule's ``log:`` file.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["start_job"]


def start_job(log_path: str | os.PathLike | None, threads: int | None = None) -> logging.Logger:
    """Redirect stderr to ``log_path`` (line-buffered, folders created), configure logging
    and set torch's intra-op threads to the rule's ``threads``. Returns the package logger."""
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = open(log_path, "w", buffering=1, encoding="utf-8")
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return logging.getLogger("netperturb")
