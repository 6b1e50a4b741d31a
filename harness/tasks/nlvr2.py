"""NLVR2: is a statement true of a pair of images? ViLT's "pair" formulation, which every model here supports.

Each image is encoded with the statement on its own (``encode_pair``, so a text-aware reducer keeps the
patches that matter for that statement in that image), the two fused [CLS] vectors are concatenated, and
an MLP says True or False. The two pairs of a batch run as one batch of 2B pairs. ALBEF's own NLVR2 setup
instead replicates each fusion layer to cross-attend to both images (plus an extra pre-training stage);
the pre-trained backbones here have no such layers, so the pair formulation keeps every backbone as
pre-trained and the comparison between models fair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from copa.registry import MODELS
from copa.text import bert_init
from harness.data.collate import cached_tokenizer
from harness.registry import FUNCTIONS
from harness.tasks.base import TaskModel


@FUNCTIONS.register_module()
def nlvr2_collate(samples: Sequence[dict], tokenizer: str, max_length: int = 40) -> dict:
    """Samples of :class:`~harness.data.datasets.NLVR2Dataset` → ``images`` ``(B, 2, 3, H, W)`` (left, right),
    ``text_ids``, ``text_mask``, ``labels`` ``(B,)`` (1 = True) and the ``identifiers`` (a list)."""
    tok = cached_tokenizer(str(tokenizer))
    enc = tok([s["text"] for s in samples], padding="longest", truncation=True, max_length=max_length,
              return_tensors="pt")
    return {"images": torch.stack([s["imgs"] for s in samples]), "text_ids": enc["input_ids"],
            "text_mask": enc["attention_mask"], "labels": torch.tensor([int(s["label"]) for s in samples]),
            "identifiers": [s["identifier"] for s in samples]}


@MODELS.register_module()
class NLVR2Model(TaskModel):
    """Backbone + ViLT's NLVR2 head (Linear 2D→2D, LayerNorm, GELU, Linear 2D→2) on the two fused [CLS]."""

    def __init__(self, backbone: dict, checkpoint: str | None = None, require_head: bool = False,
                 data_preprocessor: dict | None = None) -> None:
        super().__init__(backbone, checkpoint=checkpoint, require_head=require_head,
                         data_preprocessor=data_preprocessor)
        dim = 2 * self.backbone.text_config.hidden_size
        self.nlvr2_head = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, 2))
        self.nlvr2_head.apply(bert_init(0.02))

    def pair_features(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """``(B, 2D)``: the fused [CLS] of (left image, text) then of (right image, text)."""
        if images.dim() != 5 or images.shape[1] != 2:
            raise ValueError(f"NLVR2 images must be (B, 2, 3, H, W), got {tuple(images.shape)}")
        b = images.shape[0]
        fused = self.backbone.encode_pair(images.flatten(0, 1), text_ids.repeat_interleave(2, dim=0),
                                          text_mask.repeat_interleave(2, dim=0))
        return fused.reshape(b, -1)

    def forward(self, images: Tensor, text_ids: Tensor, text_mask: Tensor, labels: Tensor | None = None,
                identifiers: Sequence[str] | None = None, mode: str = "tensor", **unused):
        """``'tensor'``: logits ``(B, 2)`` (index 1 = True); ``'loss'``: ``loss_nlvr2`` (cross-entropy);
        ``'predict'``: AccuracyMetric rows ``pred``, ``label``, ``id`` (the identifier)."""
        logits = self.nlvr2_head(self.pair_features(images, text_ids, text_mask))
        if mode == "loss":
            if labels is None:
                raise ValueError("NLVR2 training needs the labels")
            return {"loss_nlvr2": F.cross_entropy(logits, labels.long())}
        if mode == "predict":
            preds = logits.argmax(dim=1).tolist()
            n = len(preds)
            gold = labels.tolist() if labels is not None else [None] * n
            ids = list(identifiers) if identifiers is not None else [None] * n
            return [{"pred": p, "label": y, "id": i} for p, y, i in zip(preds, gold, ids, strict=True)]
        return logits
