"""Report helpers (netperturb.core.report): the checks of a rendered report, the Findings
block, the run's index page."""

import pytest
import nbformat
import pandas as pd

from netperturb.core.report import (
    Finding, findings_frame, findings_markdown, html_problems, output_problems, run_index, software_versions,
    write_index,
)  # fmt: skip
from netperturb.core.findings import FINDING_COLUMNS, assess


def test_html_problems_finds_words_and_paths_but_not_in_images():
    assert html_problems("<p>fine</p>", ["/tmp/x"]) == []
    assert html_problems("<pre>Traceback (most recent call last)</pre>") == ["contains 'Traceback'"]
    assert html_problems("TqdmWarning: IProgress not found") == ["contains 'Warning'"]
    assert html_problems('<a href="/tmp/x/y.csv">', ["/tmp/x"]) == ["contains the path '/tmp/x'"]
    assert html_problems('<img src="data:image/png;base64,AAAWarningBBB=">') == []


def test_output_problems_names_stderr_errors_and_warnings():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1", id="a"), nbformat.v4.new_code_cell("2", id="b"), nbformat.v4.new_code_cell("3", id="c")]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stderr", text="TqdmWarning: IProgress not found")]
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="KeyError", evalue="'x'", traceback=[])]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="ok")]
    problems = output_problems(nb)
    assert len(problems) == 2 and "cell 0 (a): stderr: TqdmWarning" in problems[0] and "KeyError" in problems[1]


def test_findings_markdown_and_frame():
    f = [Finding("A claim", "We found 3.", "holds", "s/t.csv"), Finding("B", "n/a", "not tested", "s/u.csv")]
    md = findings_markdown(f)
    assert md.startswith("## Findings\n") and '<strong style="color:#1a7f37">holds</strong> -- *A claim*' in md and "source: `s/t.csv`" in md
    one = findings_markdown([f[0], Finding("C", "x", "undetermined", "s/t.csv")])
    assert one.count("source:") == 1 and one.rstrip().endswith("<small>source: `s/t.csv`</small>")
    assert "No finding" in findings_markdown([])
    assert list(findings_frame(f).columns) == FINDING_COLUMNS


def test_index_links_what_exists_relative_to_the_run(tmp_path):
    run = tmp_path / "results" / "r"
    rep = run / "cheney2017" / "report"
    (rep / "tables").mkdir(parents=True)
    (rep / "cheney2017.html").write_text("<html><head><title>Cheney et al.</title></head></html>")
    (rep / "cheney2017.ipynb").write_text("{}")
    (run / "cheney2017" / "perturbation.csv").write_text("a\n1\n")
    findings_frame([Finding("Claim", "Found <x>", "does not hold", "cheney2017/perturbation.csv"),
                    assess("Near chance", "conv1 0.35", "cheney2017/perturbation.csv", quantity="way", estimate=0.3,
                           lo=0.12, hi=0.45, interval="95% bootstrap over repeats", n=20, threshold=0.2,
                           direction="<")]).to_csv(rep / "tables" / "findings.csv", index=False)
    (run / "config.yaml").write_text("run: r\n")
    info = run_index(run, ["cheney2017", "shen2021"])
    assert info["cheney2017"]["report"] == "cheney2017/report/cheney2017.html"
    assert info["cheney2017"]["title"] == "Cheney et al." and info["shen2021"]["report"] is None
    out = write_index(run, run / "index.html", run="r", studies=["cheney2017", "shen2021"], config_file=run / "config.yaml",
                      snakemake_report=run / "snakemake-report.html", versions=software_versions(["pandas"]))
    html = out.read_text()
    assert 'href="cheney2017/report/cheney2017.html"' in html and 'href="config.yaml"' in html
    assert 'href="cheney2017/perturbation.csv"' in html and "Found &lt;x&gt;" in html and "does not hold" in html
    # the interval next to the number
    assert "way: 0.300 [0.120, 0.450], n = 20; claim: &lt; 0.2 (95% bootstrap over repeats)" in html
    assert '<span class="v undetermined">undetermined</span>' in html
    assert "Report: not made in this run" in html and "not made yet" in html and pd.__version__ in html
    assert str(tmp_path) not in html
    (run / "snakemake-report.html").write_text("x")
    html = write_index(run, run / "index.html", run="r", studies=["cheney2017"], snakemake_report=run / "snakemake-report.html").read_text()
    assert 'href="snakemake-report.html"' in html


def test_show_figure_saves_closes_and_displays_the_saved_png(tmp_path, monkeypatch):
    """A report shows the PNG it saved (no third drawing of the figure), at the inline size."""
    import IPython.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from netperturb.core.report import show_figure

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    paths = show_figure(fig, tmp_path / "sub" / "line")
    assert [p.name for p in paths] == ["line.png", "line.pdf"] and all(p.stat().st_size > 0 for p in paths)
    assert not plt.fignum_exists(fig.number)
    assert len(shown) == 1 and shown[0].data == paths[0].read_bytes()
    from PIL import Image

    with Image.open(paths[0]) as im:
        assert shown[0].width == round(im.width * 100 / 150)
    fig, _ = plt.subplots()
    show_figure(fig, tmp_path / "quiet", display=False)
    assert len(shown) == 1 and (tmp_path / "quiet.png").exists() and not plt.fignum_exists(fig.number)
    fig = plt.figure()
    with pytest.raises(ValueError, match="display needs 'png'"):
        show_figure(fig, tmp_path / "x", formats=("pdf",))
    plt.close(fig)
