"""Vision pre-training: the tiny scale's stand-in for the ImageNet-pretrained ViT every VLP model starts from.

COPA, ALBEF and TRIPS initialise their ViT from ImageNet weights; a ViT trained from scratch on a few
thousand images of a caption benchmark does not learn colour and shape detectors fast enough for the
contrastive and matching losses to leave chance within minutes. So at tiny scale the ViT is first trained
to say which objects (category, colour, colour + category) are in the training images, and every model's
vision encoder starts from that file, as they would from one timm checkpoint at base scale.
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
    """A :class:`~copa.vision.VisionTransformer` (no reducer) with a linear multi-label head on its [CLS]."""

    def __init__(self, vision: dict, num_classes: int, data_preprocessor: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        vision = {k: v for k, v in vision.items() if k not in ("reducer", "reduction_layers")}
        self.vision = VisionTransformer(**vision)
        self.head = nn.Linear(self.vision.embed_dim, num_classes)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.02)

    def init_weights(self) -> None:
        """Initialised when built (timm's ViT init); mmengine's recursive re-init is not wanted."""
        self._is_init = True

    def forward(self, images: Tensor, labels: Tensor | None = None, mode: str = "tensor", **unused):
        logits = self.head(self.vision(images, None).tokens[:, 0])
        if mode == "loss":
            return {"loss_cls": F.binary_cross_entropy_with_logits(logits, labels)}
        if mode == "predict":
            return [dict(scores=s.sigmoid(), labels=t) for s, t in zip(logits, labels, strict=True)]
        return logits


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
