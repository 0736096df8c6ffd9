"""The performance engine behind :func:`netperturb.perturb.grid.run_layer_job`, and the naive reference.

The Design page of the docs, "The engine". A job is one (model, layer, perturbation) with every
level x repeat cell. Three ways to compute it, all giving the same per-cell numbers in fp32:

``"fast"`` (default)
    1. *Clean-prefix reuse.* The network's ``torch.fx`` graph is split at the perturbed layer
       (:func:`split_at_layer`): the *prefix* computes, once per batch of images, every value
       that is still needed after the layer -- the layer's input, and also e.g. the skip
       tensor a ResNet block adds back or the parallel branches an Inception block
       concatenates; the *suffix* takes those values plus the layer's output and returns the
       logits. Any traceable classifier works, not only ``nn.Sequential``; a layer computed
       inside a larger call (an ``nn.MultiheadAttention``'s ``in_proj`` / ``out_proj``, Swin's
       ``shifted_window_attention`` reading ``qkv.weight``) has that call as its unit
       (:mod:`netperturb.perturb.engine.units`). A model torch.fx cannot trace (data-dependent
       control flow) takes the *hook path* (:mod:`netperturb.perturb.engine.hooks`): the same
       prefix / unit / suffix made from its module calls with forward hooks. The prefix
       outputs of all batches are cached when they fit in memory, otherwise recomputed once
       per group of replicas.
    2. *Batched replicas.* K cells of the job form a group: the K perturbed replicas of the
       layer (each computed on its own slice of a wide buffer, with the BatchNorm fed only by
       the layer and each replica's own affine terms) run on the batch's clean input, and the
       suffix runs on their K outputs -- once per replica on the CPU (``exact``: the same
       operations on the same shapes as the naive loop, bit for bit), as one call on the
       K-fold batch on a GPU. K is the smallest number of replicas that spreads the suffix's
       fixed cost per call (its weights read once, its operator calls) over the replicas, by
       the cost model (:func:`netperturb.perturb.engine.costs.cost_replicas`), within the free
       memory (GPU: ``torch.cuda.mem_get_info``; CPU: MemAvailable / the cgroup limit) and an
       optional cap (config ``max_replicas``).
    3. *No waste.* No model copies; masks and noise are drawn in bulk on each cell's own CPU
       generator exactly as :mod:`netperturb.perturb.knockouts` and
       :mod:`netperturb.perturb.noise` draw them (same calls in the same order, so the
       numbers do not depend on device or K; tests compare the tensors bit for bit),
       job-level constants such as a layer's weight s.d. are computed once per job, each
       replica is written straight into a buffer kept for the job, and the draws
       run in CPU threads (one generator per cell), the next group's while the device works
       on the current one. Images stay uint8 on the device; normalisation
       (:class:`netperturb.core.preprocess.Preprocess`) runs there.
    4. *Precision.* ``"fp32"`` is the reference. ``"bf16"`` / ``"fp16"`` run prefix and suffix
       under ``torch.autocast`` (and channels_last on a GPU) while the perturbed layer itself
       computes in fp32; the result table records the precision.
    5. *Less arithmetic where the definition allows it.* Node knockout runs the layer once
       on its clean weights and zeroes each replica's knocked-out channels (a knocked-out
       unit's output is exactly 0: its weights and bias are zero, with a BN-aware knockout
       its BN affine terms too). Cells whose perturbed layer does not depend on the seed
       (knockouts at level 1, deterministic perturbations) are computed once per level.
    6. *Sparse faults as sparse.* A perturbation that changes a set of entries
       (``changes == "entries"``: bit flips, stuck-at bits, synapse knockout) builds no
       replicas: each cell's layer output is the clean output plus a sparse correction, or the
       layer run on a job-level copy with the k entries written in place and undone, or on
       that copy rewritten whole -- whichever the cost model
       (:mod:`netperturb.perturb.engine.costs`) finds cheapest for the cell's k and the
       layer's shape (:mod:`netperturb.perturb.engine.sparse`). The engine picks every path
       from what the perturbation says it changes (:attr:`Perturbation.changes`), never from
       its class.

    Level-0 cells are the clean network by definition: they share one clean evaluation of the
    whole model (bit for bit the baseline in fp32). The log says which path each job took
    (graph split, hook path) and why; if neither can cut the network (the layer is called
    twice, a value after it has no batch dimension, ...), the job falls back to
    ``"functional"`` with a warning that gives both reasons.

``"functional"``
    Per cell, the whole network with the perturbed tensors swapped in
    (``torch.func.functional_call``); level-0 cells share one clean evaluation.

``"naive"``
    The reference, written the way the seeds' authors and PyTorchFI users run a grid: per
    cell ``copy.deepcopy`` the model, perturb the copy in place, run the full forward pass
    from the images. Kept for tests and for ``bench/engine_vs_naive.py``.
"""

from netperturb.perturb.engine.graph import (
    LayerSplit,
    SplitError,
    macs_per_image,
    split_at_layer,
    trace_model,
    widen,
    widen_roles,
)
from netperturb.perturb.engine.hooks import HookError, find_split, split_by_hooks
from netperturb.perturb.engine.precision import (
    PRECISIONS,
    check_precision,
    precision_context,
)
from netperturb.perturb.engine.replicas import (
    ReplicaBuilder,
    available_memory,
    choose_replicas,
)
from netperturb.perturb.engine.costs import CostModel, cell_path, cost_model, suffix_replicas
from netperturb.perturb.engine.runners import (
    ENGINES,
    naive_cells,
    run_cells,
    run_fast,
    run_functional,
    run_naive,
)

__all__ = [
    "ENGINES",
    "PRECISIONS",
    "SplitError",
    "HookError",
    "LayerSplit",
    "find_split",
    "split_by_hooks",
    "trace_model",
    "split_at_layer",
    "widen",
    "widen_roles",
    "ReplicaBuilder",
    "choose_replicas",
    "available_memory",
    "check_precision",
    "precision_context",
    "run_cells",
    "run_fast",
    "run_functional",
    "run_naive",
    "naive_cells",
    "macs_per_image",
    "CostModel",
    "cost_model",
    "cell_path",
    "suffix_replicas",
]
