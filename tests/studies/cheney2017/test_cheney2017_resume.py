"""Cell-level resume of a Cheney et al. perturbation job (issue 13, item 3): a job stopped after
some cells and started again computes only the missing cells and writes the same CSV, byte
for byte, as an uninterrupted run."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from netperturb.core.context import RunContext
from netperturb.core.resume import partial_path
from netperturb.studies.cheney2017 import jobs
from resume_kill import Killed, kill_after, reuse_message, stored_cells


CTX = dict(run="cheney2017", dataset="digits", model="lenet5", study_seed=7, batch_size=128, device="cpu", progress=False)

CASES = {
    # fast engine, 2 replicas per group: level-0 cells, group (0.5 r0, 0.5 r1), group (1.0 r0) + its copy (1.0 r1)
    "fast-synapse": dict(layer="fc5", perturbation="synapse_knockout", options={"levels": [0.0, 0.5, 1.0]},
                         engine="fast", max_replicas=2),
    "functional-noise": dict(layer="conv2", perturbation="gaussian_noise", options={"levels": [0.0, 0.5, 1.0]},
                             engine="functional"),
    "naive-node": dict(layer="conv1", perturbation="node_knockout", options={"levels": [0.0, 0.5]}, engine="naive"),
}  # fmt: skip


def perturb_layer(checkpoint, shards, out, batch_size=128, **kw):
    """The job with the run context of these tests (a smaller ``batch_size`` for one case)."""
    ctx = RunContext(shard_dir=str(shards), model_file=str(checkpoint), **{**CTX, "batch_size": batch_size})
    return jobs.perturb_layer(ctx, out, repeats=2, **kw)


@pytest.mark.parametrize("case", list(CASES))
def test_resumed_job_writes_the_uninterrupted_csv(lenet_checkpoint, digits_shards, tmp_path, monkeypatch, caplog, case):
    kw = CASES[case]
    ref = tmp_path / "ref.csv"
    perturb_layer(lenet_checkpoint, digits_shards, ref, **kw)
    assert not partial_path(ref).exists()  # removed once the CSV is written
    n_cells = len(kw["options"]["levels"]) * 2
    for stop in (1, 2):
        out = tmp_path / f"{case}-{stop}.csv"
        with monkeypatch.context() as m:
            kill_after(m, stop)
            with pytest.raises(Killed):
                perturb_layer(lenet_checkpoint, digits_shards, out, **kw)
        assert not out.exists() and partial_path(out).exists()
        stored = stored_cells(partial_path(out))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="netperturb"):
            perturb_layer(lenet_checkpoint, digits_shards, out, **kw)
        assert out.read_bytes() == ref.read_bytes()
        assert not partial_path(out).exists()
        assert reuse_message(caplog).endswith(f"{stored} cells reused from an interrupted run, {n_cells - stored} computed")
        assert 0 < stored < n_cells


def test_partial_file_of_other_settings_is_not_reused(lenet_checkpoint, digits_shards, tmp_path, monkeypatch, caplog):
    kw = CASES["functional-noise"]
    out = tmp_path / "out.csv"
    with monkeypatch.context() as m:
        kill_after(m, 2)
        with pytest.raises(Killed):
            perturb_layer(lenet_checkpoint, digits_shards, out, **{**kw, "batch_size": 50})
    with caplog.at_level(logging.INFO, logger="netperturb"):
        perturb_layer(lenet_checkpoint, digits_shards, out, **kw)
    assert "batch_size differ" in caplog.text
    assert "0 cells reused from an interrupted run, 6 computed" in caplog.text
    ref = tmp_path / "ref.csv"
    perturb_layer(lenet_checkpoint, digits_shards, ref, **kw)
    assert out.read_bytes() == ref.read_bytes()


def test_extra_repeats_at_the_findings_level_extend_the_grid(lenet_checkpoint, digits_shards, tmp_path, caplog):
    """``focus=(level, n)``: that level gets n repeats; its first ``repeats`` cells are the grid's
    own (same seeds, same numbers), computed once; the other levels keep ``repeats``."""
    from netperturb.studies.cheney2017.plan import plan_grid

    kw = CASES["fast-synapse"]
    plain = tmp_path / "plain.csv"
    perturb_layer(lenet_checkpoint, digits_shards, plain, **kw)
    out = tmp_path / "focus.csv"
    with caplog.at_level(logging.INFO, logger="netperturb"):
        perturb_layer(lenet_checkpoint, digits_shards, out, **kw, focus=(0.5, 5))
    a, b = pd.read_csv(plain), pd.read_csv(out)
    assert b.groupby("level")["repeat"].apply(list).to_dict() == {0.0: [0, 1], 0.5: [0, 1, 2, 3, 4], 1.0: [0, 1]}
    merged = b.merge(a, on=["level", "repeat"], suffixes=("", "_grid"))
    assert len(merged) == len(a) and (merged["top1"] == merged["top1_grid"]).all() and (merged["seed"] == merged["seed_grid"]).all()
    assert b[b["level"] == 0.5]["seed"].nunique() == 5  # new draws for the extra repeats
    assert reuse_message(caplog).endswith(f"0 cells reused from an interrupted run, {6 + 3} computed")
    # the plan: synapse knockout at the grid level nearest report.drop_level, when above repeats
    cfg = {"models": {"lenet5": {"arch": "lenet5"}},
           "cheney2017": {"layers": "all", "repeats": 5, "finding_repeats": 20, "report": {"drop_level": 0.72},
                          "perturbations": {"synapse_knockout": {"levels": {"start": 0.0, "stop": 1.0, "step": 0.1}},
                                            "gaussian_noise": {"levels": [0.0, 1.0]}}}}  # fmt: skip
    plan = plan_grid(cfg, num_classes=10, in_channels=1)
    assert plan.focus == {"synapse_knockout": (pytest.approx(0.7), 20)}
    cells = plan.job_cells("out", 5)  # what the merge checks: 20 repeats at the findings' level only
    (knock,) = [c for t, c in cells.items() if t.endswith("/synapse_knockout/layers_1of1.csv")]
    (noise,) = [c for t, c in cells.items() if t.endswith("/gaussian_noise/layers_1of1.csv")]
    knock = pd.DataFrame(knock, columns=["layer", "level", "repeat"])
    per_level = knock[knock["layer"] == "features.0"].groupby("level")["repeat"].count()
    assert per_level[per_level == 20].index.tolist() == [plan.focus["synapse_knockout"][0]] and (per_level.drop(plan.focus["synapse_knockout"][0]) == 5).all()
    assert noise == [[p, lv, r] for p in [la.path for la in plan.layers["lenet5"]] for lv in (0.0, 1.0) for r in range(5)]
    cfg["cheney2017"]["finding_repeats"] = 5
    assert plan_grid(cfg, num_classes=10, in_channels=1).focus == {}


def test_a_job_of_several_layers_is_its_single_layer_jobs_in_turn(lenet_checkpoint, digits_shards, tmp_path,
                                                                 monkeypatch, caplog):  # fmt: skip
    """cheney2017.layers_per_job only changes which process computes a cell: a job of two layers
    gives the rows of the two single-layer jobs, in layer order, and resumes across layers."""
    ctx = RunContext(shard_dir=str(digits_shards), model_file=str(lenet_checkpoint), **CTX)
    kw = dict(perturbation="synapse_knockout", options={"levels": [0.0, 0.5, 1.0]}, repeats=2, engine="fast",
              max_replicas=2, focus=(0.5, 3))  # fmt: skip
    singles = [jobs.perturb_layer(ctx, tmp_path / f"{layer}.csv", layer=layer, **kw) for layer in ("conv1", "fc5")]
    both = jobs.perturb_layers(ctx, tmp_path / "both.csv", layers=["conv1", "fc5"], **kw)
    pd.testing.assert_frame_equal(both, pd.concat(singles, ignore_index=True))
    assert both["layer"].tolist() == ["features.0"] * 7 + ["classifier.4"] * 7
    stored_at = []
    for stop in (2, 5):
        out = tmp_path / f"killed-{stop}.csv"
        with monkeypatch.context() as m:
            kill_after(m, stop)
            with pytest.raises(Killed):
                jobs.perturb_layers(ctx, out, layers=["conv1", "fc5"], **kw)
        stored_at.append(stored_cells(partial_path(out)))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="netperturb"):
            jobs.perturb_layers(ctx, out, layers=["conv1", "fc5"], **kw)
        assert out.read_bytes() == (tmp_path / "both.csv").read_bytes()
        assert reuse_message(caplog).endswith(f"{stored_at[-1]} cells reused from an interrupted run, {14 - stored_at[-1]} computed")
    assert stored_at[0] < 7 < stored_at[1] < 14  # killed in the first layer, then in the second
