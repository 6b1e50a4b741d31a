"""Patch detection: the reducer's kept patches and scores against the object-to-patch labels."""

from __future__ import annotations

import pytest
import torch

from harness.errors import InputError, NotApplicable
from harness.runner import build_config, test
from harness.tasks.patch_detection import PatchDetectionModel

TOKENS = dict(vocab_size=2000, cls_token_id=1, sep_token_id=2, pad_token_id=0, mask_token_id=3)


def test_kept_mask_marks_exactly_the_kept_patches():
    torch.manual_seed(0)
    model = PatchDetectionModel(backbone=dict(type="copa", scale="tiny", keep_ratio=0.25, **TOKENS)).eval()
    images, ids = torch.randn(2, 3, 64, 64), torch.randint(10, 2000, (2, 6))
    labels = torch.zeros(2, 64)
    rows = model(images, ids, torch.ones_like(ids), patch_labels=labels, mode="predict")
    out = model.backbone.extract(images, ids, torch.ones_like(ids))
    for row, kept_ids, scores in zip(rows, out["kept_patch_ids"][0], out["scores"][0], strict=True):
        assert int(row["kept"].sum()) == 16 == len(set(kept_ids.tolist()))
        assert set(torch.nonzero(row["kept"]).flatten().tolist()) == set(kept_ids.tolist())
        torch.testing.assert_close(row["patch_scores"], scores)
        # copa keeps its top-scored patches
        assert set(kept_ids.tolist()) == set(scores.topk(16).indices.tolist())


def test_applies_only_to_models_with_a_reducer_and_only_as_a_test(tiny_benchmark):
    with pytest.raises(NotApplicable, match="no reducer"):
        build_config("albef", "patch_detection", data=tiny_benchmark, checkpoint="unused", testing=True)
    with pytest.raises(InputError, match="nothing to train"):
        build_config("copa", "patch_detection", data=tiny_benchmark, checkpoint="unused")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["copa", "tome"])
def test_patch_detection_of_a_pretraining_checkpoint(name, tiny_benchmark, pretrained_checkpoint, tmp_path):
    cfg = build_config(name, "patch_detection", data=tiny_benchmark, work_dir=tmp_path,
                       checkpoint=pretrained_checkpoint(name), testing=True)
    cfg.test_dataloader.dataset.indices = 16
    metrics = test(cfg)
    assert {"patch_precision", "patch_recall", "patch_f1", "patch_auc"} <= set(metrics)
    assert 0 <= metrics["patch_auc"] <= 1
