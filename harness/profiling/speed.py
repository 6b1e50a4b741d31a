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


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_interleaved(
    calls: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run every call ``warmup`` times, then ``repeats`` rounds of each call in turn (A B C A B C ...),
    so that drift in the machine's speed hits all of them alike. Returns seconds per call, per round."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    with torch.inference_mode():
        for _ in range(warmup):
            for call in calls.values():
                call()
        synchronize()
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                synchronize()
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


def peak_memory_mb(call: Callable[[], object]) -> float:
    """Peak memory of the tensors ``call`` allocates (activations and temporaries, weights excluded), in MB.

    On CUDA, the allocator's peak over the call. On CPU, allocator reuse hides a forward from the
    process's RSS, so torch's profiler records every allocation and free and the running total's
    maximum is taken.
    """
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        call()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    running = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return peak / 2**20


def machine() -> dict:
    """What the timings were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"cpu": cpu, "device": device, "threads": torch.get_num_threads(), "torch": torch.__version__}
