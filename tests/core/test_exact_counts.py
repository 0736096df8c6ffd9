"""Counts are exact sums, so top-1 / top-5 / loss do not depend on batch_size (issue 13, item 8).

The definition checked against: per image, credit = clamp((k - n_greater) / n_equal, 0, 1) as a
rational, loss = float32 cross-entropy of its row; the metric is the exact mean, rounded once.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from netperturb.core.evaluate import Counts, count_logits, exact_credit_sum, exact_float_sum, topk_credit_parts
from netperturb.core.layers import find_layers
from netperturb.datasets.shards import load_split
from netperturb.models.checkpoints import load_checkpoint
from netperturb.perturb.grid import LayerJob, run_layer_job
from netperturb.perturb.registry import make_perturbation


def _by_definition(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The metrics computed image by image with Fractions (the slow reference)."""
    t1 = t5 = loss = Fraction(0)
    for row, y in zip(logits.tolist(), labels.tolist()):
        true = row[y]
        g = sum(v > true for v in row)
        e = sum(v == true for v in row)
        for k in (1, min(5, len(row))):
            c = min(max(Fraction(k - g, e), Fraction(0)), Fraction(1))
            t1, t5 = (t1 + c, t5) if k == 1 else (t1, t5 + c)
    per_image = F.cross_entropy(logits.float(), labels, reduction="none")
    for v in per_image.tolist():
        loss += Fraction(v)
    n = len(labels)
    return {"n_images": n, "top1": float(t1 / n), "top5": float(t5 / n), "loss": float(loss / n)}


def _in_batches(logits: torch.Tensor, labels: torch.Tensor, batch: int) -> Counts:
    total = Counts()
    for s in range(0, len(labels), batch):
        total += count_logits(logits[s : s + batch], labels[s : s + batch])
    return total


def test_hand_made_ties_are_exact_fractions():
    logits = torch.tensor([
        [5.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # label 0: top-1
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],   # all tied, label 3: 1/7 and 5/7
        [3.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # two tied at the top, label 1: 1/2 and 1
        [float("nan"), 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # NaN true logit: 0 and 0
    ])  # fmt: skip
    labels = torch.tensor([0, 3, 1, 0])
    num, den = topk_credit_parts(logits, labels, 1)
    assert num.tolist() == [1, 1, 1, 0] and den.tolist() == [1, 7, 2, 1]
    c = count_logits(logits, labels)
    assert c.top1 == Fraction(1) + Fraction(1, 7) + Fraction(1, 2)
    assert c.top5 == Fraction(1) + Fraction(5, 7) + Fraction(1)
    assert math.isnan(c.loss_sum) and math.isnan(c.metrics()["loss"])  # a NaN row: the loss is NaN, no crash
    assert c.metrics()["top1"] == float(Fraction(23, 14) / 4)


def test_all_tied_logits_give_exactly_chance_at_any_batch_size():
    # a knocked-out last layer: every logit 0, 10 classes -> top1 = 1/10, top5 = 5/10 exactly;
    # summing 0.1 per batch in float gave 0.09999999999999999... depending on the batching
    logits, labels = torch.zeros(300, 10), torch.arange(300) % 10
    for batch in (1, 7, 300):
        m = _in_batches(logits, labels, batch).metrics()
        assert (m["top1"], m["top5"]) == (0.1, 0.5), batch
        assert m["loss"] == float(Fraction(F.cross_entropy(logits[:1], labels[:1]).item())), batch


def test_random_logits_with_ties_are_bit_identical_across_batch_sizes():
    g = torch.Generator().manual_seed(0)
    # small integers: many ties at every rank; some rows scaled up to spread the losses' exponents
    logits = torch.randint(-2, 3, (300, 10), generator=g).float() * torch.logspace(-3, 3, 300).view(-1, 1)
    labels = torch.randint(0, 10, (300,), generator=g)
    expect = _by_definition(logits, labels)
    for batch in (1, 7, 300):
        assert _in_batches(logits, labels, batch).metrics() == expect, batch
    # grouping of the sums does not matter either
    a, b = _in_batches(logits[:150], labels[:150], 7), _in_batches(logits[150:], labels[150:], 11)
    b += a
    assert b.metrics() == expect


def test_exact_float_sum_is_order_independent_and_handles_inf_nan():
    vals = [1e308, -1e308, 5e-324, 1.0, -3.5, 2.0**-1074 * 3, 1e-300, 123456.789]
    exact = sum(map(Fraction, vals), Fraction(0))
    assert exact_float_sum(torch.tensor(vals, dtype=torch.float64)) == exact
    assert exact_float_sum(torch.tensor(vals[::-1], dtype=torch.float64)) == exact
    assert exact_float_sum(torch.tensor([], dtype=torch.float64)) == 0
    assert exact_float_sum(torch.tensor([1.0, math.inf])) == math.inf
    assert exact_float_sum(torch.tensor([1.0, -math.inf])) == -math.inf
    assert math.isnan(exact_float_sum(torch.tensor([math.inf, -math.inf])))
    assert math.isnan(exact_float_sum(torch.tensor([1.0, math.nan])))
    # a NaN / inf batch summed with finite ones: NaN / inf, in any order
    inf_batch = count_logits(torch.tensor([[3e38, -3e38]]), torch.tensor([1]))  # CE 6e38 overflows float32
    assert inf_batch.loss_sum == math.inf
    for first, second in ((inf_batch, Counts(n=1, loss_sum=Fraction(1, 3))), (Counts(n=1, loss_sum=Fraction(1, 3)), inf_batch)):
        total = Counts()
        total += first
        total += second
        assert total.metrics()["loss"] == math.inf


def test_exact_credit_sum_counts_whole_and_tie_credits():
    num = torch.tensor([1, 0, 1, 2, 3, 1, 1])
    den = torch.tensor([1, 1, 7, 7, 3, 2, 2])
    assert exact_credit_sum(num, den) == 1 + Fraction(3, 7) + 1 + 1


@pytest.mark.parametrize("engine", ["fast", "naive"])
def test_perturbation_tables_are_bit_identical_across_batch_sizes(engine, lenet_checkpoint, digits_shards):
    """A knocked-out fc5 (every logit equal at level 1: ties) and partial knockouts of it."""
    loaded = load_checkpoint(lenet_checkpoint)
    x, y = load_split(digits_shards, "test")
    x, y = x[:300], y[:300]
    layer = find_layers(loaded.model)[-1]
    assert layer.label == "fc5"
    j = LayerJob(study="t", dataset="digits", model="lenet5", layer=layer, perturbation=make_perturbation("node_knockout"),
                 levels=[0.0, 0.5, 1.0], repeats=2, study_seed=1)  # fmt: skip
    # one thread: with several, PyTorch splits a batch's GEMM between threads by its size, so
    # the logits themselves (not the sums) can differ in the last bit between batch sizes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tables = {b: run_layer_job(j, loaded, x, y, batch_size=b, progress=False, engine=engine) for b in (1, 7, 300)}
    finally:
        torch.set_num_threads(threads)
    cols = ["level", "repeat", "top1", "top5", "loss"]
    assert tables[7][cols].equals(tables[300][cols]), (tables[7][cols] - tables[300][cols]).to_dict()
    # batch 1: PyTorch's forward pass itself rounds the logits differently for one image (a
    # matrix-vector product), ~1e-8 in the loss; the tied level and every accuracy stay identical
    assert tables[1][cols[:4]].equals(tables[300][cols[:4]])
    tied = tables[1]["level"] == 1.0
    assert tables[1]["loss"][tied].equals(tables[300]["loss"][tied])
    assert tables[1]["loss"].to_numpy() == pytest.approx(tables[300]["loss"].to_numpy(), rel=1e-7)
    full = tables[300][tables[300]["level"] == 1.0]
    # level 1 removes every fc5 unit (bias included): all 10 logits tie -> exactly chance
    assert (full["top1"] == 0.1).all() and (full["top5"] == 0.5).all()
