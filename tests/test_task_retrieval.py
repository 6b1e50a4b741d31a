"""Retrieval: ITM re-ranking of padded shortlists, and zero-shot / fine-tuned runs over the whole gallery."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.errors import NotApplicable
from harness.runner import build_config, test, train
from harness.tasks.retrieval import RetrievalModel

TOKENS = dict(vocab_size=2000, cls_token_id=1, sep_token_id=2, pad_token_id=0, mask_token_id=3)
KEYS = {"txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "r_mean", "rerank_k"}


@pytest.mark.parametrize("name", ["albef", "copa"])
def test_itm_scores_of_padded_batches_equal_pair_by_pair_scores(name):
    torch.manual_seed(0)
    model = RetrievalModel(backbone=dict(type=name, scale="tiny", **TOKENS), itm_batch=3).eval()
    gallery = torch.randn(4, 3, 64, 64)
    texts = [torch.tensor([1] + list(range(10, 10 + n)) + [2]) for n in (3, 7, 1, 5, 2)]
    image_idx = [0, 3, 1, 1, 2]
    batched = model.itm_scores(gallery, image_idx, texts, pad_id=0)
    single = torch.stack([model.backbone.itm_logits(gallery[i:i + 1], t[None], torch.ones_like(t)[None])
                          .softmax(-1)[0, 1] for i, t in zip(image_idx, texts, strict=True)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_fine_tuning_keeps_only_the_retrieval_losses():
    model = RetrievalModel(backbone=dict(type="copa", scale="tiny", **TOKENS))
    assert model.backbone.losses == ("itc", "itm")


def test_vilt_has_no_shortlist(tiny_benchmark):
    with pytest.raises(NotApplicable, match="ITC"):
        build_config("vilt", "retrieval", data=tiny_benchmark, checkpoint="unused")


def _last(work_dir: Path) -> str:
    return (work_dir / "last_checkpoint").read_text().strip()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["albef", "copa"])
def test_zero_shot_then_fine_tuned_retrieval_over_the_gallery(name, tiny_benchmark, pretrained_checkpoint, tmp_path):
    zero = build_config(name, "retrieval", data=tiny_benchmark, work_dir=tmp_path / "zero",
                        checkpoint=pretrained_checkpoint(name), testing=True)
    zero.test_dataloader.dataset.indices = 12
    zero.test_dataloader.batch_size = 5  # several batches: the loop must assemble the gallery
    metrics = test(zero)
    assert KEYS <= set(metrics) and metrics["rerank_k"] == 16
    assert all(0 <= metrics[k] <= 100 for k in KEYS - {"rerank_k"})
    assert metrics["img_r10"] >= metrics["img_r1"]

    cfg = build_config(name, "retrieval", data=tiny_benchmark, work_dir=tmp_path / "ft", max_iters=2,
                       checkpoint=pretrained_checkpoint(name))
    cfg.train_dataloader.batch_size = 8
    train(cfg)
    tuned = build_config(name, "retrieval", data=tiny_benchmark, work_dir=tmp_path / "ft",
                         checkpoint=_last(tmp_path / "ft"), testing=True)
    tuned.test_dataloader.dataset.indices = 12
    assert KEYS <= set(test(tuned))
