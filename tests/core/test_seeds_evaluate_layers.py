"""Seeds, top-k, layer discovery and selection."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from netperturb.core.evaluate import count_logits, topk_credit
from netperturb.core.layers import LayerSelectionError, find_layers, select_layers
from netperturb.models import build_meta
from netperturb.core.seeds import canonical_level, cell_seed


def test_cell_seed_is_stable_across_processes():
    """Python's hash() is salted per process; the cell seed must not be."""
    code = "from netperturb.core.seeds import cell_seed; print(cell_seed(2017, 'm', 'features.0', 'synapse_knockout', 0.3, 2))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(i), "PATH": ""}).stdout.strip() for i in (1, 2)}  # fmt: skip
    assert outs == {str(cell_seed(2017, "m", "features.0", "synapse_knockout", 0.3, 2))}


def test_cell_seed_depends_on_every_field_and_not_on_float_noise():
    base = cell_seed(1, "m", "l", "p", 0.3, 0)
    assert cell_seed(1, "m", "l", "p", 0.1 * 3, 0) == base  # 0.30000000000000004
    variants = [cell_seed(2, "m", "l", "p", 0.3, 0), cell_seed(1, "n", "l", "p", 0.3, 0),
                cell_seed(1, "m", "k", "p", 0.3, 0), cell_seed(1, "m", "l", "q", 0.3, 0),
                cell_seed(1, "m", "l", "p", 0.4, 0), cell_seed(1, "m", "l", "p", 0.3, 1)]  # fmt: skip
    assert base not in variants and len(set(variants)) == len(variants)
    assert 0 <= base < 2**63
    assert canonical_level(1.0) == "1" and canonical_level(0.25) == "0.25" and canonical_level(-0.0) == "0"


def test_topk_on_hand_made_logits():
    logits = torch.tensor([
        [5.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # label 0: top-1
        [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.0],   # label 4: rank 5 -> top-5 only
        [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.0],   # label 5: rank 6 -> neither
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],   # all tied, label 3: expected 1/7 and 5/7
        [3.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # two tied at the top, label 1: 1/2 and 1
    ])  # fmt: skip
    labels = torch.tensor([0, 4, 5, 3, 1])
    assert topk_credit(logits, labels, 1).tolist() == pytest.approx([1, 0, 0, 1 / 7, 0.5])
    assert topk_credit(logits, labels, 5).tolist() == pytest.approx([1, 1, 0, 5 / 7, 1])
    c = count_logits(logits, labels)
    assert c.n == 5
    assert c.top1 == pytest.approx(1 + 1 / 7 + 0.5)
    assert c.loss_sum == pytest.approx(F.cross_entropy(logits, labels, reduction="sum").item())


def test_topk_nan_logit_scores_zero():
    logits = torch.tensor([[float("nan"), 1.0, 0.0], [0.0, 2.0, 1.0]])
    assert topk_credit(logits, torch.tensor([0, 1]), 1).tolist() == [0.0, 1.0]


def test_alexnet_layers_are_named_as_in_cheney():
    layers = find_layers(build_meta("alexnet", num_classes=1000, in_channels=3))
    assert [l.label for l in layers] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert layers[0].path == "features.0" and layers[-1].path == "classifier.6"
    assert [l.index for l in layers] == list(range(1, 9))


def test_batchnorm_followers_found_in_resnet_and_alexnet_digits():
    res = {l.path: l.bn for l in find_layers(build_meta("resnet18", num_classes=10, in_channels=3))}
    assert res["conv1"] == "bn1"
    assert res["layer2.0.downsample.0"] == "layer2.0.downsample.1"
    assert res["fc"] is None
    ad = find_layers(build_meta("alexnet_digits"))
    assert all(l.bn is not None for l in ad if l.kind == "conv")


def test_select_layers_by_path_label_and_glob():
    layers = find_layers(build_meta("alexnet", num_classes=1000, in_channels=3))
    assert [l.label for l in select_layers(layers, ["fc*", "features.0"])] == ["conv1", "fc6", "fc7", "fc8"]
    assert [l.label for l in select_layers(layers, ["conv5"])] == ["conv5"]
    assert len(select_layers(layers, "all")) == 8
    with pytest.raises(LayerSelectionError, match="'conv9' matches no .* available: features.0 \\(conv1\\)"):
        select_layers(layers, ["conv9"])
