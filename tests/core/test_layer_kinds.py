"""Layer discovery beyond Conv2d / Linear: Conv1d / Conv3d, grouped, attention in_proj, labels."""

import pytest
import torch
from torch import nn

from netperturb.core.layers import LayerSelectionError, find_layers, parameter_coverage, select_layers
from netperturb.models import build_meta


class Signals(nn.Module):
    """Conv1d -> BN1d, a depthwise Conv1d, Conv3d -> BN3d, Linear -> BN1d, attention."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(8)
        self.dw = nn.Conv1d(8, 8, 3, padding=1, groups=8, bias=False)
        self.c3 = nn.Conv3d(1, 4, 3, padding=1)
        self.bn3 = nn.BatchNorm3d(4)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.cross = nn.MultiheadAttention(8, 2, kdim=4, vdim=4, batch_first=True)
        self.fc = nn.Linear(8, 6)
        self.bnf = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):  # x: (B, 2, 16)
        s = self.dw(torch.relu(self.bn1(self.c1(x))))  # (B, 8, 16)
        v = self.bn3(self.c3(x.reshape(x.shape[0], 1, 2, 4, 4)))  # (B, 4, 2, 4, 4)
        kv = v.flatten(2).transpose(1, 2)  # (B, 32, 4)
        t = s.transpose(1, 2)  # (B, 16, 8)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = t + self.cross(t, kv, kv, need_weights=False)[0]
        return self.head(torch.relu(self.bnf(self.fc(t.mean(1)))))


def test_every_weight_bearing_layer_is_found_with_its_kind_node_count_and_follower():
    layers = find_layers(Signals())
    got = {l.path: (l.kind, l.module_type, l.weight_shape, l.groups, l.bn) for l in layers}
    assert got == {
        "c1": ("conv", "Conv1d", (8, 2, 3), 1, "bn1"),
        "dw": ("conv", "Conv1d", (8, 1, 3), 8, None),
        "c3": ("conv", "Conv3d", (4, 1, 3, 3, 3), 1, "bn3"),
        "attn.in_proj": ("in_proj", "MultiheadAttention", (24, 8), 1, None),
        "attn.out_proj": ("linear", "NonDynamicallyQuantizableLinear", (8, 8), 1, None),
        "cross.q_proj": ("in_proj", "MultiheadAttention", (8, 8), 1, None),
        "cross.k_proj": ("in_proj", "MultiheadAttention", (8, 4), 1, None),
        "cross.v_proj": ("in_proj", "MultiheadAttention", (8, 4), 1, None),
        "cross.out_proj": ("linear", "NonDynamicallyQuantizableLinear", (8, 8), 1, None),
        "fc": ("linear", "Linear", (6, 8), 1, "bnf"),
        "head": ("linear", "Linear", (3, 6), 1, None),
    }
    # depth order, and every role names a real parameter
    assert [l.index for l in layers] == list(range(1, 12))
    named = dict(Signals().named_parameters())
    for l in layers:
        assert all(n in named for n in l.param_names().values()), l.param_names()
    in_proj = {l.path: l for l in layers}["attn.in_proj"]
    assert in_proj.param_names() == {"weight": "attn.in_proj_weight", "bias": "attn.in_proj_bias"}
    assert in_proj.n_out == 24 and in_proj.n_params == 24 * 8 + 24
    # the cross-attention's separate projections share in_proj_bias: their layers are weights only
    assert not {l.path: l for l in layers}["cross.k_proj"].has_bias


def test_coverage_counts_weights_and_biases_once():
    model = Signals()
    layers = find_layers(model)
    total = sum(p.numel() for p in model.parameters())
    mine = sum(l.n_params for l in layers)
    # not covered: BN affine terms (8 + 4 + 6) * 2 and the cross-attention's in_proj_bias (24)
    assert total - mine == (8 + 4 + 6) * 2 + 24
    assert parameter_coverage(model, layers) == pytest.approx(mine / total)
    assert parameter_coverage(nn.ReLU()) == 1.0


def test_labels_field_names_for_the_classic_shape_module_paths_for_the_rest():
    assert [l.label for l in find_layers(build_meta("lenet5"))] == ["conv1", "conv2", "fc3", "fc4", "fc5"]
    assert [l.label for l in find_layers(build_meta("vgg11", num_classes=1000, in_channels=3))][-4:] == ["conv8", "fc9", "fc10", "fc11"]
    convnext = find_layers(build_meta("convnext_tiny", num_classes=1000, in_channels=3))
    assert all(l.label == l.path for l in convnext)
    assert convnext[2].label == "features.1.0.block.3"  # the first MLP layer: was "fc25" at depth 3
    resnet = find_layers(build_meta("resnet18", num_classes=10, in_channels=3))
    assert [l.label for l in resnet][::10] == ["conv1", "conv11", "fc21"]  # the classic shape: as before
    for name in ("vit_b_16", "swin_t"):  # attention; dense layers that make up the blocks
        assert all(l.label == l.path for l in find_layers(build_meta(name, num_classes=1000, in_channels=3)))
    assert [l.label for l in find_layers(Signals(), labels="field")][:4] == ["conv1", "conv2", "conv3", "fc4"]
    assert find_layers(build_meta("alexnet", num_classes=1000, in_channels=3), labels="path")[0].label == "features.0"

    class Mine(Signals):
        netperturb_layer_labels = "field"

    assert find_layers(Mine())[-1].label == "fc11"
    assert find_layers(Signals())[0].label == "c1"  # one's own model with attention: paths
    # one's own model of the classic shape (convolutions, then dense layers): the field's names
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4, 8), nn.Linear(8, 2))
    assert [l.label for l in find_layers(cnn)] == ["conv1", "conv2", "fc3", "fc4"]
    # ... whose kinds interleave (a dense layer before a convolution): paths
    mixed = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Linear(4, 4), nn.Conv2d(4, 4, 1), nn.Linear(4, 2))
    assert [l.label for l in find_layers(mixed)] == ["0", "1", "2", "3"]
    # ... with four dense layers after the convolutions (more than a classifier): paths; an MLP: fc1..
    four = nn.Sequential(nn.Conv2d(1, 4, 1), *[nn.Linear(4, 4) for _ in range(4)])
    assert find_layers(four)[-1].label == "4" and find_layers(nn.Sequential(*four[1:]))[-1].label == "fc4"

    class Paths(nn.Sequential):
        netperturb_layer_labels = "path"

    assert [l.label for l in find_layers(Paths(*cnn))] == ["0", "2", "4", "5"]
    with pytest.raises(ValueError, match="labels: 'fancy' unknown"):
        find_layers(Signals(), labels="fancy")


def test_select_by_path_glob_and_the_error_lists_what_exists():
    layers = find_layers(Signals())
    assert [l.path for l in select_layers(layers, ["*in_proj", "*_proj"])] == [
        "attn.in_proj", "attn.out_proj", "cross.q_proj", "cross.k_proj", "cross.v_proj", "cross.out_proj"]  # fmt: skip
    with pytest.raises(LayerSelectionError, match="'attn.qkv' matches no perturbable layer .* available: c1, dw, c3, attn.in_proj"):
        select_layers(layers, ["attn.qkv"])


def test_meta_device_listing_needs_no_memory():
    with torch.device("meta"):
        layers = find_layers(Signals())
    assert len(layers) == 11
