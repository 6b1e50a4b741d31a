"""Analytic multiply-accumulate counts per image-text pair, from a model's static token schedule.

The efficiency unit is one image and ``text_len`` text tokens through the vision, text and fusion
encoders (the text-aware path; decoder and heads excluded). Counted: every matmul in linear layers and
attention (``QK^T`` and ``AV``), the patch embedding and the reducers' own projections. Not counted:
normalisation, softmax, activations, additions (fvcore ignores them too). This is the same quantity as
fvcore's count with an SDPA handle, and lets defaults be chosen without tracing a base-scale model.
"""
from __future__ import annotations

from copa.patch_detector import TextAwarePatchDetector
from copa.vision import VisionTransformer


def encoder_layer_macs(n_tokens: int, dim: int, mlp_dim: int) -> int:
    """Pre- or post-LN transformer layer: QKV and output projections, two attention matmuls, MLP."""
    return n_tokens * (4 * dim * dim + 2 * dim * mlp_dim) + 2 * n_tokens * n_tokens * dim


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
    lengths = vision.token_schedule()
    for n_tokens in lengths:
        total += encoder_layer_macs(n_tokens + extra_tokens, dim, mlp_dim)
    for index, reducer in zip(vision.reduction_layers, vision.reducers.values(), strict=True):
        n_in = (lengths[index - 1] if index > 0 else vision.num_patches + 1) - 1
        if isinstance(reducer, TextAwarePatchDetector):
            hidden = reducer.patch_proj.out_features
            total += n_in * dim * hidden + dim * hidden + n_in * hidden
        elif reducer.needs_qkv:
            total += n_in * dim + (dim * dim if reducer.text_aware else 0)
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
    n_visual = model.vision.token_schedule()[-1]
    dim = cfg.hidden_size
    fusion = len(model.fusion.layer) * fusion_layer_macs(text_len, n_visual, dim, cfg.intermediate_size)
    if model.vision.embed_dim != dim:
        fusion += n_visual * model.vision.embed_dim * dim
    return dict(vision=vision, text=text, fusion=fusion, total=vision + text + fusion)
