"""Visual grounding (RefCOCO family): accuracy at IoU >= 0.5 and mean IoU of one predicted box per expression."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.evaluator import BaseMetric

from harness.registry import METRICS


def box_iou_xywh(pred: Sequence[float], gt: Sequence[float]) -> float:
    """IoU of two COCO ``[x, y, w, h]`` boxes; 0 when either box is degenerate (w or h <= 0)."""
    px, py, pw, ph = (float(v) for v in pred)
    gx, gy, gw, gh = (float(v) for v in gt)
    if pw <= 0 or ph <= 0 or gw <= 0 or gh <= 0:
        return 0.0
    iw = min(px + pw, gx + gw) - max(px, gx)
    ih = min(py + ph, gy + gh) - max(py, gy)
    inter = max(iw, 0.0) * max(ih, 0.0)
    return inter / (pw * ph + gw * gh - inter)


def _box(value: object) -> list[float]:
    """A box as four Python floats, whatever container the model returned it in."""
    if torch.is_tensor(value):
        value = value.detach().cpu().reshape(-1).tolist()
    box = [float(v) for v in value]
    if len(box) != 4:
        raise ValueError(f"a box must be [x, y, w, h], got {box}")
    return box


@METRICS.register_module()
class GroundingMetric(BaseMetric):
    """``acc_iou50``: percent of predictions with IoU >= 0.5 against the ground truth box (the RefCOCO
    protocol); ``miou``: mean IoU in percent. Boxes are COCO ``[x, y, w, h]`` in pixels; a degenerate
    predicted box has IoU 0.

    Row per expression: ``pred_box`` and ``gt_box``.
    """

    default_prefix = None

    def process(self, data_batch: dict | None, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append({"pred_box": _box(sample["pred_box"]), "gt_box": _box(sample["gt_box"])})

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        if not results:
            return {"acc_iou50": float("nan"), "miou": float("nan")}
        ious = [box_iou_xywh(r["pred_box"], r["gt_box"]) for r in results]
        return {
            "acc_iou50": 100.0 * sum(iou >= 0.5 for iou in ious) / len(ious),
            "miou": 100.0 * sum(ious) / len(ious),
        }
