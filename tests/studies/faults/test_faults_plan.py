"""The fault study's plan (netperturb.studies.faults.plan): variants, references, one job per
model x layer x variant, and config errors that name the key and the allowed values."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from netperturb.core.config import ConfigError, config_errors
from netperturb.studies.faults.plan import plan_faults, reference_name, reference_options

REPO = Path(__file__).resolve().parents[3]
SCHEMA = str(REPO / "config" / "schema.yaml")


@pytest.fixture
def config():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(cfg, SCHEMA)  # fills the defaults
    return cfg


def test_default_plan(config):
    plan = plan_faults(config, num_classes=10, in_channels=1)
    assert list(plan.layers) == ["alexnet_digits"] and len(plan.layers["alexnet_digits"]) == 8
    assert plan.references() == ["fp32", "int8_channel"]
    v = plan.variants["fp32_word"]
    assert v.levels[0] == 0 and v.levels[-1] == pytest.approx(1e-2) and v.target == "weights"
    assert plan.variants["activation_word"].target == "activations"
    # the default run counts bits binomially (the field's bit error rate), 10 repeats per cell
    assert {v.count for v in plan.variants.values()} == {"binomial"} and config["faults"]["repeats"] == 10
    assert config["faults"]["max_replicas"] is None  # K from the engine's cost model
    tables = plan.job_tables("results/digits/faults")
    assert len(tables) == len(set(tables)) == len(plan.variants)  # every layer in one job per variant
    paths = [la.path for la in plan.layers["alexnet_digits"]]
    cells = plan.job_cells("r", 10)["r/runs/alexnet_digits/fp32_mantissa/layers_1of1.csv"]
    assert cells == [[p, lv, r] for p in paths for lv in (0.0, 1e-3) for r in range(10)]
    assert plan.baseline_tables("r") == ["r/baseline/alexnet_digits/fp32.csv", "r/baseline/alexnet_digits/int8_channel.csv"]


def test_paper_config_plans(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "faults-imagenet.yaml").read_text())
    validate(cfg, SCHEMA)
    plan = plan_faults(cfg, num_classes=1000, in_channels=3)
    assert {m: len(l) for m, l in plan.layers.items()} == {"alexnet": 8, "resnet50": 54}
    assert len(plan.parts["resnet50"]) == 54  # layers_per_job: 1, one GPU job per layer
    assert set(plan.references()) == {"fp32", "bf16", "int8_channel"}


def test_reference_names_round_trip():
    for opts in ({"format": "int8", "granularity": "tensor"}, {"format": "bf16", "include_bias": True}, {}):
        name = reference_name("bit_flip", opts)
        back = reference_options(name)
        assert back["format"] == opts.get("format", "fp32")
        assert back["include_bias"] == opts.get("include_bias", False)
    assert reference_name("activation_bit_flip", {}) == "fp32" == reference_name("multiplicative_noise", {})


@pytest.mark.parametrize("spec,message", [
    ({"fault": "bit_flip", "format": "int4", "levels": [0, 0.1]},
     "faults.perturbations.bad.format: 'int4' is not a format; allowed: fp32, fp16, bf16, int8"),
    ({"fault": "bit_flip", "format": "fp16", "bits": [20], "levels": [0, 0.1]},
     "faults.perturbations.bad.bits: bit index 20 is outside 0..15 for fp16; allowed: all, sign, exponent, mantissa"),
    ({"fault": "bit_flip", "format": "int8", "bits": "exponent", "levels": [0, 0.1]},
     "faults.perturbations.bad.bits: int8 has no exponent bits; allowed for int8: all, sign"),
    ({"fault": "bit_flip", "levels": [0, 1.5]},
     "faults.perturbations.bad.levels: 1.5 is outside the allowed range [0, 1] of bit_flip"),
    ({"fault": "multiplicative_noise", "format": "int8", "levels": [0, 0.1]},
     "faults.perturbations.bad: multiplicative_noise does not take these options"),
    ({"fault": "activation_bit_flip", "format": "int8", "levels": [0, 0.1]},
     "faults.perturbations.bad.format: 'int8'; allowed for activation faults: fp32"),
    ({"fault": "stuck_at", "count": "poisson", "levels": [0, 0.1]},
     "faults.perturbations.bad.count: 'poisson' unknown; allowed: binomial, exact"),
])  # fmt: skip
def test_bad_variants_name_the_key(config, spec, message):
    cfg = copy.deepcopy(config)
    cfg["faults"]["perturbations"]["bad"] = spec
    with pytest.raises(ConfigError) as e:
        plan_faults(cfg, num_classes=10, in_channels=1)
    assert message in str(e.value)


def test_schema_names_the_key_for_bad_formats_bits_and_rates(config):
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["faults"]["perturbations"]["x"] = {"fault": "bit_flip", "format": "int4", "bits": [40], "levels": [0, 2.0]}
    lines = "\n".join(config_errors(raw, SCHEMA))
    assert "faults.perturbations.x.format: 'int4' is not one of ['fp32', 'fp16', 'bf16', 'int8']" in lines
    assert "faults.perturbations.x.bits" in lines
    assert "faults.perturbations.x.levels" in lines


def test_unknown_model_and_compare_rate(config):
    cfg = copy.deepcopy(config)
    cfg["faults"]["models"] = ["vgg"]
    with pytest.raises(ConfigError, match="faults.models: 'vgg' is not a key of models"):
        plan_faults(cfg, num_classes=10, in_channels=1)
    cfg = copy.deepcopy(config)
    cfg["faults"]["report"]["compare_rate"] = 0.5
    with pytest.raises(ConfigError, match="faults.report.compare_rate"):
        plan_faults(cfg, num_classes=10, in_channels=1)
