"""Runs on mmengine's distributed engine under torchrun (gloo on CPU): evaluation in two processes gives the
metrics of one process (retrieval ranks over the whole gallery, not each process's shard); training in two
processes saves one plain checkpoint; a suite run by two processes writes each row once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter

import pytest
import torch

from harness.checkpoint import load_checkpoint
from harness.results import read_rows

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # two ranks per test: beside other tests they time out


def copa_bench(args: list[str], processes: int = 1, cwd=None, launcher: str = "pytorch") -> str:
    """``copa-bench ARGS`` in one process, or in ``processes`` processes started by torchrun or as srun starts
    them (``launcher='slurm'``: one process per task with Slurm's variables); the first process's stdout."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if launcher == "slurm" and processes > 1:
        return _as_srun(args, processes, env)
    if processes == 1:
        command = [sys.executable, "-m", "harness.cli", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "-m", "harness.cli", *args, "--launcher", "pytorch"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_srun(args: list[str], processes: int, env: dict) -> str:
    port = _free_port()
    started = [subprocess.Popen([sys.executable, "-m", "harness.cli", *args, "--launcher", "slurm"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(env, SLURM_PROCID=str(rank), SLURM_NTASKS=str(processes),
                                         SLURM_LOCALID=str(rank), SLURM_NODELIST="localhost",
                                         MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
               for rank in range(processes)]
    outputs = [p.communicate(timeout=900) for p in started]
    for process, (out, err) in zip(started, outputs, strict=True):
        assert process.returncode == 0, out[-2000:] + err[-4000:]
    return outputs[0][0]


def printed_metrics(stdout: str) -> dict[str, float]:
    """The ``  name  value`` lines that ``copa-bench train|test`` prints."""
    metrics = {}
    for line in stdout.splitlines():
        parts = line.split()
        if line.startswith("  ") and len(parts) == 2:
            metrics[parts[0]] = float(parts[1])
    return metrics


@pytest.fixture(scope="module")
def retrieval_test(tiny_benchmark, pretrained_checkpoint, tmp_path_factory):
    """``copa-bench test`` of zero-shot retrieval over 48 images (three times the ITM shortlist of 16),
    and its metrics in one process (run once)."""
    args = ["test", "--model", "albef", "--task", "retrieval", "--checkpoint", str(pretrained_checkpoint("albef")),
            "--data", str(tiny_benchmark), "--cfg-options", "test_dataloader.dataset.indices=48"]
    one = printed_metrics(copa_bench([*args, "--work-dir", str(tmp_path_factory.mktemp("one"))]))
    return args, one


@pytest.mark.parametrize("launcher", ["pytorch", "slurm"])
def test_two_process_retrieval_ranks_the_whole_gallery_like_one_process(retrieval_test, tmp_path, launcher):
    args, one = retrieval_test
    two = printed_metrics(copa_bench([*args, "--work-dir", str(tmp_path / "two")], processes=2, launcher=launcher))
    assert {"txt_r1", "img_r10", "r_mean"} <= set(one)
    assert two == one  # equal to the printed precision (4 decimals)


def test_two_process_training_saves_a_checkpoint_that_tests_like_one_process(tiny_benchmark, tmp_path):
    work_dir = tmp_path / "train2"
    copa_bench(["train", "--model", "copa", "--task", "pretrain", "--max-iters", "3", "--vision-init", "none",
                "--data", str(tiny_benchmark), "--work-dir", str(work_dir),
                "--cfg-options", "val_dataloader.dataset.indices=32"], processes=2)
    checkpoint = (work_dir / "last_checkpoint").read_text().strip()
    state = load_checkpoint(checkpoint)
    assert state["meta"]["iter"] == 3
    assert not any(k.startswith("module.") for k in state["state_dict"])  # saved unwrapped, loadable anywhere
    args = ["test", "--model", "copa", "--task", "patch_detection", "--checkpoint", checkpoint,
            "--data", str(tiny_benchmark), "--cfg-options", "test_dataloader.dataset.indices=64"]
    one = printed_metrics(copa_bench([*args, "--work-dir", str(tmp_path / "one")]))
    two = printed_metrics(copa_bench([*args, "--work-dir", str(tmp_path / "two")], processes=2))
    assert "patch_auc" in one and two == one


def test_a_suite_run_by_two_processes_writes_each_row_once(tiny_benchmark, tmp_path, write_suite):
    suite = write_suite(tmp_path / "pair.py", tiny_benchmark, ["copa", "vilt"], ["retrieval_zeroshot", "vqa"],
                        max_iters=dict(pretrain=2, vqa=2), eval_limit=dict(pretrain=8, retrieval_zeroshot=6, vqa=8),
                        efficiency=dict(scale="tiny", batch=2, repeats=1, models=["albef", "copa"]))
    store = tmp_path / "store"
    copa_bench(["run", suite, "--results", str(store)], processes=2, cwd=tmp_path)
    rows = read_rows(store)
    keys = Counter((r["model"], r["task"], r["metric"], r["seed"]) for r in rows)
    assert keys and max(keys.values()) == 1
    expected = {("copa", "pretrain"), ("copa", "retrieval_zeroshot"), ("copa", "vqa"), ("vilt", "vqa"),
                ("vilt", "retrieval_zeroshot")}
    assert {(r["model"], r["task"]) for r in rows} >= expected
    assert any(r["task"] == "efficiency" for r in rows)
    assert len({r["job_hash"] for r in rows if r["task"] == "vqa" and r["model"] != "chance"}) == 2



def _itc_in_two_processes(rank: int, port: int, image_feat, text_feat, image_ids, out_dir) -> None:
    import torch.distributed as dist

    from copa.objectives import itc_loss_gathered

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    rows = slice(rank * 4, (rank + 1) * 4)
    images = image_feat[rows].clone().requires_grad_(True)
    texts = text_feat[rows].clone().requires_grad_(True)
    loss, sim = itc_loss_gathered(images, texts, torch.tensor(0.07), image_ids[rows])
    loss.backward()
    torch.save((loss.detach(), sim.detach(), images.grad, texts.grad), f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


def test_itc_in_two_processes_is_the_one_process_loss_over_the_global_batch(tmp_path):
    """Mean of the two processes' losses = the 1-process loss over all 8 rows; their gradients (as DDP
    averages them) = the 1-process gradients; rows of one image are positives across processes."""
    import torch.multiprocessing as mp
    import torch.nn.functional as F

    from copa.objectives import itc_loss, positive_pairs

    torch.manual_seed(0)
    image_feat = F.normalize(torch.randn(8, 6), dim=-1)
    text_feat = F.normalize(torch.randn(8, 6), dim=-1)
    image_ids = torch.tensor([0, 1, 2, 3, 3, 4, 5, 0])  # image 0 and 3 have a caption in both halves
    port = _free_port()
    mp.spawn(_itc_in_two_processes, args=(port, image_feat, text_feat, image_ids, str(tmp_path)), nprocs=2)
    out = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    images, texts = image_feat.clone().requires_grad_(True), text_feat.clone().requires_grad_(True)
    loss, sim = itc_loss(images, texts, torch.tensor(0.07), positive_pairs(8, image_ids, images.device))
    loss.backward()
    torch.testing.assert_close((out[0][0] + out[1][0]) / 2, loss.detach())
    torch.testing.assert_close(torch.cat([out[0][2], out[1][2]]) / 2, images.grad)
    torch.testing.assert_close(torch.cat([out[0][3], out[1][3]]) / 2, texts.grad)
    torch.testing.assert_close(out[1][1], sim.detach()[4:, 4:])
