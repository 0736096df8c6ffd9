"""A merge checks its per-job tables against the plan and against each other before it writes
anything (issue 27, cases 2 and 3), and records what it wrote (case 4's sidecar). Before: a per-job
CSV truncated mid-row was merged (111 of 112 rows, one with NaN loss, weights, precision; rc 0),
and tables made from two checkpoints of one model were merged into one table."""

from __future__ import annotations

import pandas as pd
import pytest

from netperturb.core.integrity import find_damage, sidecar_path
from netperturb.core.io import write_csv
from netperturb.core.merge import MergeError, check_tables, merge_tables, read_tables
from netperturb.perturb.grid import COLUMNS
from netperturb.studies.cheney2017.jobs import merge_grid

LEVELS, REPEATS = [0.0, 0.5, 1.0], 2


def _table(model="lenet5", layer="features.0", perturbation="gaussian_noise", weights="e76a7af730b0",
           data="5c1d0e6b2a9f", levels=LEVELS, repeats=REPEATS) -> pd.DataFrame:  # fmt: skip
    rows = [{
        "study": "t", "dataset": "digits", "model": model, "arch": "lenet5", "layer": layer, "layer_label": "conv1",
        "layer_index": 0, "perturbation": perturbation, "level": lv, "repeat": r, "seed": 11 * r + int(10 * lv),
        "n_images": 540, "top1": 0.72 - lv / 10, "top5": 0.95, "loss": 0.8 + lv, "sdc1": 0.0, "sdc5": 0.0, "due": 0.0,
        "weights": weights, "data_digest": data, "precision": "fp32", "device": "cpu", "netperturb_version": "0.3.0",
    } for lv in levels for r in range(repeats)]  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _plan(paths):
    return {str(p): [[p.stem, lv, r] for lv in LEVELS for r in range(REPEATS)] for p in paths}


@pytest.fixture
def jobs(tmp_path):
    paths = [tmp_path / "runs" / f"{layer}.csv" for layer in ("features.0", "features.3", "classifier.4")]
    for p in paths:
        write_csv(_table(layer=p.stem), p)
    base = tmp_path / "baseline" / "lenet5.csv"
    write_csv(_table(perturbation="none", layer="", levels=[0.0], repeats=1), base)
    return paths, base


def _merge(tmp_path, paths, base):
    return merge_grid(paths, tmp_path / "m.csv", tmp_path / "m.parquet", planned=_plan(paths), baselines=[base],
                      out_baseline=tmp_path / "b.csv")  # fmt: skip


def test_the_planned_tables_merge_and_every_merged_table_has_its_record(tmp_path, jobs):
    paths, base = jobs
    df = _merge(tmp_path, paths, base)
    assert len(df) == 3 * len(LEVELS) * REPEATS
    for out in ("m.csv", "m.parquet", "b.csv"):
        assert sidecar_path(tmp_path / out).exists() and find_damage(tmp_path / out) is None


def test_a_table_cut_off_mid_row_is_named_and_nothing_is_merged(tmp_path, jobs):
    paths, base = jobs
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: data.rindex(b"e76a7af730b0")])  # mid-row: the last row loses its provenance
    with pytest.raises(MergeError) as e:
        _merge(tmp_path, paths, base)
    msg = str(e.value)
    assert f"{paths[1]}: ends in the middle of a row (cut off at " in msg
    assert "nothing was merged" in msg and f"Remedy: delete the tables named (rm {paths[1]})" in msg
    assert not any((tmp_path / f).exists() for f in ("m.csv", "m.parquet", "b.csv"))


def test_a_table_with_a_missing_cell_or_without_provenance_is_named(tmp_path, jobs):
    paths, base = jobs
    df = _table(layer=paths[0].stem)
    write_csv(df.iloc[:-1], paths[0])  # a whole row lost: the file still ends with a newline
    blank = df.copy()
    blank.loc[2, "weights"] = float("nan")
    write_csv(blank, paths[2])
    with pytest.raises(MergeError) as e:
        _merge(tmp_path, paths, base)
    msg = str(e.value)
    assert f"{paths[0]}: 5 rows for 6 planned cells (layer, level, repeat); missing (features.0, 1, 1)" in msg
    assert f"{paths[2]}: no weights in row 4 of the file (1 row(s)): its provenance is lost" in msg
    assert not (tmp_path / "m.csv").exists()


def test_a_table_holding_another_layers_cells_is_named(tmp_path, jobs):
    """A job table of several layers is checked cell by cell with the layer: the right number of
    rows for the wrong layer is not the planned table."""
    paths, base = jobs
    write_csv(_table(layer="features.3"), paths[0])  # features.3's cells where features.0's are planned
    with pytest.raises(MergeError) as e:
        _merge(tmp_path, paths, base)
    assert f"{paths[0]}: 6 rows for 6 planned cells (layer, level, repeat); missing (features.0, 0, 0)" in str(e.value)
    assert not (tmp_path / "m.csv").exists()


def test_two_checkpoints_of_one_model_are_refused(tmp_path, jobs):
    paths, base = jobs
    write_csv(_table(layer=paths[2].stem, weights="820f59b910dc"), paths[2])  # its job ran after the checkpoint changed
    with pytest.raises(MergeError) as e:
        _merge(tmp_path, paths, base)
    msg = str(e.value)
    assert "model lenet5: 2 weights ids: e76a7af730b0 in 3 table(s)" in msg and f"820f59b910dc in 1 table(s) ({paths[2]})" in msg
    assert not (tmp_path / "m.csv").exists()
    # the same for the data: two digests of one dataset (a shard folder replaced between two jobs)
    write_csv(_table(layer=paths[2].stem, data="ffffffffffff"), paths[2])
    with pytest.raises(MergeError, match="dataset digits: 2 data_digest ids"):
        _merge(tmp_path, paths, base)


def test_every_merge_checks_provenance_and_completeness(tmp_path, jobs):
    """merge_tables (the shen2021 / pravin2024 merges) checks the same, with its own keys."""
    paths, _ = jobs
    write_csv(_table(layer=paths[2].stem, weights="820f59b910dc"), paths[2])
    with pytest.raises(MergeError, match="model lenet5: 2 weights ids"):
        merge_tables(paths, tmp_path / "x.csv", columns=COLUMNS)
    # a per-(model, layer) key accepts it: e.g. pravin2024's one checkpoint per (model, init, epoch)
    df = merge_tables(paths, tmp_path / "x.csv", columns=COLUMNS, one_per=[("weights", ("model", "layer"))])
    assert len(df) == 18 and find_damage(tmp_path / "x.csv") is None
    frames = read_tables(paths)
    check_tables(frames, one_per=[])  # no cross-table rule: fine


def test_ids_that_look_like_numbers_stay_text(tmp_path, jobs):
    paths, base = jobs
    for p in [*paths, base]:  # ids a CSV reader would take for numbers (inf, a number without its leading 0)
        write_csv(pd.read_csv(p, dtype=str).assign(weights="123e45678901", data_digest="012345678901"), p)
    df = _merge(tmp_path, paths, base)
    assert set(df["weights"]) == {"123e45678901"} and set(df["data_digest"]) == {"012345678901"}
    assert "123e45678901,012345678901" in (tmp_path / "m.csv").read_text()


def test_parquet_tables_merge_like_csv_and_a_cut_off_one_is_named(tmp_path):
    """Per-job tables may be Parquet (shen2021's weight tracking): merged to the same table as
    their CSV twins; one cut off (no footer) or not Parquet at all is named, nothing is merged."""
    from netperturb.core.io import write_table

    frames = [_table(layer=layer) for layer in ("features.0", "features.3")]
    csvs, pqs = [tmp_path / f"{i}.csv" for i in range(2)], [tmp_path / f"{i}.parquet" for i in range(2)]
    for df, c, p in zip(frames, csvs, pqs):
        write_table(df, c)
        write_table(df, p)
    assert pd.read_parquet(pqs[0]).equals(frames[0]) and pd.read_csv(csvs[0]).equals(frames[0])
    from_csv = merge_tables(csvs, None, tmp_path / "c.parquet")
    from_pq = merge_tables(pqs, None, tmp_path / "p.parquet")
    pd.testing.assert_frame_equal(from_pq, from_csv, check_exact=True)
    assert not (tmp_path / "None").exists() and find_damage(tmp_path / "p.parquet") is None

    data = pqs[1].read_bytes()
    pqs[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(MergeError) as e:
        merge_tables(pqs, None, tmp_path / "q.parquet")
    assert f"{pqs[1]}: is not a whole Parquet file ({len(data) // 2} B;" in str(e.value)
    pqs[1].write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")  # the magic, but no table inside
    with pytest.raises(MergeError) as e:
        merge_tables(pqs, None, tmp_path / "q.parquet")
    assert f"{pqs[1]}: not a readable Parquet table (" in str(e.value)
    assert not (tmp_path / "q.parquet").exists()
