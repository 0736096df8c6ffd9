"""Make the worked example's inputs as a researcher would have them: a folder of PNG images in
class folders and a trained model of their own, saved as a ``state_dict``.

    python examples/make_own_model.py                 # writes resources/examples/own-model/
    snakemake --cores 2 --configfile config/examples/own-model.yaml

Writes, under ``--out`` (default ``resources/examples/own-model``):

- ``digits/<class>/<n>.png`` (``n`` counts within the class): the 540 test images of scikit-learn's handwritten digits (the
  same stratified 30 % split as netperturb's ``digits`` dataset), 8 x 8 grayscale PNGs on the
  usual 0..255 scale (the 0..16 values x 255 / 16, rounded);
- ``mynet.safetensors``: :class:`examples.mynet.MyNet` trained on the other 1,257 images for
  ``--epochs`` epochs (default 10; Adam, lr 1e-3, batches of 64, seed 0), with inputs scaled to [0, 1] and
  normalised with mean 0.3 and std 0.4: what ``models.mynet.preprocess`` of
  ``config/examples/own-model.yaml`` says.

Nothing here uses netperturb: this is the user's side of the example.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.mynet import make_mynet  # noqa: E402

#: The normalisation the model is trained with (of the [0, 1] images).
MEAN, STD = 0.3, 0.4


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="resources/examples/own-model")
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args(argv)
    from PIL import Image
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)  # 0..16 -> 0..255
    labels = digits.target
    train, test = train_test_split(np.arange(len(labels)), test_size=0.3, random_state=0, stratify=labels)
    out = Path(args.out)
    count = [0] * 10
    for i in sorted(test):  # <class>/000.png, 001.png, ...: the same names in every class, as ImageFolder allows
        path = out / "digits" / str(labels[i]) / f"{count[labels[i]]:03d}.png"
        count[labels[i]] += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i], mode="L").save(path)

    torch.set_num_threads(1)  # a tiny network: one thread is the fastest
    torch.manual_seed(0)
    model = make_mynet(num_classes=10, in_channels=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def inputs(idx):
        return (torch.from_numpy(images[idx]).float()[:, None] / 255 - MEAN) / STD

    x_train, y_train = inputs(np.sort(train)), torch.from_numpy(labels[np.sort(train)])
    g = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(y_train), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        top1 = (model(inputs(np.sort(test))).argmax(1) == torch.from_numpy(labels[np.sort(test)])).float().mean().item()
    save_file(model.state_dict(), str(out / "mynet.safetensors"))
    print(f"wrote {len(test)} PNGs to {out / 'digits'} and {out / 'mynet.safetensors'} (test top-1 {top1:.4f})")
    return top1


if __name__ == "__main__":
    main()
