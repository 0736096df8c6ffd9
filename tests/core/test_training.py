"""Training is seeded, hooks fire, checkpoints round-trip."""

import torch

from netperturb.models.checkpoints import load_checkpoint, save_checkpoint
from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import load_split, read_manifest
from netperturb.models import get_model
from netperturb.core.training import TrainConfig, train_classifier


def _train(digits_shards, seed, **hooks):
    pre = Preprocess.from_dict(read_manifest(digits_shards)["preprocess"])
    tr = load_split(digits_shards, "train", limit=256)
    te = load_split(digits_shards, "test", limit=128)
    torch.manual_seed(seed)
    net = get_model("lenet5")
    hist = train_classifier(net, tr, te, pre, TrainConfig(epochs=2, batch_size=64, seed=seed), progress=False, **hooks)
    return net, hist, pre


def test_same_seed_same_weights_and_hooks(digits_shards):
    steps, epochs = [], []
    a, hist, _ = _train(digits_shards, 3, on_step=lambda e, s, m: steps.append((e, s)), on_epoch_end=lambda e, m, r: epochs.append(e))
    b, _, _ = _train(digits_shards, 3)
    c, _, _ = _train(digits_shards, 4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert epochs == [0, 1, 2] and steps == [(e, s) for e in (1, 2) for s in (1, 2, 3, 4)]
    assert list(hist["epoch"]) == [0, 1, 2]
    assert hist["test_top1"].iloc[-1] > hist["test_top1"].iloc[0]


def test_checkpoint_roundtrip(tmp_path, digits_shards):
    net, _, pre = _train(digits_shards, 0)
    save_checkpoint(tmp_path / "m.pt", net, arch="lenet5", num_classes=10, in_channels=1, preprocess=pre, meta={"x": 1})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.preprocess == pre and loaded.meta == {"x": 1} and len(loaded.weights) == 12
    assert not loaded.model.training
    x = torch.randn(4, 1, 32, 32)
    net.eval()
    assert torch.equal(net(x), loaded.model(x))


def test_plain_sgd_step_is_w_minus_lr_grad_and_unknown_optimizer_fails(digits_shards):
    import pytest
    import torch.nn.functional as F

    pre = Preprocess.from_dict(read_manifest(digits_shards)["preprocess"])
    x, y = load_split(digits_shards, "train", limit=64)
    te = load_split(digits_shards, "test", limit=32)
    torch.manual_seed(0)
    net = get_model("lenet5")
    ref = get_model("lenet5")
    ref.load_state_dict(net.state_dict())
    ref.train()
    F.cross_entropy(ref(pre(x)), y).backward()  # one batch = the whole split: one step, order irrelevant
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.1, optimizer="sgd", seed=0)
    train_classifier(net, (x, y), te, pre, cfg, progress=False)
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        assert torch.allclose(p, q - 0.1 * q.grad, atol=1e-6), name
    with pytest.raises(ValueError, match="optimizer"):
        train_classifier(get_model("lenet5"), (x, y), te, pre, TrainConfig(epochs=1, optimizer="lbfgs"), progress=False)


def test_learning_rate_schedules(digits_shards):
    """constant: lr throughout (Pravin et al.'s trainer: Adam 1e-3); cosine: annealed to 0 at the last step."""
    import math

    import pytest

    pre = Preprocess.from_dict(read_manifest(digits_shards)["preprocess"])
    tr, te = load_split(digits_shards, "train", limit=128), load_split(digits_shards, "test", limit=64)
    lrs = {}
    for schedule in ("constant", "cosine"):
        torch.manual_seed(0)
        hist = train_classifier(get_model("lenet5"), tr, te, pre, TrainConfig(epochs=2, batch_size=64, lr=1e-3, schedule=schedule),
                                progress=False)  # fmt: skip
        lrs[schedule] = list(hist["lr"])
    assert lrs["constant"] == [1e-3, 1e-3, 1e-3]
    # 2 steps per epoch, T_max = 4 steps: after epoch 1 lr = 1e-3 (1 + cos(pi / 2)) / 2 = 5e-4, after epoch 2 it is 0
    assert lrs["cosine"][1] == pytest.approx(5e-4, rel=1e-12) and lrs["cosine"][2] == pytest.approx(0.0, abs=1e-15)
    assert TrainConfig.from_mapping({"lr": 0.01, "schedule": "constant"}).schedule == "constant"
    with pytest.raises(ValueError, match="schedule 'step' not in"):
        TrainConfig(schedule="step")
    assert math.isfinite(lrs["cosine"][0])
