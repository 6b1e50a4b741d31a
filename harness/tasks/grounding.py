"""Visual grounding (RefCOCO family): find the box a referring expression names by scoring the pair's visual
tokens against the fused [CLS] of the (image, expression) pair, then regressing a box around the chosen patch.

The expression has to steer which patches survive, so the pair goes along the *text-aware* path
(``encode_pair_tokens``: the text [CLS] conditions COPA's and TRIPS's reducers, then the fusion encoder; ViLT's
joint transformer). Every model has that path (``harness.task_spec.requires = ['fusion']``). Localising by patch,
not by regressing coordinates from one pooled token, keeps the ViT's spatial layout in play: a one-stage,
anchor-free grounding head (text-conditioned centre classification as in CenterNet/FCOS, box terms from DETR: L1 +
generalised IoU on boxes normalised to the input image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou_loss

from copa.registry import MODELS
from harness.data.collate import cached_tokenizer
from harness.registry import FUNCTIONS
from harness.tasks.base import TaskModel


def xywh_to_cxcywh(boxes: Tensor, sizes: Tensor) -> Tensor:
    """COCO ``[x, y, w, h]`` pixel boxes ``(B, 4)`` in images of ``sizes`` ``(B, 2)`` = (height, width)
    → normalised ``[cx, cy, w, h]`` in [0, 1]."""
    return box_convert(boxes, "xywh", "cxcywh") / _pixels(sizes, boxes.dtype)


def cxcywh_to_xywh(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Normalised ``[cx, cy, w, h]`` → COCO ``[x, y, w, h]`` pixels of images of ``sizes`` (height, width)."""
    return box_convert(boxes * _pixels(sizes, boxes.dtype), "cxcywh", "xywh")


def _pixels(sizes: Tensor, dtype: torch.dtype) -> Tensor:
    h, w = sizes[:, 0].to(dtype), sizes[:, 1].to(dtype)
    return torch.stack([w, h, w, h], dim=-1)


def box_losses(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """DETR's box terms between normalised ``[cx, cy, w, h]`` boxes ``(B, 4)``: L1 (summed over the four
    coordinates) and 1 - generalised IoU (Rezatofighi et al. 2019), each averaged over the batch."""
    return {"loss_l1": (pred - target).abs().sum(dim=-1).mean(),
            "loss_giou": generalized_box_iou_loss(box_convert(pred, "cxcywh", "xyxy"),
                                                  box_convert(target, "cxcywh", "xyxy"), reduction="mean")}


@FUNCTIONS.register_module()
def grounding_collate(samples: Sequence[dict], tokenizer: str, max_length: int = 40) -> dict:
    """Samples of :class:`~harness.data.datasets.ReferringDataset` → ``images``, ``text_ids``, ``text_mask``
    (the expressions), ``boxes`` (B, 4) COCO ``xywh`` in the input image's pixels (after Resize),
    ``image_sizes`` (B, 2) the input images' (height, width), ``ref_ids`` and ``image_ids``."""
    tok = cached_tokenizer(str(tokenizer))
    enc = tok([s["text"] for s in samples], padding="longest", truncation=True, max_length=max_length,
              return_tensors="pt")
    images = torch.stack([s["img"] for s in samples])
    return {"images": images, "text_ids": enc["input_ids"], "text_mask": enc["attention_mask"],
            "boxes": torch.tensor([[float(v) for v in s["bbox"]] for s in samples]),
            "image_sizes": torch.tensor([list(images.shape[-2:])] * len(samples)),
            "ref_ids": torch.tensor([int(s["ref_id"]) for s in samples]),
            "image_ids": torch.tensor([int(s["image_id"]) for s in samples])}


class PatchGroundingHead(nn.Module):
    """Scores each visual token against the fused [CLS] (scaled dot product of two linear maps) and regresses,
    from each token conditioned on the fused [CLS], a box around its own patch: centre offset within
    ``max_offset`` patches (tanh), width and height (sigmoid), normalised ``[cx, cy, w, h]``."""

    def __init__(self, dim: int, grid_size: tuple[int, int], max_offset: float = 2.0) -> None:
        super().__init__()
        self.query, self.key, self.condition = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.box = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 4))
        for layer in (self.query, self.key, self.condition, self.box[0], self.box[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        rows, cols = grid_size
        ids = torch.arange(rows * cols)
        centres = torch.stack([(ids % cols + 0.5) / cols, (ids // cols + 0.5) / rows], dim=-1)
        self.register_buffer("patch_centres", centres, persistent=False)
        self.register_buffer("patch_size", torch.tensor([1 / cols, 1 / rows]), persistent=False)
        self.max_offset = max_offset

    def centres(self, patch_ids: Tensor) -> Tensor:
        """Normalised ``(cx, cy)`` ``(B, T, 2)`` of the patches ``patch_ids`` ``(B, T)`` (fused tokens: patch 0)."""
        return self.patch_centres[patch_ids.clamp_min(0)]

    def nearest_tokens(self, patch_ids: Tensor, points: Tensor) -> Tensor:
        """Index ``(B,)`` of the token whose patch centre is nearest each normalised point ``(B, 2)``; never a
        fused token."""
        distance = (self.centres(patch_ids) - points.unsqueeze(1)).square().sum(dim=-1)
        return distance.masked_fill(patch_ids < 0, float("inf")).argmin(dim=1)

    def forward(self, fused_cls: Tensor, tokens: Tensor, patch_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Score logits ``(B, T)`` (``-inf`` on fused tokens, which have no place) and boxes ``(B, T, 4)``."""
        logits = (self.query(fused_cls).unsqueeze(1) * self.key(tokens)).sum(-1) / tokens.shape[-1] ** 0.5
        logits = logits.masked_fill(patch_ids < 0, float("-inf"))
        raw = self.box(tokens + self.condition(fused_cls).unsqueeze(1))
        centre = self.centres(patch_ids) + raw[..., :2].tanh() * self.max_offset * self.patch_size
        return logits, torch.cat([centre, raw[..., 2:].sigmoid()], dim=-1)


@MODELS.register_module()
class GroundingModel(TaskModel):
    """Backbone + :class:`PatchGroundingHead`. Loss: ``score_weight`` * cross-entropy towards the visual token
    whose patch centre is nearest the referent's centre, plus ``l1_weight`` * L1 + ``giou_weight`` * (1 - GIoU)
    of that token's box (DETR's 5 : 2). Prediction: the box of the best-scoring token."""

    def __init__(self, backbone: dict, checkpoint: str | None = None, require_head: bool = False,
                 score_weight: float = 1.0, l1_weight: float = 5.0, giou_weight: float = 2.0,
                 max_offset: float = 2.0, data_preprocessor: dict | None = None) -> None:
        super().__init__(backbone, checkpoint, require_head, data_preprocessor)
        self.grounding_head = PatchGroundingHead(self.backbone.text_config.hidden_size,
                                                 tuple(self.backbone.vision.patch_embed.grid_size), max_offset)
        self.score_weight = score_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight

    def locate(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per visual token: score logits ``(B, T)``, boxes ``(B, T, 4)`` and patch ids ``(B, T)``."""
        fused_cls, tokens, patch_ids = self.backbone.encode_pair_tokens(images, text_ids, text_mask)
        logits, boxes = self.grounding_head(fused_cls, tokens, patch_ids)
        return logits, boxes, patch_ids

    def predict_boxes(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """Normalised ``[cx, cy, w, h]`` ``(B, 4)`` of the box each expression refers to."""
        logits, boxes, _ = self.locate(images, text_ids, text_mask)
        return boxes[torch.arange(len(boxes), device=boxes.device), logits.argmax(dim=1)]

    def forward(self, images: Tensor, text_ids: Tensor, text_mask: Tensor, boxes: Tensor | None = None,
                image_sizes: Tensor | None = None, ref_ids: Tensor | None = None, mode: str = "tensor", **unused):
        if mode == "tensor":
            return self.predict_boxes(images, text_ids, text_mask)
        if image_sizes is None:
            image_sizes = torch.tensor([list(images.shape[-2:])] * images.shape[0], device=images.device)
        if mode == "loss":
            logits, pred, patch_ids = self.locate(images, text_ids, text_mask)
            target = xywh_to_cxcywh(boxes, image_sizes)
            nearest = self.grounding_head.nearest_tokens(patch_ids, target[:, :2])
            losses = box_losses(pred[torch.arange(len(pred), device=pred.device), nearest], target)
            return {"loss_score": self.score_weight * F.cross_entropy(logits, nearest),
                    "loss_l1": self.l1_weight * losses["loss_l1"], "loss_giou": self.giou_weight * losses["loss_giou"]}
        if mode != "predict":
            raise ValueError(f"unknown mode {mode!r}")
        pred_xywh = cxcywh_to_xywh(self.predict_boxes(images, text_ids, text_mask).float(), image_sizes)
        ref_ids = [None] * len(pred_xywh) if ref_ids is None else ref_ids.tolist()
        gt = [None] * len(pred_xywh) if boxes is None else boxes
        return [{"pred_box": p.tolist(), "gt_box": None if g is None else g.tolist(), "ref_id": r}
                for p, g, r in zip(pred_xywh, gt, ref_ids, strict=True)]
