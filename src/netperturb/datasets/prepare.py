"""Prepare a dataset from the options of ``datasets.<name>`` in the config (the preparers by name)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from netperturb.datasets.digits import prepare_digits
from netperturb.datasets.mnist import prepare_mnist

__all__ = ["PREPARERS", "INPUT_FOLDERS", "input_folder_problem", "prepare_dataset", "prepare_imagenet_dataset"]


def _prepare_digits(out_dir, options):
    return prepare_digits(
        out_dir,
        test_fraction=float(options.get("test_fraction", 0.3)),
        split_seed=int(options.get("split_seed", 0)),
    )


def _prepare_mnist(out_dir, options):
    if not options.get("root"):
        raise ValueError("datasets.mnist.root: the folder with the MNIST idx files is not set")
    return prepare_mnist(options["root"], out_dir, verify_checksums=bool(options.get("verify_checksums", True)))


#: Datasets prepared by the generic ``prepare_dataset`` rule: name -> f(out_dir, options).
PREPARERS = {"digits": _prepare_digits, "mnist": _prepare_mnist}


def prepare_dataset(name: str, out_dir: str | os.PathLike, options: Mapping[str, Any]) -> dict:
    """Decode dataset ``name`` into shards in ``out_dir`` (see :mod:`netperturb.datasets.shards`) with
    the options of ``datasets.<name>`` in the config.

    Raises:
        ValueError: unknown dataset name or a missing required option (names the key).
    """
    try:
        preparer = PREPARERS[name]
    except KeyError:
        raise ValueError(f"dataset: no preparation for dataset {name!r}; known: {', '.join(PREPARERS)}") from None
    return preparer(out_dir, options)


def prepare_imagenet_dataset(
    out_dir: str | os.PathLike, options: Mapping[str, Any], transform: Mapping[str, Any], *, threads: int = 1
) -> dict:
    """The ImageNet validation shards for one transform (:func:`netperturb.datasets.imagenet.prepare_imagenet`)
    with the options of ``datasets.imagenet`` in the config.

    Raises:
        FileNotFoundError: a configured input does not exist (names the key and path).
        netperturb.datasets.imagenet.ImageNetError: see :func:`~netperturb.datasets.imagenet.prepare_imagenet`.
    """
    from netperturb.datasets.imagenet import prepare_imagenet

    val_dir = options.get("val_dir")
    for key in (("val_dir",) if val_dir else ("val_tar", "devkit")):
        if not options.get(key):
            raise ValueError(f"datasets.imagenet.{key}: not set")
        if not os.path.exists(options[key]):
            raise FileNotFoundError(
                f"datasets.imagenet.{key}: {options[key]} does not exist (see docs/studies/cheney2017.md, 'The paper configuration (ImageNet)')"
            )
    devkit = options.get("devkit")
    if val_dir and devkit and not os.path.exists(devkit):
        devkit = None  # optional with val_dir: the folder names are the classes
    return prepare_imagenet(
        out_dir, transform, val_tar=None if val_dir else options["val_tar"], devkit=devkit, val_dir=val_dir,
        images_per_class=options.get("images_per_class"), shard_size=int(options.get("shard_size", 5000)),
        max_bad_fraction=float(options.get("max_bad_fraction", 0.001)), threads=threads,
        verify_checksums=bool(options.get("verify_checksums", True)), channels=int(options.get("channels", 3)),
    )  # fmt: skip


def _prepare_cifar10(out_dir, options):
    from netperturb.datasets.cifar10 import prepare_cifar10

    if not options.get("root"):
        raise ValueError("datasets.cifar10.root: the folder with cifar-10-batches-py/ or cifar-10-python.tar.gz is not set")
    return prepare_cifar10(options["root"], out_dir, verify_checksums=bool(options.get("verify_checksums", True)))


def _prepare_tiny_imagenet(out_dir, options):
    from netperturb.datasets.tiny_imagenet import prepare_tiny_imagenet

    if not options.get("root"):
        raise ValueError("datasets.tiny_imagenet.root: the tiny-imagenet-200 folder is not set")
    return prepare_tiny_imagenet(options["root"], out_dir, max_bad_fraction=float(options.get("max_bad_fraction", 0.0)))


# The datasets of Pravin et al. 2024 beyond MNIST.
PREPARERS.update({"cifar10": _prepare_cifar10, "tiny_imagenet": _prepare_tiny_imagenet})


#: Datasets prepared from a folder the user provides: name -> (its key under ``datasets.<name>``,
#: what the folder holds). Checked before any job (:func:`input_folder_problem`).
INPUT_FOLDERS = {
    "mnist": ("root", "the MNIST idx files (train-/t10k-images-idx3-ubyte and -labels-idx1-ubyte, .gz or not)"),
    "cifar10": ("root", "cifar-10-batches-py/ or cifar-10-python.tar.gz"),
    "tiny_imagenet": ("root", "tiny-imagenet-200 (or the folder that contains it)"),
}


def input_folder_problem(name: str, options: Mapping[str, Any], workdir: str | os.PathLike = ".") -> str | None:
    """Why dataset ``name`` cannot be prepared from ``options`` (``datasets.<name>`` of the
    config): its input folder (:data:`INPUT_FOLDERS`) is not set, does not exist or is not a
    folder; None when it can (or the dataset needs no folder: digits; ImageNet's archives are
    checked by its own job, so that a dry run plans the grid before they are in place).
    A relative path is relative to ``workdir``, the folder the workflow runs in."""
    if name not in INPUT_FOLDERS:
        return None
    key, holds = INPUT_FOLDERS[name]
    value = options.get(key)
    where = f"datasets.{name}.{key}"
    if not value:
        return (f"{where}: not set; dataset {name!r} is prepared from a folder with {holds}: set {where} to it "
                "(its shards, resources/data/" + name + "/shards, do not exist yet)")
    path = Path(workdir) / os.path.expanduser(str(value))
    if not path.exists():
        return (f"{where}: {value} does not exist (looked for {path}); it must be the folder with {holds}: "
                f"correct {where}, or put the files there")
    if not path.is_dir():
        return f"{where}: {value} is not a folder; it must be the folder with {holds}"
    return None
