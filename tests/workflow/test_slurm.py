"""The workflow on a real SLURM cluster (--executor slurm with workflow/profiles/slurm).

`test_slurm_run_equals_local_run` needs the one-node test cluster of `.ci/slurm-cluster.sh`
(CI starts it in `.ci/run`; by hand: `sudo .ci/slurm-cluster.sh install && sudo
.ci/slurm-cluster.sh start`, then `make test`, then `sudo .ci/slurm-cluster.sh stop`). It is
skipped when that cluster is not up, and fails instead when NETPERTURB_REQUIRE_SLURM=1 (as in
CI), so a cluster that did not come up cannot pass unnoticed. It never submits to another
cluster: it checks the cluster's name first.

The other tests here only plan (-n) and need no SLURM.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PROFILE = REPO / "workflow" / "profiles" / "slurm"
TEST_CLUSTER = "netperturb"  # ClusterName in the slurm.conf written by .ci/slurm-cluster.sh

# The default study reduced to 4 SLURM jobs (train, baseline, 2 x perturb; each costs ~30-45 s
# of scheduling and start-up here) plus 2 local ones (prepare_dataset, merge). device: cpu, so
# the fake GPUs (GRES on /dev/null) are never touched and both runs compute on the same CPU.
CONFIG = {
    "run": "slurm",
    "seed": 5,
    "device": "cpu",
    "models": {"lenet5": {"arch": "lenet5", "train": {"epochs": 2}, "layers": ["conv1", "fc5"]}},
    "cheney2017": {
        "repeats": 2,
        "batch_size": 540,
        "layers_per_job": 1,  # one SLURM job per layer: 2 perturbation jobs
        # what the GPU jobs ask of SLURM comes from here, not from the profile
        "resources": {"gpu": 1, "mem_mb": 32000, "runtime": 30},
        "perturbations": {"gaussian_noise": {"levels": [0.0, 0.5, 1.0]}},
    },
}
TARGET = "results/slurm/cheney2017/perturbation.csv"
SLURM_JOBS = {  # rule -> the folder names of its SLURM logs (.snakemake/slurm_logs/rule_<rule>/<wildcards>/)
    "train": {"lenet5"},
    "cheney2017_baseline": {"lenet5"},
    "cheney2017_perturb": {"lenet5_gaussian_noise_1of2", "lenet5_gaussian_noise_2of2"},
}
GPU_RULES = {"cheney2017_baseline", "cheney2017_perturb"}
#: rules that run in the GPU conda env and get the profile's CPUs per GPU (the fault study's and
#: pravin2024's too; its train rules, one per model, are named after the model: see below)
GPU_ENV_RULES = GPU_RULES | {"faults_baseline", "faults_perturb", "pravin2024_baseline", "pravin2024_sweep_layers",
                             "pravin2024_sweep_network", "pravin2024_retrain"}


def _slurm_unavailable() -> str | None:
    """Why the test cluster cannot be used, or None when it is up."""
    for tool in ("sbatch", "squeue", "sinfo", "scontrol", "srun"):
        if shutil.which(tool) is None:
            return f"SLURM client '{tool}' not installed (.ci/slurm-cluster.sh install)"
    try:
        conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20)
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "slurmctld does not answer (.ci/slurm-cluster.sh start)"
    if conf.returncode != 0:
        return f"slurmctld not reachable (.ci/slurm-cluster.sh start): {conf.stderr.strip()[:200]}"
    name = re.search(r"^ClusterName\s*=\s*(\S+)", conf.stdout, re.M)
    if not name or name.group(1) != TEST_CLUSTER:
        return f"the SLURM here is not the test cluster '{TEST_CLUSTER}' of .ci/slurm-cluster.sh; not submitting to it"
    if not re.search(r"^(idle|mixed|allocated)", nodes.stdout, re.M):
        return f"no usable node in the test cluster (sinfo: {nodes.stdout.split()})"
    return None


def _snakemake(workdir: Path, *args: str) -> list[str]:
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    # targets before --configfile, which takes a list
    return [SNAKEMAKE, TARGET, "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml", *args]


def _slurm_job_ids(workdir: Path) -> dict[tuple[str, str], list[str]]:
    """(rule, wildcards folder) -> SLURM job ids, from the plugin's per-job SLURM logs."""
    out: dict[tuple[str, str], list[str]] = {}
    for log in (workdir / ".snakemake" / "slurm_logs").glob("rule_*/*/*.log"):
        out.setdefault((log.parent.parent.name.removeprefix("rule_"), log.parent.name), []).append(log.stem)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same config run through SLURM and locally (at the same time: SLURM mostly waits)."""
    reason = _slurm_unavailable()
    if reason:
        if os.environ.get("NETPERTURB_REQUIRE_SLURM") == "1":
            pytest.fail(f"NETPERTURB_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("slurm")
    on_slurm, local = base / "slurm", base / "local"
    on_slurm.mkdir()
    local.mkdir()
    # the test cluster has no accounting (no sacct): job status from squeue, and the first
    # check after 5 s instead of 40; successful jobs' SLURM logs are kept as evidence
    slurm_cmd = _snakemake(
        on_slurm,
        "--workflow-profile", str(PROFILE),
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "5",
        "--slurm-keep-successful-logs",
        "--retries", "0",
    )  # fmt: skip
    slurm = subprocess.Popen(slurm_cmd, cwd=on_slurm, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        loc = subprocess.run(_snakemake(local, "--cores", "2"), cwd=local, capture_output=True, text=True)
        slurm_out, _ = slurm.communicate(timeout=600)
    finally:
        if slurm.poll() is None:  # timed out or interrupted: snakemake cancels its SLURM jobs on SIGINT
            slurm.send_signal(signal.SIGINT)
            try:
                slurm.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                slurm.kill()
    assert loc.returncode == 0, f"local run failed:\n{loc.stdout[-3000:]}\n{loc.stderr[-5000:]}"
    assert slurm.returncode == 0, f"SLURM run failed:\n{slurm_out[-8000:]}"
    return on_slurm, local, slurm_out


@pytest.mark.slurm
def test_slurm_run_equals_local_run(runs):
    on_slurm, local, _ = runs
    for name in ("perturbation.csv", "baseline.csv"):
        a = pd.read_csv(on_slurm / "results" / "slurm" / "cheney2017" / name, keep_default_na=False)
        b = pd.read_csv(local / "results" / "slurm" / "cheney2017" / name, keep_default_na=False)
        # every column, provenance included: same host, same CPU, same library, and the
        # checkpoint's `weights` id is a hash of bytes that do not depend on where it was written
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    df = pd.read_csv(on_slurm / "results" / "slurm" / "cheney2017" / "perturbation.csv")
    assert len(df) == 2 * 3 * 2 and set(df["layer_label"]) == {"conv1", "fc5"}
    assert (df["device"] == "cpu").all()


@pytest.mark.slurm
def test_jobs_went_through_slurm_with_the_configs_resources(runs):
    on_slurm, _, out = runs
    ids = _slurm_job_ids(on_slurm)
    # exactly the compute jobs, each once; local rules (prepare_dataset, merge) never submitted
    assert {rule: {w for r, w in ids if r == rule} for rule in SLURM_JOBS} == SLURM_JOBS, ids
    assert {r for r, _ in ids} == set(SLURM_JOBS), ids
    assert all(len(v) == 1 for v in ids.values()), ids
    assert "localrule prepare_dataset:" in out and "localrule cheney2017_merge:" in out
    for (rule, wildcards), (job_id,) in ids.items():
        info = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
        assert "JobState=COMPLETED" in info, (rule, info)
        assert f"WorkDir={on_slurm}" in info, (rule, info)
        log = (on_slurm / ".snakemake" / "slurm_logs" / f"rule_{rule}" / wildcards / f"{job_id}.log").read_text()
        assert f"rule {rule}:" in log and "--executor slurm-jobstep" in log, log[-2000:]
        if rule in GPU_RULES:  # cheney2017.resources: one GPU, 32 GB, 30 min; the profile: 4 CPUs per GPU
            assert "TresPerJob=gres:gpu:1" in info, info
            assert "NumCPUs=4" in info and "MinMemoryNode=32000M" in info and "TimeLimit=00:30:00" in info, info
        else:  # train: CPU job, cpus = the rule's 1 thread (the local run's too: the same weights)
            assert "gres:gpu" not in info, info
            assert "NumCPUs=1" in info and "MinMemoryNode=8000M" in info, info


def _freeze_first_job(workdir: Path, stop: threading.Event, frozen: list[str]) -> None:
    """SIGSTOP every process of the first SLURM job of `workdir` while it runs (again each
    second, so processes it starts later are frozen too): it makes no progress, so it reaches
    its time limit whatever the machine's speed. Later jobs (the retry) are left alone."""
    while not stop.is_set():
        q = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T %Z"], capture_output=True, text=True)
        jobs = [line.split() for line in q.stdout.splitlines() if line.endswith(f" {workdir}")]
        if not frozen:
            running = [j for j, state, _ in jobs if state == "RUNNING"]
            if running:
                frozen.append(running[0])
        if frozen:
            state = {j: st for j, st, _ in jobs}.get(frozen[0])
            if state != "RUNNING":
                return
            pids = subprocess.run(["scontrol", "listpids", frozen[0]], capture_output=True, text=True).stdout
            for line in pids.splitlines()[1:]:
                pid = int(line.split()[0])
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() != "slurmstepd":
                        os.kill(pid, signal.SIGSTOP)
                except (ProcessLookupError, FileNotFoundError):
                    pass
        stop.wait(1.0)


@pytest.mark.slurm
def test_a_job_killed_at_its_time_limit_is_retried_with_more_time(runs):
    """cheney2017.resources.runtime: 1 (minute); the SLURM job that remakes one perturbation
    table of `runs` is frozen, so SLURM kills it at 1 min (state TIMEOUT); snakemake resubmits
    it (--retries 1) asking for runtime x retry_runtime_factor = 10 min, and the retry writes
    the table an uninterrupted local run writes. The config differs from `runs`' only in
    resources, which do not change outputs, so it joins `runs`' folder (one run folder, one
    config) and uses its trained model; ~3 min."""
    on_slurm, local, _ = runs
    config = copy.deepcopy(CONFIG)
    config["cheney2017"]["resources"]["runtime"] = 1
    config["retry_runtime_factor"] = 10  # the retry may take 10 min (a loaded machine: several)
    target = "results/slurm/cheney2017/runs/lenet5/gaussian_noise/layers_2of2.csv"  # fc5 (classifier.4)
    key = ("cheney2017_perturb", "lenet5_gaussian_noise_2of2")
    before = set(_slurm_job_ids(on_slurm).get(key, []))
    for d in (on_slurm, local):
        (d / "timeout.yaml").write_text(yaml.safe_dump(config))
        (d / target).unlink()
    cmd = [SNAKEMAKE, target, "-s", str(REPO / "Snakefile"), "--configfile", "timeout.yaml"]
    slurm_cmd = cmd + [
        "--workflow-profile", str(PROFILE),
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "5",
        "--slurm-keep-successful-logs",
        "--retries", "1",
    ]  # fmt: skip
    stop, frozen = threading.Event(), []
    freezer = threading.Thread(target=_freeze_first_job, args=(on_slurm, stop, frozen), daemon=True)
    freezer.start()
    slurm = subprocess.Popen(slurm_cmd, cwd=on_slurm, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        loc = subprocess.run(cmd + ["--cores", "1"], cwd=local, capture_output=True, text=True)
        out, _ = slurm.communicate(timeout=900)
    finally:
        stop.set()
        if slurm.poll() is None:
            slurm.send_signal(signal.SIGINT)
            try:
                slurm.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                slurm.kill()
    assert loc.returncode == 0, loc.stderr[-3000:]
    assert slurm.returncode == 0, out[-8000:]
    ids = [j for j in _slurm_job_ids(on_slurm)[key] if j not in before]
    first, retry = sorted(ids, key=int)
    assert frozen == [first], (frozen, ids)
    info = {j: subprocess.run(["scontrol", "show", "job", j], capture_output=True, text=True, check=True).stdout for j in ids}
    assert "JobState=TIMEOUT" in info[first] and "TimeLimit=00:01:00" in info[first], info[first]
    assert "JobState=COMPLETED" in info[retry] and "TimeLimit=00:10:00" in info[retry], info[retry]
    assert f"SLURM-job '{first}' failed, SLURM status is: 'TIMEOUT'" in out, out[-5000:]
    a = pd.read_csv(on_slurm / target, keep_default_na=False)
    b = pd.read_csv(local / target, keep_default_na=False)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(a) == 3 * 2 and set(a["level"]) == {0.0, 0.5, 1.0}


def _dry_run(*args: str) -> dict[str, list[str]]:
    """rule -> the `resources:` line of each planned job (local rules keyed 'local:<rule>')."""
    r = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", *args], cwd=REPO, capture_output=True, text=True
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    jobs: dict[str, list[str]] = {}
    for m in re.finditer(r"^(local)?rule (\w+):\n((?:    .*\n)+)", r.stdout + r.stderr, re.M):
        res = re.search(r"^    resources: (.*)$", m.group(3), re.M)
        jobs.setdefault(("local:" if m.group(1) else "") + m.group(2), []).append(res.group(1) if res else "")
    return jobs


@pytest.mark.workflow
def test_profile_leaves_the_default_studys_sizes_to_the_config():
    jobs = _dry_run("--workflow-profile", str(PROFILE))
    assert len(jobs["cheney2017_perturb"]) == 6 and len(jobs["cheney2017_baseline"]) == 2 and len(jobs["train"]) == 2, jobs.keys()
    # config/config.yaml sets no cheney2017.resources: the schema's defaults (no GPU, 4000 MB,
    # 60 min); the profile's cpus_per_gpu is used by the plugin only for a job with a GPU
    for rule in ("cheney2017_perturb", "cheney2017_baseline"):
        for res in jobs[rule]:
            assert "gpu=0" in res and "mem_mb=4000," in res and "runtime=60," in res, (rule, res)
    # train: the profile's own sizes (the config has none for it)
    assert all("gpu" not in res and "mem_mb=8000," in res and "runtime=120" in res for res in jobs["train"])


def _resources(res: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in res.split(", "))


@pytest.mark.workflow
def test_profile_takes_sizes_from_the_paper_config(tmp_path):
    """The issue-13 case: the profile's set-resources used to replace the config's sizes
    (every perturb job planned runtime=120, mem_mb=32000 whatever cheney2017.resources said)."""
    paper = yaml.safe_load((REPO / "config" / "cheney2017-imagenet.yaml").read_text())
    assert paper["cheney2017"]["resources"] == {"gpu": 1, "mem_mb": 24000, "runtime": 240}
    jobs = _dry_run("--workflow-profile", str(PROFILE), "--configfile", "config/cheney2017-imagenet.yaml")
    assert len(jobs["cheney2017_perturb"]) == 72 and len(jobs["cheney2017_baseline"]) == 2
    for rule in ("cheney2017_perturb", "cheney2017_baseline"):
        for res in map(_resources, jobs[rule]):
            assert (res["gpu"], res["mem_mb"], res["runtime"], res["cpus_per_gpu"]) == ("1", "24000", "240", "4"), (rule, res)
    (prep,) = map(_resources, jobs["prepare_imagenet"])
    assert (prep["mem_mb"], prep["runtime"]) == ("16000", "180") and "gpu" not in prep
    # other numbers in the config: other numbers planned (nothing restated in the profile)
    paper["cheney2017"]["resources"] = {"gpu": 2, "mem_mb": 12345, "runtime": 77}
    paper["datasets"]["imagenet"].update(mem_mb=5432, runtime=33)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(paper))
    jobs = _dry_run("--workflow-profile", str(PROFILE), "--configfile", str(tmp_path / "c.yaml"))
    for rule in ("cheney2017_perturb", "cheney2017_baseline"):
        for res in map(_resources, jobs[rule]):
            assert (res["gpu"], res["mem_mb"], res["runtime"]) == ("2", "12345", "77"), (rule, res)
    (prep,) = map(_resources, jobs["prepare_imagenet"])
    assert (prep["mem_mb"], prep["runtime"]) == ("5432", "33")


@pytest.mark.workflow
def test_profile_takes_pravins_sizes_from_its_config(tmp_path):
    # the MNIST files must exist before any job (issue 27): an empty folder stands for them
    paper = yaml.safe_load((REPO / "config" / "pravin2024-mnist.yaml").read_text())
    paper["datasets"]["mnist"]["root"] = str(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(paper))
    jobs = _dry_run("--workflow-profile", str(PROFILE), "--configfile", str(tmp_path / "c.yaml"))
    rules = [r for r in jobs if r.startswith("pravin2024_") and jobs[r][0]]
    sized = {r for r in rules if "runtime=240" in jobs[r][0]}
    assert {"pravin2024_baseline", "pravin2024_retrain"} <= sized, {r: jobs[r][0] for r in rules}
    for r in sized:
        for res in map(_resources, jobs[r]):
            assert (res["gpu"], res["mem_mb"], res["runtime"]) == ("1", "16000", "240"), (r, res)


# The resources of a retried job: the rules' runtime is a function of the attempt.
_ATTEMPTS = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(ResourceSettings(), ConfigSettings(configfiles=[Path(sys.argv[1])]), snakefile=Path("Snakefile"))
    rules = {r.name: r for r in wf._workflow.rules}
    out = {}
    for name in ("cheney2017_perturb", "cheney2017_baseline", "prepare_imagenet"):
        rt = rules[name].resources["runtime"]
        out[name] = [rt.evaluate(None, attempt=a).value for a in (1, 2, 3)]
    print(json.dumps(out))
"""


@pytest.mark.workflow
def test_a_retried_job_asks_for_more_time_as_the_config_says(tmp_path):
    import json

    r = subprocess.run([sys.executable, "-c", _ATTEMPTS, "config/cheney2017-imagenet.yaml"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    # retry_runtime_factor: 2 (the schema's default): x2 per attempt
    assert got == {"cheney2017_perturb": [240, 480, 960], "cheney2017_baseline": [240, 480, 960], "prepare_imagenet": [180, 360, 720]}
    paper = yaml.safe_load((REPO / "config" / "cheney2017-imagenet.yaml").read_text())
    paper["retry_runtime_factor"] = 1.5
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(paper))
    r = subprocess.run([sys.executable, "-c", _ATTEMPTS, str(tmp_path / "c.yaml")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["cheney2017_perturb"] == [240, 360, 540] and got["prepare_imagenet"] == [180, 270, 405]


# rule -> [its `conda:` env file, whether it is a local rule], as the workflow resolves them for
# a config. Snakemake's API (private attributes: the CLI's --list-conda-envs needs conda
# installed, and a dry run prints every rule as "rule", local or not).
_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(ResourceSettings(), ConfigSettings(config=json.loads(sys.argv[1])), snakefile=Path("Snakefile"))
    w = wf._workflow
    print(json.dumps({r.name: [Path(str(r.conda_env)).name, r.name in w._localrules] for r in w.rules if not r.norun}))
"""


def _rules(config: dict) -> dict[str, list]:
    import json

    r = subprocess.run([sys.executable, "-c", _RULES, json.dumps(config)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.workflow
def test_local_rules_and_the_gpu_env_match_the_profile():
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    gpu_in_profile = {r for r, res in profile["set-resources"].items() if res.get("cpus_per_gpu")}
    cpu = _rules({})
    # data preparation (downloads), merges and reports run on the login node
    assert {r for r, (_, local) in cpu.items() if local} >= {"prepare_dataset", "cheney2017_merge", "cheney2017_report"}
    assert {r for r, (_, local) in cpu.items() if not local} >= {"train", "cheney2017_baseline", "cheney2017_perturb"}
    assert {env for env, _ in cpu.values()} == {"netperturb.yaml"}
    # gpu_env: exactly the rules the profile gives CPUs per GPU run in the CUDA env, and the train
    # rules of pravin2024 (one per model: pravin2024_train_resnet18 in the default config)
    gpu = _rules({"gpu_env": True})
    in_gpu_env = {r for r, (env, _) in gpu.items() if env == "netperturb-gpu.yaml"}
    assert in_gpu_env - {"pravin2024_train_resnet18"} == gpu_in_profile == GPU_ENV_RULES
    assert "pravin2024_train_resnet18" in in_gpu_env
    GPU_ENV = GPU_ENV_RULES | {"pravin2024_train_resnet18"}
    assert {r: v for r, v in gpu.items() if r not in GPU_ENV} == {r: v for r, v in cpu.items() if r not in GPU_ENV}
    assert not any(local for r, (_, local) in gpu.items() if r in GPU_ENV)
    spec = yaml.safe_load((REPO / "envs" / "netperturb-gpu.yaml").read_text())["dependencies"]
    cpu_spec = yaml.safe_load((REPO / "envs" / "netperturb.yaml").read_text())["dependencies"]
    assert "pytorch =2.14.1=cuda*" in spec and "torchvision =0.29.1=cuda*" in spec
    # otherwise the same packages and pins as the CPU env
    strip = {"pytorch =2.14.1=cuda*": "pytorch =2.14.1", "torchvision =0.29.1=cuda*": "torchvision =0.29.1"}
    assert [strip.get(d, d) for d in spec] == cpu_spec
