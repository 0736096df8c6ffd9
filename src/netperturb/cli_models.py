"""The command line's model and perturbation options: the same model specs as the config's
``models.<name>`` (:func:`netperturb.models.sources.parse_model_spec`), and a perturbation's
options (``--option key=value`` or ``--format`` / ``--bits`` / ``--granularity`` / ...).

    netperturb layers --source python --factory examples.mynet:make_mynet --weights-file my.safetensors
    netperturb layers --source torchscript --file m.pt
    netperturb layers --source timm --arch resnet18 --weights-file resnet18.safetensors
    netperturb layers --model-spec mynet.yaml        # a YAML mapping, as under models.<name>
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_model_arguments", "model_spec", "add_perturbation_arguments", "perturbation_options"]

_SPEC_KEYS = ("source", "arch", "weights", "weights_file", "file", "factory")


def add_model_arguments(p: argparse.ArgumentParser, *, checkpoint: bool = True) -> None:
    """The options that give a model, as ``models.<name>`` does in the config."""
    g = p.add_argument_group("model (as models.<name> in the config)")
    if checkpoint:
        g.add_argument("--checkpoint", default=None,
                       help="a netperturb checkpoint, or with --arch/--weights a torchvision weights file")  # fmt: skip
    g.add_argument("--source", default=None, choices=["netperturb", "torchvision", "timm", "python", "torchscript", "exported"],
                   help="where the model comes from (default: torchvision with --weights, else netperturb)")  # fmt: skip
    g.add_argument("--arch", default=None, help="architecture (netperturb / torchvision / timm name)")
    g.add_argument("--weights", default=None, help="torchvision weights name (e.g. IMAGENET1K_V1)")
    g.add_argument("--weights-file", default=None, help="state_dict file (.pt, .pth, .safetensors) for timm / python")
    g.add_argument("--file", default=None, help="model file: TorchScript (torchscript) or torch.export .pt2 (exported)")
    g.add_argument("--factory", default=None, help="python: 'package.module:function' or 'file.py:function'")
    g.add_argument("--kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the factory / timm.create_model (repeatable; VALUE is YAML)")  # fmt: skip
    g.add_argument("--model-spec", default=None, metavar="YAML",
                   help="a YAML file holding one model's mapping, as under models.<name>")  # fmt: skip
    g.add_argument("--value-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="the stored values the model expects, [0, HI] (preprocess.value_range)")  # fmt: skip
    g.add_argument("--mean", type=float, nargs="+", default=None, help="per-channel mean the model expects")
    g.add_argument("--std", type=float, nargs="+", default=None, help="per-channel std the model expects")
    g.add_argument("--input-size", type=int, default=None, help="the model's input side; other sizes are resized to it")


def _yaml(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _pairs(items: list[str], flag: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: give KEY=VALUE")
        out[key.strip().replace("-", "_")] = _yaml(value)
    return out


def model_spec(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """The model mapping the options give (``--model-spec`` first, options on top) and the
    ``--checkpoint`` path, if any.

    Raises:
        ValueError: an unreadable ``--model-spec``, a malformed ``--kwarg``.
    """
    spec: dict[str, Any] = {}
    if getattr(args, "model_spec", None):
        from netperturb.core.config import load_config_file

        loaded = load_config_file(args.model_spec)
        if not isinstance(loaded, dict):
            raise ValueError(f"--model-spec {args.model_spec}: expected a mapping (the keys of models.<name>)")
        spec.update(loaded)
    for k in _SPEC_KEYS:
        if getattr(args, k, None) is not None:
            spec[k] = getattr(args, k)
    if args.kwarg:
        spec["kwargs"] = {**spec.get("kwargs", {}), **_pairs(args.kwarg, "--kwarg")}
    pre = dict(spec.get("preprocess") or {})
    if args.value_range is not None:
        pre["value_range"] = list(args.value_range)
    if args.mean is not None:
        pre["mean"] = list(args.mean)
    if args.std is not None:
        pre["std"] = list(args.std)
    if args.input_size is not None:
        pre["input_size"] = int(args.input_size)
    if pre:
        spec["preprocess"] = pre
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint and spec.get("weights"):  # a torchvision weights file (as before 0.3)
        spec.setdefault("weights_file", checkpoint)
        checkpoint = None
    elif checkpoint and not spec.get("source"):
        spec.setdefault("source", "netperturb")
        spec["file"] = checkpoint
    return spec, checkpoint


def add_perturbation_arguments(p: argparse.ArgumentParser) -> None:
    """A perturbation's options: ``--option KEY=VALUE`` (repeatable) or the explicit flags."""
    g = p.add_argument_group("perturbation options (as in the config)")
    g.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the perturbation, e.g. format=int8 (repeatable; VALUE is YAML)")  # fmt: skip
    g.add_argument("--format", default=None, help="storage format of bit faults: fp32, fp16, bf16, int8")
    g.add_argument("--bits", default=None, help="eligible bits: all, sign, exponent, mantissa, or indices 0,1,30")
    g.add_argument("--granularity", default=None, help="int8 scale per tensor or channel")
    g.add_argument("--count", default=None, help="how many bits flip at a rate (binomial or exact), if the fault takes it")
    g.add_argument("--value", type=int, default=None, help="stuck-at value 0 or 1")
    g.add_argument("--transient", default=None, choices=["true", "false"], help="activation faults: per image or per cell")
    g.add_argument("--include-bias", default=None, choices=["true", "false"], help="perturb biases too")
    g.add_argument("--bn-aware", default=None, choices=["true", "false"], help="node knockout zeroes the following BatchNorm")


def perturbation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``--option`` and the explicit flags, as the config's mapping.

    Raises:
        ValueError: a malformed ``--option``.
    """
    opts = _pairs(args.option, "--option")
    for k in ("format", "granularity", "count", "value"):
        if getattr(args, k) is not None:
            opts[k] = getattr(args, k)
    if args.bits is not None:
        opts["bits"] = args.bits if args.bits in ("all", "sign", "exponent", "mantissa") else [
            int(b) for b in str(args.bits).split(",")]  # fmt: skip
    for k in ("transient", "include_bias", "bn_aware"):
        if getattr(args, k) is not None:
            opts[k] = getattr(args, k) == "true"
    return opts

