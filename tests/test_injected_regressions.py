"""Injected regressions caught by the gate (issue 25, item 3): break one thing at a time, run it through the code
that computes the metric, store the rows, and check that ``copa-bench check`` fails naming the model and the metric;
the same code without the fault, rerun, passes.

The smoke suite per injection would take minutes each, so every case is a tiny deterministic setup. The FLOP and
speed cases run real tiny models through the profiler (``harness.profiling.efficiency``). The accuracy cases run
the task's own metric code (``PretrainMetric``, ``VQAMetric``) on the outputs of a small head whose inputs carry
a signal, since the 40-iteration smoke models have none to lose: the fault is applied where it would be in the
model (scores, head output, answer vocabulary) and flows through the metric into rows. Each baseline is made by
``make_baseline`` from several clean runs (seeds: different noise), so the tolerances are the measured ones.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from harness import gate, results
from harness.results import append_rows, make_row

PROV = {"git_commit": "2" * 40, "git_dirty": False, "versions": {k: "1.0" for k in results.VERSION_KEYS},
        "machine": {"cpu": "test cpu", "threads": 1}}
SUITE = "injected"
BASELINE_SEEDS = (0, 1, 2)
CLEAN_SEED = 7


def _rows(model: str, task: str, metrics: dict[str, float], seed: int, samples: dict | None = None) -> list[dict]:
    rows = [make_row(suite=SUITE, model=model, task=task, metric=k, value=v, seed=seed, scale="tiny",
                     job_hash=f"{model}-{task}-{seed}", data_hash="d", prov=PROV) for k, v in metrics.items()]
    for row in rows:
        if samples and row["metric"] in samples:
            row["samples"] = list(samples[row["metric"]])
    return rows


def _gate(tmp_path: Path, baseline_runs: list[list[dict]], new_run: list[dict]) -> tuple[int, list[gate.Check]]:
    """A baseline from ``baseline_runs`` (one store each, as ``baseline update --results A --results B``), then the
    gate on ``new_run``: (exit status, checks); the reports are written and read back, as CI would."""
    stores = []
    for i, run in enumerate(baseline_runs):
        stores.append(tmp_path / f"run{i}")
        append_rows(stores[-1], run)
    baseline = tmp_path / "baseline.json"
    gate.update_baseline(stores, baseline, suite=SUITE)
    new = tmp_path / f"new{time.monotonic_ns()}"
    append_rows(new, new_run)
    code, _ = gate.run_check(baseline, new, report_dir=tmp_path / "report")
    report = json.loads((tmp_path / "report" / "check.json").read_text())
    checks = [gate.Check(**c) for c in report["checks"]]
    assert report["passed"] == (code == 0)
    return code, checks


def _assert_caught(tmp_path: Path, make: Callable[[int, bool], list[dict]], model: str, metric: str) -> None:
    """Baseline from clean runs; the faulty run fails naming (model, metric) and nothing else; a clean rerun
    (another seed) passes."""
    baseline_runs = [make(seed, False) for seed in BASELINE_SEEDS]
    code, checks = _gate(tmp_path / "faulty", baseline_runs, make(CLEAN_SEED, True))
    failed = [(c.model, c.metric) for c in checks if not c.passed]
    assert code == 1 and failed == [(model, metric)], [c for c in checks if not c.passed]
    code, checks = _gate(tmp_path / "clean", baseline_runs, make(CLEAN_SEED, False))
    assert code == 0, [c for c in checks if not c.passed]


# ------------------------------------------------------------------------------------------------ accuracy


def _pretrain_metrics(results_: list[dict]) -> dict[str, float]:
    from harness.metrics.pretrain import PretrainMetric

    return PretrainMetric().compute_metrics(results_)


def _itm_run(seed: int, constant_head: bool) -> list[dict]:
    """ITM AUC of a head that separates matched from mismatched fused features (noise differs per seed); the
    fault: the head's output ignored, a constant logit pair."""
    g = torch.Generator().manual_seed(seed)
    n, dim = 200, 16
    direction = torch.zeros(dim)
    direction[0] = 1.0
    head = nn.Linear(dim, 2)
    with torch.no_grad():
        head.weight.copy_(torch.stack([-direction, direction]))
        head.bias.zero_()
    pos = torch.randn(n, dim, generator=g) + 0.8 * direction
    neg = torch.randn(n, dim, generator=g) - 0.8 * direction

    def score(features: torch.Tensor) -> torch.Tensor:
        logits = head(features)
        if constant_head:
            logits = torch.zeros_like(logits) + torch.tensor([0.1, -0.1])
        return logits.softmax(dim=1)[:, 1].detach()

    rows = [{"itm_score": p, "itm_neg_score": q, "image_id": i} for i, (p, q) in enumerate(zip(score(pos), score(neg),
                                                                                                 strict=True))]
    metrics = _pretrain_metrics(rows)
    return _rows("albef", "pretrain", {"itm_auc": metrics["itm_auc"]}, seed)


def _tpd_run(seed: int, random_scores: bool) -> list[dict]:
    """Patch AUC of COPA's first reduction point: detector scores that follow the object-to-patch labels; the
    fault: the text-aware patch detector's scores replaced by random ones."""
    g = torch.Generator().manual_seed(100 + seed)
    rows = []
    for image_id in range(24):
        labels = (torch.rand(64, generator=g) < 0.25).float()
        scores = 1.5 * labels + torch.randn(64, generator=g)
        if random_scores:
            scores = torch.rand(64, generator=g)
        rows.append({"itm_score": torch.tensor(0.5), "patch_scores": scores, "patch_labels": labels,
                     "image_id": image_id})
    return _rows("copa", "pretrain", {"patch_auc": _pretrain_metrics(rows)["patch_auc"]}, seed)


def _vqa_run(seed: int, shuffled_vocab: bool) -> list[dict]:
    """VQA accuracy of a classifier over the answer vocabulary that is right most of the time; the fault: the
    answer vocabulary shuffled (logit i no longer means answer i)."""
    from harness.metrics.vqa import VQAMetric

    rng = random.Random(seed)
    vocab = [f"answer{i}" for i in range(40)] + ["yes", "no", "2", "red", "circle"]
    answers_of = list(vocab)
    if shuffled_vocab:
        random.Random(1234).shuffle(answers_of)
    g = torch.Generator().manual_seed(200 + seed)
    metric = VQAMetric()
    samples = []
    for q in range(150):
        truth = rng.randrange(len(vocab))
        logits = torch.randn(len(vocab), generator=g)
        logits[truth] += 2.5
        samples.append({"question_id": q, "pred_answer": answers_of[int(logits.argmax())],
                        "answers": [vocab[truth]] * 10})
    metric.process(None, samples)
    return _rows("copa", "vqa", {"vqa_acc": metric.compute_metrics(metric.results)["vqa_acc"]}, seed)


@pytest.mark.parametrize("make, model, metric", [
    (_tpd_run, "copa", "patch_auc"),
    (_itm_run, "albef", "itm_auc"),
    (_vqa_run, "copa", "vqa_acc"),
], ids=["tpd_random_scores", "itm_constant_head", "vqa_vocab_shuffled"])
def test_an_accuracy_fault_fails_the_gate_naming_model_and_metric(tmp_path, make, model, metric):
    _assert_caught(tmp_path, make, model, metric)


def test_accuracy_tolerances_come_from_the_runs_spread(tmp_path):
    stores = []
    for seed in BASELINE_SEEDS:
        stores.append(tmp_path / f"run{seed}")
        append_rows(stores[-1], _vqa_run(seed, False))
    baseline = gate.make_baseline(stores, SUITE)
    (entry,) = baseline["entries"]
    values = [_vqa_run(seed, False)[0]["value"] for seed in BASELINE_SEEDS]
    assert entry["n"] == 3 and entry["std"] == pytest.approx(float(np.std(values, ddof=1)))
    assert entry["value"] == pytest.approx(float(np.mean(values)))
    assert len(baseline["measurement"]["runs"]) == 3 and "max(k * std" in baseline["measurement"]["accuracy_rule"]
    tol, rule = gate.accuracy_tolerance(entry, 1, baseline["tolerances"])
    assert tol == pytest.approx(max(3 * entry["std"] * (1 + 1 / 3) ** 0.5, 2.0)) and "sqrt(1/1 + 1/3)" in rule


# ------------------------------------------------------------------------------------------ flops and speed


def _build(name: str) -> nn.Module:
    from zoo.build import build_model

    torch.manual_seed(0)
    return build_model(name, "tiny").eval()


def _efficiency_rows(profiled: list, seed: int) -> list[dict]:
    rows = results.efficiency_rows(profiled, suite=SUITE, scale="tiny", seed=seed, job_hash=f"eff{seed}",
                                   prov=PROV)
    return rows


def test_a_reducer_that_stops_pruning_fails_on_flops(tmp_path, one_thread):
    """The patch reducer keeps every token (keep ratio 1: the identity): COPA's multiply-adds rise."""
    from copa.reducers import PatchReducer
    from harness.profiling.efficiency import pair_macs

    models = {name: _build(name) for name in ("albef", "copa")}
    clean = {name: pair_macs(m)[0]["total"] / 1e9 for name, m in models.items()}
    for module in models["copa"].modules():
        if isinstance(module, PatchReducer):
            module.keep_ratio = 1.0
    faulty = dict(clean, copa=pair_macs(models["copa"])[0]["total"] / 1e9)
    assert faulty["copa"] > clean["copa"]

    def make(seed: int, fault: bool) -> list[dict]:
        gmacs = faulty if fault else clean
        return [r for name, value in gmacs.items()
                for r in _rows(name, "efficiency", {"gmacs": value, "speedup_flops": gmacs["albef"] / value}, seed)]

    baseline_runs = [make(seed, False) for seed in BASELINE_SEEDS]
    code, checks = _gate(tmp_path / "faulty", baseline_runs, make(CLEAN_SEED, True))
    assert code == 1 and {(c.model, c.metric) for c in checks if not c.passed} == {("copa", "gmacs"),
                                                                                  ("copa", "speedup_flops")}
    assert _gate(tmp_path / "clean", baseline_runs, make(CLEAN_SEED, False))[0] == 0


class _VirtualClock:
    """The profiler's clock, moved only by the models it times: each model's ViT adds its fixed cost per call, with
    seeded noise of +-2% per call, so a speed regression is measured the same way on any machine
    and under any load. Timed unit tests on shared cores are not (the real forward still runs)."""

    def __init__(self, seed: int) -> None:
        self.now, self.rng = 0.0, random.Random(seed)

    def perf_counter(self) -> float:
        return self.now

    def cost(self, seconds: float) -> Callable:
        def pre_hook(module: nn.Module, inputs: tuple) -> None:
            self.now += seconds * (1 + self.rng.uniform(-0.02, 0.02))
        return pre_hook


def test_a_15_percent_slower_forward_fails_the_speed_test(tmp_path, one_thread, monkeypatch):
    """COPA's ViT made slower by 15% of COPA's whole pair forward: its speed ratio against albef falls ~13%; with 15
    rounds a run the Mann-Whitney test finds it through the profiler's real rows, and a clean rerun passes."""
    from harness.profiling import speed as speed_module
    from harness.profiling.efficiency import profile_models

    models = {name: _build(name) for name in ("albef", "copa")}
    batch, repeats, copa_cost = 8, 15, 1.2e-3

    def run(seed: int, slowdown: float = 0.0) -> list[dict]:
        clock = _VirtualClock(seed)
        monkeypatch.setattr(speed_module, "time", SimpleNamespace(perf_counter=clock.perf_counter))
        hooks = [models["albef"].vision.register_forward_pre_hook(clock.cost(2.0e-3)),
                 models["copa"].vision.register_forward_pre_hook(clock.cost(copa_cost * (1 + slowdown)))]
        try:
            rows = profile_models(models, image_size=64, batch=batch, repeats=repeats, warmup=2)
        finally:
            for hook in hooks:
                hook.remove()
        return _efficiency_rows(rows, seed)

    baseline_runs = [run(seed) for seed in BASELINE_SEEDS[:2]]
    clean = run(CLEAN_SEED)
    faulty = run(CLEAN_SEED, slowdown=0.15)
    code, checks = _gate(tmp_path / "faulty", baseline_runs, faulty)
    speed = {c.model: c for c in checks if c.metric == "speedup_time"}
    assert code == 1 and [(c.model, c.metric) for c in checks if not c.passed] == [("copa", "speedup_time")], checks
    assert speed["copa"].p_value is not None and speed["copa"].p_value < 0.01 and "Mann-Whitney" in speed["copa"].rule
    code, checks = _gate(tmp_path / "clean", baseline_runs, clean)
    assert code == 0, [c for c in checks if not c.passed]
