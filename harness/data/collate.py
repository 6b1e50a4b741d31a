"""Batching for the dataloaders: stack images, tokenize and pad text, carry patch labels and the PTA mask.

The result's keys are the model's ``forward`` arguments, so mmengine's ``BaseModel.train_step`` can call
``model(**batch, mode=...)`` directly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from harness.data.tokenizer import load_tokenizer
from harness.registry import FUNCTIONS


@functools.lru_cache(maxsize=8)
def cached_tokenizer(path: str):
    return load_tokenizer(path)


@FUNCTIONS.register_module()
def vlp_collate(samples: Sequence[dict], tokenizer: str, max_length: int = 40) -> dict:
    """Samples from the caption datasets → ``images``, ``text_ids``, ``text_mask``, ``image_ids`` (captions
    of one image are positives of each other) and, where the samples carry them, ``patch_labels`` with
    ``pta_mask`` (True only for images exposing boxes: PTA's loss sees no other labels)."""
    tok = cached_tokenizer(str(tokenizer))
    enc = tok([s["text"] for s in samples], padding="longest", truncation=True, max_length=max_length,
              return_tensors="pt")
    batch = {"images": torch.stack([s["img"] for s in samples]), "text_ids": enc["input_ids"],
             "text_mask": enc["attention_mask"], "image_ids": torch.tensor([s["image_id"] for s in samples])}
    if all("patch_labels" in s for s in samples):
        batch["patch_labels"] = torch.stack([s["patch_labels"] for s in samples])
        batch["pta_mask"] = torch.tensor([bool(s.get("pta", False)) for s in samples])
    return batch


@FUNCTIONS.register_module()
def label_collate(samples: Sequence[dict]) -> dict:
    """Samples of :class:`~harness.data.datasets.ObjectLabelDataset` → ``images``, multi-hot ``labels`` and, when
    the pipeline pooled the boxes (``ObjectPatchWeights``), every object of the batch in one list:
    ``object_weights`` ``(objects, patches)``, ``object_targets`` ``(objects, 2)`` and ``object_images``
    ``(objects,)``, the index of each object's image in the batch."""
    batch = {"images": torch.stack([s["img"] for s in samples]),
             "labels": torch.stack([torch.as_tensor(s["labels"]) for s in samples])}
    if all("object_weights" in s for s in samples):
        batch["object_weights"] = torch.cat([s["object_weights"] for s in samples])
        batch["object_targets"] = torch.cat([torch.as_tensor(s["object_targets"]).reshape(-1, 2) for s in samples])
        batch["object_images"] = torch.cat([torch.full((len(s["object_weights"]),), i, dtype=torch.long)
                                            for i, s in enumerate(samples)])
    return batch
