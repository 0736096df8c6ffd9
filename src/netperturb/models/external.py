"""Models given as files, never trained by the workflow: a timm architecture with a local
weights file, a user's own ``nn.Module`` factory with a ``state_dict`` (``.pt`` or
``.safetensors``), a TorchScript file and a ``torch.export`` program (``.pt2``).

Each is loaded into a :class:`~netperturb.models.loaded.LoadedModel` whose ``weights`` is the
first 12 hex digits of the file's sha256 and whose ``inputs``
(:class:`~netperturb.models.expects.InputSpec`) says what input the model expects: for timm
the model's pretrained config (``timm.data.resolve_data_config``: mean, std, input size,
crop fraction, 8-bit images); for the others what ``models.<name>.preprocess`` declares (else
the data's own range and normalisation are used). TorchScript and exported programs become
plain ``torch.fx`` graphs with real layer modules (:func:`netperturb.models.graphs.modularise`),
so every engine and every perturbation applies to them as to any ``nn.Module``.

A *spec* here is the dict :func:`netperturb.models.sources.parse_model_spec` makes of a
``models.<name>`` entry of the config or of the command line's model options.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from netperturb.core.layers import LayerInfo, find_layers
from netperturb.core.preprocess import Preprocess
from netperturb.models.digests import check_unchanged
from netperturb.models.expects import InputSpec, apply_overrides
from netperturb.models.loaded import LoadedModel

__all__ = [
    "FILE_SOURCES", "ModelFileError", "sniff_model_file", "looks_like", "import_factory", "build_module", "read_state_dict",
    "load_external", "external_layers", "first_conv_channels",
]  # fmt: skip

log = logging.getLogger("netperturb")

#: Sources whose model is given as a file (never trained here).
FILE_SOURCES = ("timm", "python", "torchscript", "exported")

_HINT = {
    "torchscript": "a TorchScript file (source: torchscript)",
    "exported": "a torch.export program (source: exported)",
    "netperturb": "a netperturb checkpoint (source: netperturb with file:, or --checkpoint)",
    "state_dict": "a state_dict (source: python with factory:, or source: timm with arch:)",
    "safetensors": "a safetensors state_dict (source: python with factory:, or source: timm with arch:)",
}


class ModelFileError(ValueError):
    """A model file that is not what its source says, or that does not fit the model."""


def _k(spec: Mapping[str, Any], field: str) -> str:
    """How messages name a field of the spec: ``models.<name>.<field>`` or ``--<field>``."""
    key = spec.get("key", "model")
    return f"--{field.replace('_', '-')}" if key == "--" else f"{key}.{field}"


def sniff_model_file(path: str | os.PathLike) -> str | None:
    """What kind of model file ``path`` is, by its content: ``"torchscript"``, ``"exported"``,
    ``"safetensors"``, ``"netperturb"`` (a netperturb checkpoint), ``"state_dict"`` (a
    ``torch.save``-d mapping of tensors) or None (unknown / unreadable)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            names = zipfile.ZipFile(path).namelist()
            if any("/code/" in n for n in names):
                return "torchscript"
            if any(n.endswith(("/archive_format", "/models/model.json")) or n == "archive_format" for n in names):
                return "exported"
        else:
            with open(path, "rb") as f:
                head = f.read(16)
            if len(head) >= 9 and head[8:9] == b"{":
                return "safetensors"
            return None
        obj = torch.load(path, map_location="meta", weights_only=True)
    except Exception:
        return None
    if isinstance(obj, Mapping) and obj.get("format", "").startswith("netperturb-checkpoint"):
        return "netperturb"
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in _unwrap(obj).values()):
        return "state_dict"
    return None


def looks_like(path: str | os.PathLike) -> str | None:
    """What a model file looks like, for messages (``"a TorchScript file (source:
    torchscript)"``), or None when :func:`sniff_model_file` cannot tell."""
    return _HINT.get(sniff_model_file(path))


def _hint(path: str | os.PathLike) -> str:
    what = looks_like(path)
    return f" (the file looks like {what})" if what else ""


def import_factory(ref: str, key: str = "factory") -> Callable[..., nn.Module]:
    """The callable ``ref`` names: ``"package.module:function"`` (imported as Python imports it,
    the current folder first on the path) or ``"path/to/file.py:function"``.

    Raises:
        ModelFileError: a malformed reference, a module or file that cannot be imported, or no
            such callable (names ``key`` and what was tried).
    """
    mod_name, sep, attr = str(ref).partition(":")
    if not sep or not mod_name or not attr:
        raise ModelFileError(f"{key}: {ref!r} is not 'package.module:function' or 'path/to/file.py:function'")
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            file = Path(mod_name)
            if not file.is_file():
                raise ModelFileError(f"{key}: {file} does not exist")
            spec = importlib.util.spec_from_file_location(f"netperturb_user_{file.stem}", file.resolve())
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            cwd = os.getcwd()
            added = cwd not in sys.path
            if added:
                sys.path.insert(0, cwd)
            try:
                module = importlib.import_module(mod_name)
            finally:
                if added:
                    sys.path.remove(cwd)
    except ModelFileError:
        raise
    except Exception as e:
        raise ModelFileError(f"{key}: cannot import {mod_name!r} ({type(e).__name__}: {e}); the module must be "
                             f"importable from {os.getcwd()} or given as a path to its .py file") from None  # fmt: skip
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelFileError(f"{key}: {mod_name} has no callable {attr!r}")
    return fn


def build_module(spec: Mapping[str, Any], *, device: str | torch.device = "cpu") -> nn.Module:
    """The randomly initialised network of a ``python`` or ``timm`` spec on ``device`` (``"meta"``:
    structure only, for listing layers when the workflow plans the jobs).

    ``python``: ``factory(**kwargs)``. ``timm``: ``timm.create_model(arch, pretrained=False,
    num_classes=<the dataset's>, in_chans=<its channels>, **kwargs)`` (kwargs win).

    Raises:
        ModelFileError: the factory fails or does not return an ``nn.Module``; timm is not
            installed or does not know the architecture.
    """
    source = spec["source"]
    with torch.device(device):
        if source == "python":
            fn = import_factory(spec["factory"], _k(spec, "factory"))
            try:
                model = fn(**dict(spec.get("kwargs") or {}))
            except Exception as e:
                raise ModelFileError(f"{_k(spec, 'factory')}: {spec['factory']}(**{dict(spec.get('kwargs') or {})}) "
                                     f"failed: {type(e).__name__}: {e}") from None  # fmt: skip
        elif source == "timm":
            try:
                import timm
            except ImportError:
                raise ModelFileError(f"{_k(spec, 'source')}: timm is not installed (pip install timm)") from None
            kwargs = {"num_classes": spec.get("num_classes"), "in_chans": spec.get("in_channels")}
            kwargs = {k: v for k, v in kwargs.items() if v is not None} | dict(spec.get("kwargs") or {})
            try:
                model = timm.create_model(spec["arch"], pretrained=False, **kwargs)
            except Exception as e:
                raise ModelFileError(f"{_k(spec, 'arch')}: timm cannot build {spec['arch']!r} "
                                     f"({type(e).__name__}: {e})") from None  # fmt: skip
        else:
            raise ValueError(f"build_module: source {source!r} is not built from code")
    if not isinstance(model, nn.Module):
        raise ModelFileError(f"{_k(spec, 'factory')}: {spec.get('factory')} returned {type(model).__name__}, not an nn.Module")
    return model


def _unwrap(obj: Mapping) -> Mapping:
    """A checkpoint's state_dict: ``obj`` itself, or its ``state_dict`` / ``model_state_dict`` /
    ``model`` / ``state_dict_ema`` entry when that is the only mapping of tensors in it."""
    for k in ("state_dict", "model_state_dict", "model", "state_dict_ema"):
        inner = obj.get(k)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
            return inner
    return obj


def read_state_dict(path: str | os.PathLike, key: str = "weights_file") -> dict[str, Tensor]:
    """The tensors of a ``state_dict`` file: ``.safetensors`` (``safetensors.torch.load_file``)
    or a ``torch.save`` file read with ``weights_only=True`` (a plain ``{name: tensor}`` mapping,
    or a checkpoint dict holding one under ``state_dict`` / ``model_state_dict`` / ``model``).
    A ``module.`` prefix on every name (``DataParallel``) is removed.

    Raises:
        FileNotFoundError: no such file (names ``key``).
        ModelFileError: not a state_dict; the message says what the file looks like.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {path} does not exist")
    try:
        if path.suffix == ".safetensors" or sniff_model_file(path) == "safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(f"{key}: {path} is not a state_dict ({type(e).__name__}: {str(e)[:200]}){_hint(path)}") from None
    if not isinstance(state, Mapping):
        raise ModelFileError(f"{key}: {path} holds a {type(state).__name__}, not a state_dict{_hint(path)}")
    state = _unwrap(state)
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelFileError(f"{key}: {path} is not a mapping of tensor names to tensors{_hint(path)}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _load_weights(model: nn.Module, path, spec) -> None:
    key = _k(spec, "weights_file")
    state = read_state_dict(path, key)
    what = spec.get("factory") or spec.get("arch")
    remedy = "Remedy: give the factory / architecture (and kwargs) the weights were saved from."
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensors of other shapes
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        raise ModelFileError(f"{key}: {path} does not fit {what}: {'; '.join(lines[:3])}"
                             f"{' ...' if len(lines) > 3 else ''} ({len(lines)} tensors). {remedy}") from None  # fmt: skip
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ModelFileError(
            f"{key}: {path} does not fit {what}: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {result.unexpected_keys[:5]}{' ...' if len(result.unexpected_keys) > 5 else ''} "
            f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected of {len(state)}). {remedy}"
        )


def first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the first convolution (in module order), or None."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            return int(m.in_channels)
    return None


def _torchscript(path: Path, spec, example_shape) -> tuple[nn.Module, str]:
    key = _k(spec, "file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise ModelFileError(f"{key}: {path} is not a TorchScript file ({type(e).__name__}: {str(e)[:200]})"
                                 f"{_hint(path)}") from None  # fmt: skip
    arch = getattr(scripted, "original_name", "torchscript")
    if example_shape is None:
        return _skeleton(scripted), arch
    from torch._export.converter import TS2EPConverter

    from netperturb.models.graphs import modularise

    example = torch.zeros(2, *example_shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = TS2EPConverter(scripted, (example,)).convert().module()
    except Exception as e:
        raise ModelFileError(
            f"{key}: {path}: the TorchScript graph could not be converted for evaluation on {tuple(example.shape)} "
            f"inputs ({type(e).__name__}: {str(e)[:300]}). Remedy: give the model as a torch.export program "
            "(source: exported) or as its Python factory and state_dict (source: python)."
        ) from None
    return modularise(gm, order=list(scripted.state_dict())), arch


_SCRIPTED = {"Conv1d": nn.Conv1d, "Conv2d": nn.Conv2d, "Conv3d": nn.Conv3d, "Linear": nn.Linear,
             "BatchNorm1d": nn.BatchNorm1d, "BatchNorm2d": nn.BatchNorm2d, "BatchNorm3d": nn.BatchNorm3d}  # fmt: skip


def _skeleton(scripted) -> nn.Module:
    """A meta-device module tree with the TorchScript file's paths and layer modules (right
    weight shapes), for listing its layers without converting it."""
    root = nn.Module()
    for path, sub in scripted.named_modules():
        if not path:
            continue
        parent, _, name = path.rpartition(".")
        cls = _SCRIPTED.get(getattr(sub, "original_name", ""))
        if cls is None:
            mod = nn.Module()
        elif cls is nn.Linear:
            w = sub.weight
            mod = nn.Linear(w.shape[1], w.shape[0], bias=getattr(sub, "bias", None) is not None, device="meta")
        elif cls.__name__.startswith("Conv"):
            w = sub.weight
            groups = int(getattr(sub, "groups", 1))
            mod = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), groups=groups,
                      bias=getattr(sub, "bias", None) is not None, device="meta")  # fmt: skip
        else:
            n = int(sub.running_mean.shape[0]) if getattr(sub, "running_mean", None) is not None else int(sub.weight.shape[0])
            mod = cls(n, affine=getattr(sub, "weight", None) is not None, device="meta")
        (root.get_submodule(parent) if parent else root).add_module(name, mod)
    return root


def _exported(path: Path, spec) -> tuple[nn.Module, str]:
    from netperturb.models.graphs import drop_guards, modularise

    key = _k(spec, "file")
    try:
        ep = torch.export.load(str(path))
    except Exception as e:
        raise ModelFileError(f"{key}: {path} is not a torch.export program ({type(e).__name__}: {str(e)[:200]})"
                             f"{_hint(path)}") from None  # fmt: skip
    inputs = [n for n in ep.graph_module.graph.nodes if n.op == "placeholder" and n.name in set(ep.graph_signature.user_inputs)]
    val = inputs[0].meta.get("val") if len(inputs) == 1 else None
    gm = ep.module()
    if val is not None and isinstance(val.shape[0], int):
        # exported with a fixed batch size: export it again with a free batch dimension
        example = (ep.example_inputs[0] if getattr(ep, "example_inputs", None) else None) or (torch.zeros(tuple(val.shape), dtype=val.dtype),)
        example = tuple(torch.cat([e, e]) if e.shape[0] == 1 else e for e in example)
        drop_guards(gm.graph)
        gm.recompile()
        try:  # and check that it runs on another batch size
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = torch.export.export(gm, example, dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()
                with torch.no_grad():
                    gm(*(torch.cat([e, e[:1]]) for e in example))
            ok = True
        except Exception:
            ok = False
        if not ok:
            raise ModelFileError(
                f"{key}: {path} was exported for batches of exactly {val.shape[0]} images and its graph does not "
                "work for other batch sizes. Remedy: export it with a free batch dimension: torch.export.export("
                "model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))."
            )
    return modularise(gm), path.stem


def load_external(
    path: str | os.PathLike,
    spec: Mapping[str, Any],
    device: torch.device | str = "cpu",
    *,
    example_shape: tuple[int, ...] | None = None,
) -> LoadedModel:
    """Load a model given as a file, in eval mode with ``requires_grad`` off, on ``device``.

    Args:
        path: the weights file (``timm``, ``python``) or the model file (``torchscript``,
            ``exported``).
        spec: the parsed model spec (``source``, and ``factory``/``kwargs``, ``arch``,
            ``sha256`` planned, ``preprocess`` overrides, ``key`` for messages).
        example_shape: (C, H, W) of the model's input; needed to convert a TorchScript file
            (without it, a TorchScript model is a meta-device skeleton, enough to list layers).

    Returns:
        :class:`LoadedModel` with ``weights`` = the file's sha256[:12], ``meta`` holding the
        source, file, full sha256 and the expected input, ``inputs`` the :class:`InputSpec`.

    Raises:
        FileNotFoundError: no such file.
        netperturb.models.digests.FileChangedError: the file's sha256 differs from the one planned.
        ModelFileError: the file is not what the source says, or does not fit the model.
    """
    source = spec["source"]
    if source not in FILE_SOURCES:
        raise ValueError(f"load_external: source {source!r} is not one of {', '.join(FILE_SOURCES)}")
    path = Path(path)
    key = _k(spec, "weights_file" if source in ("timm", "python") else "file")
    digest = check_unchanged(path, spec.get("sha256"), key)
    crop_pct = None
    if source in ("timm", "python"):
        model = build_module(spec)
        _load_weights(model, path, spec)
        arch = spec.get("arch") or type(model).__name__
    elif source == "torchscript":
        model, arch = _torchscript(path, spec, example_shape)
        arch = spec.get("arch") or arch
    else:
        model, arch = _exported(path, spec)
        arch = spec.get("arch") or arch
    key_name = str(spec.get("key", ""))
    inputs = InputSpec(channels=first_conv_channels(model), described=_described(spec, path),
                       remedy_key=f"{key_name}.preprocess" if key_name.startswith("models.") else "models.<name>.preprocess")  # fmt: skip
    if source == "timm":
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=model)
        c, h, w = cfg["input_size"]
        crop_pct = float(cfg.get("crop_pct") or 1.0)
        mean, std = tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
        if inputs.channels == 1 and len(mean) > 1:  # in_chans=1 (timm sums the stem over RGB): one gray channel
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        inputs = InputSpec(value_max=255.0, mean=mean, std=std, size=(h, w), resize=False,
                           channels=inputs.channels or c, described=inputs.described, remedy_key=inputs.remedy_key,
                           crop_pct=crop_pct)  # fmt: skip
    inputs = apply_overrides(inputs, spec.get("preprocess"))
    if any(p.device.type != "meta" for p in model.parameters()):
        model.to(device)
    model.eval().requires_grad_(False)
    pre = Preprocess(scale=1 / (inputs.value_max or 255.0), mean=inputs.mean or (0.0,), std=inputs.std or (1.0,),
                     size=inputs.size[0] if inputs.size and inputs.resize and inputs.size[0] == inputs.size[1] else None)  # fmt: skip
    return LoadedModel(
        model=model, preprocess=pre, arch=arch, weights=digest[:12],
        meta={"source": source, "file": str(path), "sha256": digest, "inputs": inputs.to_dict(),
              **({"factory": spec["factory"]} if source == "python" else {}),
              **({"timm_arch": spec["arch"], "crop_pct": crop_pct} if source == "timm" else {})},
        inputs=inputs,
    )  # fmt: skip


def _described(spec: Mapping[str, Any], path) -> str:
    key = str(spec.get("key", ""))
    who = f"model {key[len('models.'):]}" if key.startswith("models.") else "the model"
    return f"{who} (source {spec['source']}, {path})"


def external_layers(spec: Mapping[str, Any], path: str | os.PathLike | None) -> list[LayerInfo]:
    """The perturbable layers of a model given as a file, as the jobs will see them, without
    its weights where that is possible: ``python`` and ``timm`` are built on the meta device,
    a TorchScript file's module tree is read (not converted), an exported program is loaded.

    Raises:
        FileNotFoundError, ModelFileError: as :func:`load_external`.
    """
    source = spec["source"]
    if source in ("python", "timm"):
        return find_layers(build_module(spec, device="meta"))
    key = _k(spec, "file")
    if path is None or not os.path.exists(path):
        raise FileNotFoundError(f"{key}: {path} does not exist")
    if source == "torchscript":
        return find_layers(_torchscript(Path(path), spec, None)[0])
    return find_layers(_exported(Path(path), spec)[0])
