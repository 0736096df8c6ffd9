"""The README's snippet: bit flips at bit error rate r in layer X of my model on my DataLoader,
top-1 accuracy and SDC. The lines between the ``snippet`` markers are the snippet, verbatim
(the docs include them, and tests/api/test_examples.py runs exactly that text on a model and
a loader of its own); the lines above make a ``model`` and a ``loader`` so that
``python examples/snippet.py`` runs it (an untrained MyNet on the digits: expect a low top-1).
"""

import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from mynet import make_mynet

digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # (1797, 1, 8, 8) in [0, 1]
loader = DataLoader(TensorDataset(images, torch.tensor(digits.target)), batch_size=256)
model = make_mynet().eval()  # your trained classifier, in eval() mode

# --- snippet ---
import netperturb as npt

clean = npt.evaluate(model, loader)  # the fault-free reference
with npt.perturbed(model, "conv2", "bit_flip", 1e-3, seed=7):  # bit error rate 1e-3 in conv2, restored after
    hit = npt.evaluate(model, loader, reference=clean)
print(f"top-1 {clean.top1:.3f} -> {hit.top1:.3f}, SDC-1 {hit.sdc1:.3f}")
# --- end snippet ---
