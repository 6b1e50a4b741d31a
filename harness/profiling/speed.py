"""Wall-clock timing that survives shared, noisy machines: warm-up, repeated runs, median and IQR,
models interleaved in one process so that speed is compared as a ratio measured side by side."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from harness.device import synchronize


@dataclass(frozen=True)
class TimingStats:
    """Seconds per call: median, quartiles (numpy's linear interpolation), extremes, sample count."""

    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float
    n: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def summarize(times: list[float] | np.ndarray) -> TimingStats:
    values = np.asarray(times, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no timings to summarize")
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return TimingStats(float(median), float(q1), float(q3), float(values.min()), float(values.max()), int(values.size))


def time_interleaved(
    calls: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1, inference: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, list[float]]:
    """Run every call ``warmup`` times, then ``repeats`` rounds of each call in turn (A B C A B C ...),
    so that drift in the machine's speed hits all of them alike. Returns seconds per call, per round.

    Each timed call ends with a synchronisation of ``device`` (every CUDA device when None), so queued GPU
    work is inside its time. With ``inference`` (the default) everything runs under
    ``torch.inference_mode()``; without it the calls choose their own mode (a training step needs autograd)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    with torch.inference_mode() if inference else contextlib.nullcontext():
        for _ in range(warmup):
            for call in calls.values():
                call()
        synchronize(device)
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                synchronize(device)
                times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(reference: list[float], other: list[float]) -> TimingStats:
    """Per-round ratio reference/other (a speedup when > 1), summarised."""
    return summarize(np.asarray(reference) / np.asarray(other))


def pin_threads(threads: int | None) -> int:
    """Fix torch's intra-op threads (default: all cores this process may use) and return the number."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return torch.get_num_threads()


@contextlib.contextmanager
def _quiet_stderr():
    """Silence what C++ libraries print on file descriptor 2 (the profiler's start/stop lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(call: Callable[[], object], device: torch.device | str | None = None) -> float:
    """Peak memory of the tensors ``call`` allocates (activations and temporaries, weights excluded), in MB,
    on the device that runs it (default: CUDA when available, else the CPU).

    On CUDA, the allocator's peak over the call (:func:`harness.device.peak_memory`). On CPU, allocator
    reuse hides a forward from the process's RSS, so torch's profiler records every allocation and free
    and the running total's maximum is taken.
    """
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        from harness.device import peak_memory

        with peak_memory(device) as result:
            call()
        return result["peak_mb"]
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    running = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return peak / 2**20


def machine(device: torch.device | str | None = None) -> dict:
    """What the timings were measured on (``device``: the one that ran them; default CUDA when available)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    if device is None:
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    else:
        from harness.device import device_name

        name = device_name(device)
    return {"cpu": cpu, "device": name, "threads": torch.get_num_threads(), "torch": torch.__version__}


# Dense (no 2:4 sparsity) peak tensor throughput in TFLOP/s (1 FLOP = one multiply or one add, so 2 per
# multiply-add), keyed by a substring of ``torch.cuda.get_device_name``; the first match wins. Sources, NVIDIA's
# datasheets, which quote tensor figures *with sparsity* (dense = half):
# - H200 Tensor Core GPU (2024) and H100 Tensor Core GPU (2023; H200 and H100 SXM share the compute figures):
#   FP32 67, TF32 Tensor 989, BF16/FP16 Tensor 1,979 -> dense 494.7 and 989.4;
# - H100 PCIe: FP32 51, TF32 756, BF16 1,513; H100 NVL: FP32 60, TF32 835, BF16 1,671;
# - A100 (2021): FP32 19.5, TF32 312, BF16/FP16 624 -> dense 156 and 312.
# "tf32" applies to fp32 when torch lets matmuls use TF32 tensor cores.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    ("H100 PCIe", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5}),
    ("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    ("H100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
)


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The device's dense peak TFLOP/s for ``precision`` (fp32 reads as TF32 when torch allows TF32 matmuls),
    or None for a device the table does not know (every CPU)."""
    if precision == "fp32" and torch.backends.cuda.matmul.allow_tf32:
        precision = "tf32"
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peaks.get(precision)
    return None
