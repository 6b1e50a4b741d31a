"""Pre-training objectives: ITC, ITM with in-batch hard negatives, MLM, PrefixLM and COPA's PTA.

Every loss is a plain function of tensors, so the skeleton and the single-stream baseline share them.
Randomness (masking, negative sampling) uses torch's global generator: the same seed gives the same losses.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def positive_pairs(batch: int, image_ids: Tensor | None, device: torch.device) -> Tensor:
    """``(B, B)`` bool: pairs that must not be contrasted or mined as negatives (same image id, or diagonal)."""
    if image_ids is None:
        return torch.eye(batch, dtype=torch.bool, device=device)
    return image_ids[:, None] == image_ids[None, :]


def itc_loss(image_feat: Tensor, text_feat: Tensor, temperature: Tensor, positives: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE over in-batch pairs (no momentum queue). Features are L2-normalised ``(B, E)``.

    Targets spread uniformly over all positives of a row (ALBEF's ``sim_targets``). Returns the loss and
    the image-to-text similarity logits ``(B, B)``, which ITM reuses to mine hard negatives.
    """
    sim_i2t = image_feat @ text_feat.t() / temperature
    targets = positives.float() / positives.float().sum(dim=1, keepdim=True)
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets).sum(dim=1).mean()
    loss_t2i = -(F.log_softmax(sim_i2t.t(), dim=1) * targets.t()).sum(dim=1).mean()
    return (loss_i2t + loss_t2i) / 2, sim_i2t


def itc_loss_momentum(image_feat: Tensor, text_feat: Tensor, image_feat_m: Tensor, text_feat_m: Tensor,
                      image_queue: Tensor, text_queue: Tensor, id_queue: Tensor, image_ids: Tensor | None,
                      temperature: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """ALBEF's ITC with momentum distillation (salesforce/ALBEF ``models/model_pretrain.py``): each image (text)
    feature is contrasted with the momentum model's text (image) features of the batch and of the queue, against
    targets ``alpha * softmax(momentum similarities) + (1 - alpha) * hard targets``. Hard targets spread over the
    positives: the same image id in the batch or the queue (ALBEF's retrieval fine-tuning ``idx_queue``; its
    pre-training uses the diagonal, which is what ``image_ids=None`` gives). Returns the loss and the in-batch
    image-to-text similarities ``(B, B)`` ITM mines its negatives from (ALBEF: ``sim_i2t[:, :bs]``)."""
    batch = image_feat.shape[0]
    image_all = torch.cat([image_feat_m, image_queue.to(image_feat_m.dtype)])
    text_all = torch.cat([text_feat_m, text_queue.to(text_feat_m.dtype)])
    if image_ids is None:
        positives = torch.zeros(batch, image_all.shape[0], dtype=torch.bool, device=image_feat.device)
        positives[:, :batch] = torch.eye(batch, dtype=torch.bool, device=image_feat.device)
    else:
        positives = image_ids[:, None] == torch.cat([image_ids, id_queue.to(image_ids.dtype)])[None, :]
    hard = positives.float() / positives.float().sum(dim=1, keepdim=True)
    with torch.no_grad():
        targets_i2t = alpha * (image_feat_m @ text_all.t() / temperature).softmax(dim=1) + (1 - alpha) * hard
        targets_t2i = alpha * (text_feat_m @ image_all.t() / temperature).softmax(dim=1) + (1 - alpha) * hard
    sim_i2t = image_feat @ text_all.t() / temperature
    sim_t2i = text_feat @ image_all.t() / temperature
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets_i2t).sum(dim=1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets_t2i).sum(dim=1).mean()
    return (loss_i2t + loss_t2i) / 2, sim_i2t[:, :batch]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands each process the gradient of its own rows summed over every
    process's loss (the other processes contrast against them too); all-reduce only, so gloo runs it."""

    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, ...]:
        parts = [torch.empty_like(x) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(parts, x.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:
        summed = torch.stack(grads)
        torch.distributed.all_reduce(summed)
        return summed[torch.distributed.get_rank()]


def world_size() -> int:
    available = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if available else 1


def itc_loss_gathered(image_feat: Tensor, text_feat: Tensor, temperature: Tensor, image_ids: Tensor | None
                      ) -> tuple[Tensor, Tensor]:
    """:func:`itc_loss` in a distributed run: each process contrasts its rows against every process's
    features, so the negatives are those of the global batch, as in one process (ALBEF gathers them too).
    Every process must hold the same number of rows. Returns the loss and this process's ``(B, B)`` block of
    image-to-text similarities (ITM mines its negatives there)."""
    batch, rank = image_feat.shape[0], torch.distributed.get_rank()
    all_images = torch.cat(_GatherWithGrad.apply(image_feat))
    all_texts = torch.cat(_GatherWithGrad.apply(text_feat))
    if image_ids is None:
        positives = torch.zeros(batch, all_images.shape[0], dtype=torch.bool, device=image_feat.device)
        positives[:, rank * batch:(rank + 1) * batch] = torch.eye(batch, dtype=torch.bool, device=image_feat.device)
    else:
        all_ids = [torch.empty_like(image_ids) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(all_ids, image_ids.contiguous())
        positives = image_ids[:, None] == torch.cat(all_ids)[None, :]
    targets = positives.float() / positives.float().sum(dim=1, keepdim=True)
    sim_i2t = image_feat @ all_texts.t() / temperature
    sim_t2i = text_feat @ all_images.t() / temperature
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets).sum(dim=1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets).sum(dim=1).mean()
    return (loss_i2t + loss_t2i) / 2, sim_i2t[:, rank * batch:(rank + 1) * batch]


@torch.no_grad()
def sample_hard_negatives(sim: Tensor, positives: Tensor, hardness: float = 1.0) -> Tensor:
    """For each row, one column index drawn over the non-positives with probability
    ``hardness * softmax(sim row) + (1 - hardness) * uniform`` (ALBEF: ``hardness=1``).

    Below 1, a share of the negatives is random: where many captions are true of many images, the most
    similar "negatives" are mostly false negatives and teach ITM to answer the prior. A row with no
    non-positive column (batch of one image) gets a uniformly random column.
    """
    if not 0.0 <= hardness <= 1.0:
        raise ValueError(f'hardness must be in [0, 1], got {hardness}')
    # No host synchronisation: boolean-mask assignment (``x[mask] = v``) runs ``nonzero`` and
    # ``torch.multinomial`` checks its input with two ``.item()`` calls; masked_fill and the draw below do not.
    empty = positives.all(dim=1, keepdim=True)
    logits = sim.float().masked_fill(positives, float('-inf')).masked_fill(empty, 0.0)
    uniform = (~positives).float().masked_fill(empty, 1.0)
    probs = hardness * logits.softmax(dim=1) + (1.0 - hardness) * uniform / uniform.sum(dim=1, keepdim=True)
    # torch.multinomial's one-sample draw, argmax(p / q) with q ~ Exp(1): the same index from the same
    # generator state
    return (probs / torch.empty_like(probs).exponential_(1)).argmax(dim=1)


def itm_loss(logits: Tensor, num_positive: int) -> Tensor:
    """Cross-entropy of ``(P + Q, 2)`` logits whose first ``num_positive`` rows are matched pairs."""
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    labels[:num_positive] = 1
    return F.cross_entropy(logits, labels)


def mask_tokens(
    text_ids: Tensor,
    text_mask: Tensor,
    vocab_size: int,
    mask_token_id: int,
    special_ids: Iterable[int],
    prob: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """BERT masking: pick ``prob`` of the real (non-pad, non-special) tokens; of those 80% become [MASK],
    10% a random token, 10% stay. Returns ``(input_ids, labels)`` with ``IGNORE_INDEX`` where not picked."""
    candidates = text_mask.bool()
    for special in special_ids:
        candidates &= text_ids != special
    picked = (torch.rand(text_ids.shape, device=text_ids.device) < prob) & candidates
    labels = text_ids.masked_fill(~picked, IGNORE_INDEX)
    draw = torch.rand(text_ids.shape, device=text_ids.device)
    to_mask = picked & (draw < 0.8)
    to_random = picked & (draw >= 0.8) & (draw < 0.9)
    random_ids = torch.randint(vocab_size, text_ids.shape, device=text_ids.device)
    inputs = text_ids.masked_fill(to_mask, mask_token_id)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


def token_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean CE over labelled tokens; a zero that still carries gradient when no token is labelled (no
    host-side check: the sum over no tokens is 0, divided by a count clamped to 1)."""
    labels = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, ignore_index=IGNORE_INDEX, reduction='sum')
    return total / (labels != IGNORE_INDEX).sum().clamp_min(1)


def soft_token_cross_entropy(logits: Tensor, soft_targets: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` ``(B, L, V)`` against distributions ``soft_targets`` over the tokens that
    ``labels`` marks (not ``IGNORE_INDEX``), averaged over them (ALBEF's MLM distillation); a zero with gradient
    when none is marked."""
    per_token = -(F.log_softmax(logits, dim=-1) * soft_targets.to(logits.dtype)).sum(dim=-1)
    marked = (labels != IGNORE_INDEX).to(per_token.dtype)
    return (per_token * marked).sum() / marked.sum().clamp_min(1)


def pta_loss(scores: Tensor, labels: Tensor, sample_mask: Tensor | None = None, valid: Tensor | None = None) -> Tensor:
    """Patch-Text Alignment: BCE-with-logits of per-patch scores ``(B, N)`` against 0/1 labels ``(B, N)``.

    Only samples whose ``sample_mask`` is True count (COPA: the ~5% of images with boxes); ``valid`` ``(B, N)``
    excludes tokens without a label (a fused token). The mean runs over counted entries; with none it is
    a zero that still carries gradient, so the loss dict keeps its keys and DDP sees every parameter used.
    """
    weight = torch.ones_like(scores) if valid is None else valid.to(scores.dtype)
    if sample_mask is not None:
        weight = weight * sample_mask.to(scores.dtype)[:, None]
    bce = F.binary_cross_entropy_with_logits(scores, labels.to(scores.dtype), reduction='none')
    return (bce * weight).sum() / weight.sum().clamp_min(1.0)  # 0 weights: a zero with gradient, no host check
