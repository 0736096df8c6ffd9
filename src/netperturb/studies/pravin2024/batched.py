"""Batched filter sweeps (:class:`BatchedSweep`): K sweep points of one layer as K replicas of that layer in one wide call, white-box FGSM included."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from netperturb.core.attacks import fgsm_step
from netperturb.core.evaluate import Counts, count_logits
from netperturb.core.layers import LayerInfo
from netperturb.perturb.engine.graph import split_at_layer, widen_roles
from netperturb.perturb.engine.replicas import available_memory, choose_replicas
from netperturb.studies.pravin2024.evaluator import Evaluator, _batches
from netperturb.studies.pravin2024.prefix import saved_bytes

__all__ = ["BatchedSweep", "batchable"]


def batchable(ev: Evaluator) -> bool:
    """Whether :class:`BatchedSweep` runs ``ev``'s attack: FGSM (either mode) and PGD in
    ``reuse`` mode. PGD ``regenerate`` draws its random start per point from the point's own
    generator and attacks each point for ``steps`` iterations; it stays one point at a time
    (:class:`~netperturb.studies.pravin2024.prefix.PrefixReuse`)."""
    return ev.attack.mode == "reuse" or ev.attack.name == "fgsm"


def _rep(t: Tensor, k: int) -> Tensor:
    """(B, ...) -> (k * B, ...): k copies along the batch, replica-major, with the strides of
    ``t`` (channels-last stays channels-last, so every copy runs the kernels ``t`` would)."""
    if k == 1:
        return t
    dense = t.is_contiguous() or (t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last))
    if t.ndim == 0 or not dense or t.stride(0) != max(t.stride()):
        return torch.cat([t] * k)
    out = t.new_empty_strided((k * t.shape[0], *t.shape[1:]), t.stride())
    n = t.shape[0]
    for r in range(k):
        out[r * n : (r + 1) * n].copy_(t)
    return out


class BatchedSweep:
    """K sweep points of one layer evaluated at once (issue 16, point 2).

    The graph is cut at the layer as in :class:`~netperturb.studies.pravin2024.prefix.PrefixReuse`
    (:func:`netperturb.perturb.engine.split_at_layer`); the K filtered copies of the layer are
    K replicas of the *unit*, and the suffix runs once on the K * B rows (rows
    ``r * B .. (r + 1) * B`` are point r), as the Cheney engine's ``run_fast``:

    - FGSM, ``regenerate`` (the paper's setting): the prefix runs once per batch on the
      images repeated K times, *with its autograd graph*, which is kept across chunks. Per
      chunk of K points: the K replicas of the layer (each on its own rows,
      :meth:`~netperturb.perturb.engine.units.LayerSplit.unit_each`) and the suffix forward and backward on K * B rows (the
      loss is the sum of each replica's mean cross-entropy, so each replica gets exactly its
      own gradient), the gradient pulled back through the kept prefix graph to the K * B
      images, one FGSM step per replica, and the K * B adversarial images through the whole
      network, each replica's rows through its own filtered layer.
    - ``reuse`` mode (FGSM or PGD): the prefix outputs of the clean images and of the fixed
      adversarial set are kept (B rows); per chunk the K replicas read the same input
      (each replica its own :meth:`~netperturb.perturb.engine.units.LayerSplit.unit` call on it) and the suffix runs on K * B
      rows, twice.

    Every operation of a replica is the one of the per-point path on the same values, and
    each row of a batched convolution / matrix product is computed as in a batch of its own,
    so on one CPU thread (the sweep jobs' setting) the counts and losses equal those of the
    per-point path (``tests/studies/pravin2024/test_filtering_batched.py`` checks equality,
    not closeness). With several threads (or on a GPU) a kernel may split its work by batch
    size and round differently: losses then agree to float32 rounding, and an accuracy may
    differ where a logit tie or the sign of a near-zero input gradient flips.

    Memory: K from :func:`netperturb.perturb.engine.choose_replicas` on half the free memory
    (:func:`netperturb.perturb.engine.available_memory`), capped by ``max_replicas``; the
    kept prefix values (with graphs, K-fold in ``regenerate`` mode) of as many batches as fit
    in a quarter of it; other batches recompute them per chunk (same numbers).

    Args:
        ev: the sweep's :class:`Evaluator`; its attack must be :func:`batchable`.
        layer: the filtered layer (its ``bn`` runs with it).
        max_replicas: cap on K (config ``pravin2024.max_replicas``).
        n_points: points to evaluate (K is at most this).

    Raises:
        netperturb.perturb.engine.SplitError: the graph cannot be cut at the layer.
        ValueError: the attack is not batchable.
    """

    def __init__(self, ev: Evaluator, layer: LayerInfo, max_replicas: int, n_points: int):
        if not batchable(ev):
            raise ValueError(f"BatchedSweep: attack {ev.attack.name} in mode {ev.attack.mode} runs one point at a time")
        self.ev = ev
        self.split = split_at_layer(ev.model, layer, ev.x[: min(2, len(ev.x))])
        self._tensors = self.split.clean_tensors()
        self._slices = list(_batches(len(ev.y), ev.batch_size))
        self._fgsm = ev.attack.mode == "regenerate"
        free = available_memory(ev.x.device)
        b = max((sl.stop - sl.start for sl in self._slices), default=1)
        # regenerate: two suffix passes and the prefix's backward alive at once; count the suffix twice
        per_k = choose_replicas(self.split, 2 * b if self._fgsm else b, max(n_points, 1), budget=free // 2,
                                max_replicas=max_replicas)  # fmt: skip
        self.k = max(1, per_k)
        self._budget = free // 4
        self._kept: list[tuple] = []

    @property
    def kept_batches(self) -> int:
        """Batches whose prefix outputs are kept (the others recompute them per chunk)."""
        return len(self._kept)

    def _prefix(self, b: int) -> tuple:
        """Regenerate: (images repeated K times with grad, their prefix outputs with graph);
        reuse: (prefix outputs of the clean images, of the fixed adversarial set)."""
        if b < len(self._kept):
            return self._kept[b]
        ev, sl = self.ev, self._slices[b]
        with saved_bytes() as saved:
            if self._fgsm:
                xg = _rep(ev.x[sl].detach(), self.k).clone().requires_grad_(True)
                with torch.enable_grad():
                    entry = (xg, tuple(self.split.prefix(xg)))
                values = entry[1]
            else:
                with torch.no_grad():
                    entry = (tuple(self.split.prefix(ev.x[sl])), tuple(self.split.prefix(ev.x_adv()[sl])))
                values = (*entry[0], *entry[1])
        size = saved[0] + sum(t.numel() * t.element_size() for t in values)
        if b == len(self._kept) and size * (b + 1) <= self._budget:
            self._kept.append(entry)
        return entry

    def _logits(self, live: Sequence[Tensor], replicas, k: int, each: bool) -> Tensor:
        """Suffix logits (k * B, classes): ``live`` has k * B rows (``each``: replica r reads
        its own rows) or B rows shared by the k replicas. The suffix reads copies of the
        live values (it may update one in place)."""
        sp = self.split
        x = live[sp.unit_input]
        if each:
            u = sp.unit_each(x, replicas)
        else:  # one input for all: each replica's unit reads it in place (no K-fold copy)
            u = torch.cat([sp.unit(x, widen_roles([rep], sp), 1) for rep in replicas]) if k > 1 else sp.unit_each(x, replicas)
        if each:
            rest = [live[i].clone() for i in sp.suffix_live]
        else:
            rest = [_rep(live[i], k).clone() if k == 1 else _rep(live[i], k) for i in sp.suffix_live]
        return sp.suffix(u, *rest)

    def counts(self, weights: Sequence[Tensor]) -> list[tuple[Counts, Counts]]:
        """Clean and adversarial :class:`~netperturb.core.evaluate.Counts` of the network with
        the layer's weight replaced by each of ``weights`` (at most :attr:`k` tensors of the
        weight's shape), one pair per weight, in order."""
        k = len(weights)
        if not 1 <= k <= self.k:
            raise ValueError(f"BatchedSweep.counts: {k} weights, expected 1..{self.k}")
        ev, attack = self.ev, self.ev.attack
        clamp = ev.box if attack.clamp else None
        replicas = [{**self._tensors, "weight": w} for w in weights]
        out = [[Counts(), Counts()] for _ in range(k)]
        for b, sl in enumerate(self._slices):
            yb = ev.y[sl]
            n = sl.stop - sl.start
            if not self._fgsm:
                live, live_adv = self._prefix(b)
                with torch.no_grad():
                    for j, values in enumerate((live, live_adv)):
                        logits = self._logits(values, replicas, k, each=False)
                        for r in range(k):
                            out[r][j] += count_logits(logits[r * n : (r + 1) * n], yb)
                continue
            xg, live = self._prefix(b)
            rows = k * n
            if k < self.k:  # the last chunk: the first k replicas' rows of the kept graph
                live = tuple(v[:rows] for v in live)
            leaves = [v.detach().requires_grad_(v.requires_grad) for v in live]  # storage shared, never written
            with torch.enable_grad():
                logits = self._logits(leaves, replicas, k, each=True)
                loss = sum(F.cross_entropy(logits[r * n : (r + 1) * n], yb) for r in range(k))
                need = [i for i, v in enumerate(leaves) if v.requires_grad]
                grads = torch.autograd.grad(loss, [leaves[i] for i in need], allow_unused=True)
                pairs = [(live[i], gr) for i, gr in zip(need, grads) if gr is not None]
                (grad,) = torch.autograd.grad([p for p, _ in pairs], xg, [gr for _, gr in pairs], retain_graph=True)
            xr = _rep(ev.x[sl], k)
            xa = fgsm_step(xr, grad[:rows], attack.eps, clamp, std=attack.std)
            logits = logits.detach()
            with torch.no_grad():
                adv_logits = self._logits(self.split.prefix(xa), replicas, k, each=True)
            for r in range(k):
                out[r][0] += count_logits(logits[r * n : (r + 1) * n], yb)
                out[r][1] += count_logits(adv_logits[r * n : (r + 1) * n], yb)
        return [(c, a) for c, a in out]
