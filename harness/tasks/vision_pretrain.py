"""Vision pre-training: the tiny scale's stand-in for the ImageNet-pretrained ViT every VLP model starts from.

COPA, ALBEF and TRIPS initialise their ViT from ImageNet weights; a ViT trained from scratch on a few
thousand images of a caption benchmark does not learn colour and shape detectors fast enough for the
contrastive and matching losses to leave chance within minutes. So at tiny scale the ViT is first trained
to name the class (category, colour, colour + category) of the images of the benchmark's vision pool:
single-object images in ImageNet's layout, drawn apart from the caption images and without boxes, so that
no model sees a box of a caption image except through PTA. Every model's vision encoder starts from the
file this writes, as they would from one timm checkpoint at base scale.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch import Tensor

from copa.registry import MODELS
from copa.vision import VisionTransformer
from harness.registry import HOOKS

ENCODER_FILE = "vision_encoder.pth"


@MODELS.register_module()
class ObjectClassifier(BaseModel):
    """A :class:`~copa.vision.VisionTransformer` (no reducer) that says what is in an image: a linear multi-label
    head on its [CLS] (which categories, attribute values and pairs are present), with ``avg_head`` a second one
    on the average of its patch tokens (timm's ``global_pool='avg'``), and, when boxes are given, per annotated
    object linear heads on the object's patch tokens pooled by how much of each patch its box covers
    (``object_weights``): its category and its attribute value.

    Trained on [CLS] labels of cluttered scenes alone, the tiny ViT's final patch tokens told the benchmark's
    eight shapes apart hardly better than an untrained ViT's (a linear probe on box-pooled tokens: 20% against
    18%; 77% with the per-object heads, docs/experiments/history.md). The initialisation now learns from the
    box-free vision pool with the [CLS] and average heads (results/README.md has its probe).

    Args:
        vision: :class:`~copa.vision.VisionTransformer` arguments (a reducer in them is ignored).
        num_classes: size of the multi-label class list.
        num_categories, num_values: the per-object heads' vocabularies (0: no such head).
        avg_head: also classify from the average of the patch tokens.
        single_label: one class per image (ImageNet's softmax cross-entropy) instead of multi-label BCE.
    """

    def __init__(self, vision: dict, num_classes: int, num_categories: int = 0, num_values: int = 0,
                 avg_head: bool = False, single_label: bool = False, data_preprocessor: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        vision = {k: v for k, v in vision.items() if k not in ("reducer", "reduction_layers")}
        self.vision = VisionTransformer(**vision)
        dim = self.vision.embed_dim
        self.head = nn.Linear(dim, num_classes)
        self.category_head = nn.Linear(dim, num_categories) if num_categories else None
        self.value_head = nn.Linear(dim, num_values) if num_values else None
        self.avg_head = nn.Linear(dim, num_classes) if avg_head else None
        self.single_label = single_label
        for head in (self.head, self.category_head, self.value_head, self.avg_head):
            if head is not None:
                nn.init.zeros_(head.bias)
                nn.init.normal_(head.weight, std=0.02)

    def init_weights(self) -> None:
        """Initialised when built (timm's ViT init); mmengine's recursive re-init is not wanted."""
        self._is_init = True

    def forward(self, images: Tensor, labels: Tensor | None = None, object_weights: Tensor | None = None,
                object_targets: Tensor | None = None, object_images: Tensor | None = None, mode: str = "tensor",
                **unused):
        """``'loss'``: ``loss_cls`` (BCE of the [CLS] head), ``loss_avg`` (of the average head, when there is one)
        and, with objects in the batch, ``loss_category`` and
        ``loss_value`` (cross-entropy of the per-object heads; targets of -1 are left out); ``'predict'``: one row
        per image with the [CLS] ``scores`` and ``labels`` and, with objects, ``object_pred`` and
        ``object_targets`` ``(objects, 2)``; ``'tensor'``: the [CLS] head's logits."""
        tokens = self.vision(images, None).tokens
        logits = self.head(tokens[:, 0])
        objects = None
        if object_weights is not None and object_images is not None and self.category_head is not None:
            objects = object_tokens(tokens[:, 1:], object_weights, object_images)
        if mode == "loss":
            losses = {"loss_cls": self._classification_loss(logits, labels)}
            if self.avg_head is not None:
                losses["loss_avg"] = self._classification_loss(self.avg_head(tokens[:, 1:].mean(1)), labels)
            if objects is not None:
                for name, head, column in (("category", self.category_head, 0), ("value", self.value_head, 1)):
                    if head is None:
                        continue
                    logits_o, target = head(objects), object_targets[:, column]
                    # a batch without such labels still puts the head in the graph (DDP waits for its gradient)
                    losses[f"loss_{name}"] = F.cross_entropy(logits_o, target, ignore_index=-1) \
                        if bool((target >= 0).any()) else logits_o.sum() * 0.0
            return losses
        if mode == "predict":
            rows = [dict(scores=s.sigmoid(), labels=t) for s, t in zip(logits, labels, strict=True)]
            if objects is not None:
                pred = torch.stack([self._argmax(self.category_head, objects),
                                    self._argmax(self.value_head, objects)], dim=1)
                for i, row in enumerate(rows):
                    mine = object_images == i
                    row["object_pred"], row["object_targets"] = pred[mine], object_targets[mine]
            return rows
        return logits

    def _classification_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.single_label:
            return F.cross_entropy(logits, labels.argmax(dim=1))
        return F.binary_cross_entropy_with_logits(logits, labels)

    @staticmethod
    def _argmax(head: nn.Module | None, objects: Tensor) -> Tensor:
        if head is None:
            return objects.new_full((objects.shape[0],), -1, dtype=torch.long)
        return head(objects).argmax(dim=1)


def object_tokens(patch_tokens: Tensor, weights: Tensor, images: Tensor) -> Tensor:
    """``(objects, D)``: each object's patch tokens ``(B, P, D)`` averaged with its ``weights`` ``(objects, P)``
    (the share of each patch its box covers, normalised); ``images`` ``(objects,)`` says whose tokens."""
    batch, patches, dim = patch_tokens.shape
    spread = weights.new_zeros(weights.shape[0], batch, patches)  # (objects, B, P): no (objects, P, D) copy
    spread[torch.arange(weights.shape[0], device=weights.device), images] = weights
    return spread.reshape(-1, batch * patches).to(patch_tokens) @ patch_tokens.reshape(batch * patches, dim)


@HOOKS.register_module()
class ExportVisionEncoderHook(Hook):
    """After training, write the ViT's weights as a plain timm-style state dict (``vision_encoder.pth`` in
    the work dir) that ``VLPModel(vision_pretrained=...)`` loads. Written to a temporary name and renamed,
    so a crash never leaves a half-written file that a later run would take for finished."""

    priority = "LOW"

    def after_train(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        if runner.rank != 0:
            return
        path = os.path.join(runner.work_dir, ENCODER_FILE)
        tmp = path + ".tmp"
        torch.save({k: v.detach().cpu() for k, v in model.vision.state_dict().items()}, tmp)
        os.replace(tmp, path)
        runner.logger.info(f"vision encoder written to {path}")
