"""Adversarial examples: FGSM and L-infinity PGD, with budgets in pixel units.

Both take a *forward function* (an ``nn.Module`` or any callable ``x -> logits``), so a
perturbed network evaluated through ``torch.func.functional_call`` can be attacked
white-box without modifying the stored model. Inputs ``x`` are float tensors in the space
the forward function takes: either pixels in [0, 1] (a forward that normalises itself), or
the model's normalised inputs ``(pixel - mean) / std`` (after
:class:`netperturb.core.preprocess.Preprocess`).

**Budgets are in pixel units** at every public function: ``eps`` (and PGD's ``step_size``) is
a fraction of the [0, 1] pixel range, the same perturbation whatever a dataset's
normalisation. Pass the normalisation's per-channel ``std`` when ``x`` is normalised: the
budget is converted inside to ``eps / std_c`` per channel (:func:`input_eps`), which is the
same L-infinity ball in pixel space. ``std=None`` means ``x`` is in pixel units. ``clamp``
optionally keeps the result inside a valid input box (e.g. the normalised images of [0, 1]
pixels).

Sources: Goodfellow, Shlens, Szegedy 2015 (FGSM, arXiv 1412.6572); Madry et al. 2018 (PGD,
arXiv 1706.06083), with the projection written as torchattacks 3.5.1 writes it
(``x0 + clamp(adv - x0, -eps, eps)``, then ``clamp``): the tests check that both attacks give
adversarial images identical (``torch.equal``) to ``torchattacks`` ``FGSM`` / ``PGD`` when eps
is in the same space.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["fgsm", "fgsm_step", "fgsm_with_logits", "pgd", "attack_batches", "input_eps"]

Forward = Callable[[Tensor], Tensor] | nn.Module
Std = float | Sequence[float] | None


def _clamp(x: Tensor, clamp: tuple[Tensor | float, Tensor | float] | None) -> Tensor:
    if clamp is None:
        return x
    lo, hi = clamp
    return torch.maximum(torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype, device=x.device)), torch.as_tensor(lo, dtype=x.dtype, device=x.device))


def _check_pixel(value: float, name: str = "eps") -> float:
    """``value`` as a float in [0, 1] (pixel units).

    Raises:
        ValueError: not a number, not finite, or outside [0, 1] (the message names ``name``).
    """
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be one number in pixel units [0, 1], got a tensor of shape {tuple(value.shape)}; "
                             "pass the normalisation's per-channel std as std= instead of a per-channel budget")  # fmt: skip
        value = value.item()
    v = float(value)
    if not (math.isfinite(v) and 0 <= v <= 1):
        raise ValueError(f"{name} must be in [0, 1] (a fraction of the pixel range), got {value!r}")
    return v


def input_eps(eps_pixel: float, std: Std, like: Tensor | None = None) -> float | Tensor:
    """A budget in pixel units as a budget in the model's normalised input units, per channel:
    ``eps_pixel / std_c``.

    Args:
        eps_pixel: fraction of the [0, 1] pixel range, >= 0.
        std: the input normalisation's per-channel std (length C, or 1 for every channel, or a
            float); None: the inputs are pixels, ``eps_pixel`` is returned as it is.
        like: a (B, C, H, W) tensor whose dtype and device the result takes.

    Returns:
        a float when every channel has the same std (e.g. one channel), else a
        (1, C, 1, 1) tensor (on ``like``'s device and dtype, float32 on the CPU without it).

    Raises:
        ValueError: eps_pixel < 0 or a std <= 0.
    """
    if not eps_pixel >= 0:
        raise ValueError(f"eps must be >= 0, got {eps_pixel}")
    if std is None:
        return float(eps_pixel)
    std = [float(std)] if isinstance(std, (int, float)) else [float(s) for s in std]
    if not std or min(std) <= 0:
        raise ValueError(f"normalisation std must be > 0, got {std}")
    if len(set(std)) == 1:
        return float(eps_pixel) / std[0]
    kw = {"dtype": like.dtype, "device": like.device} if like is not None else {"dtype": torch.float32}
    return (float(eps_pixel) / torch.tensor(std, dtype=torch.float64)).to(**kw).view(1, -1, 1, 1)


def _budget(eps: float, std: Std, like: Tensor, name: str = "eps") -> float | Tensor:
    """Pixel-unit ``eps`` (checked in [0, 1]) in ``like``'s input units."""
    return input_eps(_check_pixel(eps, name), std, like)


def _input_grad(forward: Forward, x: Tensor, y: Tensor) -> Tensor:
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(forward(x), y)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    std: Std = None,
    clamp: tuple[Tensor | float, Tensor | float] | None = None,
) -> Tensor:
    """Fast gradient sign method: ``x + eps_in * sign(grad_x CE(f(x), y))``, then ``clamp``,
    with ``eps_in = eps / std`` per channel (module docstring).

    Args:
        forward: network (eval mode) or callable (B, C, H, W) -> (B, classes).
        x: (B, C, H, W) float inputs (pixels in [0, 1], or normalised with ``std``);
            y: (B,) int64 labels.
        eps: step size in pixel units, in [0, 1]; 0 returns ``x`` unchanged.
        std: per-channel std of the normalisation ``x`` went through (e.g.
            ``Preprocess.std``); None: ``x`` is in pixel units.
        clamp: (low, high), scalars or tensors broadcastable to x (e.g. per channel
            (1, C, 1, 1)), in ``x``'s units.

    Returns:
        (B, C, H, W) adversarial inputs, detached.

    Raises:
        ValueError: eps outside [0, 1], a std <= 0.
    """
    if _check_pixel(eps) == 0:
        return x.detach().clone()
    return fgsm_step(x, _input_grad(forward, x, y), eps, clamp, std=std)


def fgsm_step(
    x: Tensor, grad: Tensor, eps: float, clamp: tuple[Tensor | float, Tensor | float] | None = None, *, std: Std = None
) -> Tensor:
    """The FGSM step from a given input gradient: ``clamp(x + eps_in * sign(grad))``, detached;
    a copy of ``x`` for eps 0. Shapes, units (``eps`` in pixel units, ``std``) and errors as
    :func:`fgsm` (``grad`` like ``x``)."""
    budget = _budget(eps, std, x)
    if _check_pixel(eps) == 0:
        return x.detach().clone()
    return _clamp(x.detach() + budget * grad.sign(), clamp).detach()


def fgsm_with_logits(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    eps: float,
    clamp: tuple[Tensor | float, Tensor | float] | None = None,
    *,
    std: Std = None,
) -> tuple[Tensor, Tensor]:
    """:func:`fgsm` that also returns the clean logits of the same forward pass (so a clean
    evaluation costs nothing extra): ``(logits (B, classes), adversarial x (B, C, H, W))``,
    both detached. For eps 0 the forward (and backward) still run, for the logits. Units
    and errors as :func:`fgsm`."""
    _check_pixel(eps)
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(xg)
        loss = F.cross_entropy(logits, y)
        (grad,) = torch.autograd.grad(loss, xg)
    return logits.detach(), fgsm_step(x, grad, eps, clamp, std=std)


def pgd(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    std: Std = None,
    clamp: tuple[Tensor | float, Tensor | float] | None = None,
) -> Tensor:
    """Projected gradient descent in the L-infinity ball of radius ``eps`` (Madry et al.).

    Starts at ``x`` (or a uniform point of the ball drawn from ``generator`` on the CPU if
    ``random_start``), takes ``steps`` signed-gradient steps of ``step_size`` (default
    2.5 * eps / steps), projecting onto the ball (``x + clamp(adv - x, -eps, eps)``, as
    torchattacks does) and into ``clamp`` after each.

    Args:
        forward, x, y, std, clamp: as :func:`fgsm`.
        eps: radius in pixel units, in [0, 1]; 0 returns ``x`` unchanged.
        steps: >= 1.
        step_size: in pixel units, in [0, 1]; None: 2.5 * eps / steps (computed from the
            budget in ``x``'s units).
        random_start, generator: the random start and the CPU generator it is drawn from.

    Returns:
        (B, C, H, W) adversarial inputs, detached.

    Raises:
        ValueError: eps or step_size outside [0, 1], steps < 1, a std <= 0.
    """
    if steps < 1:
        raise ValueError(f"need eps >= 0 and steps >= 1, got eps={eps}, steps={steps}")
    x0 = x.detach()
    budget = _budget(eps, std, x0)
    if _check_pixel(eps) == 0:
        return x0.clone()
    alpha = 2.5 * budget / steps if step_size is None else _budget(step_size, std, x0, "step_size")
    adv = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=torch.float32) * 2 - 1
        adv = _clamp(adv + budget * noise.to(device=x0.device, dtype=x0.dtype), clamp)
    for _ in range(steps):
        adv = adv + alpha * _input_grad(forward, adv, y).sign()
        adv = x0 + torch.clamp(adv - x0, min=-budget, max=budget)
        adv = _clamp(adv, clamp).detach()
    return adv


def attack_batches(
    attack: Callable[..., Tensor],
    forward: Forward,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 256,
    **kwargs,
) -> Tensor:
    """Run ``attack(forward, xb, yb, **kwargs)`` over ``x`` in batches; returns the
    concatenated adversarial inputs (same shape as x)."""
    out = [attack(forward, x[i : i + batch_size], y[i : i + batch_size], **kwargs) for i in range(0, len(y), batch_size)]
    return torch.cat(out) if out else x.detach().clone()
