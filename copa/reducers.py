"""Patch reducers: the one pluggable part that separates COPA from its baselines.

A reducer is called by the vision encoder between two ViT blocks. It receives the current tokens laid out
as ``[CLS, t_1 .. t_N]`` and returns ``[CLS, K kept tokens, 1 fused token]`` with ``K = ceil(keep_ratio * N)``.

``N`` is the number of non-[CLS] tokens entering the reducer. At the first reduction point these are the
image patches of the original grid; at a later point they are the patches kept so far *plus the fused token
of the previous point*, which is treated as one more candidate (as in EViT): it can be kept, or it is fused
again into the new fused token. So after every reduction point the sequence holds exactly
``ceil(keep_ratio * N) + 2`` tokens, and the schedule is static for a given input size.

When nothing would be dropped (``K >= N``, e.g. ``keep_ratio=1``) the reducer is the identity: there is no
fused token, and the model is exactly the unreduced one.

A *merging* reducer (``in_block = True``: ToMe, ``baselines.reducers.ToMeReducer``) works differently, as its
authors' code does: it runs *inside* ViT block ``i``, between the attention and the MLP, on block ``i``'s own keys,
merges ``num_merged(n)`` tokens away (size-weighted means) and returns the new *sizes* (how many patches each
token stands for), which the encoder carries through the rest of the forward (and, with ``prop_attn``, adds as
``log(size)`` to every later block's attention logits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor


def num_kept(num_tokens: int, keep_ratio: float) -> int:
    """Tokens kept out of ``num_tokens`` candidates: ``ceil(keep_ratio * num_tokens)``."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f'keep_ratio must be in (0, 1], got {keep_ratio}')
    return min(num_tokens, math.ceil(keep_ratio * num_tokens - 1e-9))


def num_merged(num_tokens: int, r: int) -> int:
    """Tokens a ToMe merge removes from ``num_tokens`` tokens ([CLS] included, never merged): ``r``, capped at half
    of the others as bipartite matching requires (official ``tome/merge.py``: ``r = min(r, (t - protected) // 2)``)."""
    return max(0, min(r, (num_tokens - 1) // 2))


def keep_topk_and_fuse(tokens: Tensor, scores: Tensor, keep: int) -> tuple[Tensor, Tensor]:
    """Keep the ``keep`` highest-scoring non-[CLS] tokens and fuse the rest into one token (EViT-style).

    Args:
        tokens: ``(B, 1 + N, D)``, [CLS] first.
        scores: ``(B, N)`` score logits of the non-[CLS] tokens; higher means more relevant.
        keep: number of tokens to keep.

    Returns:
        ``(new_tokens, kept)``: ``new_tokens`` is ``(B, 1 + keep + 1, D)`` = [CLS], kept tokens in their
        original order, fused token; ``kept`` is ``(B, keep)``, ascending indices into the N tokens.
        The fused token is ``sum_j softmax(scores[dropped])_j * token_j`` over the dropped tokens, so it is a
        convex combination and the scores receive gradients from every loss downstream.
        With ``keep >= N`` nothing is dropped and ``tokens`` is returned unchanged.
    """
    batch, n_tokens, dim = tokens.shape
    num = n_tokens - 1
    if scores.shape != (batch, num):
        raise ValueError(f'scores must be {(batch, num)}, got {tuple(scores.shape)}')
    if keep >= num:
        return tokens, torch.arange(num, device=tokens.device).expand(batch, num)
    kept = scores.topk(keep, dim=1, sorted=False).indices.sort(dim=1).values
    patches = tokens[:, 1:]
    kept_tokens = patches.gather(1, kept.unsqueeze(-1).expand(-1, -1, dim))
    # the softmax over the dropped scores, as a masked softmax over all N (zero weight on the kept ones), so
    # the dropped tokens are never gathered: one (B, 1, N) x (B, N, D) product makes the fused token
    weights = scores.scatter(1, kept, float('-inf')).softmax(dim=1)
    fused = torch.bmm(weights.unsqueeze(1).to(patches.dtype), patches)
    return torch.cat([tokens[:, :1], kept_tokens, fused], dim=1), kept


@dataclass
class ReducerOutput:
    """What a reducer hands back to the vision encoder.

    tokens: ``(B, 1 + K + 1, D)``, or the input unchanged when nothing is dropped.
    kept: ``(B, K)`` indices into the N non-[CLS] tokens that entered, one per output token after [CLS]
        except the fused token (the last one, present when the output is longer than ``1 + K``).
        A merging reducer (ToMe) lists, for every output token after [CLS], the entering token it continues
        (itself if unmerged, the destination of a merge otherwise) and adds no fused token.
    scores: ``(B, N)`` per-token score logits (higher = keep). For COPA they are the TPD logits trained by PTA.
    sizes: ``(B, 1 + K)`` for a merging reducer: how many patches of the original grid each output token stands
        for ([CLS] counts 1); ``None`` for keep-and-fuse reducers, which do not track sizes.
    """

    tokens: Tensor
    kept: Tensor
    scores: Tensor
    sizes: Tensor | None = None


class PatchReducer(nn.Module):
    """Base class: score the N non-[CLS] tokens, then :func:`keep_topk_and_fuse`.

    Class attributes tell the vision encoder what a reducer needs:
      ``text_aware``: uses the text context. On the text-free path (``text=None``) it scores against the
      image's own [CLS] instead (the encoder's ``text_free='image_query'``), or the encoder skips it.
      ``needs_qkv``: wants the ``qkv`` projection output of the ViT block preceding the reduction point
      (captured during that block's forward, so attention-based scores cost no extra projection).
      ``in_block``: a merging reducer (see the module docstring). It runs inside block ``i`` between attention and
      MLP with block ``i``'s own ``qkv``, is called with ``sizes`` (``None`` before the first merge) and returns
      them; it defines ``num_merged(n_tokens)`` so the encoder's token schedule stays static. Its reduction
      layers may include block 0.
      ``prop_attn``: with a merging reducer, every block after the first merge adds ``log(size)`` of each key
      token to its attention logits (ToMe's proportional attention).

    A reducer also reports its own cost (:meth:`macs`), so :mod:`copa.macs` counts any reducer, a baseline's or a
    plugin's, without knowing its class.
    """

    text_aware: bool = False
    needs_qkv: bool = False
    in_block: bool = False
    prop_attn: bool = False

    def __init__(self, keep_ratio: float) -> None:
        super().__init__()
        num_kept(1, keep_ratio)
        self.keep_ratio = keep_ratio

    def num_kept(self, num_tokens: int) -> int:
        return num_kept(num_tokens, self.keep_ratio)

    def macs(self, n_tokens: int, dim: int, head_dim: int) -> int:
        """Multiply-adds of one call on ``n_tokens`` tokens ([CLS] included) of width ``dim`` (``head_dim``: the
        ViT's per-head width), counted as :mod:`copa.macs` counts (matmuls only). The base class's scores cost
        none (random, norms); a reducer whose scoring multiplies matrices overrides this."""
        return 0

    def score(self, tokens: Tensor, text: Tensor | None, qkv: Tensor | None, block: nn.Module) -> Tensor:
        """``(B, N)`` score logits of the non-[CLS] tokens."""
        raise NotImplementedError

    def forward(
        self,
        tokens: Tensor,
        text: Tensor | None = None,
        qkv: Tensor | None = None,
        block: nn.Module | None = None,
    ) -> ReducerOutput:
        """Reduce ``tokens`` (B, 1+N, D); ``text`` (B, D) is the text [CLS] projected to vision width;
        ``qkv`` (B, 1+N, 3D) and ``block`` come from the ViT block that produced ``tokens``."""
        scores = self.score(tokens, text, qkv, block)
        new_tokens, kept = keep_topk_and_fuse(tokens, scores, self.num_kept(tokens.shape[1] - 1))
        return ReducerOutput(new_tokens, kept, scores)


def split_qkv_heads(qkv: Tensor, block: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    """Split a timm ``Attention.qkv`` output ``(B, N, 3D)`` into q, k, v ``(B, H, N, d)`` as timm does."""
    attn = block.attn
    batch, n_tokens, _ = qkv.shape
    q, k, v = qkv.reshape(batch, n_tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def attention_log_probs(query: Tensor, keys: Tensor, scale: float) -> Tensor:
    """Log of the head-averaged attention of one query per sample over all tokens.

    query: ``(B, H, d)``; keys: ``(B, H, 1 + N, d)``. Returns ``(B, 1 + N)``. Log-probabilities are used as
    score logits so that the fused-token weights (a softmax over the dropped tokens) equal the attention
    probabilities renormalised over the dropped set.
    """
    attn = torch.einsum('bhd,bhnd->bhn', query * scale, keys).softmax(dim=-1)
    return attn.mean(dim=1).clamp_min(1e-12).log()
