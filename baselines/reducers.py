"""Baseline patch reducers. Each plugs into the same ``VisionTransformer`` reduction points as COPA's TPD
and keeps the same token budget: ``[CLS] + ceil(keep_ratio * N) + 1`` tokens leave every reduction point.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from copa.reducers import PatchReducer, ReducerOutput, attention_log_probs, split_qkv_heads
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


@MODELS.register_module()
class RandomReducer(PatchReducer):
    """Random selection at the same budget: scores are i.i.d. standard normal draws from torch's global
    generator, so a seeded run is reproducible."""

    def score(self, tokens: Tensor, text: Tensor | None, qkv: Tensor | None, block: nn.Module) -> Tensor:
        return torch.randn(tokens.shape[0], tokens.shape[1] - 1, device=tokens.device, dtype=tokens.dtype)


@MODELS.register_module()
class ToMeReducer(PatchReducer):
    """ToMe bipartite soft matching, run to the same budget as the keep-and-fuse reducers.

    Budget: from N non-[CLS] tokens the others leave ``K + 1`` (K kept plus one fused), so ToMe merges
    ``r = N - K - 1`` tokens away and also leaves ``1 + K + 1`` tokens. One bipartite round can merge at
    most half the tokens, so a reduction point runs as many rounds as that takes (two for keep ratios
    under one half). Similarity is the cosine of the preceding block's keys averaged over heads (ToMe's
    metric). Merging is a size-weighted average within a reduction point; proportional attention is not
    used, since timm's ``Block`` has no hook for it.

    ``kept`` lists, for every output token, the original index of its representative (the destination
    token it merged into); output tokens keep ascending representative order. ``scores`` is the negated
    best-match similarity of each token in the first round (distinctive tokens score high); the budget is
    set by the matching, not by these scores.
    """

    needs_qkv = True

    def forward(
        self,
        tokens: Tensor,
        text: Tensor | None = None,
        qkv: Tensor | None = None,
        block: nn.Module | None = None,
    ) -> ReducerOutput:
        batch, n_tokens, dim = tokens.shape
        num = n_tokens - 1
        keep = self.num_kept(num)
        ids = torch.arange(num, device=tokens.device).expand(batch, num)
        _, k, _ = split_qkv_heads(qkv, block)
        metric = nn.functional.normalize(k.mean(dim=1)[:, 1:], dim=-1)
        scores = -_best_match(metric)
        if keep >= num:
            return ReducerOutput(tokens, ids, scores)
        x, size = tokens[:, 1:], torch.ones(batch, num, 1, device=tokens.device, dtype=tokens.dtype)
        to_merge = num - keep - 1
        while to_merge > 0:
            r = min(to_merge, x.shape[1] // 2)
            x, size, metric, ids = _bipartite_merge(x, size, metric, ids, r)
            to_merge -= r
        order = ids.argsort(dim=1)
        ids = ids.gather(1, order)
        x = x.gather(1, order.unsqueeze(-1).expand(-1, -1, dim))
        return ReducerOutput(torch.cat([tokens[:, :1], x], dim=1), ids, scores)


def _best_match(metric: Tensor) -> Tensor:
    """Each token's highest cosine similarity to another token, ``(B, N)``."""
    sim = metric @ metric.transpose(1, 2)
    sim.diagonal(dim1=1, dim2=2).fill_(-2.0)
    return sim.max(dim=-1).values


def _bipartite_merge(
    x: Tensor, size: Tensor, metric: Tensor, ids: Tensor, r: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One ToMe round: alternate tokens into sets A and B, merge the ``r`` A-tokens most similar to their
    best B-token into it (size-weighted mean). Returns the reduced tokens, sizes, metric and ids."""
    dim, mdim = x.shape[-1], metric.shape[-1]
    a, b = metric[:, ::2], metric[:, 1::2]
    best, dst = (a @ b.transpose(1, 2)).max(dim=-1)
    edge = best.argsort(dim=-1, descending=True)
    src_idx, unm_idx = edge[:, :r], edge[:, r:]
    dst_idx = dst.gather(1, src_idx)

    def split(t: Tensor, width: int) -> tuple[Tensor, Tensor, Tensor]:
        t_a, t_b = t[:, ::2], t[:, 1::2]
        unm = t_a.gather(1, unm_idx.unsqueeze(-1).expand(-1, -1, width))
        src = t_a.gather(1, src_idx.unsqueeze(-1).expand(-1, -1, width))
        return unm, src, t_b

    def merge(t: Tensor, width: int) -> Tensor:
        unm, src, t_b = split(t * size, width)
        t_b = t_b.scatter_add(1, dst_idx.unsqueeze(-1).expand(-1, -1, width), src)
        return torch.cat([unm, t_b], dim=1)

    new_size = merge(torch.ones_like(size), 1)
    x = merge(x, dim) / new_size
    metric = nn.functional.normalize(merge(metric, mdim), dim=-1)
    unm_ids, _, b_ids = split(ids.unsqueeze(-1), 1)
    ids = torch.cat([unm_ids, b_ids], dim=1).squeeze(-1)
    return x, new_size, metric, ids
