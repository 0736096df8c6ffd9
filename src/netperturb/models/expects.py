"""What input a model expects, and the check that the data gives it that.

Every model source (:mod:`netperturb.models.sources`) records an :class:`InputSpec`: the stored
value that means "full brightness" (``value_range``: 16 for the 0..16 digits, 255 for 8-bit
images), the per-channel mean and std that normalise the [0, 1] input, the input size and the
channel count. Every shard manifest records the same facts about the data
(:func:`data_inputs`: ``value_range``, channels, size, and a normalisation if the dataset's
config gave one). :func:`resolve_inputs` compares the two before a job evaluates anything and
returns the :class:`~netperturb.core.preprocess.Preprocess` to use, or stops with
:class:`InputMismatchError`, naming the model (its source and file) and the data (its manifest)
and the remedy. Without it a model that saw digits on a 0..16 scale, fed 0-255 PNGs of the same
digits, scores near chance with no warning (issue 23).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from netperturb.core.preprocess import Preprocess

__all__ = ["InputSpec", "InputMismatchError", "data_inputs", "resolve_inputs", "apply_overrides"]


class InputMismatchError(ValueError):
    """The data's stored values, channels, size or normalisation are not what the model expects."""


@dataclass(frozen=True)
class InputSpec:
    """What a model expects of its input (None: no expectation, the data's is used).

    Attributes:
        value_max: the stored pixel value that maps to 1.0 (the model's input range is
            [0, value_max] before scaling: 255 for 8-bit images, 16 for the digits).
        mean, std: per-channel normalisation of the [0, 1] input (length 1 or C).
        size: (H, W) of the model's input.
        resize: whether data of another size may be resized to ``size`` on the device
            (bilinear; models trained here, or ``models.<name>.preprocess.input_size``);
            False when the model's own transform resizes and crops when decoding (torchvision
            and timm weights: the data must have been decoded at ``size``).
        channels: input channels.
        described: who says so, for messages (``"model lenet5 (netperturb checkpoint
            results/digits/models/lenet5.pt)"``).
        remedy_key: the config key that overrides it (``models.lenet5.preprocess``).
        crop_pct: timm's crop fraction, for the remedy of a size mismatch (resize = size / crop_pct).
    """

    value_max: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    size: tuple[int, int] | None = None
    resize: bool = True
    channels: int | None = None
    described: str = "the model"
    remedy_key: str = "models.<name>.preprocess"
    crop_pct: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (for the model's metadata and the logs)."""
        return {
            "value_range": None if self.value_max is None else [0, self.value_max],
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "input_size": None if self.size is None else list(self.size),
            "resize_on_device": self.resize,
            "channels": self.channels,
        }


def _pair(v) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return int(v), int(v)
    v = [int(x) for x in v]
    return (v[0], v[0]) if len(v) == 1 else (v[-2], v[-1])


def apply_overrides(spec: InputSpec, overrides: Mapping[str, Any] | None) -> InputSpec:
    """``spec`` with the keys of ``models.<name>.preprocess`` applied: ``value_range``
    ([0, max]), ``mean``, ``std``, ``input_size`` (int or [H, W]; data of another size is then
    resized to it on the device).

    Raises:
        ValueError: a value range that does not start at 0 or is not increasing, a mean/std
            of another length than the other, a std <= 0 (the message names the key).
    """
    if not overrides:
        return spec
    key = spec.remedy_key
    out = spec
    if overrides.get("value_range") is not None:
        lo, hi = (float(v) for v in overrides["value_range"])
        if lo != 0 or hi <= 0:
            raise ValueError(f"{key}.value_range: give [0, max] with max > 0 (e.g. [0, 255]), got {list(overrides['value_range'])}")
        out = replace(out, value_max=hi)
    mean, std = overrides.get("mean"), overrides.get("std")
    if (mean is None) != (std is None):
        raise ValueError(f"{key}: give mean and std together")
    if mean is not None:
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"{key}: mean {list(mean)} and std {list(std)} must have the same length and std > 0")
        out = replace(out, mean=mean, std=std)
    if overrides.get("input_size") is not None:
        out = replace(out, size=_pair(overrides["input_size"]), resize=True)
    return out


def data_inputs(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The facts about the data that :func:`resolve_inputs` checks, from a shard manifest:
    ``value_max`` (``value_range[1]``; for manifests written before 0.3, 1 / the scale of their
    ``preprocess``, or 255), ``channels`` and ``size`` (H, W) of the first split, ``normalisation``
    (``{"mean", "std"}`` when the dataset's config gave one, else None), ``preprocess`` (the
    :class:`Preprocess` the manifest suggests for models trained on it, or None) and
    ``described`` (``"dataset digits (<dir>/manifest.json)"``, set by the caller)."""
    pre = manifest.get("preprocess")
    if manifest.get("value_range") is not None:
        value_max = float(manifest["value_range"][1])
    elif pre:
        value_max = float(round(1 / float(pre["scale"]), 6))
    else:
        value_max = 255.0
    split = next(iter(manifest.get("splits", {}).values()), {})
    shape = split.get("shape") or [None, None, None]
    norm = manifest.get("normalisation")
    return {
        "value_max": value_max,
        "channels": None if shape[0] is None else int(shape[0]),
        "size": None if shape[1] is None else (int(shape[1]), int(shape[2])),
        "normalisation": None if not norm else {"mean": tuple(norm["mean"]), "std": tuple(norm["std"])},
        "preprocess": Preprocess.from_dict(pre) if pre else None,
        "dataset": manifest.get("dataset", "?"),
    }


def _close(a: Sequence[float], b: Sequence[float], channels: int) -> bool:
    a = list(a) * (channels if len(a) == 1 else 1)
    b = list(b) * (channels if len(b) == 1 else 1)
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-7) for x, y in zip(a, b))


def _fmt(v) -> str:
    return "[" + ", ".join(f"{x:g}" for x in v) + "]"


def resolve_inputs(spec: InputSpec, preprocess: Preprocess | None, manifest: Mapping[str, Any], *,
                   data_described: str) -> Preprocess:  # fmt: skip
    """The preprocessing for a model with expectations ``spec`` (and its own ``preprocess``,
    if it has one) on the data of ``manifest``.

    Rules (each violation is an :class:`InputMismatchError`):

    - channels: the model's must equal the data's.
    - value range: the model's ``value_max`` must equal the data's (to 1e-6); the data's
      stored values are scaled by 1 / value_max into [0, 1] either way.
    - normalisation: the model's mean/std; when the model has none, the data's (its config's
      ``transform.mean/std``, else the mean/std the manifest suggests, else 0 and 1). When
      both the model and the dataset's config give one, they must agree.
    - size: data of the model's size pass as they are; data of another size are resized on
      the device when ``spec.resize``, else refused (the images must be decoded at the
      model's size).

    When everything agrees and the model has its own ``preprocess``, that object is returned
    unchanged (so the numbers are exactly those of earlier versions).

    Args:
        spec: the model's :class:`InputSpec`.
        preprocess: the model's own preprocessing (checkpoint, weights), or None.
        manifest: the shard manifest.
        data_described: the data for messages (dataset name and manifest path).

    Raises:
        InputMismatchError: see the rules; the message names the model (``spec.described``),
            the data and the remedy.
    """
    data = data_inputs(manifest)
    both = f"{spec.described} and the data, {data_described}"
    key = spec.remedy_key
    if spec.channels is not None and data["channels"] is not None and spec.channels != data["channels"]:
        raise InputMismatchError(
            f"{both}, disagree on channels: the model takes {spec.channels}-channel images, the data has "
            f"{data['channels']}. Remedy: decode the images with {spec.channels} channel(s) (dataset.channels: "
            f"{spec.channels} for an image folder), or give a model made for {data['channels']}-channel input."
        )
    if spec.value_max is not None and not math.isclose(spec.value_max, data["value_max"], rel_tol=1e-6):
        raise InputMismatchError(
            f"{both}, disagree on the value range: the model expects stored values in [0, {spec.value_max:g}] "
            f"(scaled by 1/{spec.value_max:g} to [0, 1]), the data holds values in [0, {data['value_max']:g}]; "
            f"evaluated as it is, every input would be {data['value_max'] / spec.value_max:.3g} times too "
            f"{'bright' if data['value_max'] > spec.value_max else 'dark'}. Remedy: if these images are the "
            f"model's kind of images stored on the 0..{data['value_max']:g} scale, say so with "
            f"{key}.value_range: [0, {data['value_max']:g}] (CLI: --value-range 0 {data['value_max']:g}); "
            f"otherwise convert the images to the range [0, {spec.value_max:g}]."
        )
    channels = data["channels"] or spec.channels or 1
    own = preprocess
    mean, std = spec.mean, spec.std
    given = data["normalisation"]
    if mean is not None and given is not None and not (
        _close(mean, given["mean"], channels) and _close(std, given["std"], channels)
    ):
        raise InputMismatchError(
            f"{both}, disagree on the normalisation: the model expects mean {_fmt(mean)} std {_fmt(std)}, the "
            f"dataset's transform gives mean {_fmt(given['mean'])} std {_fmt(given['std'])}. Remedy: delete "
            f"mean and std from dataset.transform (the model's are then used), or set {key}.mean / .std."
        )
    if mean is None:
        src = given or (data["preprocess"] and {"mean": data["preprocess"].mean, "std": data["preprocess"].std})
        mean, std = (tuple(src["mean"]), tuple(src["std"])) if src else ((0.0,), (1.0,))
    for name, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, channels):
            raise InputMismatchError(f"{both}: the {name} {_fmt(v)} has {len(v)} values for {channels}-channel images. "
                                     f"Remedy: give 1 or {channels} values in {key}.{name}.")  # fmt: skip
    target = None  # side of the on-device resize
    if spec.size is not None:
        h, w = spec.size
        if data["size"] is not None and (h, w) != tuple(data["size"]) and not spec.resize:
            scale = f"resize: {math.floor(h / spec.crop_pct)}, crop: {h}" if spec.crop_pct else f"crop: {h}"
            raise InputMismatchError(
                f"{both}, disagree on the image size: the model takes {h}x{w} images (decoded with its own "
                f"resize and centre crop), the data has {data['size'][0]}x{data['size'][1]}. Remedy: decode the "
                f"images at the model's size (dataset.transform: {{{scale}}} for an image folder), or set "
                f"{key}.input_size to resize them on the device instead."
            )
        if spec.resize and h == w:
            target = int(h)
        elif spec.resize and data["size"] is not None and (h, w) != tuple(data["size"]):
            raise InputMismatchError(f"{both}: the model's input size {h}x{w} is not square; the resize on the "
                                     f"device makes square inputs. Remedy: decode the images at {h}x{w}.")  # fmt: skip
    value_max = spec.value_max or data["value_max"]
    if (own is not None and math.isclose(own.scale * value_max, 1.0, rel_tol=1e-9) and tuple(own.mean) == tuple(mean)
            and tuple(own.std) == tuple(std) and own.size == target):  # fmt: skip
        return own  # the model's own object: the numbers of earlier versions, exactly
    return Preprocess(scale=1 / value_max, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                      size=target)
