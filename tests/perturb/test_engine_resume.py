"""The engines compute only the cells they are asked for (cell-level resume, issue 13): skipped
cells come back as None, every other cell with exactly the counts of a full run, and each
finished cell is reported once through ``on_cells``."""

import pytest
import torch

from netperturb.perturb.engine.runners import FastPlan, run_cells
from test_engine import IMAGENET, job, make_data, make_loaded


def counts_tuple(c):
    return (c.n, c.top1, c.top5, c.loss_sum)


@pytest.mark.parametrize("engine", ["fast", "functional", "naive"])
@pytest.mark.parametrize("name", ["synapse_knockout", "gaussian_noise"])
def test_skipped_cells_are_not_computed_and_the_others_are_exact(engine, name):
    torch.set_num_threads(1)
    loaded = make_loaded("resnet18")
    x, y = make_data(loaded, 32)
    # levels 0 (clean), 0.5, 1 (a knockout at 1 is seed-independent: its repeats are copies)
    j = job(loaded, "resnet18", "layer1.0.conv1", name, [0.0, 0.5, 1.0], repeats=2)
    kw = dict(engine=engine, batch_size=5, max_replicas=2, progress=False)
    full = run_cells(j, loaded, x, y, **kw)
    for skip in ({0, 2}, {1, 3, 4}, {2, 3}, set(range(6))):
        seen: list[int] = []
        plan = FastPlan()
        got = run_cells(j, loaded, x, y, skip=skip, plan=plan,
                        on_cells=lambda idx, cs: seen.extend(i for i, c in zip(idx, cs) if c is not None), **kw)  # fmt: skip
        none = {i for i, c in enumerate(got) if c is None}
        if engine == "fast":  # a group with a missing cell runs whole: groups (2, 3), (4 + its copy 5)
            groups = [{0}, {1}, {2, 3}, {4, 5}]
            assert none == set().union(*(g for g in groups if g <= skip))
        else:
            assert none == skip
        # fast engine: groups of 2 over all perturbed cells, a group runs whole if any cell of it is missing
        assert set(seen) == set(range(6)) - none and len(seen) == len(set(seen))
        for i, c in enumerate(got):
            if c is not None:
                assert counts_tuple(c) == counts_tuple(full[i]), (skip, i)
        if engine == "fast":
            assert plan.replicas == 2
