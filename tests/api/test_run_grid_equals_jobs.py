"""run_grid equals the workflow's perturb jobs cell for cell for the same seeds: the Cheney et al.
grid job (netperturb.studies.cheney2017.jobs.perturb_layer) and the faults study's job
(netperturb.studies.faults.jobs.perturb_layer, a format fault on the int8 network and a
transient activation fault), on the digits shards and the LeNet-5 checkpoint the workflow
makes, with the data given to run_grid as a DataLoader."""

from __future__ import annotations

import pandas as pd
import pytest
from torch.utils.data import DataLoader, TensorDataset

import netperturb as npt
from netperturb.core.context import RunContext
from netperturb.datasets.shards import data_digest, load_split
from netperturb.models.checkpoints import load_model
from netperturb.perturb.grid import COLUMNS

KW = dict(study_seed=7, batch_size=128, device="cpu", progress=False, repeats=2)


def _grid(loaded, images, labels, *, study, layer, perturbations, digest, engine="fast"):
    loader = DataLoader(TensorDataset(images, labels), batch_size=KW["batch_size"])
    return npt.run_grid(loaded.model, loader, preprocess=loaded.preprocess, layers=[layer], perturbations=perturbations,
                        repeats=KW["repeats"], seed=KW["study_seed"], model_name="lenet5", study=study, dataset="digits",
                        arch=loaded.arch, weights=loaded.weights, engine=engine,
                        data_digest=digest)  # fmt: skip


def _context(checkpoint, shards, study) -> RunContext:
    """The workflow job's run context for the same model, data and seeds."""
    return RunContext(run=study, dataset="digits", shard_dir=str(shards), model="lenet5", model_file=str(checkpoint),
                      study_seed=KW["study_seed"], batch_size=KW["batch_size"], device=KW["device"],
                      progress=KW["progress"])  # fmt: skip


@pytest.fixture(scope="module")
def lenet(lenet_checkpoint, digits_shards):
    loaded = load_model(lenet_checkpoint, "cpu")
    images, labels = load_split(digits_shards, "test")
    return loaded, images, labels


@pytest.mark.parametrize("layer, name, levels, engine", [
    ("conv2", "synapse_knockout", [0.0, 0.5, 1.0], "fast"),
    ("fc4", "gaussian_noise", [0.0, 1.0], "naive"),
])  # fmt: skip
def test_run_grid_equals_the_cheney2017_job(lenet, lenet_checkpoint, digits_shards, tmp_path, layer, name, levels, engine):
    from netperturb.studies.cheney2017.jobs import perturb_layer

    loaded, images, labels = lenet
    job = perturb_layer(_context(lenet_checkpoint, digits_shards, "cheney2017"), tmp_path / "job.csv", layer=layer,
                        perturbation=name, options={"levels": levels}, repeats=KW["repeats"], engine=engine)  # fmt: skip
    got = _grid(loaded, images, labels, study="cheney2017", layer=layer, perturbations={name: {"levels": levels}},
                engine=engine, digest=data_digest(digits_shards, "test"))  # fmt: skip
    assert job["top1"].nunique() > 1
    pd.testing.assert_frame_equal(got, job[COLUMNS])
    pd.testing.assert_frame_equal(got, pd.read_csv(tmp_path / "job.csv")[COLUMNS], check_dtype=False)


@pytest.mark.parametrize("variant, spec", [
    ("bf_int8", {"fault": "bit_flip", "format": "int8", "levels": [0.0, 0.001, 0.01]}),
    ("act_flip", {"fault": "activation_bit_flip", "bits": "exponent", "transient": True, "levels": [0.0, 0.001]}),
])  # fmt: skip
def test_run_grid_equals_the_faults_job(lenet, lenet_checkpoint, digits_shards, tmp_path, variant, spec):
    from netperturb.studies.faults.jobs import perturb_layer

    loaded, images, labels = lenet
    job = perturb_layer(_context(lenet_checkpoint, digits_shards, "faults"), tmp_path / "job.csv", layer="conv1",
                        variant=variant, spec=spec, repeats=KW["repeats"])  # fmt: skip
    got = _grid(loaded, images, labels, study="faults", layer="conv1", perturbations={variant: spec},
                digest=data_digest(digits_shards, "test"))
    assert job["top1"].nunique() > 1
    pd.testing.assert_frame_equal(got, job[COLUMNS])
