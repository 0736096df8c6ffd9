"""Cell-level resume: a job's finished cells, appended to a partial file beside its output.

A job (one Cheney et al. perturbation job, one filtering sweep, one Min-Max attack or
perturbation table) computes many *cells*, each identified by a few fields (e.g. layer,
perturbation, level, repeat) and each with its own seed (:func:`netperturb.core.seeds.cell_seed`),
so a cell's numbers do not depend on which other cells run in the same process. A
:class:`CellStore` records every finished cell in ``<output>.partial.jsonl`` as soon as it (or
its group) is done; a job that is killed, preempted or timed out and then started again
computes only the cells missing there, and writes the same final table, byte for byte, as an
uninterrupted run (the Design page of the docs, "Reliability rules").

File format (JSON lines, append-only, UTF-8)::

    {"netperturb_cells": 1, "output": "fc5.csv", "fingerprint": {...}}     # header
    {"key": [...], "value": ...}                                           # one finished cell
    {"note": {"replicas": 8}}                                              # job-level facts

The file is created with its header and its first cells in one atomic step (a temporary file
renamed into place), so it never exists without its header (a full disk leaves no file
rather than an empty one). Each later append is one ``write`` of whole lines followed by
``fsync``; a kill can tear only the last line, which :class:`CellStore` detects on opening (no
newline, or not JSON), drops, and truncates away before appending again. A partial file that
cannot be read at all (no header, a cell without a value, a value the job cannot decode) is
set aside as ``<partial>.unreadable`` with a warning naming both files, and the job starts
afresh: never a traceback on every rerun. An ``OSError`` while writing (a full disk, a
read-only folder) names the file, the cells kept and the remedy. Values go through JSON exactly: floats are written
with ``repr`` (shortest round-trip form; ``NaN`` / ``Infinity`` as such), ints stay ints.

The header's *fingerprint* holds everything that determines a cell's numbers besides its key
(weights checksum, data shards, batch size, device type, engine, versions, ...). A partial
file whose fingerprint differs is not trusted: it is discarded with a warning and the job
starts afresh. The partial file is not a declared output of any rule, so Snakemake does not
delete it when a job fails or with ``--rerun-incomplete``; :meth:`CellStore.finish` removes
it once the final table is written (atomically, :func:`netperturb.core.io.write_csv`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import pandas as pd

from netperturb.core.io import atomic_path, write_csv, write_error

log = logging.getLogger("netperturb")

__all__ = ["FORMAT", "partial_path", "CellStore", "counts_to_json", "counts_from_json", "data_fingerprint", "environment"]

#: Version of the partial-file format (the header's ``netperturb_cells``).
FORMAT = 1

#: Suffix of the partial file: ``<output>`` + this.
SUFFIX = ".partial.jsonl"


def partial_path(output: str | os.PathLike) -> Path:
    """The partial file of ``output``: ``<output>.partial.jsonl`` in the same folder."""
    return Path(str(output) + SUFFIX)


def _plain(obj: Any) -> Any:
    """numpy / torch scalars -> Python scalars (json's ``default`` hook)."""
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"a cell value must be JSON data (dict, list, str, int, float, bool, None), got {type(obj).__name__}")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_plain, separators=(",", ":"), allow_nan=True)


def _key_id(key: Sequence[Any]) -> str:
    return _dumps(list(key))


class CellStore:
    """The finished cells of one job, kept in memory and appended to ``<output>.partial.jsonl``.

    Keys are tuples of JSON scalars (str, int, float, bool), compared exactly (a float level
    ``0.1`` is the key ``0.1``, not ``0.1000001``); values are any JSON data (e.g.
    :func:`counts_to_json` of a cell's :class:`~netperturb.core.evaluate.Counts`, or a result
    row as a dict).

    Args:
        output: the job's final output file; the partial file is :func:`partial_path` of it.
        fingerprint: JSON data describing everything besides the key that the cells' numbers
            depend on; a partial file with another fingerprint is discarded.
        enabled: False keeps the cells in memory only (no file is read or written).
        check: called on every stored value when the file is opened (e.g.
            :func:`counts_from_json`); one that raises makes the file unreadable (set aside,
            see the module's text). A ``null`` value is unreadable in any case: a finished
            cell always has one.

    Attributes:
        reused: cells found in the partial file when the store was opened.
        computed: cells added by this process.
        notes: job-level facts recorded by :meth:`note` (also those of the killed run).

    Raises:
        OSError: the partial file cannot be read or written (the message names it and the remedy).
    """

    def __init__(self, output: str | os.PathLike, fingerprint: Mapping[str, Any], *, enabled: bool = True,
                 check: Callable[[Any], Any] | None = None):  # fmt: skip
        self.output = Path(output)
        self.check = check
        self.path = partial_path(output)
        self.enabled = enabled
        self.fingerprint = json.loads(_dumps(dict(fingerprint)))  # as it reads back from the file
        self._cells: dict[str, Any] = {}
        self.notes: dict[str, Any] = {}
        self.reused = 0
        self.computed = 0
        if enabled:
            self._open()

    # -- reading ------------------------------------------------------------------------------

    def _open(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = 0  # bytes of the valid prefix
        header = None
        cells: dict[str, Any] = {}
        notes: dict[str, Any] = {}
        problem = ""
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                problem = "a torn last line"
                break
            try:
                rec = json.loads(line)
            except ValueError:
                problem = f"an unreadable line at byte {good}"
                break
            if header is None:
                if not (isinstance(rec, dict) and rec.get("netperturb_cells") == FORMAT):
                    problem = "no header"
                    break
                header = rec
            elif isinstance(rec, dict) and "key" in rec and "value" in rec:
                why = self._unreadable_value(rec["value"])
                if why:
                    self._set_aside(f"the cell {_key_id(rec['key'])} at byte {good} {why}")
                    return
                cells.setdefault(_key_id(rec["key"]), rec["value"])
            elif isinstance(rec, dict) and isinstance(rec.get("note"), dict):
                notes.update(rec["note"])
            else:
                problem = f"an unknown record at byte {good}"
                break
            good += len(line)
        if header is not None and header.get("fingerprint") != self.fingerprint:
            diff = sorted(k for k in set(header.get("fingerprint") or {}) | set(self.fingerprint)
                          if (header.get("fingerprint") or {}).get(k) != self.fingerprint.get(k))  # fmt: skip
            log.warning(
                "resume: %s was written for other settings (%s differ); its %d cells are not reused",
                self.path, ", ".join(diff) or "format", len(cells),
            )  # fmt: skip
            self.path.unlink()
            return
        if header is None:  # nothing of it can be used: never append cells to a file without a header
            if not data:
                log.warning("resume: %s is empty (left by a failed write); removed", self.path)
                self.path.unlink()
            else:
                self._set_aside(f"it has no header line ({problem or 'no netperturb_cells record first'})")
            return
        if problem:
            log.warning("resume: %s: dropped %d bytes after %s (the job was killed while writing)",
                        self.path, len(data) - good, problem)  # fmt: skip
            try:
                with open(self.path, "r+b") as f:
                    f.truncate(good)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise write_error(self.path, e) from None
        self._cells, self.notes = cells, notes
        self.reused = len(cells)
        if cells:
            log.info("resume: %s: %d finished cells found in %s", self.output.name, len(cells), self.path)

    def _unreadable_value(self, value: Any) -> str:
        if value is None:
            return "has no value (null)"
        if self.check is not None:
            try:
                self.check(value)
            except Exception as e:  # what the job could not decode: never trust the rest of the file
                return f"has a value the job cannot read ({type(e).__name__}: {str(e)[:80]})"
        return ""

    def _set_aside(self, why: str) -> None:
        aside = self.path.with_name(self.path.name + ".unreadable")
        try:
            os.replace(self.path, aside)
        except OSError as e:
            raise write_error(aside, e) from None
        log.warning("resume: %s cannot be read: %s; set aside as %s (kept for inspection), the job starts afresh",
                    self.path, why, aside.name)  # fmt: skip

    def __contains__(self, key: Sequence[Hashable]) -> bool:
        return _key_id(key) in self._cells

    def __len__(self) -> int:
        return len(self._cells)

    def get(self, key: Sequence[Hashable]) -> Any:
        """The stored value of ``key``.

        Raises:
            KeyError: the cell is not stored.
        """
        return self._cells[_key_id(key)]

    # -- writing ------------------------------------------------------------------------------

    def _append(self, records: list[dict]) -> None:
        if not self.enabled or not records:
            return
        new = not self.path.exists()
        if new:  # header and first cells appear together, atomically: never a file without its header
            records = [{"netperturb_cells": FORMAT, "output": self.output.name, "fingerprint": self.fingerprint}, *records]
        text = "".join(_dumps(r) + "\n" for r in records).encode()
        before = len(self._cells) - sum("key" in r for r in records)
        kept = f"; the {before} cells finished before are kept there"
        if new:
            with atomic_path(self.path) as tmp:  # names the file and the remedy on an OSError
                tmp.write_bytes(text)
            return
        try:
            with open(self.path, "ab") as f:
                f.write(text)  # one write of whole lines: a kill tears at most the last one
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise write_error(self.path, e, kept + " (a torn last line is dropped when the job starts again)") from None

    def put(self, cells: Iterable[tuple[Sequence[Hashable], Any]]) -> int:
        """Record finished cells (key, value), in one append + ``fsync``; cells already stored
        are skipped (the first value stays). Returns how many were added."""
        records = []
        for key, value in cells:
            kid = _key_id(key)
            if kid in self._cells:
                continue
            value = json.loads(_dumps(value))  # exactly what a resumed run reads back
            self._cells[kid] = value
            records.append({"key": json.loads(kid), "value": value})
        self._append(records)
        self.computed += len(records)
        return len(records)

    def compute(self, key: Sequence[Hashable], fn: Callable[[], Any]) -> Any:
        """The value of ``key``: the stored one, else ``fn()`` recorded (and returned as it
        reads back from the file, so both paths give identical values)."""
        if key not in self:
            self.put([(key, fn())])
        return self.get(key)

    def note(self, **facts: Any) -> None:
        """Record job-level facts (e.g. the replica count chosen), kept across a restart."""
        facts = {k: v for k, v in facts.items() if self.notes.get(k) != v}
        if facts:
            self.notes.update(json.loads(_dumps(facts)))
            self._append([{"note": facts}])

    def finish(self, df: pd.DataFrame, *, keep_partial: bool = False) -> None:
        """Write the final table ``df`` to the output (atomically), then remove the partial
        file (unless ``keep_partial``), and log how many cells were reused and how many
        computed.

        ``keep_partial``: for a job that writes several outputs one after the other. Snakemake
        deletes every output of a job that fails, so the cells of an output written before
        the failure stay in its partial file until the job's last output is written; the job
        then removes it (:func:`partial_path`)."""
        write_csv(df, self.output)
        if self.enabled:
            if not keep_partial:
                self.path.unlink(missing_ok=True)
            log.info("resume: %s: %d cells reused from an interrupted run, %d computed",
                     self.output.name, self.reused, self.computed)  # fmt: skip


def _enc(v: Any) -> Any:
    return {"fraction": [v.numerator, v.denominator]} if isinstance(v, Fraction) else v


def _dec(v: Any) -> Any:
    return Fraction(*v["fraction"]) if isinstance(v, dict) and set(v) == {"fraction"} else v


def counts_to_json(counts: Any) -> dict[str, Any]:
    """A :class:`~netperturb.core.evaluate.Counts` (any dataclass of ints, floats and exact
    :class:`~fractions.Fraction` s, written ``{"fraction": [p, q]}``) as JSON data."""
    return {k: _enc(v) for k, v in dataclasses.asdict(counts).items()}


def counts_from_json(data: Mapping[str, Any]) -> Any:
    """The :class:`~netperturb.core.evaluate.Counts` of :func:`counts_to_json`, equal field by field."""
    from netperturb.core.evaluate import Counts

    return Counts(**{k: _dec(v) for k, v in data.items()})


def data_fingerprint(shard_dir: str | os.PathLike, split: str) -> dict[str, Any]:
    """What identifies the evaluation data of a job, cheaply: the split's entry of the shard
    manifest (count, image shape, every shard's sha256; :mod:`netperturb.datasets.shards`)."""
    manifest = json.loads((Path(shard_dir) / "manifest.json").read_text())
    entry = manifest.get("splits", {}).get(split)
    return {"dataset": manifest.get("dataset"), "split": split, "shards": entry}


def environment(device: Any) -> dict[str, Any]:
    """The software and device facts every fingerprint holds: netperturb and torch versions
    and the device type (``cpu`` / ``cuda``) the cells were computed on."""
    import torch

    from netperturb import __version__

    return {"netperturb": __version__, "torch": torch.__version__, "device": str(getattr(device, "type", device)).split(":")[0]}
