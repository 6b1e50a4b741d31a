"""Speed statistics and the interleaved timing protocol, on synthetic series (no timing asserted)."""

from __future__ import annotations

import json

import pytest

from harness.profiling import speed
from harness.profiling.speed import paired_ratio, summarize, time_interleaved


def test_summary_of_a_known_series():
    # sorted: 1 2 3 4 5 6 7 8 100; linear-interpolated quartiles at positions 2 and 6 -> 3 and 7
    stats = summarize([5, 1, 100, 3, 2, 8, 4, 7, 6])
    assert (stats.median, stats.q1, stats.q3, stats.iqr) == (5, 3, 7, 4)
    assert (stats.minimum, stats.maximum, stats.n) == (1, 100, 9)
    # an even count interpolates: 1 2 3 4 -> median 2.5, q1 at 0.75 -> 1.75, q3 at 2.25 -> 3.25
    even = summarize([4, 1, 3, 2])
    assert (even.median, even.q1, even.q3) == (2.5, 1.75, 3.25)
    with pytest.raises(ValueError):
        summarize([])


def test_paired_ratio_uses_rounds_not_pooled_times():
    # the machine slows down by 2x halfway; the per-round ratio stays exactly 2
    reference = [2.0, 2.0, 4.0, 4.0]
    model = [1.0, 1.0, 2.0, 2.0]
    assert paired_ratio(reference, model).median == 2.0
    assert paired_ratio(reference, model).iqr == 0.0


def test_calls_are_interleaved_after_warmup(monkeypatch):
    order = []
    clock = iter(range(1000))
    monkeypatch.setattr(speed.time, "perf_counter", lambda: float(next(clock)))
    times = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=2)
    assert order == ["a", "b"] * 5
    assert times == {"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]}
    with pytest.raises(ValueError):
        time_interleaved({"a": lambda: None}, repeats=0)


def test_training_calls_run_outside_inference_mode():
    import torch

    seen = {}
    time_interleaved({"train": lambda: seen.setdefault("train", torch.is_inference_mode_enabled())},
                     repeats=1, warmup=0, inference=False, device="cpu")
    time_interleaved({"infer": lambda: seen.setdefault("infer", torch.is_inference_mode_enabled())},
                     repeats=1, warmup=0)
    assert seen == {"train": False, "infer": True}


def test_device_peaks():
    import torch

    assert speed.peak_tflops("NVIDIA H200", "bf16") == pytest.approx(989.4)
    assert speed.peak_tflops("NVIDIA H100 PCIe", "bf16") == pytest.approx(756.5)
    assert speed.peak_tflops("NVIDIA H100 80GB HBM3", "fp16") == pytest.approx(989.4)
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert speed.peak_tflops("NVIDIA H200", "fp32") == pytest.approx(67.0)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls then run on TF32 tensor cores
        assert speed.peak_tflops("NVIDIA H200", "fp32") == pytest.approx(494.7)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert speed.peak_tflops("cpu", "fp32") is None and speed.peak_tflops("Tesla T4", "fp16") is None
    assert speed.machine("cpu")["device"] == "cpu"


def test_pinned_threads_are_recorded():
    import torch

    before = torch.get_num_threads()
    try:
        assert speed.pin_threads(1) == 1
        assert speed.machine()["threads"] == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_profile_cli_writes_rows_with_the_documented_keys(tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "p.json"
    code = main(["profile", "--models", "albef,copa", "--scale", "tiny", "--batch", "2", "--repeats", "2",
                 "--json", str(out), "--csv", str(tmp_path / "p.csv")])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [(r["model"], r["image_size"]) for r in rows] == [("albef", 64), ("copa", 64)]
    for key in ("model", "image_size", "params_m", "gmacs", "gmacs_vision", "pairs_per_s", "latency_ms",
                "speedup_flops", "speedup_time"):
        assert all(key in r for r in rows), key
    albef, copa = rows
    assert albef["speedup_flops"] == 1.0 and albef["speedup_time"] == 1.0
    assert copa["speedup_flops"] == pytest.approx(albef["gmacs"] / copa["gmacs"])
    table = capsys.readouterr().out
    assert "GMACs" in table and "| copa | 64 |" in table
    assert (tmp_path / "p.csv").read_text().splitlines()[0].startswith("model,image_size,params_m,gmacs")


@pytest.mark.parametrize("argv, field", [
    (["--models", "albef,clip"], "--models"),
    (["--models", "copa"], "--reference"),
    (["--image-size", "100"], "--image-size"),
    (["--batch", "0"], "--batch"),
    (["--json", "/nonexistent-dir/p.json"], "--json"),
])
def test_profile_bad_arguments(capsys, argv, field):
    from harness.cli import main

    assert main(["profile", "--scale", "tiny", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]
