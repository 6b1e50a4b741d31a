"""Where and in what precision a job runs: one place that every command (train, test, run, profile) asks.

``--device`` names a torch device (``cpu``, ``cuda``, ``cuda:1``; default: CUDA when available, else the CPU);
``--precision`` is ``fp32``, ``bf16`` or ``fp16``. Reduced precisions run under ``torch.autocast`` (mixed
precision: weights stay fp32, matrix products run in the low type), which is what the published GPU figures
of VLP models use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from harness.config_namespace import settings as harness_settings
from harness.errors import InputError

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device | None = None, flag: str = "--device") -> torch.device:
    """The device to run on; ``None`` or ``"auto"``: CUDA when available, else the CPU. A device that this
    machine lacks is bad input (named by ``flag``), not a crash halfway through a job."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(None, flag, f"unknown device {str(name)!r} (e.g. cpu, cuda, cuda:0)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(None, flag, f"{device} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(None, flag, f"{device} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise InputError(None, flag, f"unsupported device type {device.type!r} (cpu or cuda)")
    return device


def check_precision(precision: str, device: torch.device, flag: str = "--precision") -> str:
    """``precision`` if this device can run it (fp16 autocast needs CUDA)."""
    if precision not in PRECISIONS:
        raise InputError(None, flag, f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if precision == "fp16" and device.type != "cuda":
        raise InputError(None, flag, "fp16 needs a CUDA device (use bf16 on the CPU)")
    return precision


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``precision`` on ``device`` (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def to_device(data: Any, device: torch.device | str) -> Any:
    """``data`` with every tensor in it (nested dicts, lists and tuples) moved to ``device``. Copies to a GPU
    do not block; copies to the CPU do (a non-blocking one may be read before the GPU has written it)."""
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=torch.device(device).type != "cpu")
    if isinstance(data, dict):
        return {k: to_device(v, device) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        moved = [to_device(v, device) for v in data]
        return type(data)(moved) if isinstance(data, list) or not hasattr(data, "_fields") else type(data)(*moved)
    return data


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for the device's queued work (timing must not stop a clock before the GPU has finished)."""
    device = torch.device(device) if device is not None else None
    if (device is None or device.type == "cuda") and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def device_name(device: torch.device | str) -> str:
    """What to record as the device that ran: the GPU's name, or ``cpu``."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


@contextlib.contextmanager
def peak_memory(device: torch.device | str) -> Iterator[dict]:
    """On CUDA, the allocator's peak over the block, above what was allocated before it, in MB
    (``result['peak_mb']``); on the CPU ``None`` (measured elsewhere with the profiler)."""
    device = torch.device(device)
    result: dict = {"peak_mb": None}
    if device.type != "cuda":
        yield result
        return
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield result
    torch.cuda.synchronize(device)
    result["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20


def full_precision(data: Any) -> Any:
    """``data`` with every bf16/fp16 tensor in it cast to fp32: what autocast returns, made readable by metrics
    that call ``.numpy()`` (which has no bfloat16)."""
    if isinstance(data, torch.Tensor):
        return data.float() if data.dtype in (torch.bfloat16, torch.float16) else data
    if isinstance(data, dict):
        return {k: full_precision(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)) and not hasattr(data, "_fields"):
        return type(data)(full_precision(v) for v in data)
    return data


CONFIG_KEY = "device_cfg"
"""The key, under a job config's ``harness`` namespace (``harness.runner``), of ``dict(device=..., precision=...)``."""


def device_settings(cfg: Any) -> dict:
    """A job config's ``harness.device_cfg`` (empty when it has none)."""
    return dict(harness_settings(cfg).get(CONFIG_KEY) or {})


def job_settings(cfg: Any) -> tuple[torch.device, str]:
    """The device and precision a job config asks for; a config without them runs where mmengine would put it
    (CUDA when available), in fp32."""
    settings = device_settings(cfg)
    return resolve_device(settings.get("device")), settings.get("precision", "fp32")
