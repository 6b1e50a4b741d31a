"""Metrics as mmengine ``BaseMetric``s (they gather across processes through mmengine's ``collect_results``).

Importing this package registers every metric in ``harness.registry.METRICS``.
"""

from harness.metrics.accuracy import AccuracyMetric
from harness.metrics.caption import CaptionMetric, tokenize_caption
from harness.metrics.grounding import GroundingMetric, box_iou_xywh
from harness.metrics.multilabel import MultiLabelMetric, average_precision
from harness.metrics.patch_detection import PatchDetectionMetric
from harness.metrics.pretrain import PretrainMetric, roc_auc, text_to_image_recall_at_1
from harness.metrics.retrieval import RetrievalMetric, pessimistic_rank
from harness.metrics.vqa import VQAMetric, normalize_answer, vqa_accuracy

__all__ = [
    "AccuracyMetric",
    "CaptionMetric",
    "GroundingMetric",
    "MultiLabelMetric",
    "PatchDetectionMetric",
    "PretrainMetric",
    "RetrievalMetric",
    "VQAMetric",
    "average_precision",
    "box_iou_xywh",
    "normalize_answer",
    "pessimistic_rank",
    "roc_auc",
    "text_to_image_recall_at_1",
    "tokenize_caption",
    "vqa_accuracy",
]
