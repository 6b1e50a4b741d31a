"""COPA's Text-aware Patch Detector (TPD) and the Patch-Text Alignment (PTA) loss target it learns from."""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from .reducers import PatchReducer
from .registry import MODELS


@MODELS.register_module()
class TextAwarePatchDetector(PatchReducer):
    """Score every patch against the text [CLS], keep the top ``ceil(keep_ratio * N)``, fuse the rest.

    The score of token ``x_j`` is a two-layer MLP over the concatenation ``[LN(x_j); LN(t)]`` (the text
    [CLS] ``t`` already projected to vision width by the skeleton), written as two projections summed
    before the GELU so that the text half is computed once per sample. Its output is one logit per patch:
    the PTA loss trains it against 0/1 patch labels with binary cross-entropy, and the fused token is the
    softmax(logits over the dropped patches)-weighted sum of the dropped patches (:func:`keep_topk_and_fuse`),
    so the task losses train it too.

    Cost: ``N * D * hidden + hidden * N`` multiply-adds per reduction point, under 0.4% of one ViT-B block
    at the default ``hidden = D // 4``.

    Where the TPDs sit and how much they keep is configuration (``zoo.build.METHODS['copa']``). Defaults:
    three TPDs, before blocks 2, 5 and 8 at base scale (2, 3, 4 at tiny), each keeping half of its input,
    which puts COPA at ALBEF's MACs / 2.05 per pair (budget / 1.88; the derivation is in ``zoo.build``).
    On the text-free path (ITC image embeddings, the retrieval index, captioning) there is no text: the image's
    own [CLS] token stands in for ``t`` (same MLP, same budget), so that path is pruned as much as the
    text-aware one. PTA trains only the text-conditioned scores; the image-conditioned ones learn through the
    fused token of the losses on that path (ITC, PrefixLM).
    """

    text_aware = True

    def __init__(self, dim: int, keep_ratio: float = 0.5, hidden_dim: int | None = None) -> None:
        super().__init__(keep_ratio)
        hidden_dim = hidden_dim or max(dim // 4, 16)
        self.patch_norm = nn.LayerNorm(dim)
        self.text_norm = nn.LayerNorm(dim)
        self.patch_proj = nn.Linear(dim, hidden_dim)
        self.text_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.act = nn.GELU()
        self.head = nn.Linear(hidden_dim, 1)

    def score(self, tokens: Tensor, text: Tensor | None, qkv: Tensor | None, block: nn.Module) -> Tensor:
        if text is None:
            text = tokens[:, 0]
        patches = self.patch_proj(self.patch_norm(tokens[:, 1:]))
        query = self.text_proj(self.text_norm(text)).unsqueeze(1)
        return self.head(self.act(patches + query)).squeeze(-1)

    def macs(self, n_tokens: int, dim: int, head_dim: int) -> int:
        """The patch projection of the N non-[CLS] tokens, the text projection (once) and the one-logit head."""
        n, hidden = n_tokens - 1, self.patch_proj.out_features
        return n * dim * hidden + dim * hidden + n * hidden
