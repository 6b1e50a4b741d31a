"""ViT image encoder with patch-reduction points, built from timm's ``PatchEmbed`` and ``Block``.

Parameter names follow timm's ``VisionTransformer`` (``patch_embed``, ``cls_token``, ``pos_embed``,
``blocks.N``, ``norm``), so a timm checkpoint loads directly (:func:`load_timm_checkpoint`).
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from timm.layers import PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models import named_apply
from timm.models.vision_transformer import Block, init_weights_vit_timm
from torch import Tensor

from .reducers import PatchReducer, num_kept
from .registry import MODELS


@dataclass
class VisionOutput:
    """Output of the vision encoder.

    tokens: ``(B, T, D)`` final-normed tokens, [CLS] first.
    kept: per reduction point that ran, ``(B, K_i)`` indices into the ``N_i`` non-[CLS] tokens entering it.
    kept_patch_ids: per point, ``(B, K_i)`` index of each kept token on the original patch grid
        (``-1`` for a previous fused token that was kept).
    scores: per point, ``(B, N_i)`` score logits; ``scores[0]`` is on the original patch grid whenever the
        first reduction point sits before any other reduction.
    scored_patch_ids: per point, ``(B, N_i)`` original-grid index of each scored token (``-1``: fused token).
    token_counts: per point, the sequence length (with [CLS]) leaving it.
    token_patch_ids: ``(B, T - 1)`` original-grid index of each non-[CLS] output token (``-1``: fused token),
        so a head can place the final tokens on the image. After a merging reducer (ToMe) this is the token's
        representative: the patch whose token it continues.
    token_sizes: ``(B, T)`` how many original patches each output token stands for ([CLS] counts 1, so a row sums
        to ``num_patches + 1``), carried through every merge of a merging reducer (ToMe); ``None`` otherwise.
    """

    tokens: Tensor
    kept: list[Tensor] = field(default_factory=list)
    kept_patch_ids: list[Tensor] = field(default_factory=list)
    scores: list[Tensor] = field(default_factory=list)
    scored_patch_ids: list[Tensor] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)
    token_patch_ids: Tensor | None = None
    token_sizes: Tensor | None = None


def token_schedule(num_patches: int, depth: int, reduction_layers: Sequence[int], keep_ratio: float) -> list[int]:
    """Sequence length (with [CLS]) entering each of the ``depth`` blocks; static by construction."""
    lengths, n_tokens = [], num_patches + 1
    for i in range(depth):
        if i in reduction_layers:
            keep = num_kept(n_tokens - 1, keep_ratio)
            n_tokens = n_tokens if keep >= n_tokens - 1 else keep + 2
        lengths.append(n_tokens)
    return lengths


def merge_schedule(
    num_patches: int, depth: int, merge_layers: Sequence[int], merged: Callable[[int], int]
) -> list[tuple[int, int]]:
    """(tokens into the attention, tokens into the MLP) of each block, [CLS] included, when a merging reducer
    removes ``merged(n)`` of the ``n`` tokens inside every block of ``merge_layers`` (between attention and MLP)."""
    blocks, n_tokens = [], num_patches + 1
    for i in range(depth):
        n_attn = n_tokens
        if i in merge_layers:
            n_tokens -= merged(n_tokens)
        blocks.append((n_attn, n_tokens))
    return blocks


TEXT_FREE_MODES = ('image_query', 'unreduced')

_layer_norm = partial(nn.LayerNorm, eps=1e-6)


def _reducer_class(cfg: dict | nn.Module) -> type:
    if isinstance(cfg, nn.Module):
        return type(cfg)
    cls = MODELS.get(cfg['type']) if isinstance(cfg['type'], str) else cfg['type']
    if cls is None:
        raise KeyError(f"unknown reducer type {cfg['type']!r}")
    return cls


def _build_reducer(cfg: dict | nn.Module, dim: int) -> PatchReducer:
    if isinstance(cfg, nn.Module):
        return cfg
    cfg = dict(cfg)
    cls = _reducer_class(cfg)
    if 'dim' in inspect.signature(cls).parameters:
        cfg.setdefault('dim', dim)
    return MODELS.build(cfg)


@MODELS.register_module()
class VisionTransformer(nn.Module):
    """ViT whose token sequence can be reduced before chosen blocks.

    Args:
        img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate:
            as in timm's ``VisionTransformer``.
        reduction_layers: block indices ``i`` (``1 <= i < depth``) whose *input* is reduced, i.e. the
            reducer runs after ``i`` blocks. TRIPS's "layers 5 and 10" are ``(5, 10)``. For a merging reducer
            (``in_block``, ToMe) they are the blocks that merge, between their attention and MLP (``0 <= i < depth``;
            ToMe merges in every block).
        reducer: config (or module) of the reducer; one instance per reduction point, each with the
            same config. ``None`` means no reduction (ALBEF).
        text_free: what a text-aware reducer does on the text-free path (no text: the ITC image embedding,
            the retrieval index, captioning). ``'image_query'``: it runs with ``text=None`` and scores the
            patches against the image's own [CLS] in place of the text [CLS], so that path is pruned too and
            costs what the text-aware one does; ``'unreduced'``: it is skipped, and that path runs the whole ViT.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        reduction_layers: Sequence[int] = (),
        reducer: dict | None = None,
        text_free: str = 'image_query',
    ) -> None:
        super().__init__()
        if text_free not in TEXT_FREE_MODES:
            raise ValueError(f'text_free must be one of {TEXT_FREE_MODES}, got {text_free!r}')
        self.text_free = text_free
        reduction_layers = tuple(sorted(reduction_layers)) if reducer is not None else ()
        first = 0 if reduction_layers and _reducer_class(reducer).in_block else 1
        if any(not first <= i < depth for i in reduction_layers):
            raise ValueError(f'reduction_layers must lie in [{first}, {depth}), got {reduction_layers}')
        self.embed_dim = embed_dim
        self.depth = depth
        self.reduction_layers = reduction_layers
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim))
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i], norm_layer=_layer_norm)
            for i in range(depth)
        )
        self.norm = _layer_norm(embed_dim)
        self.reducers = nn.ModuleDict({str(i): _build_reducer(reducer, embed_dim) for i in reduction_layers})
        self.init_weights()

    @property
    def text_aware(self) -> bool:
        return any(r.text_aware for r in self.reducers.values())

    @property
    def keep_ratio(self) -> float:
        return next(iter(self.reducers.values())).keep_ratio if self.reducers else 1.0

    @property
    def merges_in_block(self) -> bool:
        """Whether the reducer is a merging one (ToMe) that runs inside the blocks and carries token sizes."""
        return any(r.in_block for r in self.reducers.values())

    @property
    def prop_attn(self) -> bool:
        """Whether blocks after a merge add ``log(size)`` to their attention logits (ToMe's proportional attention)."""
        return any(r.in_block and r.prop_attn for r in self.reducers.values())

    @property
    def shared_depth(self) -> int:
        """Blocks that see the same tokens with or without text: the text-free and text-aware paths share them."""
        return self.reduction_layers[0] if self.text_aware else 0

    def init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        named_apply(init_weights_vit_timm, self)

    def token_schedule(self) -> list[int]:
        """Sequence length (with [CLS]) entering each block."""
        return [n_attn for n_attn, _ in self.block_schedule()]

    def block_schedule(self) -> list[tuple[int, int]]:
        """(tokens into the attention, tokens into the MLP) of each block, [CLS] included. They differ only in the
        blocks where a merging reducer (ToMe) merges; ``[-1][1]`` is the number of tokens the encoder outputs."""
        if self.merges_in_block:
            reducers = self.reducers
            return merge_schedule(self.num_patches, self.depth, self.reduction_layers,
                                  lambda n: reducers[str(self.reduction_layers[0])].num_merged(n))
        lengths = token_schedule(self.num_patches, self.depth, self.reduction_layers, self.keep_ratio)
        return [(n, n) for n in lengths]

    @property
    def num_output_tokens(self) -> int:
        """Tokens (with [CLS]) leaving the encoder."""
        return self.block_schedule()[-1][1]

    def embed(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed

    def forward_prefix(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Run the ``shared_depth`` text-independent blocks; returns tokens and, if the next reducer needs
        it, the captured ``qkv`` of the last block run."""
        x, qkv = self.embed(images), None
        for i in range(self.shared_depth):
            x, qkv = self._run_block(i, x, text_free=False)
        return x, qkv

    def forward_suffix(self, tokens: Tensor, text: Tensor | None = None, qkv: Tensor | None = None) -> VisionOutput:
        """Continue from :meth:`forward_prefix`. ``text`` ``(B, D)``: the text context, or ``None`` for the
        text-free path, on which text-aware reducers query with the image [CLS] or are skipped (``text_free``)."""
        out = VisionOutput(tokens)
        x, sizes = tokens, None
        patch_ids = torch.arange(x.shape[1] - 1, device=x.device).expand(x.shape[0], -1)
        for i in range(self.shared_depth, self.depth):
            reducer = self._active_reducer(i, text is None)
            if reducer is not None and reducer.in_block:
                x, red = self._run_merging_block(i, x, reducer, text, sizes)
                if red is not None:
                    patch_ids, sizes = self._record(out, red, patch_ids), red.sizes
                qkv = None
                continue
            if reducer is not None:
                red = reducer(x, text=text, qkv=qkv, block=self.blocks[i - 1])
                x = red.tokens
                patch_ids = self._record(out, red, patch_ids)
            x, qkv = self._run_block(i, x, text_free=text is None, attn_mask=self._size_bias(sizes))
        out.tokens = self.norm(x)
        out.token_patch_ids = patch_ids
        out.token_sizes = sizes
        return out

    @staticmethod
    def _record(out: VisionOutput, red, patch_ids: Tensor) -> Tensor:
        """Append one reduction point's choices to ``out``; returns the original-grid ids of its output tokens."""
        kept_ids = patch_ids.gather(1, red.kept)
        new_ids = kept_ids
        if red.tokens.shape[1] - 1 > kept_ids.shape[1]:
            new_ids = torch.cat([kept_ids, kept_ids.new_full((kept_ids.shape[0], 1), -1)], dim=1)
        out.kept.append(red.kept)
        out.kept_patch_ids.append(kept_ids)
        out.scores.append(red.scores)
        out.scored_patch_ids.append(patch_ids)
        out.token_counts.append(red.tokens.shape[1])
        return new_ids

    def forward(self, images: Tensor, text: Tensor | None = None) -> VisionOutput:
        tokens, qkv = self.forward_prefix(images)
        return self.forward_suffix(tokens, text, qkv)

    def _active_reducer(self, index: int, text_free: bool) -> PatchReducer | None:
        reducer = self.reducers[str(index)] if str(index) in self.reducers else None
        if reducer is None or (text_free and reducer.text_aware and self.text_free == 'unreduced'):
            return None
        return reducer

    def _run_block(
        self, index: int, x: Tensor, text_free: bool, attn_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        block = self.blocks[index]
        nxt = self._active_reducer(index + 1, text_free)
        run = block if attn_mask is None else partial(block, attn_mask=attn_mask)
        if nxt is None or not nxt.needs_qkv or nxt.in_block:
            return run(x), None
        captured: list[Tensor] = []
        handle = block.attn.qkv.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            x = run(x)
        finally:
            handle.remove()
        return x, captured[0]

    def _size_bias(self, sizes: Tensor | None) -> Tensor | None:
        """Proportional attention: ``log(size)`` of every key token, added to the attention logits
        (official ``tome/patch/timm.py``: ``attn + size.log()[:, None, None, :, 0]``)."""
        if sizes is None or not self.prop_attn:
            return None
        return sizes.log()[:, None, None, :]

    def _run_merging_block(
        self, index: int, x: Tensor, reducer: PatchReducer, text: Tensor | None, sizes: Tensor | None
    ):
        """Block ``index`` with a merge between its attention and its MLP, as ToMe's ``ToMeBlock.forward``: the
        attention (proportional when ``prop_attn``), then the merge on this attention's keys, then the MLP on
        the merged tokens. Returns the tokens and the reducer's output (``None`` when nothing is merged)."""
        block = self.blocks[index]
        if reducer.num_merged(x.shape[1]) == 0:
            return self._run_block(index, x, text_free=text is None, attn_mask=self._size_bias(sizes))[0], None
        captured: list[Tensor] = []
        handle = block.attn.qkv.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x), attn_mask=self._size_bias(sizes))))
        finally:
            handle.remove()
        red = reducer(x, text=text, qkv=captured[0], block=block, sizes=sizes)
        x = red.tokens
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return x, red


def load_timm_checkpoint(encoder: VisionTransformer, path: str | Path) -> list[str]:
    """Load a timm ``VisionTransformer`` state dict (``.pth``/``.bin``/``.safetensors``) into ``encoder``.

    The classifier (``head.*``, ``fc_norm.*``) is dropped; ``pos_embed`` is resampled (bicubic, timm's
    routine) when the checkpoint's grid differs. Returns the encoder keys left at their initial values
    (the reducers'); any other mismatch is an error.
    """
    path = Path(path)
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location='cpu', weights_only=True)
    for key in ('state_dict', 'model', 'module'):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k: v for k, v in state.items() if not k.startswith(('head.', 'fc_norm.', 'head_drop.'))}
    pos = state.get('pos_embed')
    if pos is not None and pos.shape != encoder.pos_embed.shape:
        grid = encoder.patch_embed.grid_size
        old = int(math.sqrt(pos.shape[1] - 1))
        state['pos_embed'] = resample_abs_pos_embed(pos, list(grid), [old, old], num_prefix_tokens=1)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith('reducers.')]
    if missing or unexpected:
        raise KeyError(f'checkpoint mismatch: missing {missing}, unexpected {unexpected}')
    return [k for k in encoder.state_dict() if k.startswith('reducers.')]
