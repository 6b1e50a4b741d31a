"""The outputs people read or load (issue 24): booktabs LaTeX, standalone HTML and the index.html report, numeric
per-table CSVs, chance lines in the plots, and the CLI's --version, list and --help defaults."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from html.parser import HTMLParser

import matplotlib
import pandas as pd
import pytest
from test_tables import RETRIEVAL, row, synthetic_rows

from harness import cli, tables
from harness.cli import main
from harness.results import append_rows

matplotlib.use("Agg")
CHANCE_R_MEAN = 55.0


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "store"
    append_rows(path, synthetic_rows() + [row(model="chance", task="retrieval", metric="r_mean", value=CHANCE_R_MEAN)])
    return path


@pytest.fixture()
def out(store, tmp_path):
    out = tmp_path / "tables"
    assert main(["table", "--results", str(store), "--out", str(out)]) == 0
    return out


def _cells(line: str) -> list[str]:
    return re.split(r"(?<!\\)&", line.removesuffix(r"\\").strip())


def _tabular(tex: str) -> list[str]:
    body = tex[tex.index(r"\begin{tabular}"):tex.index(r"\end{tabular}")].splitlines()[1:]
    return [line for line in body if line.endswith(r"\\")]


def test_latex_uses_booktabs_readable_headers_and_one_width(out):
    for path in out.glob("*.tex"):
        tex = path.read_text()
        positions = [tex.index(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule")]
        assert positions == sorted(positions) and r"\hline" not in tex, path.name
        lines = _tabular(tex)
        width = len(_cells(lines[0]))
        columns = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
        assert len(columns) == width, path.name
        assert all(len(_cells(line)) == width for line in lines), path.name
        assert "_" not in lines[0], (path.name, lines[0])  # no raw metric ids (nor their escaped \_) in headers
        assert r"\caption{" in tex and r"\footnotesize" in tex  # title as caption, notes under the table
    header = _cells(_tabular((out / "main.tex").read_text())[0])
    assert [h.strip() for h in header][:3] == ["model", "pre-train ITM AUC", "retrieval R-mean"]


def test_column_labels():
    assert tables.column_label("vqa vqa_acc") == "VQA acc."
    assert tables.column_label("retrieval r_mean") == "retrieval R-mean"
    assert tables.column_label("pretrain itm_auc (paper)") == "pre-train ITM AUC (paper)"
    assert tables.column_label("patch_detection patch_auc") == "patch AUC"
    assert tables.column_label("GMACs @384px") == "GMACs @384px"
    assert "_" not in tables.column_label("retrieval some_new_metric")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex on PATH")
def test_latex_compiles(out, tmp_path):
    tables_tex = "\n".join(p.read_text() for p in sorted(out.glob("*.tex")))
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n\\usepackage{booktabs}\n"
                   f"\\begin{{document}}\n{tables_tex}\n\\end{{document}}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: set[str] = set()
        self.tables = 0
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        self.tables += tag == "table"
        self.refs.update(value for key, value in attrs if key in ("href", "src") and value)

    def handle_decl(self, decl) -> None:
        self.tags.append(decl.lower())


def _parse(path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_html_files_are_standalone_and_the_index_links_everything(out):
    for path in out.glob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text and "<style>" in text
        parsed = _parse(path)
        assert parsed.tags[0] == "doctype html" and {"html", "head", "body"} <= set(parsed.tags)
    index = _parse(out / "index.html")
    files = {p.name for p in out.iterdir() if p.name != "index.html"}
    assert files - index.refs == set()  # every table file, summary.csv and every plot
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs and all(f in index.refs for f in pngs)
    assert all("/" not in ref and ":" not in ref for ref in index.refs if not ref.startswith("#"))  # relative
    built, _ = tables.build_tables(out.parent / "store")
    assert index.tables == len(built)
    text = (out / "index.html").read_text(encoding="utf-8")
    assert all(t.title in text for t in built) and "no decoder" in text  # headings and notes


def test_no_index_without_html(store, tmp_path):
    out = tmp_path / "t"
    assert main(["table", "--results", str(store), "--out", str(out), "--format", "md,csv"]) == 0
    assert not (out / "index.html").exists()


def test_table_csvs_are_numeric_and_match_the_summary(out, store):
    rows = tables.load_rows(store)
    for name in ("main", "efficiency", "ablation_keep", "ablation_pta"):
        frame = pd.read_csv(out / f"{name}.csv", keep_default_na=False, na_values=[""],
                            dtype={"variant": str, "seeds": str})
        assert frame["mean"].dtype == float and frame["std"].dtype == float and frame["n"].dtype == int, name
        frame = frame.fillna({"variant": ""})
        variants = sorted(set(frame.variant) - {""})  # an ablation's default is over the seeds its variants ran
        summary = tables.family_summary(rows, variants) if name.startswith("ablation") else tables.summarize(rows)
        summary = summary.set_index(["model", "task", "variant", "metric"])
        for r in frame.itertuples():
            expected = summary.loc[(r.model, r.task, r.variant, r.metric)]
            assert r.status == expected.status and r.n == expected.n
            assert (math.isnan(r.mean) and math.isnan(expected["mean"])) or r.mean == pytest.approx(expected["mean"])
            assert (math.isnan(r.std) and math.isnan(expected["std"])) or r.std == pytest.approx(expected["std"])
    main_csv = pd.read_csv(out / "main.csv", keep_default_na=False, na_values=[""])
    copa = main_csv[(main_csv.model == "copa") & (main_csv.column == "retrieval r_mean")].iloc[0]
    assert copa["mean"] == pytest.approx(sum(RETRIEVAL["copa"]) / 3) and copa["n"] == 3
    vilt = main_csv[(main_csv.model == "vilt") & (main_csv.column == "caption cider")].iloc[0]
    assert vilt.status == "n/a" and math.isnan(vilt["mean"]) and math.isnan(vilt["std"])
    main_frame = tables.build_tables(store)[0][0].frame  # every cell with a number is in the CSV
    for column in main_frame.columns[1:]:
        shown = {m for m, c in zip(main_frame.model, main_frame[column], strict=True) if c != tables.MISSING}
        assert shown == set(main_csv.loc[main_csv.column == column, "model"]), column


def _chance_lines(ax) -> list:
    return [line for line in ax.get_lines() if line.get_label() == "chance"]


def test_plots_draw_the_chance_level(store):
    import matplotlib.pyplot as plt

    rows = tables.load_rows(store)
    fig = tables.pareto_figure(tables.summarize(rows), "retrieval", "r_mean")
    try:
        for ax in fig.axes:
            (line,) = _chance_lines(ax)
            assert set(line.get_ydata()) == {CHANCE_R_MEAN} and line.get_linestyle() == "--"
            labels = [t.get_text() for t in ax.texts]
            assert "chance" in labels and "chance" not in [t for t in labels if t != "chance"]
    finally:
        plt.close(fig)
    fig = tables.keep_ratio_figure(rows, "retrieval", "r_mean")
    try:
        (line,) = _chance_lines(fig.axes[0])
        assert set(line.get_ydata()) == {CHANCE_R_MEAN}
    finally:
        plt.close(fig)
    fig = tables.pareto_figure(tables.summarize(rows), "caption", "cider")  # no chance row: no line
    try:
        assert not any(_chance_lines(ax) for ax in fig.axes)
    finally:
        plt.close(fig)


def test_labels_of_points_at_one_cost_do_not_overlap():
    """Positions in points: three models at one cost within a line of each other, one far below, one elsewhere."""
    xs, ys = [100.0, 100.0, 300.0, 100.0, 102.0], [200.0, 196.0, 210.0, 100.0, 198.0]
    offsets = tables.label_offsets(xs, ys)
    labels = [y + dy for y, (_, dy) in zip(ys, offsets, strict=True)]
    stacked = sorted(labels[i] for i in (0, 1, 4))
    assert all(b - a >= 11.0 for a, b in zip(stacked, stacked[1:], strict=False))  # no two of them on one line
    assert offsets[2] == offsets[3] == (5.0, 4.0)  # alone: just above-right of the point
    assert labels[0] > labels[4] > labels[1]  # stacked in the order of their points
    assert offsets == tables.label_offsets(xs, ys)  # deterministic


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    printed = capsys.readouterr().out.strip()
    assert printed == f"copa-bench {cli.package_version()}" and re.fullmatch(r"copa-bench \d+\.\d+\S*", printed)


@pytest.mark.parametrize("what, expected", [
    ("models", ["albef", "copa", "trips", "evit", "random", "tome", "vilt"]),
    ("tasks", ["caption", "grounding", "nlvr2", "patch_detection", "pretrain", "retrieval", "vqa"]),
    ("suites", ["paper", "smoke"]),
])
def test_list(capsys, what, expected):
    assert main(["list", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert set(expected) <= set(names)
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # each with a description


def test_list_models_is_the_registry(capsys):
    from zoo import METHODS

    assert main(["list", "models"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == list(METHODS)


def test_list_unknown(capsys):
    with pytest.raises(SystemExit) as info:
        main(["list", "foo"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'foo'" in err


def test_help_shows_defaults(capsys):
    for argv, default in ((["train", "--help"], "(default: tiny)"), (["train", "--help"], "(default: 0)"),
                          (["table", "--help"], "results/store"), (["run", "--help"], "(default: fp32)")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert default in text, (argv, default)
        assert "(default: None)" not in text and "default results/store) (default" not in text
