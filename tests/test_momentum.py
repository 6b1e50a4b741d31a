"""ALBEF's momentum distillation (copa.vlp, copa.objectives): the ITC loss with a queue and soft targets, the MLM
distillation term, the moving-average update and the queue, each against an independent computation written
from ALBEF's description (salesforce/ALBEF ``models/model_pretrain.py``): targets ``alpha * softmax(momentum
similarities) + (1 - alpha) * hard targets`` over the batch and the queue, ``p_m <- m p_m + (1 - m) p``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from copa.objectives import IGNORE_INDEX, itc_loss_momentum, soft_token_cross_entropy
from harness.hooks import DistillationWarmupHook
from zoo.build import METHODS, VLPModel, build_model, model_config


def _unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


def _reference_itc(image, text, image_m, text_m, image_queue, text_queue, id_queue, ids, temp, alpha):
    """Row by row: each row's hard targets spread over the columns (batch, then queue) with its image id."""
    columns_image = torch.cat([image_m, image_queue])
    columns_text = torch.cat([text_m, text_queue])
    column_ids = list(ids) + list(id_queue)
    total = 0.0
    for i in range(image.shape[0]):
        hard = torch.tensor([1.0 if column_ids[j] == ids[i] else 0.0 for j in range(len(column_ids))])
        hard = hard / hard.sum()
        for query, query_m, columns, columns_m in ((image[i], image_m[i], columns_text, columns_text),
                                                   (text[i], text_m[i], columns_image, columns_image)):
            logits_m = torch.tensor([float(query_m @ c) / temp for c in columns_m])
            target = alpha * logits_m.softmax(0) + (1 - alpha) * hard
            logits = torch.tensor([float(query @ c) / temp for c in columns])
            total += -float((logits.log_softmax(0) * target).sum()) / 2
    return total / image.shape[0]


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_itc_with_queue_and_soft_targets_matches_reference(alpha):
    torch.manual_seed(0)
    batch, queue, dim = 6, 10, 8
    image, text, image_m, text_m = (_unit(batch, dim) for _ in range(4))
    image_queue, text_queue = _unit(queue, dim), _unit(queue, dim)
    ids = torch.tensor([3, 3, 4, 5, 6, 7])  # captions 0 and 1 share an image
    id_queue = torch.tensor([4, -1, -1, 9, 3, -1, -1, -1, 8, -1])  # earlier batches held images 4 and 3
    temp = torch.tensor(0.07)
    loss, sim = itc_loss_momentum(image, text, image_m, text_m, image_queue, text_queue, id_queue, ids, temp, alpha)
    expected = _reference_itc(image, text, image_m, text_m, image_queue, text_queue, id_queue.tolist(),
                              ids.tolist(), 0.07, alpha)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(sim, image @ text_m.t() / temp)  # ITM mines from the in-batch block


def test_itc_without_ids_contrasts_the_diagonal_only():
    """ALBEF's pre-training targets: the diagonal; nothing in the queue is a positive."""
    torch.manual_seed(1)
    image, text, image_m, text_m = (_unit(4, 8) for _ in range(4))
    queue = _unit(5, 8)
    ids = torch.arange(4)
    never = torch.full((5,), -1)
    with_ids = itc_loss_momentum(image, text, image_m, text_m, queue, queue, never, ids, torch.tensor(0.1), 0.4)[0]
    without = itc_loss_momentum(image, text, image_m, text_m, queue, queue, never, None, torch.tensor(0.1), 0.4)[0]
    assert float(with_ids) == pytest.approx(float(without))


def test_soft_token_cross_entropy_matches_reference():
    torch.manual_seed(2)
    logits, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7).softmax(-1)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 3], labels[1, 4] = 2, 5, 0
    marked = [(0, 1), (1, 3), (1, 4)]
    expected = sum(-sum(float(teacher[b, t, v]) * math.log(float(logits[b, t].softmax(0)[v])) for v in range(7))
                   for b, t in marked) / len(marked)
    assert float(soft_token_cross_entropy(logits, teacher, labels)) == pytest.approx(expected, rel=1e-5)
    assert float(soft_token_cross_entropy(logits, teacher, torch.full((2, 5), IGNORE_INDEX))) == 0.0


def _batch(batch: int = 4, length: int = 10):
    torch.manual_seed(3)
    text_ids = torch.randint(5, 2000, (batch, length))
    text_ids[:, 0] = 101
    return dict(images=torch.randn(batch, 3, 64, 64), text_ids=text_ids,
                text_mask=torch.ones(batch, length, dtype=torch.long), image_ids=torch.arange(batch) + 10)


@pytest.mark.parametrize("name", ["albef", "copa"])
def test_momentum_update_and_queue(name):
    """One training step: every momentum parameter moves to ``m p_m + (1 - m) p`` once (the MLM head's tied word
    embeddings included), and the queue's next rows hold the momentum model's features of the batch with their
    image ids."""
    torch.manual_seed(0)
    model = build_model(name, "tiny", dropout=0.0, momentum=0.9, queue_size=6).train()
    with torch.no_grad():  # make the momentum model differ from the model, so the update is visible
        for p in model.momentum_model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sources = {f"{key}.{n}": p for key in model.momentum_model for n, p in getattr(model, key).named_parameters()}
    before = {n: p.detach().clone() for n, p in model.momentum_model.named_parameters()}
    batch = _batch()
    model(**batch, mode="loss")
    for n, p_m in model.momentum_model.named_parameters():
        assert torch.allclose(p_m, 0.9 * before[n] + 0.1 * sources[n].detach(), atol=1e-6), n
    tied = model.momentum_model["mlm_head"].decoder.weight
    assert tied is model.momentum_model["text_encoder"].embeddings.word_embeddings.weight

    model.eval()  # the momentum model's features of the batch, with the parameters that made them (no update)
    teacher = model._momentum_outputs(batch["images"], batch["text_ids"], batch["text_mask"], None)
    assert int(model.queue_ptr) == 4
    assert torch.allclose(model.image_queue[:4], teacher["image_feat"], atol=1e-5)
    assert torch.allclose(model.text_queue[:4], teacher["text_feat"], atol=1e-5)
    assert model.id_queue[:4].tolist() == batch["image_ids"].tolist() and model.id_queue[4:].tolist() == [-1, -1]
    model.train()
    model(**batch, mode="loss")  # wraps around: 2 rows at the end, 2 at the start
    assert int(model.queue_ptr) == 2 and model.id_queue.tolist() == [12, 13, 12, 13, 10, 11]


def test_momentum_model_gets_no_gradient_and_is_not_counted_as_parameters():
    model = build_model("albef", "tiny", momentum=0.995).train()
    sum(model(**_batch(), mode="loss").values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.momentum_model.parameters())
    assert any(p.grad is not None for p in model.vision.parameters())


def test_every_dual_stream_model_distils_at_base_scale_and_momentum_none_turns_it_off():
    """ALBEF's constants at base scale; tiny scale pre-trains without them (zoo.MOMENTUM_DISTILLATION says why)
    unless a run asks for them, as the paper suite's ``momentum`` variant does."""
    for name, method in METHODS.items():
        cfg, tiny = model_config(name, "base"), model_config(name, "tiny")
        if cfg["type"] == "VLPModel":
            assert cfg["momentum"] == 0.995 and cfg["distill_alpha"] == 0.4 and cfg["queue_size"] == 65536, name
            assert tiny["momentum"] is None and "queue_size" not in tiny, name
        else:
            assert "momentum" not in method, name
    assert model_config("albef", "tiny", momentum=0.995)["queue_size"] == 4096  # 128 batches of 32
    off = build_model("albef", "tiny", momentum=None)
    assert off.momentum_model is None and not hasattr(off, "image_queue")
    assert "queue_size" not in model_config("albef", "tiny", momentum=None, queue_size=8)
    cfg = {k: v for k, v in model_config("albef", "tiny", momentum=None).items() if k != "type"}
    with pytest.raises(ValueError, match="queue_size needs momentum"):
        VLPModel(**cfg, queue_size=8)


def test_distillation_ramp_follows_albef_first_epoch():
    hook = DistillationWarmupHook(fraction=0.1)
    assert [hook.ramp(i, 100) for i in (0, 5, 10, 50)] == [0.0, 0.5, 1.0, 1.0]
    assert DistillationWarmupHook(fraction=0.0).ramp(0, 100) == 1.0
    with pytest.raises(ValueError):
        DistillationWarmupHook(fraction=1.5)


def test_a_bad_model_argument_is_one_line_and_leaves_no_work_dir(tiny_benchmark, tmp_path, capsys):
    """``--cfg-options`` reaches the model after the config is built: the model is built on the meta device before
    the Runner, so its refusal is one line naming the option (exit 2) and nothing is written."""
    from harness.cli import main

    work = tmp_path / "work"
    for option, reason in (("model.momentum=1.5", "momentum must be in (0, 1)"),
                           ("model.queue_size=8", "queue_size needs momentum")):  # tiny: no momentum model
        code = main(["train", "--model", "copa", "--task", "pretrain", "--data", str(tiny_benchmark), "--vision-init",
                     "none", "--max-iters", "1", "--work-dir", str(work), "--cfg-options", option])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "--cfg-options" in err[0] and reason in err[0], err
        assert not work.exists()
