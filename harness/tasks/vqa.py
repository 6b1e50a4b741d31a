"""VQA v2 as classification over the training answers, the way ViLT, ALBEF's VQA baselines and METER fine-tune.

The fused [CLS] of (image, question) goes through an MLP to one logit per answer of a fixed vocabulary: the
normalised ``multiple_choice_answer`` of the training questions that occur at least ``min_count`` times
(ViLT: 9, giving VQA v2's 3129 answers). Targets are VQA's soft scores (min(#humans who gave the answer / 3,
1)), so the loss rewards exactly what the VQA accuracy metric rewards, and the prediction is the arg-max
answer string that :class:`~harness.metrics.vqa.VQAMetric` scores. The vocabulary is rebuilt from the same
training file whenever the model is built (deterministically), and a digest of it travels in the checkpoint
as a buffer, so a fine-tuned head is never read against another answer list.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from copa.registry import MODELS
from copa.text import bert_init
from harness.data.collate import cached_tokenizer
from harness.data.io import field, load_json
from harness.errors import InputError
from harness.metrics.vqa import normalize_answer
from harness.registry import FUNCTIONS
from harness.tasks.base import TaskModel


def _consensus(record: Mapping) -> str:
    """A question's single answer for the vocabulary: VQA's ``multiple_choice_answer``, or the most common
    human answer (ties: the first given) where a file lacks it."""
    answer = record.get("multiple_choice_answer")
    if isinstance(answer, str) and answer.strip():
        return answer
    humans = [a["answer"] if isinstance(a, Mapping) else a for a in record.get("answers", ())]
    return Counter(humans).most_common(1)[0][0] if humans else ""


def build_answer_vocab(records: Iterable[Mapping], min_count: int = 9, max_answers: int = 3129) -> list[str]:
    """The answer list of the classifier: normalised consensus answers of ``records`` (VQA v2 annotation
    records) seen at least ``min_count`` times, most frequent first, ties alphabetical, at most
    ``max_answers``. Deterministic: the same records in any order give the same list."""
    counts = Counter(normalize_answer(_consensus(r)) for r in records)
    counts.pop("", None)
    ranked = sorted((a for a, n in counts.items() if n >= min_count), key=lambda a: (-counts[a], a))
    return ranked[:max_answers]


def soft_scores(answers: Sequence[str], index: Mapping[str, int]) -> Tensor:
    """VQA target of one question: for each vocabulary answer, min(#humans who gave it / 3, 1), humans'
    answers normalised first ("two" and "2" are one answer). Answers outside the vocabulary are dropped."""
    target = torch.zeros(len(index))
    for answer, n in Counter(normalize_answer(a) for a in answers).items():
        if answer in index:
            target[index[answer]] = min(n / 3.0, 1.0)
    return target


def _digest(vocab: Sequence[str]) -> Tensor:
    """A 56-bit fingerprint of the answer list (an int64 buffer saved with the head)."""
    h = hashlib.sha256("\n".join(vocab).encode("utf-8")).digest()
    return torch.tensor([len(vocab), int.from_bytes(h[:7], "big")], dtype=torch.long)


def load_answer_vocab(path: str, min_count: int = 9, max_answers: int = 3129) -> list[str]:
    """:func:`build_answer_vocab` over a VQA v2 annotations file."""
    records = field(load_json(path), "annotations", path, "", list)
    vocab = build_answer_vocab(records, min_count, max_answers)
    if not vocab:
        raise InputError(path, "annotations", f"no answer occurs {min_count} times or more: the answer vocabulary "
                         "is empty (lower min_count)")
    return vocab


@FUNCTIONS.register_module()
def vqa_collate(samples: Sequence[dict], tokenizer: str, max_length: int = 40) -> dict:
    """Samples of :class:`~harness.data.datasets.VQADataset` → ``images``, ``text_ids``, ``text_mask``,
    ``question_ids`` and, as plain lists, the human ``answers`` and ``answer_types`` (empty for questions
    without annotations). The model maps answers to targets with its own vocabulary."""
    tok = cached_tokenizer(str(tokenizer))
    enc = tok([s["text"] for s in samples], padding="longest", truncation=True, max_length=max_length,
              return_tensors="pt")
    return {"images": torch.stack([s["img"] for s in samples]), "text_ids": enc["input_ids"],
            "text_mask": enc["attention_mask"],
            "question_ids": torch.tensor([s["question_id"] for s in samples]),
            "answers": [list(s.get("answers", [])) for s in samples],
            "answer_types": [s.get("answer_type", "") for s in samples]}


@MODELS.register_module()
class VQAModel(TaskModel):
    """Backbone + ViLT's VQA head (Linear D→2D, LayerNorm, GELU, Linear 2D→answers) on the fused [CLS].

    Args:
        answers_file: the training annotations (VQA v2 format), relative to ``data_root`` unless absolute.
        data_root: the benchmark root (filled in by the runner).
        min_count, max_answers: the vocabulary's threshold and cap (see :func:`build_answer_vocab`).
    """

    def __init__(self, backbone: dict, answers_file: str, data_root: str | None = None, min_count: int = 9,
                 max_answers: int = 3129, checkpoint: str | None = None, require_head: bool = False,
                 data_preprocessor: dict | None = None) -> None:
        super().__init__(backbone, checkpoint=checkpoint, require_head=require_head,
                         data_preprocessor=data_preprocessor)
        path = answers_file if os.path.isabs(answers_file) or not data_root else os.path.join(data_root, answers_file)
        self.answers = load_answer_vocab(path, min_count, max_answers)
        self.answer_index = {a: i for i, a in enumerate(self.answers)}
        self.register_buffer("answer_digest", _digest(self.answers))
        dim = self.backbone.text_config.hidden_size
        self.vqa_head = nn.Sequential(nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(),
                                      nn.Linear(2 * dim, len(self.answers)))
        self.vqa_head.apply(bert_init(0.02))

    def check_state(self, path: str | os.PathLike, state: dict[str, Tensor]) -> None:
        """A fine-tuned head must have been trained on this vocabulary (same answers, same order)."""
        if "answer_digest" not in state:
            return
        if state["answer_digest"].shape != self.answer_digest.shape or \
                not torch.equal(state["answer_digest"].cpu(), _digest(self.answers)):
            raise InputError(path, "answer_digest", "this checkpoint's VQA head was trained on another answer "
                             "vocabulary (other training annotations or min_count/max_answers)")

    def targets(self, answers: Sequence[Sequence[str]]) -> Tensor:
        """Soft-score targets ``(B, num_answers)`` of a batch's human answers."""
        return torch.stack([soft_scores(a, self.answer_index) for a in answers])

    def forward(self, images: Tensor, text_ids: Tensor, text_mask: Tensor, question_ids: Tensor | None = None,
                answers: Sequence[Sequence[str]] | None = None, answer_types: Sequence[str] | None = None,
                mode: str = "tensor", **unused):
        """``'tensor'``: logits ``(B, num_answers)``; ``'loss'``: ``loss_vqa``, BCE against the soft scores
        times the number of answers (ViLT's scaling); ``'predict'``: VQAMetric rows."""
        logits = self.vqa_head(self.backbone.encode_pair(images, text_ids, text_mask))
        if mode == "loss":
            if answers is None:
                raise ValueError("VQA training needs the human answers of every question")
            target = self.targets(answers).to(logits)
            return {"loss_vqa": F.binary_cross_entropy_with_logits(logits, target) * target.shape[1]}
        if mode == "predict":
            best = logits.argmax(dim=1).tolist()
            n = len(best)
            qids = question_ids.tolist() if question_ids is not None else [None] * n
            answers = answers if answers is not None else [[] for _ in range(n)]
            types = answer_types if answer_types is not None else [None] * n
            return [{"question_id": q, "pred_answer": self.answers[b], "answers": list(a), "answer_type": t or None}
                    for q, b, a, t in zip(qids, best, answers, types, strict=True)]
        return logits
