"""Analytic multiply-accumulate counts per image-text pair, from a model's static token schedule.

The efficiency unit is one image and ``text_len`` text tokens through the vision, text and fusion
encoders (the text-aware path; decoder and heads excluded). Counted: every matmul in linear layers and
attention (``QK^T`` and ``AV``), the patch embedding and the reducers' own scoring, as each reducer reports it
(``PatchReducer.macs``; ToMe: the bipartite similarity matrix of each merge). Not counted: normalisation,
softmax, activations, additions, sorting, gathers and scatters (fvcore ignores them too). This is the same quantity
as fvcore's count with an SDPA handle, and lets defaults be chosen without tracing a base-scale model.
"""
from __future__ import annotations

from collections.abc import Sequence

from copa.reducers import num_merged
from copa.vision import VisionTransformer, merge_schedule, token_schedule


def encoder_layer_macs(n_tokens: int, dim: int, mlp_dim: int) -> int:
    """Pre- or post-LN transformer layer: QKV and output projections, two attention matmuls, MLP."""
    return n_tokens * (4 * dim * dim + 2 * dim * mlp_dim) + 2 * n_tokens * n_tokens * dim


def block_macs(n_attn: int, n_mlp: int, dim: int, mlp_dim: int) -> int:
    """A ViT block whose MLP sees ``n_mlp`` tokens and its attention ``n_attn`` (fewer after a ToMe merge between
    them); equal to :func:`encoder_layer_macs` when they agree."""
    return n_attn * 4 * dim * dim + 2 * n_attn * n_attn * dim + n_mlp * 2 * dim * mlp_dim


def merge_matching_macs(n_tokens: int, head_dim: int) -> int:
    """ToMe's bipartite similarity over ``n_tokens`` tokens: set A (``ceil(n/2)``) times set B (``floor(n/2)``)
    over the head-averaged keys (``a @ b.transpose(-1, -2)`` in ``bipartite_soft_matching``)."""
    return ((n_tokens + 1) // 2) * (n_tokens // 2) * head_dim


def fusion_layer_macs(n_text: int, n_visual: int, dim: int, mlp_dim: int) -> int:
    """Self-attention layer over the text plus cross-attention: Q/O on text, K/V on the visual tokens."""
    cross = 2 * n_text * dim * dim + 2 * n_visual * dim * dim + 2 * n_text * n_visual * dim
    return encoder_layer_macs(n_text, dim, mlp_dim) + cross


def vision_macs(vision: VisionTransformer, extra_tokens: int = 0) -> int:
    """ViT MACs for one image along the text-aware path; ``extra_tokens`` ride along (single stream)."""
    dim = vision.embed_dim
    mlp_dim = vision.blocks[0].mlp.fc1.out_features
    patch_dim = vision.patch_embed.proj.in_channels * vision.patch_embed.proj.kernel_size[0] ** 2
    total = vision.num_patches * patch_dim * dim
    blocks = vision.block_schedule()
    for n_attn, n_mlp in blocks:
        total += block_macs(n_attn + extra_tokens, n_mlp + extra_tokens, dim, mlp_dim)
    lengths = [n_attn for n_attn, _ in blocks]
    for index, reducer in zip(vision.reduction_layers, vision.reducers.values(), strict=True):
        # each reducer counts its own scoring (PatchReducer.macs); a merging one (ToMe) runs inside block ``index``
        # on that block's tokens, a keep-and-fuse one between blocks on what the previous block left
        if reducer.in_block:
            n_tokens = lengths[index]
        else:
            n_tokens = lengths[index - 1] if index > 0 else vision.num_patches + 1
        total += reducer.macs(n_tokens, dim, vision.blocks[index].attn.head_dim)
    return total


def pair_macs(model, text_len: int = 40) -> dict[str, int]:
    """MACs of one image-text pair: ``{'vision', 'text', 'fusion', 'total'}`` (1 MAC = 1 multiply-add)."""
    if hasattr(model, 'joint'):
        total = vision_macs(model.vision, extra_tokens=text_len)
        return dict(vision=total, text=0, fusion=0, total=total)
    cfg = model.text_config
    text = cfg.num_hidden_layers * encoder_layer_macs(text_len, cfg.hidden_size, cfg.intermediate_size)
    vision = vision_macs(model.vision)
    if model.text_to_vision is not None:
        vision += model.text_to_vision.in_features * model.text_to_vision.out_features
    n_visual = model.vision.num_output_tokens
    dim = cfg.hidden_size
    fusion = len(model.fusion.layer) * fusion_layer_macs(text_len, n_visual, dim, cfg.intermediate_size)
    if model.vision.embed_dim != dim:
        fusion += n_visual * model.vision.embed_dim * dim
    return dict(vision=vision, text=text, fusion=fusion, total=vision + text + fusion)


def tome_budget_r(
    cfg: dict,
    keep_ratio: float,
    budget_layers: Sequence[int],
    merge_layers: Sequence[int] | None = None,
    text_len: int = 40,
) -> int:
    """ToMe's ``r`` (tokens merged per block) whose MACs per image-text pair come closest to those of a
    keep-and-fuse reducer (EViT, COPA, ...) keeping ``keep_ratio`` before each of ``budget_layers``.

    ``cfg`` is a dual-stream model config (``zoo.build.model_config``: ``vision``, ``text``, ``fusion_layers``);
    ``merge_layers`` are the blocks that merge (default: every block, as ToMe). Both sides are counted with this
    module's formulas: the ViT blocks, ToMe's matching, and the fusion encoder's cross-attention over the visual
    tokens with the projection to text width when they differ; what both pay alike (patch embedding, text
    encoder) and the keep-and-fuse reducers' own scoring (COPA's detector, EViT's [CLS] attention: under 0.3% of
    a pair) are left out. Ties go to the smaller ``r``.
    """
    vision, text = cfg['vision'], cfg['text']
    dim, depth = vision['embed_dim'], vision['depth']
    mlp_dim, head_dim = int(dim * vision.get('mlp_ratio', 4.0)), dim // vision['num_heads']
    patches = (vision['img_size'] // vision['patch_size']) ** 2
    text_dim, text_mlp = text['hidden_size'], text['intermediate_size']
    merge_layers = range(depth) if merge_layers is None else merge_layers

    def cost(blocks: list[tuple[int, int]]) -> int:
        n_visual = blocks[-1][1]
        total = sum(block_macs(n_attn, n_mlp, dim, mlp_dim) for n_attn, n_mlp in blocks)
        total += cfg['fusion_layers'] * fusion_layer_macs(text_len, n_visual, text_dim, text_mlp)
        return total + (n_visual * dim * text_dim if dim != text_dim else 0)

    reference = cost([(n, n) for n in token_schedule(patches, depth, budget_layers, keep_ratio)])
    gaps = []
    for r in range(patches // 2 + 1):
        blocks = merge_schedule(patches, depth, merge_layers, lambda n, r=r: num_merged(n, r))
        matching = sum(merge_matching_macs(n_attn, head_dim) for n_attn, n_mlp in blocks if n_mlp < n_attn)
        gaps.append((abs(cost(blocks) + matching - reference), r))
    return min(gaps)[1]
