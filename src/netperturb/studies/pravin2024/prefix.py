"""Clean-prefix reuse along one layer's filter sweep (:class:`PrefixReuse`): the network below the layer runs once per batch; white-box FGSM pulls its gradient back through the kept graph."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from netperturb.core.attacks import fgsm_step, pgd
from netperturb.core.evaluate import Counts, count_logits
from netperturb.core.layers import LayerInfo
from netperturb.core.seeds import cell_generator
from netperturb.perturb.engine.graph import split_at_layer, widen_roles
from netperturb.perturb.engine.replicas import available_memory
from netperturb.studies.pravin2024.evaluator import Evaluator, _batches

__all__ = ["PrefixReuse", "saved_bytes"]


@contextmanager
def saved_bytes() -> Iterator[list[int]]:
    """Counts the bytes autograd saves for the backward pass inside the block (the kept
    graph's memory): yields a one-element list whose value grows as tensors are saved."""
    total = [0]

    def pack(t: Tensor) -> Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


class PrefixReuse:
    """Clean-prefix reuse for the sweep of one layer (the Design page of the docs, "The engine", 2).

    Every point of a per-layer sweep changes only that layer, so the part of the network
    below it (the *prefix*) sees the same images at every point. The network's ``torch.fx``
    graph is cut at the layer (:func:`netperturb.perturb.engine.split_at_layer`, which also hands
    over a ResNet block's skip tensor or an Inception block's other branches) and the
    prefix runs once per batch of images; per point:

    - FGSM, ``regenerate`` (the paper's setting): the prefix outputs of the clean images are
      kept *with their autograd graph*. The filtered layer and the rest of the network run
      forward and backward, and the gradient is pulled back to the images through the kept
      graph (``retain_graph``): the prefix's forward pass is saved, its backward pass still
      runs (the input gradient depends on the filtered layer). The adversarial images then
      go through the whole network. Per point: 2 forward + 1 backward pass minus the
      prefix's forward (ResNet-18 on digits, one CPU thread: 0.21-0.34 s per point instead
      of 0.27-0.36 s; ``bench/filtering_sweep.py``).
    - PGD, ``regenerate``: the clean pass reuses the prefix; the attack's steps and the
      adversarial pass run the whole network.
    - ``reuse`` mode: the prefix outputs of the clean images and of the fixed adversarial
      set are both kept; per point only the layer and the rest of the network run, twice.

    The counts equal those of the generic path (:func:`clean_and_adversarial` with the
    filtered weight swapped into the whole network through ``functional_call``): the same
    operations on the same values (``tests/studies/pravin2024/test_filtering_prefix.py``
    compares counts and losses; on ResNet-18 / digits every sweep point of the default run
    was identical).

    Memory: the kept values (with graphs) of as many batches as fit in half of the free
    memory of the device (:func:`netperturb.perturb.engine.available_memory`, measured on the
    first batch with ``saved_tensors_hooks``); any other batch recomputes its prefix at
    every point, with the same numbers.

    Args:
        ev: the sweep's :class:`Evaluator` (model in eval mode, images, attack).
        layer: the filtered layer; its ``bn`` (a BatchNorm fed only by it) runs with it.

    Raises:
        netperturb.perturb.engine.SplitError: the graph cannot be cut at the layer (the model does
            not trace, the layer is called more than once, ...); use the generic path.
    """

    def __init__(self, ev: Evaluator, layer: LayerInfo):
        self.ev = ev
        self.split = split_at_layer(ev.model, layer, ev.x[: min(2, len(ev.x))])
        self._tensors = self.split.clean_tensors()
        self._with_graph = ev.attack.mode == "regenerate" and ev.attack.name == "fgsm"
        self._slices = list(_batches(len(ev.y), ev.batch_size))
        self._kept: list[tuple[Tensor | None, tuple[Tensor, ...], tuple[Tensor, ...] | None]] = []
        self._budget = available_memory(ev.x.device) // 2

    @property
    def kept_batches(self) -> int:
        """Batches whose prefix outputs are kept (the others recompute them per point)."""
        return len(self._kept)

    def _logits(self, live: Sequence[Tensor], weight: Tensor) -> Tensor:
        """The network from the prefix's outputs ``live``, with the layer's weight replaced.
        The suffix gets copies of the values it reads: it may update one in place (a ResNet
        block's ``out += identity`` when the layer is the shortcut), and the kept values
        must stay as they are."""
        sp = self.split
        wide = widen_roles([{**self._tensors, "weight": weight}], sp)
        u = sp.unit(live[sp.unit_input], wide, 1)
        return sp.suffix(u, *[live[i].clone() for i in sp.suffix_live])

    def _forward(self, weight: Tensor):
        return lambda z: self._logits(self.split.prefix(z), weight)

    def _prefix(self, b: int) -> tuple[Tensor | None, tuple[Tensor, ...], tuple[Tensor, ...] | None]:
        """(images with grad or None, prefix outputs of the clean images, prefix outputs of
        the fixed adversarial set or None) of batch ``b``: kept, or computed now."""
        if b < len(self._kept):
            return self._kept[b]
        ev, sl = self.ev, self._slices[b]
        xg = None
        with saved_bytes() as saved:
            if self._with_graph:
                xg = ev.x[sl].detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    live = tuple(self.split.prefix(xg))
            else:
                with torch.no_grad():
                    live = tuple(self.split.prefix(ev.x[sl]))
        live_adv = None
        x_adv = ev.x_adv()
        if x_adv is not None:
            with torch.no_grad():
                live_adv = tuple(self.split.prefix(x_adv[sl]))
        entry = (xg, live, live_adv)
        size = saved[0] + sum(t.numel() * t.element_size() for t in (*live, *(live_adv or ())))
        if b == len(self._kept) and size * (b + 1) <= self._budget:
            self._kept.append(entry)
        return entry

    def counts(self, weight: Tensor, seed: int) -> tuple[Counts, Counts]:
        """Clean and adversarial :class:`~netperturb.core.evaluate.Counts` of the network with
        this layer's weight replaced by ``weight`` (same shape; e.g. a filtered copy);
        ``seed`` is the point's seed (PGD's random start)."""
        ev, attack = self.ev, self.ev.attack
        clamp = ev.box if attack.clamp else None
        clean, adv = Counts(), Counts()
        g = cell_generator(seed)
        for b, sl in enumerate(self._slices):
            xg, live, live_adv = self._prefix(b)
            yb = ev.y[sl]
            if live_adv is not None:  # reuse mode
                with torch.no_grad():
                    clean += count_logits(self._logits(live, weight), yb)
                    adv += count_logits(self._logits(live_adv, weight), yb)
                continue
            if attack.name == "fgsm":
                leaves = [v.detach().requires_grad_(v.requires_grad) for v in live]  # storage shared, never written
                with torch.enable_grad():
                    logits = self._logits(leaves, weight)
                    need = [i for i, v in enumerate(leaves) if v.requires_grad]
                    grads = torch.autograd.grad(F.cross_entropy(logits, yb), [leaves[i] for i in need], allow_unused=True)
                    pairs = [(live[i], gr) for i, gr in zip(need, grads) if gr is not None]
                    (grad,) = torch.autograd.grad([p for p, _ in pairs], xg, [gr for _, gr in pairs], retain_graph=True)
                xa = fgsm_step(ev.x[sl], grad, attack.eps, clamp, std=attack.std)
                logits = logits.detach()
            else:
                with torch.no_grad():
                    logits = self._logits(live, weight)
                xb = ev.x[sl]
                xa = pgd(self._forward(weight), xb, yb, attack.eps, steps=attack.steps, step_size=attack.step_size,
                         random_start=attack.random_start, generator=g, std=attack.std, clamp=clamp)  # fmt: skip
            clean += count_logits(logits, yb)
            with torch.no_grad():
                adv += count_logits(self._forward(weight)(xa), yb)
        return clean, adv
