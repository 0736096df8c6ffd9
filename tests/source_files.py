"""Tiny files of every model source and data kind, made by the tests themselves: digits as
8-bit PNGs in class folders, a tensor file, and one small network saved as a state_dict
(.pt and .safetensors), a TorchScript file and a torch.export program."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.mynet import make_mynet  # noqa: E402


def digits_uint8(scale_to_255: bool = True):
    """scikit-learn's digits (N, 8, 8) as uint8: 0..16, or x 255 / 16 rounded (0..255), and the labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * 255 / 16) if scale_to_255 else d.images
    return x.astype(np.uint8), d.target.astype(np.int64)


def png_folder(root: Path, indices_by_split: dict[str, list[int]], *, rgb: bool = False, scale_to_255: bool = True) -> Path:
    """``root/<split>/<class>/<k>.png`` (or ``root/<class>/<k>.png`` for the one split ``""``) with
    ``k`` counting within the class, so every class has the same file names."""
    from PIL import Image

    x, y = digits_uint8(scale_to_255)
    for split, idx in indices_by_split.items():
        count: dict[int, int] = {}
        for i in idx:
            c = int(y[i])
            path = (root / split if split else root) / str(c) / f"{count.get(c, 0):03d}.png"
            count[c] = count.get(c, 0) + 1
            path.parent.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(x[i], mode="L")
            (img.convert("RGB") if rgb else img).save(path)
    return root


def mynet_files(out: Path, *, in_channels: int = 1, seed: int = 0, static_batch: int | None = None) -> dict[str, Path]:
    """One randomly initialised MyNet (BatchNorm statistics made non-trivial) saved four ways:
    ``pt`` (torch.save state_dict), ``safetensors``, ``torchscript`` (torch.jit.script) and
    ``exported`` (torch.export with a free batch dimension, or ``static_batch`` fixed)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    m = make_mynet(num_classes=10, in_channels=in_channels).eval()
    with torch.no_grad():
        bn = m.features[1]
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    files = {"pt": out / "mynet.pt", "safetensors": out / "mynet.safetensors", "torchscript": out / "mynet.ts",
             "exported": out / "mynet.pt2"}  # fmt: skip
    torch.save(m.state_dict(), files["pt"])
    save_file(m.state_dict(), str(files["safetensors"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(m).save(str(files["torchscript"]))
        dyn = None if static_batch else ({0: torch.export.Dim("batch")},)
        xe = torch.zeros(static_batch or 2, in_channels, 8, 8)
        torch.export.save(torch.export.export(m, (xe,), dynamic_shapes=dyn), str(files["exported"]))
    return files
