"""The command line (issue 13: 9, 11)."""

import pytest
import torch

from netperturb import cli


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _perturb(monkeypatch, tmp_path, *extra):
    seen = {}

    def fake(*args, **kwargs):
        import pandas as pd

        seen["threads"] = torch.get_num_threads()
        return pd.DataFrame({"level": [0.0], "repeat": [0], "top1": [1.0], "top5": [1.0], "loss": [0.0]})

    import netperturb.studies.cheney2017.jobs as jobs

    monkeypatch.setattr(jobs, "perturb_layer", fake)
    rc = cli.main(["perturb", "--checkpoint", "m.pt", "--shards", "s", "--layer", "conv1", "--perturbation",
                   "synapse_knockout", "--levels", "0", "--out", str(tmp_path / "o.csv"), *extra])  # fmt: skip
    return rc, seen


def test_perturb_uses_one_thread_by_default(monkeypatch, tmp_path, keep_threads):
    if torch.get_num_threads() == 1:
        torch.set_num_threads(2)
    rc, seen = _perturb(monkeypatch, tmp_path)
    assert rc == 0 and seen["threads"] == 1


def test_perturb_threads_option(monkeypatch, tmp_path, keep_threads):
    torch.set_num_threads(1)
    rc, seen = _perturb(monkeypatch, tmp_path, "--threads", "2")
    assert rc == 0 and seen["threads"] == 2
    assert "--threads" in cli.build_parser()._subparsers._group_actions[0].choices["perturb"].format_help()


def test_check_config_names_file_and_line(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("run: x\ncheney2017: {repeats: 1}\ncheney2017: {repeats: 2}\n")
    assert cli.main(["check-config", str(f)]) == 2
    assert f"{f}: line 3: key 'cheney2017' is given twice (first at line 2)" in capsys.readouterr().err
    f.write_text("run: x\n")  # valid YAML, but the workflow refuses it: so does check-config (issue 27)
    assert cli.main(["check-config", str(f)]) == 2
    assert f"{f} does not match config/schema.yaml:\n  <top level>: 'models' is a required property" in capsys.readouterr().err
    f.write_text("run: x\nmodels: {lenet5: {arch: lenet5}}\n")
    assert cli.main(["check-config", str(f)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {f}: run 'x', studies cheney2017, models lenet5")


@pytest.mark.parametrize("option", ["--batch-size", "--repeats", "--max-replicas"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_perturb_refuses_a_count_below_one_naming_the_option(monkeypatch, tmp_path, capsys, option, value):
    """Issue 27, case 15: `--batch-size 0` used to end in "range() arg 3 must not be zero"."""
    with pytest.raises(SystemExit) as e:
        _perturb(monkeypatch, tmp_path, option, value)
    assert e.value.code == 2
    assert f"netperturb perturb: error: argument {option}: must be an integer >= 1, got {value}" in capsys.readouterr().err
    rc, _ = _perturb(monkeypatch, tmp_path, option, "1")
    assert rc == 0
