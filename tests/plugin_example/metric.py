"""A metric: how often the reducer's best-scored patch lies on an object the caption mentions."""

from collections.abc import Sequence

from mmengine.evaluator import BaseMetric

from harness.registry import METRICS


@METRICS.register_module()
class TopPatchHitMetric(BaseMetric):
    """``top1_hit``: percent of captions whose highest-scored patch is labelled (PatchDetectionModel's rows)."""

    default_prefix = None

    def process(self, data_batch: dict | None, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            best = int(sample["patch_scores"].float().argmax())
            self.results.append(float(sample["patch_labels"].reshape(-1)[best] > 0))

    def compute_metrics(self, results: list[float]) -> dict[str, float]:
        return {"top1_hit": 100.0 * sum(results) / len(results) if results else float("nan")}
