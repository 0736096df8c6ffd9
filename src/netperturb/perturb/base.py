"""The perturbation interface, what a perturbation changes, and the exact k-subset sampler.

A :class:`Perturbation` says *what it changes* (:attr:`Perturbation.changes`), so that the
engine (:mod:`netperturb.perturb.engine`) picks its way of computing a job from that and
never tests a family by its class:

- :data:`DENSE`: any entry of the layer's tensors (Gaussian noise, synaptic filters,
  multiplicative noise): the engine evaluates K dense perturbed replicas of the layer at once;
- :data:`ROWS`: whole output units -- rows of the weight and the matching entries of the bias
  and of the BatchNorm's affine terms (node knockout);
- :data:`ENTRIES`: a set of k entries of the stored tensors, often a few (bit flips, stuck-at
  bits, synapse knockout): written in place and undone exactly, or added to the clean output
  as a sparse correction (:mod:`netperturb.perturb.engine.sparse`);
- :data:`OUTPUT`: the layer's output, not its tensors (activation faults; the engine calls
  ``apply_activation`` on the clean output).

One cell's draw (:meth:`Perturbation.draw`) is a :class:`Change` per role, which the engine
applies without knowing the family: replace the tensor, add a delta, zero a mask, zero rows,
or set k entries to new values.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import torch
from torch import Tensor

__all__ = ["n_chosen", "Perturbation", "Change", "apply_change", "DENSE", "ROWS", "ENTRIES", "OUTPUT", "CHANGES"]

#: :attr:`Perturbation.changes` values (module docstring).
DENSE, ROWS, ENTRIES, OUTPUT = "dense", "rows", "entries", "output"
CHANGES = (DENSE, ROWS, ENTRIES, OUTPUT)


def n_chosen(fraction: float, n: int) -> int:
    """floor(fraction * n), with the product rounded to 9 decimals first.

    The rounding makes decimal levels exact: 0.29 * 100 is 28.999999999999996 in binary
    floating point, and the count meant is 29.
    """
    return int(math.floor(round(float(fraction) * int(n), 9)))


#: Random sort keys are drawn in [0, 2**62): ties at the selection threshold have
#: probability about n / 2**62 (1e-11 for a 37.7 M-weight layer).
_KEY_HIGH = 1 << 62


def _choose(n: int, k: int, generator: torch.Generator) -> Tensor:
    """k distinct indices out of range(n), uniformly without replacement, from a CPU generator.

    The fault models' sampler (:mod:`netperturb.perturb.faults.bits`); the knockouts use the
    counter-based :func:`netperturb.perturb.draws.choose_mask`, made on the layer's device.
    Random-key selection: each of the n entries gets an independent uniform 62-bit key
    drawn from ``generator`` and the k entries with the smallest keys are chosen (a tie at
    the threshold, probability ~ n / 2**62, goes to the lower index, so exactly k are always
    chosen). This is a uniform k-subset like ``randperm(n)[:k]``, and about 2x faster for a
    large layer on a CPU (AlexNet fc6, 37.7 M weights: 1.5 s instead of 2.7 s), because the
    selection is O(n) and vectorised rather than a sequential shuffle.

    Args:
        n: population size; k: how many to choose (k <= 0: none; k >= n: all, without
            using the generator).
        generator: a CPU ``torch.Generator`` (the grid cell's).

    Returns:
        int64 CPU tensor (k,) of distinct indices in increasing order.
    """
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    if k >= n:
        return torch.arange(n)
    keys = torch.randint(0, _KEY_HIGH, (n,), generator=generator, dtype=torch.int64)
    kth = keys.kthvalue(k).values
    chosen = keys < kth
    missing = k - int(chosen.sum())
    if missing:
        chosen[torch.nonzero(keys == kth).squeeze(1)[:missing]] = True
    return torch.nonzero(chosen).squeeze(1)


class Change(NamedTuple):
    """How one cell changes one role's tensor ``t`` (shape S, n = numel).

    ``op`` and ``data`` (and ``values``):

    - ``"set"``: ``data`` is the new tensor (S);
    - ``"add"``: ``t + data`` (``data``: S, same dtype);
    - ``"mask"``: ``t`` with the entries where the bool ``data`` (n,) is True set to 0;
    - ``"rows"``: ``t`` with the rows ``data`` (int64 (r,), indices along dim 0) set to 0;
    - ``"entries"``: ``t`` with the flat entries ``data`` (int64 (k,), distinct, increasing)
      set to ``values`` ((k,), ``t``'s dtype).
    """

    op: str
    data: Tensor
    values: Tensor | None = None


#: The :class:`Change` operations.
OPS = ("set", "add", "mask", "rows", "entries")


def apply_change(t: Tensor, change: Change) -> Tensor:
    """A new tensor: ``t`` (never modified) with ``change`` applied (:class:`Change`), on
    ``t``'s device and in its dtype.

    Raises:
        ValueError: unknown operation.
    """
    op, data, values = change
    src = t.detach()
    if op == "set":
        return data
    if op == "add":
        return src + data.to(device=src.device, dtype=src.dtype)
    if op == "mask":
        return src.masked_fill(data.to(src.device).view(src.shape), 0)
    if op == "rows":
        return src.clone().index_fill_(0, data.to(src.device), 0)
    if op == "entries":
        out = src.clone(memory_format=torch.contiguous_format)
        out.view(-1)[data.to(src.device)] = values.to(device=src.device, dtype=src.dtype)
        return out
    raise ValueError(f"unknown change {op!r}; known: {', '.join(OPS)}")


def changed_entries(t: Tensor, change: Change) -> tuple[Tensor, Tensor]:
    """(flat indices int64 (k,), new values (k,)) of the entries of ``t`` that ``change``
    sets, for the operations that set entries (``mask``: to 0, ``rows``: every entry of those
    rows to 0, ``entries``). ``set`` and ``add`` are dense: ValueError."""
    op, data, values = change
    if op == "entries":
        return data, values
    if op == "mask":
        idx = torch.nonzero(data.view(-1)).squeeze(1)
        return idx, t.new_zeros(idx.numel())
    if op == "rows":
        per = t[0].numel() if t.ndim else 1
        idx = (data.view(-1, 1) * per + torch.arange(per, device=data.device)).view(-1)
        return idx, t.new_zeros(idx.numel())
    raise ValueError(f"change {op!r} is dense; it sets no list of entries")


class Perturbation:
    """Base class. Subclasses set ``name``, ``level_unit`` and ``max_level``, and implement
    either ``_apply`` (the perturbed tensors) or ``_draw`` (the :class:`Change` of each role);
    each has a default in terms of the other.

    Call an instance as ``perturbation(params, level, generator)`` where ``params`` maps role
    -> tensor (``weight`` required; shapes (out, in, kh, kw) for Conv2d, (out, in) for Linear;
    ``bias`` (out,); ``bn_weight``/``bn_bias`` (out,)). It returns a dict role -> new tensor
    for the roles it changed (same shape, dtype and device as the input).

    What the engine asks (module docstring): :attr:`changes`, :meth:`draw`, :meth:`prepare`,
    :meth:`seed_independent`, :meth:`zeroes_units`, :attr:`device_draws`.
    """

    name: str = ""
    level_unit: str = ""
    max_level: float = math.inf
    stochastic: bool = True
    #: What a cell changes: :data:`DENSE`, :data:`ROWS`, :data:`ENTRIES` or :data:`OUTPUT`.
    changes: str = DENSE
    #: True when :meth:`~netperturb.perturb.base.Perturbation.draw` runs on the parameters' device (counter-based draws queued as
    #: kernels there), so a GPU job needs no CPU threads drawing ahead.
    device_draws: bool = False

    def options(self) -> dict[str, Any]:
        """The constructor options, for provenance."""
        return {}

    def check_level(self, level: float) -> float:
        """Return ``level`` as float.

        Raises:
            ValueError: if the level is negative, not finite or above ``max_level``.
        """
        level = float(level)
        if not math.isfinite(level) or level < 0 or level > self.max_level:
            raise ValueError(
                f"{self.name}: level {level!r} outside [0, {self.max_level}] ({self.level_unit})"
            )
        return level

    def _checked(self, params: Mapping[str, Tensor], level: float) -> float:
        """``level`` checked (:meth:`check_level`), and ``params`` checked to hold a weight."""
        level = self.check_level(level)
        if "weight" not in params:
            raise KeyError(f"{self.name}: params must contain 'weight', got {sorted(params)}")
        return level

    def __call__(
        self, params: Mapping[str, Tensor], level: float, generator: torch.Generator
    ) -> dict[str, Tensor]:
        level = self._checked(params, level)
        if level == 0:
            return {}
        with torch.no_grad():
            return self._apply(params, level, generator)

    def draw(
        self, params: Mapping[str, Tensor], level: float, generator: torch.Generator, context: Mapping | None = None
    ) -> dict[str, Change]:
        """One cell's change of each role it changes (:class:`Change`), drawn from
        ``generator`` exactly as ``perturbation(params, level, generator)`` draws it: applying
        the changes (:func:`apply_change`) gives the same tensors bit for bit. Level 0: ``{}``.

        Args:
            params: role -> tensor, as for calling the perturbation.
            context: what :meth:`prepare` returned for these ``params`` (computed here when
                None), so that a job computes its constants once.

        Raises:
            ValueError: a level outside [0, max_level]; what ``prepare`` raises.
            KeyError: no ``weight`` in ``params``.
        """
        level = self._checked(params, level)
        if level == 0:
            return {}
        with torch.no_grad():
            return self._draw(params, level, generator, self.prepare(params) if context is None else context)

    def prepare(self, params: Mapping[str, Tensor]) -> dict:
        """Constants of a job that every cell's :meth:`draw` needs (e.g. the layer's weight
        s.d.), computed once; ``{}`` by default. Raises what the perturbation cannot accept
        about the tensors (e.g. weights not stored in a fault's format)."""
        return {}

    def seed_independent(self, level: float) -> bool:
        """True when the perturbed tensors at ``level`` do not depend on the cell's generator
        (the engine then computes one cell per level and copies it): a deterministic
        perturbation (``stochastic = False``) by default."""
        return not self.stochastic

    def zeroes_units(self, params: Mapping[str, Tensor]) -> bool:
        """For a :data:`ROWS` perturbation: True when each chosen unit's output is exactly 0
        after the layer (and its BatchNorm, when ``params`` has ``bn_weight``), so that the
        engine may run the clean layer once and zero the chosen channels. False by default."""
        return False

    def _apply(self, params: Mapping[str, Tensor], level: float, generator: torch.Generator) -> dict[str, Tensor]:
        if type(self)._draw is Perturbation._draw:
            raise NotImplementedError(f"{type(self).__name__} implements neither _apply nor _draw")
        draw = self._draw(params, level, generator, self.prepare(params))
        return {role: apply_change(params[role], change) for role, change in draw.items()}

    def _draw(
        self, params: Mapping[str, Tensor], level: float, generator: torch.Generator, context: Mapping
    ) -> dict[str, Change]:
        return {role: Change("set", t) for role, t in self._apply(params, level, generator).items()}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"
