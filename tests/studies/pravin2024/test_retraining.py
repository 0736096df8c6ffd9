"""Selective retraining: frozen parameters and BatchNorm statistics are bit-for-bit unchanged,
only the selected ones move, frozen ones never reach the optimiser; the retrain job."""

import pandas as pd
import pytest
import torch

from netperturb.core.preprocess import Preprocess
from netperturb.studies.pravin2024.evaluator import AttackSpec
from netperturb.studies.pravin2024.scores import freeze_for_retraining
from netperturb.studies.pravin2024.jobs import retrain
from netperturb.core.layers import find_layers
from netperturb.core.training import TrainConfig, train_classifier


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("include_bn", [True, False])
def test_frozen_parameters_and_bn_statistics_are_unchanged(convbn, monkeypatch, include_bn):
    layers = find_layers(convbn)
    chosen = [layers[1], layers[3]]  # the second conv (BN follows) and the last linear
    before = {k: v.detach().clone() for k, v in convbn.state_dict().items()}
    trainable, frozen = freeze_for_retraining(convbn, chosen, include_bn=include_bn)
    expect = {"features.3.weight", "classifier.2.weight", "classifier.2.bias"}
    if include_bn:
        expect |= {"features.4.weight", "features.4.bias"}
    assert set(trainable) == expect
    assert {n for n, p in convbn.named_parameters() if p.requires_grad} == expect
    assert (convbn.features[4] in frozen) != include_bn and convbn.features[1] in frozen

    seen = []
    real = torch.optim.AdamW

    def spy(params, **kw):
        params = list(params)
        seen.extend(params)
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    pre = Preprocess(scale=1 / 255, mean=(0.5,), std=(0.25,))
    train_classifier(convbn, _data(96, 0), _data(32, 1), pre, TrainConfig(epochs=2, batch_size=16, lr=1e-2, weight_decay=0.1),
                     frozen_modules=frozen, progress=False)  # fmt: skip
    named = dict(convbn.named_parameters())
    assert {id(p) for p in seen} == {id(named[n]) for n in expect}  # frozen ones never reach the optimiser
    after = convbn.state_dict()
    owners = {n.rpartition(".")[0] for n in expect}
    for k, v in after.items():
        if k.rpartition(".")[0] in owners:
            if k.endswith(("weight", "bias")):
                assert not torch.equal(v, before[k]), f"{k} did not train"
        else:
            assert torch.equal(v, before[k]), f"{k} changed"  # params, running stats, num_batches_tracked
    if include_bn:
        assert not torch.equal(after["features.4.running_mean"], before["features.4.running_mean"])


def test_nothing_trainable_is_an_error(convbn):
    freeze_for_retraining(convbn, [])
    pre = Preprocess(scale=1 / 255, mean=(0.5,), std=(0.25,))
    with pytest.raises(ValueError, match="nothing to train"):
        train_classifier(convbn, _data(16, 0), _data(8, 1), pre, TrainConfig(epochs=1), progress=False)


def test_retrain_job_compares_none_selective_full(tmp_path, lenet_checkpoint, digits_shards):
    # scores that make conv2 (features.3) robust and everything else fragile
    rows = []
    for i, (path, label) in enumerate([("features.0", "conv1"), ("features.3", "conv2"), ("classifier.0", "fc3"),
                                       ("classifier.2", "fc4"), ("classifier.4", "fc5")], start=1):  # fmt: skip
        rows.append({"model": "lenet5", "init": 0, "epoch": 2, "mode": "layer", "score": "adversarial", "filter": "low",
                     "layer": path, "layer_label": label, "layer_index": i, "value": 0.0 if label == "conv2" else -0.3})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "scores.csv", index=False)
    from netperturb.core.context import RunContext

    ctx = RunContext(run="t", dataset="digits", shard_dir=str(digits_shards), model="lenet5",
                     model_file=str(lenet_checkpoint), study_seed=1)  # fmt: skip
    df = retrain(
        ctx, tmp_path / "scores.csv", tmp_path / "r.csv", init=0, epoch=2, train_cfg={"batch_size": 64, "lr": 1e-3},
        epochs=1, score="adversarial", filter="mean", tolerance=0.05, include_bn=True, attack=AttackSpec(eps=0.1),
    )  # fmt: skip
    assert list(df["strategy"]) == ["none", "none", "selective", "selective", "full", "full"]
    sel = df[df["strategy"] == "selective"].iloc[0]
    assert sel["layers_trained"] == "conv2" and sel["n_params_trained"] == 16 * 6 * 25 + 16
    assert df[df["strategy"] == "full"]["n_params_trained"].iloc[0] == df["n_params"].iloc[0]
    assert (df["n_images"] == 540).all() and df["top1"].between(0, 1).all()
    assert pd.read_csv(tmp_path / "r.csv").shape == df.shape
    # a different trained network for each strategy
    assert df.groupby("strategy")["loss"].first().nunique() == 3
