"""Patch detection: how well a model's reducer finds the text-relevant patches.

For each test caption, the first reduction point's patch scores and its kept patches are compared with the
object-to-patch labels of the objects the caption mentions (COCO boxes of the annotated test images).
Nothing is trained: the task tests a pre-training or fine-tuning checkpoint of a model with a reducer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from copa.registry import MODELS
from harness.tasks.base import TaskModel


@MODELS.register_module()
class PatchDetectionModel(TaskModel):
    """Reads the backbone's first reduction point: ``patch_scores``, ``kept`` and the labels beside them."""

    def forward(self, images: Tensor, text_ids: Tensor, text_mask: Tensor, patch_labels: Tensor | None = None,
                mode: str = "tensor", **unused):
        if mode == "loss":
            raise RuntimeError("patch detection has nothing to train; test a checkpoint instead")
        out = self.backbone.extract(images, text_ids, text_mask)
        scores, kept_ids = out["scores"][0], out["kept_patch_ids"][0]
        kept = torch.zeros_like(scores, dtype=torch.bool)
        kept.scatter_(1, kept_ids.clamp_min(0), kept_ids >= 0)
        if mode == "tensor":
            return scores
        return [dict(patch_scores=s, patch_labels=lab, kept=k)
                for s, lab, k in zip(scores, patch_labels, kept, strict=True)]
