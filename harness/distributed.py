"""Runs on mmengine's distributed engine (torch.distributed), with or without a GPU.

copa-bench joins the process group itself when a command starts (gloo on the CPU, nccl on GPUs: by the
command's ``--device``, so ``--device cpu`` runs on gloo on a GPU machine too), before any
Runner exists: data generation and the store need ranks before the first job, and mmengine's own launchers
assume a GPU per process (``torch.cuda.set_device`` before ``init_process_group``). Each Runner then finds
the group and only reads it. On CPU the model is wrapped by ``CPUDistributedDataParallel``, since
``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU module.
"""

from __future__ import annotations

import os

import torch
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from harness.errors import InputError

LAUNCHERS = ("none", "pytorch", "slurm")


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for modules on the CPU: ``device_ids`` must be None there."""

    def __init__(self, module, device_ids=None, **kwargs) -> None:
        super().__init__(module=module, device_ids=None, **kwargs)


def _slurm_environment() -> None:
    """RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR from Slurm's variables (one task per process, as mmengine's
    slurm launcher does); MASTER_ADDR is the first node of the job unless already set."""
    import subprocess

    os.environ.setdefault("RANK", os.environ["SLURM_PROCID"])
    os.environ.setdefault("WORLD_SIZE", os.environ["SLURM_NTASKS"])
    os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ["SLURM_NODELIST"]
        os.environ["MASTER_ADDR"] = subprocess.getoutput(f"scontrol show hostname {nodes} | head -n1")
    os.environ.setdefault("MASTER_PORT", "29500")


def init_distributed(launcher: str, device: torch.device | str | None = None) -> None:
    """Join the process group for ``launcher`` (once per process). ``pytorch``: started by torchrun;
    ``slurm``: started by srun, one task per process. ``device`` (default: CUDA when available): on CUDA each
    process takes the GPU of its ``LOCAL_RANK``, so a GPU index is refused."""
    from harness.device import resolve_device

    if launcher not in LAUNCHERS:
        raise InputError(None, "--launcher", f"unknown launcher {launcher!r} (choose from {', '.join(LAUNCHERS)})")
    if launcher == "none" or is_initialized():
        return
    device = resolve_device(device)
    if device.index is not None:
        raise InputError(None, "--device", f"{device}: under --launcher every process uses the GPU of its "
                         "LOCAL_RANK; give --device cuda")
    if launcher == "slurm":
        if "SLURM_PROCID" not in os.environ:
            raise InputError(None, "--launcher", "slurm: SLURM_PROCID is not set (start the command with srun)")
        _slurm_environment()
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise InputError(None, "--launcher", f"{launcher}: {', '.join(missing)} not set "
                         "(start the command with torchrun, e.g. torchrun --nproc-per-node 2 -m harness.cli ...)")
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend="nccl" if on_gpu else "gloo")


def configure(cfg, launcher: str) -> None:
    """Set a job config's launcher (the group is already joined, so mmengine only reads it); on the CPU, wrap
    the model for DDP without device ids."""
    from harness.device import job_settings

    device, _ = job_settings(cfg)
    init_distributed(launcher, device)
    cfg.launcher = launcher
    if launcher == "none":
        return
    # task heads and PTA/decoder branches are unused on some steps: DDP must not wait for their gradients
    if device.type == "cuda":
        cfg.find_unused_parameters = True
    else:
        cfg.model_wrapper_cfg = dict(type="CPUDistributedDataParallel", find_unused_parameters=True)


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if is_initialized() else 0


def barrier() -> None:
    if is_initialized():
        torch.distributed.barrier()
