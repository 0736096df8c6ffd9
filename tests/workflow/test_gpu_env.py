"""With --sdm conda, every rule whose jobs ask for a GPU runs in the CUDA env (issue 27). Before:
only the cheney2017 and faults rules followed `gpu_env`; the pravin2024 rules with `gpu: 1` in
config/pravin2024-mnist.yaml got the CPU env, whose PyTorch would run them on the node's CPU
(device: auto) without a word, and none got it unless `gpu_env: true` was set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PAPER = ["cheney2017-imagenet.yaml", "faults-imagenet.yaml", "pravin2024-mnist.yaml", "shen2021-mnist.yaml"]

# rule -> [its conda env file, the gpu its jobs ask for], as the workflow plans them for a config
# (Snakemake's API, as tests/workflow/test_slurm.py does: the CLI's --list-conda-envs needs conda)
_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(ResourceSettings(), ConfigSettings(configfiles=[Path(sys.argv[1])]), snakefile=Path(sys.argv[2]))
    out = {}
    for r in wf._workflow.rules:
        if r.norun:
            continue
        gpu = getattr(r.resources["gpu"], "value", None) if "gpu" in r.resources else 0
        out[r.name] = [Path(str(r.conda_env)).name, gpu if isinstance(gpu, int) else None]
    print(json.dumps(out))
"""


def _rules(workdir: Path, config: dict) -> dict[str, list]:
    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    r = subprocess.run([sys.executable, "-c", _RULES, str(workdir / "c.yaml"), str(REPO / "Snakefile")], cwd=workdir,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.workflow
@pytest.mark.parametrize("name", PAPER)
def test_every_rule_that_asks_for_a_gpu_gets_the_cuda_env(tmp_path, name):
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    for opts in cfg.get("datasets", {}).values():  # the dataset folders must exist: empty ones stand for them
        if "root" in opts:
            opts["root"] = str(tmp_path)
    rules = _rules(tmp_path, cfg)
    asking = {r for r, (_, gpu) in rules.items() if gpu and gpu >= 1}
    # shen2021's jobs are LeNet-5 on MNIST, small: its config asks for no GPU (nothing to check but the CPU env)
    assert bool(asking) == (name != "shen2021-mnist.yaml"), (name, asking)
    wrong = {r: env for r, (env, gpu) in rules.items() if r in asking and env != "netperturb-gpu.yaml"}
    assert not wrong, f"{name}: rules that ask for a GPU in the CPU env: {wrong}"
    # and nothing else: the rules without a GPU keep the CPU env (gpu_env is not set in the paper configs)
    assert not cfg.get("gpu_env")
    assert {env for r, (env, _) in rules.items() if r not in asking} == {"netperturb.yaml"}
    if name == "pravin2024-mnist.yaml":  # the case of the issue: its train, baseline, sweep and retraining rules
        assert {"pravin2024_baseline", "pravin2024_sweep_layers", "pravin2024_sweep_network", "pravin2024_retrain",
                "pravin2024_train_resnet18"} <= asking  # fmt: skip
