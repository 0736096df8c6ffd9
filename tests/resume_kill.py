"""Test helper for cell-level resume (issue 13, item 3): stop a job right after its n-th append of
finished cells, as a kill between two appends would."""

from __future__ import annotations

from netperturb.core.resume import CellStore


class Killed(Exception):
    """Stands for a kill between two appends to the partial file."""


def kill_after(monkeypatch, n: int) -> None:
    """Make the n-th append of new cells (:meth:`CellStore.put`) raise :class:`Killed` once it is
    written and fsynced."""
    calls = {"n": 0}
    put = CellStore.put

    def dying_put(self, cells):
        added = put(self, cells)
        if added:
            calls["n"] += 1
            if calls["n"] == n:
                raise Killed(f"killed after append {n}")
        return added

    monkeypatch.setattr(CellStore, "put", dying_put)


def stored_cells(partial) -> int:
    """Cells recorded in a partial file."""
    return sum('"key"' in line for line in partial.read_text().splitlines())


def reuse_message(caplog) -> str:
    """The job's closing resume message (exactly one expected)."""
    done = [r.getMessage() for r in caplog.records if "cells reused" in r.getMessage()]
    assert len(done) == 1, done
    return done[0]
