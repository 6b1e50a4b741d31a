"""The regression gate: a clean run passes its own baseline; each injected regression fails and is named."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from harness import gate, results
from harness.cli import main
from harness.results import append_rows, make_row

PROV = {
    "git_commit": "1" * 40,
    "git_dirty": False,
    "versions": {k: "1.0" for k in results.VERSION_KEYS},
    "machine": {"cpu": "test cpu", "threads": 2},
}
ACCURACY = {("albef", "retrieval", "r_mean"): [71.0, 72.0, 70.5], ("copa", "retrieval", "r_mean"): [70.0, 71.0, 69.0],
            ("albef", "vqa", "vqa_acc"): [60.0], ("copa", "vqa", "vqa_acc"): [59.5],
            ("copa", "pretrain", "itm_auc"): [0.81]}
EFFICIENCY = {"albef": {"gmacs": 0.5, "params_m": 20.0, "pairs_per_s": 100.0, "speedup_time": 1.0},
              "copa": {"gmacs": 0.3, "params_m": 20.5, "pairs_per_s": 160.0, "speedup_time": 1.6}}


def row(**kw) -> dict:
    fields = dict(suite="ci", scale="tiny", job_hash="j", data_hash="d", seed=0, prov=PROV)
    fields.update(kw)
    return make_row(**fields)


def clean_rows() -> list[dict]:
    rows = [row(model=m, task=t, metric=k, value=v, seed=s)
            for (m, t, k), values in ACCURACY.items() for s, v in enumerate(values)]
    rows += [row(model=m, task="efficiency", metric=k, value=v) for m, metrics in EFFICIENCY.items()
             for k, v in metrics.items()]
    rows.append(row(model="copa", task="caption", metric="cider", value=None, reason="no decoder"))
    return rows


@pytest.fixture()
def gated(tmp_path, capsys):
    """A store with a clean run and a baseline made from it by the CLI."""
    store, baseline = tmp_path / "store", tmp_path / "baseline.json"
    append_rows(store, clean_rows())
    assert main(["baseline", "update", "--results", str(store), "--out", str(baseline)]) == 0
    assert "wrote" in capsys.readouterr().out
    return store, baseline


def _check(capsys, store, baseline) -> tuple[int, str]:
    code = main(["check", "--baseline", str(baseline), "--results", str(store)])
    return code, capsys.readouterr().out


def _failed_line(out: str, model: str, metric: str) -> str:
    lines = [line for line in out.splitlines() if re.match(rf"{model}\s.*\s{metric}\s", line)]
    assert lines, out
    return lines[0]


def test_baseline_holds_means_over_seeds_and_kinds(gated):
    _, baseline = gated
    data = json.loads(baseline.read_text())
    entries = {(e["model"], e["task"], e["variant"], e["metric"]): e for e in data["entries"]}
    assert entries[("albef", "retrieval", "", "r_mean")]["value"] == pytest.approx(71.166666666, rel=1e-9)
    kinds = {k[3]: e["kind"] for k, e in entries.items()}
    assert kinds == {"r_mean": "accuracy", "vqa_acc": "accuracy", "itm_auc": "accuracy", "cider": "accuracy",
                     "gmacs": "flops", "params_m": "flops", "pairs_per_s": "info", "speedup_time": "speed_ratio"}
    assert entries[("copa", "caption", "", "cider")]["value"] is None
    assert data["tolerances"] == {"accuracy": 2.0, "speed_ratio": 0.15, "per_metric": {"itm_auc": 0.02},
                                  "k": 3.0, "alpha": 0.01, "min_effect": 0.1}
    assert data["format"] == 2 and "max(k * std" in data["measurement"]["accuracy_rule"]
    assert [r["seed"] for r in data["measurement"]["runs"]] == [0, 1, 2]
    assert all(r["machines"] == ["test cpu"] for r in data["measurement"]["runs"])  # which CPU made each run
    r_mean = entries[("copa", "retrieval", "", "r_mean")]
    assert r_mean["n"] == 3 and r_mean["std"] == pytest.approx(1.0)  # seeds 70, 71, 69
    assert data["suite"] == "ci" and data["provenance"]["git_commits"] == ["1" * 40]
    assert data["provenance"]["seeds"] == [0, 1, 2] and data["created"].endswith("+00:00")


def test_clean_run_passes(gated, capsys):
    code, out = _check(capsys, *gated)
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("check passed")


def _copa_r_mean(shift: float) -> list[dict]:
    return [row(model="copa", task="retrieval", metric="r_mean", value=v + shift, seed=s)
            for s, v in enumerate(ACCURACY[("copa", "retrieval", "r_mean")])]


def _eff(model: str, metric: str, value: float) -> list[dict]:
    return [row(model=model, task="efficiency", metric=metric, value=value)]


# row factories, called in the test so that the rows are newer than the fixture's clean run
@pytest.mark.parametrize("bad_rows, model, metric, why", [
    # (a) accuracy: copa r_mean drops by 3 points on every seed (mean 70 -> 67, tolerance 2)
    (lambda: _copa_r_mean(-3), "copa", "r_mean", "dropped by 3"),
    # (b) FLOPs: copa does 1% more multiply-adds; albef gains a parameter
    (lambda: _eff("copa", "gmacs", 0.303), "copa", "gmacs", "changed by +1%"),
    (lambda: _eff("albef", "params_m", 20.0 + 1e-6), "albef", "params_m", "changed"),
    # (c) speed ratio: copa's speedup falls 20%
    (lambda: _eff("copa", "speedup_time", 1.28), "copa", "speedup_time", "ratio fell 20.0%"),
    # a fraction-valued metric: 0.03 is 3 points
    (lambda: [row(model="copa", task="pretrain", metric="itm_auc", value=0.78)], "copa", "itm_auc",
     "dropped by 0.03"),
    # a metric that used to be measured is now n/a
    (lambda: [row(model="albef", task="vqa", metric="vqa_acc", value=None, reason="crashed")], "albef", "vqa_acc",
     "now n/a (crashed)"),
], ids=["accuracy", "flops", "params", "speed_ratio", "fraction_metric", "now_na"])
def test_an_injected_regression_fails_and_is_named(gated, capsys, bad_rows, model, metric, why):
    store, baseline = gated
    append_rows(store, bad_rows())  # made now: newer than the clean rows
    code, out = _check(capsys, store, baseline)
    assert code == 1, out
    assert why in _failed_line(out, model, metric)
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("check FAILED") and f"{model} {metric}" in summary and "1 of " in summary


def test_a_missing_result_fails(tmp_path, gated, capsys):
    _, baseline = gated
    partial = [r for r in clean_rows() if not (r["model"] == "albef" and r["metric"] == "vqa_acc")]
    append_rows(tmp_path / "partial", partial)
    code, out = _check(capsys, tmp_path / "partial", baseline)
    assert code == 1
    assert "missing" in _failed_line(out, "albef", "vqa_acc") and "(1 missing)" in out


@pytest.mark.parametrize("ok_rows", [
    lambda: _copa_r_mean(-1.5),  # within tolerance
    lambda: [row(model="copa", task="vqa", metric="vqa_acc", value=90.0)],  # a rise
    lambda: _eff("copa", "pairs_per_s", 40.0),  # absolute speed: info only
    lambda: _eff("copa", "speedup_time", 1.6 * 0.9),  # 10% slower: allowed
    lambda: [row(model="copa", task="pretrain", metric="itm_auc", value=0.795)],
    lambda: [row(model="copa", task="caption", metric="cider", value=50.0)],  # was n/a, now measured
    lambda: [row(model="vilt", task="vqa", metric="vqa_acc", value=10.0)],  # not in the baseline
], ids=["within_tolerance", "rise", "pairs_per_s", "speed_10pct", "fraction_metric", "na_to_value", "new_model"])
def test_changes_within_the_rules_pass(gated, capsys, ok_rows):
    store, baseline = gated
    append_rows(store, ok_rows())
    code, out = _check(capsys, store, baseline)
    assert code == 0, out


def test_update_keeps_hand_tuned_tolerances(gated, capsys):
    store, baseline = gated
    data = json.loads(baseline.read_text())
    data["tolerances"]["per_metric"]["r_mean"] = 5.0
    baseline.write_text(json.dumps(data))
    assert main(["baseline", "update", "--results", str(store), "--out", str(baseline)]) == 0
    assert json.loads(baseline.read_text())["tolerances"]["per_metric"]["r_mean"] == 5.0
    append_rows(store, _copa_r_mean(-4))
    assert _check(capsys, store, baseline)[0] == 0
    assert not list(baseline.parent.glob("*.partial"))


def _damage(data: dict, field: str, value) -> dict:
    target = data
    *parents, last = field.split(".")
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return data


@pytest.mark.parametrize("field, value, named", [
    ("entries", KeyError, "entries"),
    ("tolerances", [2.0], "tolerances"),
    ("tolerances.accuracy", -1, "tolerances.accuracy"),
    ("tolerances.speed_ratio", "15%", "tolerances.speed_ratio"),
    ("tolerances.per_metric.itm_auc", None, "tolerances.per_metric.itm_auc"),
    ("entries.0.kind", "speed", "entries[0].kind"),
    ("entries.0.value", "71", "entries[0].value"),
    ("entries.1.metric", KeyError, "entries[1].metric"),
])
def test_a_bad_baseline_is_an_input_error(gated, capsys, field, value, named):
    store, baseline = gated
    baseline.write_text(json.dumps(_damage(json.loads(baseline.read_text()), field, value)))
    assert main(["check", "--baseline", str(baseline), "--results", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"copa-bench: error: {baseline}: {named}: "), err


def test_unreadable_baselines_and_empty_stores(tmp_path, capsys):
    (tmp_path / "b.json").write_text("{not json")
    assert main(["check", "--baseline", str(tmp_path / "b.json"), "--results", str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["check", "--baseline", str(tmp_path / "none.json")]) == 2
    assert "no such baseline file" in capsys.readouterr().err
    assert main(["baseline", "update", "--results", str(tmp_path / "empty"), "--out", str(tmp_path / "x.json")]) == 2
    assert "no results in the store" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_duplicate_entries_are_refused(gated):
    _, baseline = gated
    data = json.loads(baseline.read_text())
    data["entries"].append(dict(data["entries"][0]))
    baseline.write_text(json.dumps(data))
    with pytest.raises(results.InputError, match="duplicate"):
        gate.load_baseline(baseline)


@pytest.mark.slow
@pytest.mark.serial  # real wall-clock ratios
def test_a_real_25_percent_slowdown_of_copa_fails_the_speed_gate(tmp_path, capsys, monkeypatch):
    """Speed rows from the real profiler at tiny scale: clean, then copa's forward 25% slower, then clean again."""
    import torch

    from harness.profiling.efficiency import profile_models
    from zoo import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread, small batches, many rounds: the steadiest ratios on a shared machine
    try:
        torch.manual_seed(0)
        models = {name: build_model(name, scale="tiny") for name in ("albef", "copa")}
        size = models["albef"].vision.patch_embed.img_size[0]

        def profile() -> list[dict]:
            rows = profile_models(models, size, batch=2, repeats=61, warmup=3, reference="albef")
            return results.efficiency_rows(rows, suite="ci", scale="tiny", job_hash="profile", prov=PROV)

        store, baseline = tmp_path / "store", tmp_path / "baseline.json"
        append_rows(store, [r for r in clean_rows() if r["task"] != "efficiency"])
        append_rows(store, profile())
        assert main(["baseline", "update", "--results", str(store), "--out", str(baseline)]) == 0
        capsys.readouterr()
        base = {e["model"]: e["value"] for e in json.loads(baseline.read_text())["entries"]
                if e["metric"] == "speedup_time"}

        copa = models["copa"]
        forward = copa.encode_pair

        def slowed(*args, **kwargs):
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            # wait 25% of the forward's own time; spinning, not time.sleep, because on a busy machine the
            # scheduler favours a process that just woke up, which would speed up the next timed call
            deadline = time.perf_counter() + 0.25 * (time.perf_counter() - start)
            while time.perf_counter() < deadline:
                pass
            return out

        with monkeypatch.context() as patch:
            patch.setattr(copa, "encode_pair", slowed)
            slow_rows = profile()
        now = next(r["value"] for r in slow_rows if r["model"] == "copa" and r["metric"] == "speedup_time")
        assert now <= base["copa"] * 0.85, (now, base)
        append_rows(store, slow_rows)
        code, out = _check(capsys, store, baseline)
        assert code == 1, out
        assert "ratio fell" in _failed_line(out, "copa", "speedup_time")
        assert "1 of " in out.splitlines()[-1]  # FLOPs unchanged: only the speed check fails

        append_rows(store, profile())
        code, out = _check(capsys, store, baseline)
        assert code == 0, out
    finally:
        torch.set_num_threads(threads)


def test_check_writes_json_junit_and_a_table_of_every_gated_check(gated, tmp_path, capsys):
    from xml.etree import ElementTree as ET

    store, baseline = gated
    append_rows(store, _copa_r_mean(-3))
    report = tmp_path / "report"
    assert main(["check", "--baseline", str(baseline), "--results", str(store), "--report", str(report)]) == 1
    capsys.readouterr()
    entries = json.loads(baseline.read_text())["entries"]
    gated_entries = [e for e in entries if e["kind"] != "info"]

    data = json.loads((report / "check.json").read_text())
    assert not data["passed"] and data["failed"] == 1 and data["gated"] == len(gated_entries)
    assert len(data["checks"]) == len(entries)
    failed = [c for c in data["checks"] if not c["passed"]]
    assert [(c["model"], c["task"], c["metric"]) for c in failed] == [("copa", "retrieval", "r_mean")]
    assert failed[0]["baseline"] - failed[0]["now"] == pytest.approx(3.0)

    suite = ET.parse(report / "check.junit.xml").getroot()
    cases = suite.findall("testcase")
    assert suite.tag == "testsuite" and int(suite.get("tests")) == len(cases) == len(gated_entries)
    failures = [(c.get("classname"), c.get("name"), c.find("failure")) for c in cases if c.find("failure") is not None]
    assert [(cls, name) for cls, name, _ in failures] == [("copa.retrieval", "r_mean")]
    assert int(suite.get("failures")) == 1 and "dropped by 3" in failures[0][2].get("message")

    table = (report / "check.md").read_text().splitlines()
    assert len(table) == 2 + len(gated_entries)
    assert sum(line.startswith("| FAILED | copa | retrieval |") for line in table) == 1
    assert sum(line.startswith("| ok |") for line in table) == len(gated_entries) - 1


def test_check_report_under_a_file_is_refused_before_anything_runs(gated, tmp_path, capsys):
    store, baseline = gated
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["check", "--baseline", str(baseline), "--results", str(store), "--report", str(blocker)]) == 2
    assert "--report" in capsys.readouterr().err


# ------------------------------------------------------------------------- speed ratios: the Mann-Whitney test


def _brute_force_p_less(now: list[float], base: list[float]) -> float:
    """P(U <= u_observed) over every split of the pooled values into groups of len(now) and len(base)."""
    from itertools import combinations

    def u(a: list[float], b: list[float]) -> float:
        return sum((x < y) + 0.5 * (x == y) for x in a for y in b)

    pooled = now + base
    observed = u(now, base)
    splits = list(combinations(range(len(pooled)), len(now)))
    hits = 0
    for chosen in splits:
        a = [pooled[i] for i in chosen]
        b = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        hits += u(a, b) >= observed  # U counts now < base: a large U is evidence that now is smaller
    return hits / len(splits)


@pytest.mark.parametrize("seed", range(4))
def test_mann_whitney_matches_brute_force(seed):
    import random

    rng = random.Random(seed)
    now = [rng.gauss(0.9, 0.1) for _ in range(5)]
    base = [rng.gauss(1.0, 0.1) for _ in range(6)]
    assert gate.mann_whitney_less(now, base) == pytest.approx(_brute_force_p_less(now, base), rel=1e-9)
    assert gate.min_p_value(5, 6) == pytest.approx(1 / 462)


def _speed_entry(samples: list[float] | None, value: float = 1.6) -> dict:
    entry = {"model": "copa", "task": "efficiency", "variant": "", "metric": "speedup_time", "value": value,
             "kind": "speed_ratio"}
    return entry if samples is None else entry | {"samples": samples}


TOLERANCES = {"accuracy": 2.0, "speed_ratio": 0.15, "k": 3.0, "alpha": 0.01, "min_effect": 0.10}
BASE = [1.6 * (1 + 0.02 * ((i * 7) % 11 - 5) / 5) for i in range(20)]  # 1.6 +- 2%, 20 rounds


@pytest.mark.parametrize("factor, passed, why", [
    (1 / 1.15, False, "ratio fell 1"),  # a 15% slower forward (~13%): significant and > 10%
    (0.95, True, ""),  # significant, but a 5% change is below the minimum effect
    (1.0, True, ""),
    (1.3, True, ""),  # faster
])
def test_speed_ratio_samples_are_compared_with_the_u_test(factor, passed, why):
    now = [x * factor for x in BASE[:10]]
    check = gate.judge(_speed_entry(BASE), gate.Result([sorted(now)[5]], "", now), TOLERANCES)
    assert check.passed == passed and why in check.why and "Mann-Whitney" in check.rule
    assert check.p_value is not None


def test_noise_alone_does_not_fail_and_a_noisy_big_drop_needs_significance():
    import random

    rng = random.Random(0)
    base = [rng.gauss(1.6, 0.3) for _ in range(10)]
    now = [rng.gauss(1.6 * 0.85, 0.3) for _ in range(10)]  # 15% lower medians are plausible, not significant
    check = gate.judge(_speed_entry(base), gate.Result([1.36], "", now), TOLERANCES)
    assert check.p_value > 0.01 and check.passed


@pytest.mark.parametrize("base, now, missing", [
    (None, [1.2] * 10, "no samples in the baseline"),
    (BASE, None, "no samples now"),
    ([1.6, 1.6], [1.2, 1.2], "too few rounds"),
])
def test_without_enough_samples_the_fixed_percentage_applies(base, now, missing):
    check = gate.judge(_speed_entry(base), gate.Result([1.2], "", now), TOLERANCES)
    assert not check.passed and "ratio fell 25.0% (allowed 15%)" in check.why and missing in check.rule
    check = gate.judge(_speed_entry(base), gate.Result([1.5], "", now), TOLERANCES)
    assert check.passed


def test_a_baseline_of_the_old_format_still_loads_and_judges(tmp_path):
    """A baseline written before the spread and the samples (the committed one without them): fixed tolerances,
    said so in the rule."""
    data = json.loads(Path("results/baseline/smoke.json").read_text())
    data.pop("format", None)
    data.pop("measurement", None)
    for entry in data["entries"]:
        for key in ("std", "n", "samples"):
            entry.pop(key, None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    data = gate.load_baseline(str(old))
    accuracy = next(e for e in data["entries"] if e["kind"] == "accuracy" and e["value"] is not None)
    check = gate.judge(accuracy, gate.Result([accuracy["value"]]), data["tolerances"])
    assert check.passed and "fixed: no measured spread" in check.rule


def test_baseline_update_over_several_stores_records_spread_and_samples(tmp_path, capsys):
    stores = []
    for run, shift in enumerate((0.0, 0.4, -0.4)):
        stores.append(tmp_path / f"run{run}")
        append_rows(stores[-1], [row(model="copa", task="retrieval", metric="r_mean", value=70.0 + shift)])
        speed = row(model="copa", task="efficiency", metric="speedup_time", value=1.6)
        speed["samples"] = [1.6 + 0.01 * i for i in range(5)]
        append_rows(stores[-1], [speed])
    out = tmp_path / "b.json"
    args = ["baseline", "update", "--out", str(out), "--k", "4"] + [x for s in stores for x in ("--results", str(s))]
    assert main(args) == 0
    assert "3 runs" in capsys.readouterr().out
    data = gate.load_baseline(out)
    entries = {e["metric"]: e for e in data["entries"]}
    assert entries["r_mean"]["n"] == 3 and entries["r_mean"]["std"] == pytest.approx(0.4)
    assert len(entries["speedup_time"]["samples"]) == 15 and data["tolerances"]["k"] == 4.0
    assert data["provenance"]["stores"] == [str(s) for s in stores]
    assert main(["baseline", "update", "--out", str(out), "--alpha", "1.5", "--results", str(stores[0])]) == 2
    assert "--alpha" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [
    ("tolerances.alpha", 0), ("tolerances.min_effect", 1.0), ("tolerances.k", -1), ("format", 99),
    ("entries.0.std", -1.0), ("entries.0.n", 0), ("entries.0.samples", [1.0, "x"]), ("entries.0.samples", []),
])
def test_bad_evidence_fields_are_input_errors(gated, capsys, field, value):
    store, baseline = gated
    baseline.write_text(json.dumps(_damage(json.loads(baseline.read_text()), field, value)))
    assert main(["check", "--baseline", str(baseline), "--results", str(store)]) == 2
    assert field.split(".")[-1] in capsys.readouterr().err
