"""Tables and plots from a synthetic results store (no training): aggregation, formats, plots, paper columns."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from harness import cli, gate, results, tables
from harness.cli import main
from harness.errors import InputError
from harness.results import StoreWarning, append_rows, make_row

PROV = {
    "git_commit": "abc" * 13 + "d",
    "git_dirty": False,
    "versions": {k: "1.0" for k in results.VERSION_KEYS},
    "machine": {"cpu": "test cpu", "threads": 2},
}
RETRIEVAL = {"albef": [71.25, 70.5, 72.125], "copa": [70.0, 71.75, 69.5], "vilt": [60.0, 61.0, 59.5]}
GMACS = {"albef": 0.5, "copa": 0.3, "vilt": 0.45}
PAIRS = {"albef": 100.0, "copa": 160.0, "vilt": 90.0}


def row(**kw) -> dict:
    fields = dict(suite="ci", scale="tiny", job_hash="j", data_hash="d", seed=0, prov=PROV)
    fields.update(kw)
    return make_row(**fields)


def synthetic_rows() -> list[dict]:
    rows = []
    for model, values in RETRIEVAL.items():
        for seed, value in enumerate(values):
            rows.append(row(model=model, task="retrieval", metric="r_mean", value=value, seed=seed))
        rows.append(row(model=model, task="efficiency", metric="gmacs", value=GMACS[model]))
        rows.append(row(model=model, task="efficiency", metric="pairs_per_s", value=PAIRS[model]))
        rows.append(row(model=model, task="efficiency", metric="speedup_time", value=PAIRS[model] / 100))
    rows.append(row(model="albef", task="caption", metric="cider", value=95.0))
    rows.append(row(model="vilt", task="caption", metric="cider", value=None, reason="no decoder"))
    rows.append(row(model="copa", task="pretrain", metric="itm_auc", value=0.8125))
    for keep, value in ((0.3, 64.0), (0.5, 68.0), (0.7, 70.5)):
        for seed in range(2):
            rows.append(row(model="copa", task="retrieval", metric="r_mean", value=value + seed, seed=seed,
                            variant=f"keep{keep}"))
        rows.append(row(model="copa", task="efficiency", metric="gmacs", value=0.2 + keep / 10, variant=f"keep{keep}"))
    rows.append(row(model="copa", task="retrieval", metric="r_mean", value=69.0, variant="pta_off"))
    rows.append(row(model="copa", task="retrieval", metric="r_mean", value=70.2, variant="pta25"))
    return rows


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "store"
    append_rows(path, synthetic_rows())
    return path


def _cell(table: tables.Table, model: str, column: str) -> str:
    frame = table.frame
    return frame.loc[frame.model == model, column].item()


def _parse(cell: str) -> tuple[float, float | None]:
    mean, _, std = cell.partition(" ± ")
    return float(mean), float(std) if std else None


def test_cells_are_mean_and_sample_std_over_seeds(store):
    main_table = tables.build_tables(store)[0][0]
    for model, values in RETRIEVAL.items():
        mean, std = _parse(_cell(main_table, model, "retrieval r_mean"))
        assert mean == pytest.approx(np.mean(values), abs=0.05)  # printed with one decimal
        assert std == pytest.approx(np.std(values, ddof=1), abs=0.05)
    summary = tables.summarize(tables.load_rows(store))
    exact = summary[(summary.model == "copa") & (summary.task == "retrieval") & (summary.variant == "")].iloc[0]
    assert exact["mean"] == pytest.approx(np.mean(RETRIEVAL["copa"]), rel=1e-12)
    assert exact["std"] == pytest.approx(np.std(RETRIEVAL["copa"], ddof=1), rel=1e-12)
    assert exact["n"] == 3
    assert _cell(main_table, "copa", "pretrain itm_auc") == "0.812"  # one seed: no std; small numbers keep digits
    assert list(main_table.frame.model) == ["albef", "copa", "vilt"]
    assert list(main_table.frame.columns) == ["model", "pretrain itm_auc", "retrieval r_mean", "caption cider",
                                              "GMACs", "pairs/s", "speedup (inference, pair)"]
    assert _cell(main_table, "copa", "speedup (inference, pair)") == "1.60"


def test_the_chance_row_is_followed_by_chance_plus_three_standard_errors(tmp_path):
    rows = [row(model="albef", task="retrieval", metric="r_mean", value=19.0),
            row(model="chance", task="retrieval", metric="r_mean", value=5.25),
            row(model="chance", task="retrieval", metric="r_mean_se", value=1.125),
            row(model="albef", task="caption", metric="cider", value=30.0),
            row(model="chance", task="caption", metric="cider", value=17.0)]  # no standard error recorded
    append_rows(tmp_path / "store", rows)
    main_table = tables.build_tables(tmp_path / "store")[0][0]
    assert list(main_table.frame.model) == ["albef", "chance", "chance + 3 SE"]
    assert _cell(main_table, "chance + 3 SE", "retrieval r_mean") == f"{5.25 + 3 * 1.125:.1f}"
    assert _cell(main_table, "chance + 3 SE", "caption cider") == "–"
    assert any(note.startswith("chance + 3 SE:") for note in main_table.notes)
    floor = main_table.numbers[main_table.numbers.model == "chance + 3 SE"]
    assert floor["mean"].tolist() == [pytest.approx(5.25 + 3 * 1.125)]


def test_na_and_missing_cells(store):
    main_table = tables.build_tables(store)[0][0]
    assert _cell(main_table, "vilt", "caption cider") == "n/a"
    assert _cell(main_table, "copa", "caption cider") == "–"
    assert any("vilt caption cider: no decoder" in note for note in main_table.notes)


def test_a_job_that_did_not_apply_makes_every_metric_of_its_task_na(store):
    append_rows(store, [row(model="vilt", task="retrieval_zeroshot", metric="*", value=None, reason="no ITC"),
                        row(model="copa", task="retrieval_zeroshot", metric="r_mean", value=50.0)])
    main_table = tables.build_tables(store)[0][0]
    assert _cell(main_table, "vilt", "retrieval_zeroshot r_mean") == "n/a"
    assert _cell(main_table, "copa", "retrieval_zeroshot r_mean") == "50.0"
    assert _cell(main_table, "albef", "retrieval_zeroshot r_mean") == "–"


def test_ablation_and_efficiency_tables(store):
    all_tables = {t.name: t for t in tables.build_tables(store)[0]}
    assert set(all_tables) == {"main", "comparison", "efficiency", "ablation_keep", "ablation_pta"}
    keep = all_tables["ablation_keep"].frame
    assert list(keep.columns) == ["model", "metric", "default", "keep0.3", "keep0.5", "keep0.7"]
    retrieval = keep[keep.metric == "retrieval r_mean"].iloc[0]
    assert _parse(retrieval["keep0.3"]) == pytest.approx((64.5, np.std([64, 65], ddof=1)), abs=0.05)
    assert keep[keep.metric == "GMACs"].iloc[0]["keep0.7"] == "0.270"
    pta = all_tables["ablation_pta"].frame
    assert list(pta.columns) == ["model", "metric", "default", "pta25", "pta_off"]
    eff = all_tables["efficiency"].frame
    assert list(eff.columns[:2]) == ["model", "variant"] and "GMACs" in eff.columns
    assert eff.loc[(eff.model == "copa") & (eff.variant == "default"), "pairs/s"].item() == "160.0"


def test_ablations_compare_with_the_default_on_the_seeds_the_variants_ran(store):
    copa = RETRIEVAL["copa"]  # the default ran seeds 0, 1, 2; keep* variants 0 and 1; pta* variants 0
    all_tables = {t.name: t for t in tables.build_tables(store)[0]}
    keep = all_tables["ablation_keep"].frame
    default = keep.loc[(keep.model == "copa") & (keep.metric == "retrieval r_mean"), "default"].item()
    assert _parse(default) == pytest.approx((np.mean(copa[:2]), np.std(copa[:2], ddof=1)), abs=0.05)
    pta = all_tables["ablation_pta"].frame
    assert pta.loc[pta.metric == "retrieval r_mean", "default"].item() == f"{copa[0]:.1f}"
    assert "seeds the variants ran (0)" in all_tables["ablation_pta"].notes[1]

    rows = tables.load_rows(store)
    points = tables.keep_ratio_points(rows, "retrieval", "r_mean")
    assert points.ratio.tolist() == [0.3, 0.5, 0.7]
    assert points["mean"].tolist() == pytest.approx([64.5, 68.5, 71.0])  # keep0.5's own run, not the default
    without = tables.keep_ratio_points(rows[rows.variant != "keep0.5"], "retrieval", "r_mean")
    assert without.variant.tolist() == ["keep0.3", "", "keep0.7"]  # copa's registered keep ratio is 0.5
    assert without["mean"].tolist() == pytest.approx([64.5, np.mean(copa[:2]), 71.0])


def test_every_format_and_the_plots_are_written(store, tmp_path, capsys):
    out = tmp_path / "tables"
    assert main(["table", "--results", str(store), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("### Main comparison") and "| copa |" in printed
    for name in ("main", "efficiency", "ablation_keep", "ablation_pta"):
        for ext in ("md", "csv", "tex", "html"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    assert (out / "main.csv").read_text().startswith("column,model,task,variant,metric,mean,std,n,seeds,status,")
    tex = (out / "main.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "retrieval R-mean" in tex
    assert "<table" in (out / "main.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["keep_retrieval_r_mean.png", "pareto_caption_cider.png", "pareto_pretrain_itm_auc.png",
                    "pareto_retrieval_r_mean.png"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert not list(out.glob("*.partial"))


def test_one_format_and_a_chosen_plot(store, tmp_path):
    out = tmp_path / "t"
    assert main(["table", "--results", str(store), "--out", str(out), "--format", "csv",
                 "--plot", "retrieval:r_mean"]) == 0
    assert sorted(p.suffix for p in out.iterdir()) == [".csv"] * 6 + [".png"] * 2


def test_summary_csv_is_tidy_and_numeric(store, tmp_path):
    out = tmp_path / "t"
    assert main(["table", "--results", str(store), "--out", str(out), "--format", "csv"]) == 0
    tidy = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    assert list(tidy.columns) == ["model", "task", "variant", "metric", "mean", "std", "n", "seeds", "status",
                                  "reason"]
    assert tidy["mean"].dtype == float and tidy["std"].dtype == float and tidy["n"].dtype == int
    expected = tables.summarize(tables.load_rows(store))
    got = tidy.fillna({"variant": "", "reason": "", "seeds": ""}).set_index(["model", "task", "variant", "metric"])
    for r in expected.itertuples():
        row_ = got.loc[(r.model, r.task, r.variant, r.metric)]
        assert row_["n"] == r.n and row_["status"] == r.status
        assert (math.isnan(r.mean) and math.isnan(row_["mean"])) or row_["mean"] == pytest.approx(r.mean, rel=1e-9)
    assert tidy[tidy.status == "n/a"]["mean"].isna().all()


def test_truncated_last_line_is_kept_out_of_the_tables(store):
    text = json.dumps(row(model="tome", task="retrieval", metric="r_mean", value=99.0))
    with open(store / "rows.jsonl", "a") as f:
        f.write(text[:-20])
    lines = (store / "rows.jsonl").read_text().count("\n") + 1
    with pytest.warns(StoreWarning, match=rf"rows\.jsonl:{lines}:"):
        main_table = tables.build_tables(store)[0][0]
    assert "tome" not in list(main_table.frame.model)


def test_rows_measured_on_other_data_are_kept_out_of_the_tables(store):
    """After the benchmark changes, a suite's rows of the old data (tome here, never rerun) are not mixed into
    the tables with the new ones."""
    append_rows(store, [row(model="tome", task="retrieval", metric="r_mean", value=99.0, data_hash="old",
                            created="2020-01-01T00:00:00.000000+00:00")])
    with pytest.warns(StoreWarning, match=r"1 rows of suite 'ci' measured on other data"):
        main_table = tables.build_tables(store)[0][0]
    assert "tome" not in list(main_table.frame.model) and "albef" in list(main_table.frame.model)
    append_rows(store, [row(model="tome", task="retrieval", metric="r_mean", value=99.0, data_hash="new")])
    with pytest.warns(StoreWarning, match=r"measured on other data than its newest rows \(data_hash new\)"):
        main_table = tables.build_tables(store)[0][0]
    assert list(main_table.frame.model) == ["tome"]


def test_pareto_front():
    # lower x is better: (1, 50) and (2, 60) and (4, 70) are on the front; (3, 55) is beaten by (2, 60)
    assert tables.pareto_front([1, 2, 3, 4], [50, 60, 55, 70], lower_x_better=True) == [0, 1, 3]
    # higher x is better: (4, 70) beats everything
    assert tables.pareto_front([1, 2, 3, 4], [50, 60, 55, 70], lower_x_better=False) == [3]


def test_paper_reference_columns(store, tmp_path, capsys):
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"citation": "Fixture et al., Test Conf. 2099, Table 1 (test data, not real)",
                                 "rows": [{"model": "copa", "task": "retrieval", "metric": "r_mean", "value": 88.8},
                                          {"model": "blip", "task": "retrieval", "metric": "r_mean", "value": 90}]}))
    assert main(["table", "--results", str(store), "--out", str(tmp_path / "t"), "--format", "md",
                 "--paper", str(paper)]) == 0
    printed = capsys.readouterr().out
    assert "| retrieval R-mean | retrieval R-mean (paper) |" in printed
    reference = tables.load_paper(paper)
    frame = tables.main_table(tables.summarize(tables.load_rows(store)), paper=reference).frame
    columns = list(frame.columns)
    assert columns.index("retrieval r_mean (paper)") == columns.index("retrieval r_mean") + 1
    assert frame.loc[frame.model == "copa", "retrieval r_mean (paper)"].item() == "88.8"
    assert frame.loc[frame.model == "albef", "retrieval r_mean (paper)"].item() == "–"
    assert frame.loc[frame.model == "blip", "retrieval r_mean"].item() == "–"
    assert "Fixture et al." in printed


@pytest.mark.parametrize("content, field", [
    ("not json", None),
    (json.dumps({"rows": []}), "citation"),
    (json.dumps({"citation": "x", "rows": {}}), "rows"),
    (json.dumps({"citation": "x", "rows": [{"model": "copa", "task": "vqa", "metric": "vqa_acc"}]}), "rows[0].value"),
    (json.dumps({"citation": "x", "rows": [{"model": "", "task": "vqa", "metric": "a", "value": 1}]}), "rows[0].model"),
])
def test_bad_paper_file(tmp_path, store, capsys, content, field):
    paper = tmp_path / "paper.json"
    paper.write_text(content)
    with pytest.raises(InputError) as info:
        tables.load_paper(paper)
    assert info.value.field == field
    assert main(["table", "--results", str(store), "--out", str(tmp_path / "t"), "--paper", str(paper)]) == 2
    assert capsys.readouterr().err.startswith(f"copa-bench: error: {paper}")


def test_store_problems_are_input_errors(tmp_path, store, capsys):
    assert main(["table", "--results", str(tmp_path / "empty"), "--out", str(tmp_path / "t")]) == 2
    assert "no results in the store" in capsys.readouterr().err
    append_rows(store, [row(suite="other", model="copa", task="vqa", metric="vqa_acc", value=1.0)])
    assert main(["table", "--results", str(store), "--out", str(tmp_path / "t")]) == 2
    assert "--suite: the store holds several suites (ci, other)" in capsys.readouterr().err
    assert main(["table", "--results", str(store), "--out", str(tmp_path / "t"), "--suite", "other"]) == 0
    assert main(["table", "--results", str(store), "--out", str(tmp_path / "t"), "--format", "pdf"]) == 2
    assert "--format: unknown format(s) pdf" in capsys.readouterr().err


def test_image_size_variants_make_a_size_column(tmp_path):
    rows = [row(model=m, task="efficiency", metric="gmacs", value=g * s / 224, variant=str(s))
            for m, g in GMACS.items() for s in (224, 384)]
    append_rows(tmp_path, rows)
    all_tables = {t.name: t for t in tables.build_tables(tmp_path)[0]}
    assert set(all_tables) == {"main", "efficiency"}  # sizes are not an ablation family
    eff = all_tables["efficiency"].frame
    assert list(eff.columns) == ["model", "px", "GMACs"] and list(eff.px) == ["224", "384"] * 3
    assert "GMACs @224px" in all_tables["main"].frame.columns


def test_latex_escaping():
    table = tables.Table("t", "T", tables.pd.DataFrame({"a_b": ["50% & $1 ± 2", "–"]}), ["note_1"])
    tex = tables.render(table, "latex")
    assert r"a b" in tex and r"50\% \& \$1 $\pm$ 2" in tex and "--" in tex and r"note\_1\par" in tex


def test_cli_defaults_match_the_modules():
    assert cli._RESULTS_STORE == results.DEFAULT_STORE
    assert cli._TABLES_OUT == tables.DEFAULT_OUT
    assert cli._BASELINE_FILE == gate.DEFAULT_BASELINE
    assert cli._TABLE_FORMATS == tables.FORMATS


def test_no_warning_for_a_clean_store(store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tables.build_tables(store)


def test_main_table_names_the_path_of_each_speedup(store):
    """A pre-training-step speedup sits beside the inference one, each labelled by the path it measures; the
    per-task costs get their own table."""
    append_rows(store, [row(model=m, task="efficiency", metric=f"pretrain.train.{q}", value=v)
                        for m, ratio in (("albef", 1.0), ("copa", 1.25), ("vilt", 0.9))
                        for q, v in (("speedup_time", ratio), ("gmacs", 1.5 / ratio), ("samples_per_s", 10 * ratio))])
    built = {t.name: t for t in tables.build_tables(store)[0]}
    main_table = built["main"]
    assert list(main_table.frame.columns)[-4:] == ["GMACs", "pairs/s", "speedup (pre-train step)",
                                                    "speedup (inference, pair)"]
    assert _cell(main_table, "copa", "speedup (pre-train step)") == "1.25"
    assert any("pre-train step" in note for note in main_table.notes)
    costs = built["task_costs"].frame
    assert list(costs.columns) == ["model", "task", "phase", "GMACs fwd", "samples/s", "speedup (time)"]
    assert costs.loc[costs.model == "copa", "speedup (time)"].item() == "1.25"
    assert "efficiency" in built and "GMACs" in built["efficiency"].frame.columns  # the pair table stays


@pytest.mark.parametrize("subject, baseline", [
    ([70.0, 71.75, 69.5], [71.25, 70.5, 72.125]),
    ([70.0, 71.75, 69.5], [60.0, 61.0, 59.5]),
    ([0.61, 0.66, 0.58], [0.64, 0.70, 0.62]),
    ([1.0, 2.0, 3.0, 4.0], [0.9, 2.1, 2.8, 4.3]),
])
def test_the_paired_verdict_is_a_paired_t_test(subject, baseline):
    from scipy.stats import ttest_rel

    mean, std, verdict = tables.paired_difference(subject, baseline)
    diffs = np.subtract(subject, baseline)
    assert (mean, std) == pytest.approx((diffs.mean(), diffs.std(ddof=1)))
    test = ttest_rel(subject, baseline)  # the interval excludes zero exactly when the two-sided p is below 5%
    assert verdict == ("level" if test.pvalue >= 0.05 else "ahead" if mean > 0 else "behind")


def test_the_comparison_table_pairs_seeds_and_reads_published_points(tmp_path):
    copa, albef, evit = [0.70, 0.72, 0.69], [0.60, 0.63, 0.58], [0.705, 0.715, 0.70]
    rows = []
    for seed in range(3):
        rows += [row(model="copa", task="retrieval", metric="r_mean", value=copa[seed], seed=seed),
                 row(model="albef", task="retrieval", metric="r_mean", value=albef[seed], seed=seed),
                 row(model="evit", task="retrieval", metric="r_mean", value=evit[seed], seed=seed),
                 row(model="evit", task="retrieval", metric="r_mean", value=albef[seed] - 0.1, seed=seed,
                     variant="published_evit"),
                 row(model="copa", task="vqa", metric="vqa_acc", value=41.0 + seed, seed=seed),
                 row(model="albef", task="vqa", metric="vqa_acc", value=42.0 + seed, seed=seed)]
    rows += [row(model="chance", task="vqa", metric="vqa_acc", value=41.5),
             row(model="chance", task="vqa", metric="vqa_acc_se", value=1.0),
             row(model="evit", task="vqa", metric="vqa_acc", value=45.0, seed=0)]  # one shared seed
    append_rows(tmp_path / "store", rows)
    table = {t.name: t for t in tables.build_tables(tmp_path / "store")[0]}["comparison"]
    frame = table.frame.set_index("task")
    assert list(frame.columns) == ["albef", "evit", "evit @published_evit"]
    assert frame.loc["retrieval r_mean", "albef"] == "+0.100 ± 0.010 ahead"
    assert frame.loc["retrieval r_mean", "evit"].endswith(" level")
    assert frame.loc["retrieval r_mean", "evit @published_evit"].endswith(" ahead")
    assert frame.loc["vqa vqa_acc", "albef"].endswith(" both at chance")  # 43 and 42 are under 41.5 + 3 x 1.0
    assert frame.loc["vqa vqa_acc", "evit"] == "-4.0 one seed"
    assert frame.loc["vqa vqa_acc", "evit @published_evit"] == tables.MISSING
    numbers = table.numbers.set_index(["column", "task"])
    assert numbers.loc[("albef", "retrieval"), "mean"] == pytest.approx(np.mean(np.subtract(copa, albef)))
    assert numbers.loc[("albef", "retrieval"), "seeds"] == "0,1,2"
