"""What every study shares: config helpers, seeds, layer naming, evaluation (top-k, loss),
attacks (FGSM, PGD), the trainer, table I/O and merging, job set-up and report rendering.

``core`` imports no study (import-linter keeps it so: ``pyproject.toml``)."""
