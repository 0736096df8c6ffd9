"""The performance engine behind :func:`netperturb.perturb.grid.run_layer_job`, and the naive reference.

The Design page of the docs, "The engine". A job is one (model, layer, perturbation) with every
level x repeat cell. Three ways to compute it, all giving the same per-cell numbers in fp32:

``"fast"`` (default)
    1. *Clean-prefix reuse.* The network's ``torch.fx`` graph is split at the perturbed layer
       (:func:`split_at_layer`): the *prefix* computes, once per batch of images, every value
       that is still needed after the layer -- the layer's input, and also e.g. the skip
       tensor a ResNet block adds back or the parallel branches an Inception block
       concatenates; the *suffix* takes those values plus the layer's output and returns the
       logits. Any traceable torchvision classifier works, not only ``nn.Sequential``.
       The prefix outputs of all batches are cached when they fit in memory, otherwise
       recomputed once per group of replicas.
    2. *Batched replicas.* K cells of the job are evaluated in one call: their K perturbed
       weight tensors are concatenated along the output dimension into one wider layer, and
       the suffix runs on a K-fold batch (the other live values repeated K times). A BatchNorm
       fed only by the layer joins the replicated unit with the K replicas' affine terms
       concatenated the same way (node knockout zeroes a knocked-out node's BN channel), so
       every replica gets exactly its own affine terms after the shared normalisation
       statistics. K is the smallest number of replicas that spreads the suffix's fixed cost
       per call (its weights read once, its operator calls) over the replicas, by the cost
       model (:func:`netperturb.perturb.engine.costs.cost_replicas`), within the free memory
       (GPU: ``torch.cuda.mem_get_info``; CPU: MemAvailable / the cgroup limit) and an optional
       cap (config ``max_replicas``).
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
    whole model (bit for bit the baseline in fp32). If the graph cannot be split (the model
    does not trace, the layer is called twice, ...), the job falls back to ``"functional"``
    with a warning in the log.

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
    widen,
    widen_roles,
)
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
    "LayerSplit",
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
