"""``netperturb`` command line: inspect models and run single jobs without Snakemake.

    netperturb layers alexnet                 # perturbable layers, labels, following BN
    netperturb layers --source python --factory examples.mynet:make_mynet --kwarg in_channels=1 \
        --weights-file my.safetensors         # your own model (also --source timm / torchscript / exported)
    netperturb seed lenet5 features.0 synapse_knockout 0.5 0 --study-seed 2017
    netperturb perturb --checkpoint results/digits/models/lenet5.pt \
        --shards resources/data/digits/shards --layer features.0 \
        --perturbation synapse_knockout --levels 0 0.5 1 --repeats 2 --out cell.csv
    netperturb perturb --checkpoint resources/weights/alexnet-owt-7be5be79.pth --arch alexnet \
        --weights IMAGENET1K_V1 --shards resources/data/imagenet/resize256-crop224-bilinear/shards \
        --dataset imagenet --layer conv1 --perturbation node_knockout --levels 0.5 --repeats 1 --out cell.csv
    netperturb perturb --source exported --file m.pt2 --shards resources/data/mine-1a2b3c4d/shards \
        --layer conv1 --perturbation bit_flip --format int8 --levels 0 1e-3 --repeats 2 --out cell.csv
                                              # prints top-1, top-5, loss and sdc1, sdc5, due
    netperturb where --configfile config/config.yaml   # where the outputs of a study are
    netperturb check-config my_run.yaml      # the workflow's own check of the config, before any job

`netperturb perturb` uses one CPU thread unless --threads says more (as a workflow job uses
its rule's threads): torch's default of every core runs many times slower on a loaded machine.
    netperturb screenshots --configfile config/config.yaml   # PNGs of the index page and reports
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_layers(args: argparse.Namespace) -> int:
    from netperturb.cli_models import model_spec

    spec, _ = model_spec(args)
    if args.name and "arch" not in spec:
        spec["arch"] = args.name
    kind = spec.get("source") or ("torchvision" if spec.get("weights") else "netperturb")
    if kind in ("netperturb", "torchvision") and not spec.get("file") and not spec.get("weights_file"):
        from netperturb.models.select import model_layers

        if not spec.get("arch"):
            raise ValueError("give an architecture (netperturb layers alexnet) or a model (--source ...; see --help)")
        layers = model_layers(spec["arch"], num_classes=args.num_classes, in_channels=args.in_channels)
        _print_layers(layers)
        return 0
    from netperturb.core.layers import find_layers
    from netperturb.models.checkpoints import load_model
    from netperturb.models.sources import parse_model_spec

    planned = parse_model_spec("model", spec, num_classes=args.num_classes, in_channels=args.in_channels, key="--",
                               digest=False)  # fmt: skip
    example = (args.in_channels, args.input_size, args.input_size) if args.input_size else None
    loaded = load_model(planned.path, "cpu", planned.load, example_shape=example)
    layers = find_layers(loaded.model)
    covered = sum(math.prod(l.weight_shape) + (l.weight_shape[0] if l.has_bias else 0) for l in layers)
    total = sum(p.numel() for p in loaded.model.parameters())
    print(f"model: {kind} {planned.path} (arch {loaded.arch}, sha256 {loaded.meta.get('sha256', loaded.weights)})")
    if loaded.inputs is not None:
        print(f"expects: {loaded.inputs.to_dict()}")
    print(f"layers: {len(layers)}, {covered} of {total} parameters ({covered / max(total, 1):.1%}) perturbable")
    _print_layers(layers)
    return 0


def _print_layers(layers) -> None:
    print(f"{'index':>5}  {'label':<8} {'path':<32} {'kind':<7} {'weight shape':<20} bn")
    for l in layers:
        print(f"{l.index:>5}  {l.label:<8} {l.path:<32} {l.kind:<7} {str(l.weight_shape):<20} {l.bn or '-'}")


def _cmd_seed(args: argparse.Namespace) -> int:
    from netperturb.core.seeds import cell_seed

    print(cell_seed(args.study_seed, args.model, args.layer, args.perturbation, args.level, args.repeat))
    return 0


def _cmd_perturb(args: argparse.Namespace) -> int:
    from netperturb.cli_models import model_spec, perturbation_options
    from netperturb.core.context import RunContext

    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: torch's default, every core), got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    spec, checkpoint = model_spec(args)
    manifest = _manifest(args.shards)
    if spec.get("weights") and not spec.get("arch"):
        raise ValueError("--arch and --weights go together (a torchvision weights file)")
    if set(spec) <= {"source", "file"} and spec.get("source") == "netperturb":
        path, source = spec["file"], None  # a netperturb checkpoint, as before 0.3
    elif spec:
        from netperturb.models.sources import parse_model_spec

        n = int(manifest["num_classes"]) if manifest else 1000
        c = int(next(iter(manifest["splits"].values()))["shape"][0]) if manifest else 3
        planned = parse_model_spec(args.model or "model", spec, num_classes=n, in_channels=c, key="--", digest=False)
        path, source = planned.path, planned.load
    else:
        raise ValueError("give the model: --checkpoint, or --source with its options (see netperturb perturb --help)")
    name = args.model or Path(path).stem
    dataset = args.dataset or (manifest or {}).get("dataset") or "digits"
    ctx = RunContext(
        run=args.study, dataset=dataset, shard_dir=args.shards, model=name, model_file=path, source=source,
        split=args.split or _eval_split(manifest, dataset), study_seed=args.study_seed, batch_size=args.batch_size,
        device=args.device,
    )  # fmt: skip
    options = perturbation_options(args)
    from netperturb.perturb.faults import FAULTS

    if args.perturbation in FAULTS:  # a fault acts on the network stored in its format (its own reference)
        from netperturb.studies.faults import jobs as fault_jobs

        spec = {"fault": args.perturbation, "levels": list(args.levels), **options}
        df = fault_jobs.perturb_layer(ctx, args.out, layer=args.layer, variant=args.perturbation, spec=spec,
                                      repeats=args.repeats, engine=args.engine, max_replicas=args.max_replicas)  # fmt: skip
    else:
        from netperturb.studies.cheney2017 import jobs

        df = jobs.perturb_layer(ctx, args.out, layer=args.layer, perturbation=args.perturbation,
                                options={"levels": list(args.levels), **options}, repeats=args.repeats,
                                engine=args.engine, precision=args.precision, max_replicas=args.max_replicas)  # fmt: skip
    cols = [c for c in ("level", "repeat", "top1", "top5", "loss", "sdc1", "sdc5", "due") if c in df.columns]
    print(df[cols].to_string(index=False))
    return 0


def _manifest(shards) -> dict | None:
    from netperturb.datasets.shards import ShardError, read_manifest

    try:
        return read_manifest(shards)
    except ShardError:
        return None


def _eval_split(manifest: dict | None, dataset: str) -> str:
    """The evaluation split: the built-in dataset's, else ``test`` if the shards have it, else ``val``."""
    from netperturb.datasets.registry import DATASETS

    if dataset in DATASETS:
        return DATASETS[dataset]["eval_split"]
    splits = (manifest or {}).get("splits", {})
    return "test" if "test" in splits or not splits else ("val" if "val" in splits else next(iter(splits)))


def _cmd_where(args: argparse.Namespace) -> int:
    from netperturb.core.config import load_config_files
    from netperturb.studies import STUDIES

    cfg = load_config_files([args.configfile])  # names the file when it is not a mapping
    run = cfg.get("run", "digits")
    root = Path("results") / run
    print(f"\nrun {run!r}: outputs under {root}/")
    print(f"  {'ok ' if (root / 'index.html').exists() else 'missing'}  {root / 'index.html'}  (start here)")
    for study in cfg.get("studies", STUDIES[:1]):  # the schema default: [cheney2017]
        p = root / study / "report" / f"{study}.html"
        print(f"  {'ok ' if p.exists() else 'missing'}  {p}")
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from netperturb.core.config import parse_overrides
    from netperturb.runconfig import load_run_config

    run = load_run_config(args.configfiles, parse_overrides(args.config))
    cfg = run.config
    print(f"ok: {', '.join(run.files)}: run {cfg['run']!r}, studies {', '.join(cfg['studies'])}, "
          f"models {', '.join(cfg['models'])}; results/{cfg['run']}/")
    return 0


def _cmd_screenshots(args: argparse.Namespace) -> int:
    from netperturb.core.config import load_config_files
    from netperturb.core.report import take_screenshots
    from netperturb.studies import STUDIES

    cfg = load_config_files([args.configfile])
    root = Path("results") / cfg.get("run", "digits")
    pages = [root / "index.html"] + [root / s / "report" / f"{s}.html" for s in cfg.get("studies", STUDIES[:1])]
    missing = [str(p) for p in pages if not p.exists()]
    if missing:
        print(f"missing (run the workflow first): {', '.join(missing)}", file=sys.stderr)
        return 1
    for png in take_screenshots(pages, root / "screenshots"):
        print(png)
    return 0


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from netperturb import __version__
    from netperturb.cli_models import add_model_arguments, add_perturbation_arguments

    p = argparse.ArgumentParser(prog="netperturb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"netperturb {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("layers", help="list the perturbable layers of an architecture or of a model (any source)")
    s.add_argument("name", nargs="?", default=None, metavar="ARCH", help="an architecture name (or give --source ...)")
    s.add_argument("--num-classes", type=int, default=1000)
    s.add_argument("--in-channels", type=int, default=3)
    add_model_arguments(s, checkpoint=False)
    s.set_defaults(func=_cmd_layers)

    s = sub.add_parser("seed", help="the seed of one grid cell")
    s.add_argument("model")
    s.add_argument("layer")
    s.add_argument("perturbation")
    s.add_argument("level", type=float)
    s.add_argument("repeat", type=int)
    s.add_argument("--study-seed", type=int, default=2017)
    s.set_defaults(func=_cmd_seed)

    s = sub.add_parser("perturb", help="run one perturbation job (model x layer x perturbation)")
    add_model_arguments(s)
    add_perturbation_arguments(s)
    s.add_argument("--shards", required=True)
    s.add_argument("--layer", required=True)
    s.add_argument("--perturbation", required=True)
    s.add_argument("--levels", type=float, nargs="+", required=True)
    s.add_argument("--repeats", type=_positive, default=5)
    s.add_argument("--study-seed", type=int, default=2017)
    s.add_argument("--study", default="cli")
    s.add_argument("--dataset", default=None, help="the dataset column (default: the shards' dataset)")
    s.add_argument("--split", default=None, help="shard split (default: the dataset's evaluation split)")
    s.add_argument("--model", default=None)
    s.add_argument("--batch-size", type=_positive, default=256, help="images per forward pass (>= 1)")
    s.add_argument("--device", default="auto")
    s.add_argument("--engine", default="fast", choices=["fast", "functional", "naive"])
    s.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    s.add_argument("--max-replicas", type=_positive, default=16, help="perturbed copies per call (fast engine, >= 1)")
    s.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1, like a workflow job with threads: 1; 0: torch's default, every core)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_cmd_perturb)

    s = sub.add_parser(
        "check-config",
        help="check a config exactly as the workflow does before any job (the same code: netperturb.runconfig)",
        description="Check config files (later ones update earlier ones, as with snakemake --configfile A B; "
                    "none: config/config.yaml) and --config overrides exactly as the workflow does before any job: "
                    "strict YAML, names, config/schema.yaml with its defaults, the datasets' input folders, every "
                    "study's plan, another config's outputs in results/<run>/. Run it in the folder the workflow runs in.",
    )  # fmt: skip
    s.add_argument("configfiles", nargs="*")
    s.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides, as snakemake --config (VALUE read as in a config file)")
    s.set_defaults(func=_cmd_check_config)

    s = sub.add_parser("where", help="print where a study's outputs are")
    s.add_argument("--configfile", default="config/config.yaml")
    s.set_defaults(func=_cmd_where)

    s = sub.add_parser("screenshots", help="headless-Chromium PNGs of a run's index page and reports (results/<run>/screenshots/)")
    s.add_argument("--configfile", default="config/config.yaml")
    s.set_defaults(func=_cmd_screenshots)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, RuntimeError) as e:  # ConfigError, ShardError, MergeError, a full disk: one line
        print(f"netperturb: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
