"""What the Pravin et al. 2024 study plans from its config: checkpoint epochs, layers, parts, retraining epochs; errors name the key."""

from __future__ import annotations

__all__ = ["checkpoint_epochs"]


def checkpoint_epochs(epochs: int, every: int) -> list[int]:
    """Epochs at which checkpoints are kept: ``every, 2 every, ...`` up to ``epochs``, and
    ``epochs`` itself.

    Raises:
        ValueError: ``epochs < 1`` or ``every < 1``.
    """
    if epochs < 1 or every < 1:
        raise ValueError(f"need epochs >= 1 and checkpoint_every >= 1, got {epochs}, {every}")
    return sorted(set(range(every, epochs + 1, every)) | {epochs})
