"""A perturbation job's numbers depend on the cell only, never on how the grid is run."""

import pandas as pd
import pytest
import torch

from netperturb.models.checkpoints import load_checkpoint
from netperturb.datasets.shards import load_split
from netperturb.perturb.grid import COLUMNS, LayerJob, baseline_table, run_layer_job
from netperturb.core.layers import find_layers
from netperturb.perturb.registry import make_perturbation


@pytest.fixture(scope="module")
def setup(lenet_checkpoint, digits_shards):
    loaded = load_checkpoint(lenet_checkpoint)
    x, y = load_split(digits_shards, "test")
    return loaded, x[:200], y[:200]


def job(loaded, layer_index, name, levels, repeats=2, seed=2017):
    layer = find_layers(loaded.model)[layer_index]
    return LayerJob(study="t", dataset="digits", model="lenet5", layer=layer,
                    perturbation=make_perturbation(name), levels=levels, repeats=repeats, study_seed=seed)  # fmt: skip


KEY = ["layer", "perturbation", "level", "repeat"]


@pytest.mark.parametrize("name", ["synapse_knockout", "node_knockout", "gaussian_noise"])
def test_order_batch_size_and_job_split_do_not_change_numbers(setup, name):
    loaded, x, y = setup
    ref = run_layer_job(job(loaded, 1, name, [0.0, 0.3, 0.6]), loaded, x, y, batch_size=200, progress=False)
    rev = run_layer_job(job(loaded, 1, name, [0.6, 0.3, 0.0]), loaded, x, y, batch_size=37, progress=False)
    parts = pd.concat([
        run_layer_job(job(loaded, 1, name, [0.6]), loaded, x, y, batch_size=64, progress=False),
        run_layer_job(job(loaded, 1, name, [0.0, 0.3]), loaded, x, y, batch_size=200, progress=False),
    ])  # fmt: skip
    for other in (rev, parts):
        a = ref.sort_values(KEY).reset_index(drop=True)
        b = other.sort_values(KEY).reset_index(drop=True)
        assert a["seed"].tolist() == b["seed"].tolist()
        assert a["top1"].tolist() == b["top1"].tolist()
        assert a["top5"].tolist() == b["top5"].tolist()
        assert a["loss"].to_numpy() == pytest.approx(b["loss"].to_numpy(), rel=1e-5)
    # repeats really differ at a level > 0
    at = ref[ref["level"] == 0.6]
    assert at["seed"].nunique() == 2


def test_level_zero_rows_equal_baseline_bit_for_bit(setup):
    loaded, x, y = setup
    base = baseline_table(loaded, x, y, study="t", dataset="digits", model="lenet5", study_seed=2017, batch_size=200)
    df = run_layer_job(job(loaded, 0, "gaussian_noise", [0.0, 1.0], repeats=3), loaded, x, y, batch_size=200, progress=False)
    zero = df[df["level"] == 0.0]
    assert len(zero) == 3
    for m in ("top1", "top5", "loss"):
        assert (zero[m] == base[m].iloc[0]).all()
    assert list(df.columns) == COLUMNS
    assert (df["n_images"] == 200).all()


def test_full_knockout_gives_chance_and_model_is_not_mutated(setup):
    loaded, x, y = setup
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    df = run_layer_job(job(loaded, 4, "synapse_knockout", [1.0], repeats=1), loaded, x, y, batch_size=200, progress=False)
    # every weight and bias of the output layer is 0: all logits tie -> exactly chance
    assert df["top1"].iloc[0] == pytest.approx(0.1)
    assert df["top5"].iloc[0] == pytest.approx(0.5)
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_repeats_must_be_positive(setup):
    loaded, _, _ = setup
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        job(loaded, 0, "synapse_knockout", [0.1], repeats=0)
