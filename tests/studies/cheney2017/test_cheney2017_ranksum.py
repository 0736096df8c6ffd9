"""The rank-sum table of the Cheney et al. 2017 report on a hand-made table: the level it is
taken at (not full knockout, where every repeat is the same network) and the statistic."""

import math

import pandas as pd
import pytest

from netperturb.studies.cheney2017.figures import first_layer_ranksum, ranksum_level

# three repeats per cell; at level 1 every repeat of a knockout is the same empty layer
CELLS = {
    # (perturbation, level): {layer_label: accuracies of the three repeats}
    ("synapse_knockout", 0.0): {"conv1": [0.9, 0.9, 0.9], "conv2": [0.9, 0.9, 0.9]},
    ("synapse_knockout", 0.5): {"conv1": [0.5, 0.6, 0.7], "conv2": [0.8, 0.85, 0.9]},
    ("synapse_knockout", 0.9): {"conv1": [0.1, 0.2, 0.3], "conv2": [0.4, 0.5, 0.6]},
    ("synapse_knockout", 1.0): {"conv1": [0.1, 0.1, 0.1], "conv2": [0.1, 0.1, 0.1]},
    ("gaussian_noise", 0.0): {"conv1": [0.9, 0.9, 0.9], "conv2": [0.9, 0.9, 0.9]},
    ("gaussian_noise", 1.0): {"conv1": [0.3, 0.35, 0.4], "conv2": [0.6, 0.7, 0.8]},
    ("gaussian_noise", 2.0): {"conv1": [0.15, 0.1, 0.12], "conv2": [0.11, 0.5, 0.4]},
}


def _table() -> pd.DataFrame:
    rows = []
    for (pert, level), layers in CELLS.items():
        for i, (label, accs) in enumerate(layers.items(), start=1):
            for rep, a in enumerate(accs):
                rows.append({"model": "net", "perturbation": pert, "layer": f"l{i}", "layer_label": label,
                             "layer_index": i, "level": level, "repeat": rep, "top1": a})  # fmt: skip
    return pd.DataFrame(rows)


def _z(ranks_first: list[float], n1: int, n2: int) -> float:
    """Wilcoxon rank-sum z without continuity correction (scipy.stats.ranksums)."""
    return (sum(ranks_first) - n1 * (n1 + n2 + 1) / 2) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)


def test_level_is_the_highest_below_full_knockout_and_the_top_of_the_noise_grid():
    assert ranksum_level([0, 0.5, 0.9, 1.0, 1.0], "synapse_knockout") == 0.9
    assert ranksum_level([0, 0.1, 1.0], "node_knockout") == 0.1
    assert ranksum_level([0, 1.0, 2.0], "gaussian_noise") == 2.0  # the authors' maxPerturbation "2.00"
    assert ranksum_level([0, 0.5, 0.9, 1.0], "synapse_knockout", level=0.45) == 0.5  # nearest grid level
    assert ranksum_level([0, 1.0], "synapse_knockout") == 1.0  # nothing below 1: the top, reported tied
    with pytest.raises(ValueError):
        ranksum_level([], "gaussian_noise")


def test_statistic_at_the_chosen_level_by_hand():
    rs = first_layer_ranksum(_table()).set_index("perturbation")
    sk = rs.loc["synapse_knockout"]
    assert sk["level"] == 0.9 and sk["first_layer"] == "conv1" and sk["layer_label"] == "conv2"
    # conv1 {0.1, 0.2, 0.3} below conv2 {0.4, 0.5, 0.6}: ranks 1, 2, 3 -> z = (6 - 10.5) / sqrt(5.25)
    z = _z([1, 2, 3], 3, 3)
    assert sk["statistic"] == pytest.approx(z) and z == pytest.approx(-1.963961, abs=1e-6)
    assert sk["p_value"] == pytest.approx(math.erfc(-z / math.sqrt(2)), rel=1e-9)  # 2 (1 - Phi(|z|)) = 0.0495
    assert (sk["first_mean"], sk["layer_mean"]) == (pytest.approx(0.2), pytest.approx(0.5))
    assert (sk["n_first"], sk["n_layer"], sk["tied"]) == (3, 3, False)
    gn = rs.loc["gaussian_noise"]
    # at 2.0: conv1 {0.15, 0.1, 0.12}, conv2 {0.11, 0.5, 0.4}; sorted 0.10 0.11 0.12 0.15 0.40 0.50 -> conv1 ranks 1, 3, 4
    assert gn["level"] == 2.0 and gn["statistic"] == pytest.approx(_z([1, 3, 4], 3, 3))


def test_full_knockout_is_degenerate_and_flagged_when_asked_for():
    rs = first_layer_ranksum(_table(), level=1.0).set_index("perturbation")
    sk = rs.loc["synapse_knockout"]
    assert sk["level"] == 1.0 and sk["tied"] and sk["statistic"] == 0 and sk["p_value"] == 1
    assert not rs.loc["gaussian_noise"]["tied"] and rs.loc["gaussian_noise"]["level"] == 1.0
