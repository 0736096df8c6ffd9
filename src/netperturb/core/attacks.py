"""Adversarial examples: FGSM and L-infinity PGD, in the model's input space.

Both take a *forward function* (an ``nn.Module`` or any callable ``x -> logits``), so a
perturbed network evaluated through ``torch.func.functional_call`` can be attacked
white-box without modifying the stored model. Inputs are float tensors as the network sees
them (after :class:`netperturb.core.preprocess.Preprocess`); ``eps`` is in those units, as in Pravin et
al. 2024 (attacks on the normalised inputs). ``clamp`` optionally keeps the result inside a
valid input box (e.g. the normalised images of [0, 1] pixels).

Sources: Goodfellow, Shlens, Szegedy 2015 (FGSM, arXiv 1412.6572); Madry et al. 2018 (PGD,
arXiv 1706.06083). Cross-checked in the tests against ``torchattacks`` 3.5.1.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["fgsm", "pgd", "attack_batches"]

Forward = Callable[[Tensor], Tensor] | nn.Module


def _clamp(x: Tensor, clamp: tuple[Tensor | float, Tensor | float] | None) -> Tensor:
    if clamp is None:
        return x
    lo, hi = clamp
    return torch.maximum(torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype, device=x.device)), torch.as_tensor(lo, dtype=x.dtype, device=x.device))


def _eps_zero(eps: float | Tensor) -> bool:
    """True when every entry of ``eps`` is 0; ValueError when one is negative. ``eps`` is a
    float or a tensor broadcastable to the inputs (e.g. (1, C, 1, 1), one budget per channel)."""
    t = torch.as_tensor(eps)
    if bool((t < 0).any()):
        raise ValueError(f"eps must be >= 0, got {eps}")
    return bool((t == 0).all())


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
    eps: float | Tensor,
    *,
    clamp: tuple[Tensor | float, Tensor | float] | None = None,
) -> Tensor:
    """Fast gradient sign method: ``x + eps * sign(grad_x CE(f(x), y))``, then ``clamp``.

    Args:
        forward: network (eval mode) or callable (B, C, H, W) -> (B, classes).
        x: (B, C, H, W) float inputs; y: (B,) int64 labels.
        eps: step size in input units (>= 0), a float or a tensor broadcastable to ``x``
            (e.g. (1, C, 1, 1): one budget per channel); 0 returns ``x`` unchanged.
        clamp: (low, high), scalars or tensors broadcastable to x (e.g. per channel
            (1, C, 1, 1)).

    Returns:
        (B, C, H, W) adversarial inputs, detached.

    Raises:
        ValueError: eps < 0.
    """
    if _eps_zero(eps):
        return x.detach().clone()
    return fgsm_step(x, _input_grad(forward, x, y), eps, clamp)


def fgsm_step(x: Tensor, grad: Tensor, eps: float | Tensor, clamp: tuple[Tensor | float, Tensor | float] | None = None) -> Tensor:
    """The FGSM step from a given input gradient: ``clamp(x + eps * sign(grad))``, detached;
    a copy of ``x`` for eps 0. Shapes as :func:`fgsm` (``grad`` like ``x``; ``eps`` a float or
    broadcastable tensor)."""
    if _eps_zero(eps):
        return x.detach().clone()
    return _clamp(x.detach() + eps * grad.sign(), clamp).detach()


def fgsm_with_logits(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    clamp: tuple[Tensor | float, Tensor | float] | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`fgsm` that also returns the clean logits of the same forward pass (so a clean
    evaluation costs nothing extra): ``(logits (B, classes), adversarial x (B, C, H, W))``,
    both detached. For eps 0 the forward (and backward) still run, for the logits."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(xg)
        loss = F.cross_entropy(logits, y)
        (grad,) = torch.autograd.grad(loss, xg)
    return logits.detach(), fgsm_step(x, grad, eps, clamp)


def pgd(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    *,
    steps: int = 10,
    step_size: float | Tensor | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    clamp: tuple[Tensor | float, Tensor | float] | None = None,
) -> Tensor:
    """Projected gradient descent in the L-infinity ball of radius ``eps`` (Madry et al.).

    Starts at ``x`` (or a uniform point of the ball drawn from ``generator`` on the CPU if
    ``random_start``), takes ``steps`` signed-gradient steps of ``step_size`` (default
    2.5 * eps / steps), projecting onto the ball and into ``clamp`` after each. ``eps`` and
    ``step_size`` are floats or tensors broadcastable to ``x`` (one budget per channel).

    Returns:
        (B, C, H, W) adversarial inputs, detached.

    Raises:
        ValueError: eps < 0 or steps < 1.
    """
    if steps < 1:
        raise ValueError(f"need eps >= 0 and steps >= 1, got eps={eps}, steps={steps}")
    x0 = x.detach()
    if _eps_zero(eps):
        return x0.clone()
    alpha = 2.5 * eps / steps if step_size is None else step_size
    adv = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=torch.float32) * 2 - 1
        adv = _clamp(adv + eps * noise.to(device=x0.device, dtype=x0.dtype), clamp)
    for _ in range(steps):
        adv = adv + alpha * _input_grad(forward, adv, y).sign()
        adv = torch.max(torch.min(adv, x0 + eps), x0 - eps)
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
