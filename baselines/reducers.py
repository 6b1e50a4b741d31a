"""Baseline patch reducers. EViT, TRIPS-style and random plug into the same ``VisionTransformer`` reduction
points as COPA's TPD and keep the same token budget: ``[CLS] + ceil(keep_ratio * N) + 1`` tokens leave every
reduction point. ToMe merges inside every block instead, as published, at a matched MAC budget (``zoo.build``).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
from torch import Tensor

from copa.macs import merge_matching_macs
from copa.reducers import PatchReducer, ReducerOutput, attention_log_probs, num_merged, split_qkv_heads
from copa.registry import MODELS


@MODELS.register_module()
class CLSAttentionReducer(PatchReducer):
    """EViT: keep the patches the image [CLS] attends to most.

    Score = log of the head-averaged attention of the [CLS] query to each token in the *preceding* block
    (read from that block's ``qkv`` output, so no projection is recomputed). EViT fuses the dropped tokens
    with their raw attention weights; here the weights are renormalised over the dropped set (the shared
    :func:`~copa.reducers.keep_topk_and_fuse`), which only rescales the fused token.
    """

    needs_qkv = True

    def score(self, tokens: Tensor, text: Tensor | None, qkv: Tensor | None, block: nn.Module) -> Tensor:
        q, k, _ = split_qkv_heads(qkv, block)
        return attention_log_probs(q[:, :, 0], k, block.attn.scale)[:, 1:]

    def macs(self, n_tokens: int, dim: int, head_dim: int) -> int:
        """The [CLS] query against the N patch keys; the query and keys come from the block's own ``qkv``."""
        return (n_tokens - 1) * dim


@MODELS.register_module()
class TextAttentionReducer(PatchReducer):
    """TRIPS-style text-aware selection, with no parameters of its own and no PTA.

    The text [CLS] (projected to vision width by the skeleton) is layer-normed and projected by the
    preceding ViT block's own attention *query* weights; its head-averaged attention over that block's
    keys scores the patches. Without text (the text-free path) the image [CLS]'s own query in that block
    takes its place, which is EViT's score.
    """

    text_aware = True
    needs_qkv = True

    def score(self, tokens: Tensor, text: Tensor | None, qkv: Tensor | None, block: nn.Module) -> Tensor:
        q, k, _ = split_qkv_heads(qkv, block)
        attn = block.attn
        if text is None:
            return attention_log_probs(q[:, :, 0], k, attn.scale)[:, 1:]
        dim = attn.num_heads * attn.head_dim
        weight = attn.qkv.weight[:dim]
        bias = None if attn.qkv.bias is None else attn.qkv.bias[:dim]
        query = nn.functional.linear(block.norm1(text), weight, bias).view(text.shape[0], attn.num_heads, -1)
        query = attn.q_norm(query)
        return attention_log_probs(query, k, attn.scale)[:, 1:]

    def macs(self, n_tokens: int, dim: int, head_dim: int) -> int:
        """The text [CLS] through the block's query projection, then against the N patch keys."""
        return (n_tokens - 1) * dim + dim * dim


@MODELS.register_module()
class RandomReducer(PatchReducer):
    """Random selection at the same budget: scores are i.i.d. standard normal draws from torch's global
    generator, so a seeded run is reproducible."""

    def score(self, tokens: Tensor, text: Tensor | None, qkv: Tensor | None, block: nn.Module) -> Tensor:
        return torch.randn(tokens.shape[0], tokens.shape[1] - 1, device=tokens.device, dtype=tokens.dtype)


@MODELS.register_module()
class ToMeReducer(PatchReducer):
    """ToMe (Bolya et al., ICLR 2023, "Token Merging: Your ViT but Faster"), as its official code runs it
    (facebookresearch/ToMe ``tome/merge.py``, ``tome/patch/timm.py``).

    A merging reducer (``in_block``): the encoder calls it inside every block listed in its reduction layers (ToMe:
    all of them), after the attention and before the MLP (``ToMeBlock.forward``). It merges ``r`` tokens away
    (capped at half of the non-[CLS] tokens: :func:`copa.reducers.num_merged`) by bipartite soft matching on the
    cosine similarity of this block's attention keys averaged over heads (``ToMeAttention`` returns
    ``k.mean(1)``); tokens alternate into sets A and B, [CLS] is protected, each A token's best B match is an edge
    and the ``r`` best edges merge (``bipartite_soft_matching``). Merged tokens are size-weighted means and sizes
    add up (``merge_wavg``); the encoder carries the sizes through the whole forward and, with ``prop_attn``, adds
    ``log(size)`` to the attention logits of every later block (proportional attention).

    Args:
        r: tokens merged per block (constant, ToMe's ``model.r = r``). Named models derive it from ``keep_ratio``
            so that the model's MACs per pair match the keep-and-fuse reducers' at that ratio (``zoo.build``).
        keep_ratio: the keep ratio ``r`` was matched to; recorded only (it does not change ``r``).
        prop_attn: proportional attention. Default ``True``, the default of the official timm patch
            (``apply_patch(..., prop_attn=True)``), which our timm blocks mirror; the official MAE patch defaults to
            ``False`` for off-the-shelf MAE weights.

    Outputs: tokens in the official order (unmerged A tokens by position, [CLS] first, then all B tokens).
    ``kept``: for each output token after [CLS], the index of the entering token it continues (itself, or the
    B token others merged into); the encoder maps these to original patches (``kept_patch_ids``,
    ``token_patch_ids``: each token's representative). ``scores``: negated best-match similarity in the bipartite
    graph (A tokens: to their best B token, which orders ToMe's merges; B tokens: to their best A token), so the
    distinctive tokens score high; computed from the matching's own similarity matrix, at no extra cost. Only A
    tokens are ever merged away, so at one merge ``kept`` is not the top of ``scores``.
    ``sizes``: ``(B, T)`` patches per output token, [CLS] counting 1.
    """

    needs_qkv = True
    in_block = True

    def __init__(self, r: int, keep_ratio: float = 1.0, prop_attn: bool = True) -> None:
        super().__init__(keep_ratio)
        if r < 0:
            raise ValueError(f'r must be >= 0, got {r}')
        self.r = int(r)
        self.prop_attn = prop_attn

    def num_merged(self, num_tokens: int) -> int:
        return num_merged(num_tokens, self.r)

    def macs(self, n_tokens: int, dim: int, head_dim: int) -> int:
        """The bipartite similarity of the block's head-averaged keys; none when the block merges nothing."""
        return merge_matching_macs(n_tokens, head_dim) if self.num_merged(n_tokens) else 0

    def forward(
        self,
        tokens: Tensor,
        text: Tensor | None = None,
        qkv: Tensor | None = None,
        block: nn.Module | None = None,
        sizes: Tensor | None = None,
    ) -> ReducerOutput:
        """Merge ``tokens`` (B, 1+N, D), the block's residual stream after its attention; ``qkv`` is that
        attention's projection output and ``sizes`` (B, 1+N) the current token sizes (``None``: all 1)."""
        batch, n_tokens, _ = tokens.shape
        r = self.num_merged(n_tokens)
        if r == 0:
            ids = torch.arange(n_tokens - 1, device=tokens.device).expand(batch, -1)
            return ReducerOutput(tokens, ids, tokens.new_zeros(batch, n_tokens - 1), sizes)
        _, k, _ = split_qkv_heads(qkv, block)
        merge, kept, scores = bipartite_soft_matching(k.mean(dim=1), r)
        x, size = merge_wavg(merge, tokens, None if sizes is None else sizes.unsqueeze(-1))
        return ReducerOutput(x, kept, scores, size.squeeze(-1))


def bipartite_soft_matching(metric: Tensor, r: int) -> tuple[Callable[[Tensor], Tensor], Tensor, Tensor]:
    """ToMe's bipartite soft matching with a protected [CLS] (official ``tome/merge.py``,
    ``bipartite_soft_matching(metric, r, class_token=True)``, the same operations in the same order).

    ``metric``: ``(B, T, C)``, [CLS] first; ``0 < r <= (T - 1) // 2``. Returns ``merge`` (``(B, T, c)`` ->
    ``(B, T - r, c)``, summing each merged A token into its B destination), ``kept`` ``(B, T - r - 1)``: the
    non-[CLS] index of the entering token behind each output token after [CLS], and ``scores`` ``(B, T - 1)``: each
    non-[CLS] token's negated best similarity to the other set.
    """
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        sim = a @ b.transpose(-1, -2)
        sim[..., 0, :] = -math.inf  # [CLS] (the first A token) is never merged
        node_max, node_idx = sim.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx = edge_idx[..., r:, :]  # unmerged A tokens
        src_idx = edge_idx[..., :r, :]  # merged A tokens
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
        unm_idx = unm_idx.sort(dim=1)[0]  # ascending, so [CLS] stays first

        batch, n_a, n_b = sim.shape
        # token t sits at non-[CLS] index t - 1: A token j (t = 2j) at 2j - 1, B token j (t = 2j + 1) at 2j
        kept = torch.cat([2 * unm_idx[:, 1:, 0] - 1, 2 * torch.arange(n_b, device=metric.device).expand(batch, -1)],
                         dim=1)
        scores = metric.new_empty(batch, n_a - 1 + n_b)
        scores[:, 1::2] = -node_max[:, 1:]
        scores[:, 0::2] = -sim[:, 1:].max(dim=1).values

    def merge(x: Tensor) -> Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce='sum')
        return torch.cat([unm, dst], dim=1)

    return merge, kept, scores


def merge_wavg(merge: Callable[[Tensor], Tensor], x: Tensor, size: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Size-weighted average merge (official ``tome/merge.py`` ``merge_wavg``): ``x`` ``(B, T, C)``, ``size``
    ``(B, T, 1)`` (``None``: all 1). Returns the merged tokens and their sizes."""
    if size is None:
        size = torch.ones_like(x[..., 0, None])
    x = merge(x * size)
    size = merge(size)
    return x / size, size
