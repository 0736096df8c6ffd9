"""bench/gpu_check.py (the one-shot GPU check behind bench/gpu.sh): its arithmetic and parsing,
against hand-computed values. The check itself runs in CI as ``bash bench/gpu.sh --device cpu
--quick`` (.ci/run); nothing here needs a GPU."""

import importlib.util
import sys
from fractions import Fraction

import pandas as pd
import pytest
from conftest import REPO

from netperturb.core.evaluate import Counts

_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(gpu_check)


def test_counts_are_compared_cell_by_cell_exactly():
    a = [Counts(n=4, top1=Fraction(3), top5=Fraction(4), loss_sum=Fraction(2)),
         Counts(n=4, top1=Fraction(1), top5=Fraction(7, 2), loss_sum=Fraction(6))]  # fmt: skip
    same = [Counts(n=4, top1=Fraction(3), top5=Fraction(4), loss_sum=Fraction(2)),
            Counts(n=4, top1=Fraction(1), top5=Fraction(7, 2), loss_sum=Fraction(6))]  # fmt: skip
    assert gpu_check.compare_counts(a, same) == {"cells": 2, "identical": 2, "max_dtop1_images": 0.0,
                                                 "max_dtop5_images": 0.0, "max_dloss": 0.0}  # fmt: skip
    # one image's top-5 credit split by a tie (1/2) and a loss 1 nat larger in total: not identical
    b = [same[0], Counts(n=4, top1=Fraction(1), top5=Fraction(3), loss_sum=Fraction(7))]
    got = gpu_check.compare_counts(a, b)
    assert got["identical"] == 1 and got["max_dtop1_images"] == 0 and got["max_dtop5_images"] == 0.5
    assert got["max_dloss"] == 0.25  # 1 nat over 4 images
    with pytest.raises(ValueError, match="2 cells against 1"):
        gpu_check.compare_counts(a, b[:1])


def test_matmul_rate_is_read_from_the_benchmark_output():
    text = "model: alexnet\nmatmul throughput measured on this device (bf16): 612.345 TFLOP/s\ngrid: ..."
    assert gpu_check.matmul_tflops(text) == 612.345
    with pytest.raises(ValueError, match="no 'matmul throughput"):
        gpu_check.matmul_tflops("grid: 1 layers")


def test_paper_grid_is_the_configs_grid():
    grid = gpu_check.paper_grid()
    assert grid["models"] == ["alexnet", "vgg16"] and grid["repeats"] == 5
    assert grid["levels"]["synapse_knockout"] == [i / 10 for i in range(11)]
    assert len(grid["levels"]["node_knockout"]) == 11 and grid["levels"]["gaussian_noise"][-1] == 2.0
    assert len(grid["levels"]["gaussian_noise"]) == 21


def test_projection_scales_compute_with_images_and_draws_with_cells():
    grid = {"repeats": 5, "levels": {"synapse_knockout": [0.0, 0.5, 1.0, 0.25], "gaussian_noise": [0.0, 1.0]}}
    jobs = [  # 10 images; 4 measured cells each
        {"layer": "a", "perturbation": "synapse_knockout", "cells": 4, "engine_s": 6.0, "draw_s": 2.0},
        {"layer": "a", "perturbation": "gaussian_noise", "cells": 4, "engine_s": 1.0, "draw_s": 0.0},
    ]
    # knockout: 20 paper cells x (1 s / 10 images x 1,000 images + 0.5 s draws) = 2,010 s;
    # noise: 10 paper cells x (0.25 s / 10 x 1,000) = 250 s
    assert gpu_check.project_paper_grid(jobs, 10, grid, n_target=1000) == pytest.approx(2010 + 250)


def test_layer_rows_give_images_per_second_and_the_floor_fraction():
    df = pd.DataFrame([
        {"label": "conv1", "cells": 4, "engine_s": 2.0, "engine_flop": 1e12},
        {"label": "conv1", "cells": 2, "engine_s": 1.0, "engine_flop": 0.5e12},
        {"label": "fc8", "cells": 3, "engine_s": 1.0, "engine_flop": 0.5e12},
    ])  # fmt: skip
    rows = gpu_check.layer_rows(df, n_images=100, tflops=1.0)
    assert rows["conv1"] == {"cells": 6, "engine_s": 3.0, "img_s": 200.0, "floor": 0.5}
    assert rows["total"]["img_s"] == pytest.approx(900 / 4) and rows["total"]["floor"] == pytest.approx(0.5)
