"""ToMe against its official code (facebookresearch/ToMe at af95e4b, ``tome/merge.py``, ``tome/patch/timm.py``,
``tome/utils.py``), copied below as the reference, and its MAC accounting against fvcore and the other reducers.
"""
from __future__ import annotations

import math
from typing import Callable, Tuple  # noqa: UP035  (the official code, verbatim)

import pytest
import torch

from baselines.reducers import ToMeReducer
from copa.macs import pair_macs, vision_macs
from copa.vision import VisionTransformer
from zoo import build_model, model_config

DIM, HEADS, DEPTH, IMG, PATCH = 64, 4, 4, 48, 8
NUM_PATCHES = (IMG // PATCH) ** 2  # 36


# ------------------------------------------------------------------ official code (verbatim, comments trimmed)
def do_nothing(x, mode=None):
    return x


def bipartite_soft_matching(
    metric: torch.Tensor,
    r: int,
    class_token: bool = False,
    distill_token: bool = False,
) -> Tuple[Callable, Callable]:  # noqa: UP006
    protected = 0
    if class_token:
        protected += 1
    if distill_token:
        protected += 1

    t = metric.shape[1]
    r = min(r, (t - protected) // 2)

    if r <= 0:
        return do_nothing, do_nothing

    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        scores = a @ b.transpose(-1, -2)

        if class_token:
            scores[..., 0, :] = -math.inf
        if distill_token:
            scores[..., :, 0] = -math.inf

        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]

        unm_idx = edge_idx[..., r:, :]  # Unmerged Tokens
        src_idx = edge_idx[..., :r, :]  # Merged Tokens
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)

        if class_token:
            unm_idx = unm_idx.sort(dim=1)[0]

    def merge(x: torch.Tensor, mode="mean") -> torch.Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)

        if distill_token:
            return torch.cat([unm[:, :1], dst[:, :1], unm[:, 1:], dst[:, 1:]], dim=1)
        else:
            return torch.cat([unm, dst], dim=1)

    return merge, do_nothing


def merge_wavg(merge: Callable, x: torch.Tensor, size: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
    if size is None:
        size = torch.ones_like(x[..., 0, None])

    x = merge(x * size, mode="sum")
    size = merge(size, mode="sum")

    x = x / size
    return x, size


def merge_source(merge: Callable, x: torch.Tensor, source: torch.Tensor = None) -> torch.Tensor:
    if source is None:
        n, t, _ = x.shape
        source = torch.eye(t, device=x.device)[None, ...].expand(n, t, t)

    source = merge(source, mode="amax")
    return source


def parse_r(num_layers: int, r) -> list[int]:
    inflect = 0
    if isinstance(r, list):
        if len(r) < num_layers:
            r = r + [0] * (num_layers - len(r))
        return list(r)
    elif isinstance(r, tuple):
        r, inflect = r

    min_val = int(r * (1.0 - inflect))
    max_val = 2 * r - min_val
    step = (max_val - min_val) / (num_layers - 1)

    return [int(min_val + step * i) for i in range(num_layers)]


def tome_attention(self, x: torch.Tensor, size: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
    """``ToMeAttention.forward`` (``self``: a timm ``Attention``)."""
    B, N, C = x.shape  # noqa: N806
    qkv = (
        self.qkv(x)
        .reshape(B, N, 3, self.num_heads, C // self.num_heads)
        .permute(2, 0, 3, 1, 4)
    )
    q, k, v = (
        qkv[0],
        qkv[1],
        qkv[2],
    )

    attn = (q @ k.transpose(-2, -1)) * self.scale

    if size is not None:
        attn = attn + size.log()[:, None, None, :, 0]

    attn = attn.softmax(dim=-1)
    attn = self.attn_drop(attn)

    x = (attn @ v).transpose(1, 2).reshape(B, N, C)
    x = self.proj(x)
    x = self.proj_drop(x)

    return x, k.mean(1)


def tome_block(self, x: torch.Tensor, tome_info: dict) -> torch.Tensor:
    """``ToMeBlock.forward`` (``self``: a timm ``Block``; ``tome_info``: the model's ``_tome_info``)."""
    attn_size = tome_info["size"] if tome_info["prop_attn"] else None
    x_attn, metric = tome_attention(self.attn, self.norm1(x), attn_size)
    x = x + self.drop_path1(x_attn)

    r = tome_info["r"].pop(0)
    if r > 0:
        merge, _ = bipartite_soft_matching(
            metric,
            r,
            tome_info["class_token"],
            tome_info["distill_token"],
        )
        if tome_info["trace_source"]:
            tome_info["source"] = merge_source(merge, x, tome_info["source"])
        x, tome_info["size"] = merge_wavg(merge, x, tome_info["size"])

    x = x + self.drop_path2(self.mlp(self.norm2(x)))
    return x


# ------------------------------------------------------------------------------------------------ helpers
def official_forward(vision: VisionTransformer, images: torch.Tensor, r: int, prop_attn: bool) -> tuple:
    """The official timm patch's forward (``ToMeVisionTransformer.forward``) over ``vision``'s own modules."""
    info = {"r": parse_r(len(vision.blocks), r), "size": None, "source": None, "trace_source": True,
            "prop_attn": prop_attn, "class_token": True, "distill_token": False}
    x = vision.embed(images)
    for block in vision.blocks:
        x = tome_block(block, x, info)
    return vision.norm(x), info["size"], info["source"]


def make_vision(r: int, prop_attn: bool = True, layers=tuple(range(DEPTH))) -> VisionTransformer:
    import baselines  # noqa: F401

    torch.manual_seed(0)
    return VisionTransformer(
        img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
        reduction_layers=layers, reducer=dict(type='ToMeReducer', r=r, prop_attn=prop_attn),
    ).eval()


def keys_metric(qkv: torch.Tensor) -> torch.Tensor:
    """``k.mean(1)`` from a timm ``qkv`` output, as ``ToMeAttention`` reshapes it."""
    b, n, _ = qkv.shape
    return qkv.reshape(b, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)[1].mean(1)


# ------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("r, n_tokens", [(4, 33), (5, 34), (40, 33)])
def test_merge_matches_official_over_consecutive_merges(r, n_tokens):
    """Several merges in a row, sizes carried: tokens, sizes and the official order agree; ``kept`` names an
    entering token of each output token's group (official ``merge_source``)."""
    torch.manual_seed(1)
    block = make_vision(0).blocks[0]
    reducer = ToMeReducer(r=r)
    x = torch.randn(3, n_tokens, DIM)
    ours_x, ours_size = x, None
    ref_x, ref_size = x, None
    for _ in range(4):
        qkv = block.attn.qkv(torch.randn_like(ours_x))
        merge, _ = bipartite_soft_matching(keys_metric(qkv), r, class_token=True)
        source = merge_source(merge, ref_x)
        ref_x, ref_size = merge_wavg(merge, ref_x, ref_size)
        out = reducer(ours_x, qkv=qkv, block=block, sizes=ours_size)
        torch.testing.assert_close(out.tokens, ref_x, rtol=0, atol=0)
        torch.testing.assert_close(out.sizes, ref_size[..., 0], rtol=0, atol=0)
        assert out.kept.shape == (3, out.tokens.shape[1] - 1)
        assert out.scores.shape == (3, ours_x.shape[1] - 1)
        members = source[:, 1:].gather(2, (out.kept + 1).unsqueeze(-1))  # kept token in its own group
        assert bool((members == 1).all())
        assert torch.equal(out.tokens[:, 0], ours_x[:, 0] if ours_size is None else out.tokens[:, 0])
        ours_x, ours_size = out.tokens, out.sizes
    assert bool((ours_size.sum(1) == n_tokens).all()) and bool((ours_size[:, 0] == 1).all())


def test_scores_order_the_merges():
    """Only set-A tokens merge away, and they are the ``r`` A tokens of lowest score (highest best-match
    similarity), as ToMe's edge ordering decides."""
    torch.manual_seed(2)
    block = make_vision(0).blocks[0]
    x = torch.randn(2, 1 + 20, DIM)
    out = ToMeReducer(r=6)(x, qkv=block.attn.qkv(block.norm1(x)), block=block)
    for b in range(2):
        a_tokens = list(range(1, 20, 2))  # non-[CLS] indices of set A (tokens 2, 4, ...)
        gone = set(range(20)) - set(out.kept[b].tolist())
        lowest = sorted(a_tokens, key=lambda j: out.scores[b, j].item())[:6]
        assert gone == set(lowest)


@pytest.mark.parametrize("prop_attn", [True, False])
@pytest.mark.parametrize("r", [3, 10])
def test_vision_matches_official_timm_patch(r, prop_attn):
    """The whole encoder (merge in every block between attention and MLP, sizes carried, proportional attention)
    against the official ``ToMeBlock``/``ToMeAttention`` run over the same weights; r = 10 hits the cap of half
    the tokens in the last blocks."""
    vision = make_vision(r, prop_attn)
    images = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        out = vision(images)
        ref_tokens, ref_size, source = official_forward(vision, images, r, prop_attn)
    torch.testing.assert_close(out.tokens, ref_tokens)
    torch.testing.assert_close(out.token_sizes, ref_size[..., 0], rtol=0, atol=0)
    assert out.token_counts == [m for _, m in vision.block_schedule()]
    assert vision.num_output_tokens == out.tokens.shape[1]
    # every output token's representative patch lies in the group it stands for
    members = source[:, 1:, 1:].gather(2, out.token_patch_ids.unsqueeze(-1))
    assert bool((members == 1).all())


def test_sizes_are_carried_and_proportional_attention_matters():
    vision = make_vision(6)
    images = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        out = vision(images)
        plain = make_vision(6, prop_attn=False)(images)
    schedule = vision.block_schedule()
    assert schedule == [(37, 31), (31, 25), (25, 19), (19, 13)]
    assert out.tokens.shape[1] == 13 and out.token_sizes.shape == (2, 13)
    assert bool((out.token_sizes.sum(1) == NUM_PATCHES + 1).all())  # [CLS] counts 1, patches 36
    assert bool((out.token_sizes[:, 0] == 1).all()) and bool((out.token_sizes >= 1).all())
    assert bool((out.token_sizes == out.token_sizes.round()).all())
    assert out.scores[0].shape == (2, NUM_PATCHES) and torch.equal(out.scored_patch_ids[0][0], torch.arange(36))
    assert not torch.allclose(out.tokens, plain.tokens)


def test_nothing_merged_is_the_plain_encoder():
    vision = make_vision(0)
    reference = VisionTransformer(img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS)
    reference.load_state_dict(vision.state_dict())
    images = torch.randn(2, 3, IMG, IMG)
    out = vision(images)
    assert out.token_counts == [] and out.token_sizes is None
    torch.testing.assert_close(out.tokens, reference(images).tokens, rtol=0, atol=0)


def test_merge_layers_start_at_block_zero_only_for_merging_reducers():
    with pytest.raises(ValueError, match=r"\[1, 4\)"):
        VisionTransformer(img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                          reduction_layers=(0, 1), reducer=dict(type='CLSAttentionReducer', keep_ratio=0.5))
    vision = make_vision(4, layers=(1, 3))  # merges only where asked; later blocks still see the sizes
    assert vision.block_schedule() == [(37, 37), (37, 33), (33, 33), (33, 29)]
    assert vision(torch.randn(1, 3, IMG, IMG)).token_counts == [33, 29]


def test_keep_ratio_is_the_knob():
    """``keep_ratio`` -> r at COPA's budget; an explicit r wins."""
    rs = {(scale, keep): model_config('tome', scale, keep_ratio=keep)['vision']['reducer']['r']
          for scale in ('tiny', 'base') for keep in (0.3, 0.5, 0.7, 1.0)}
    assert rs == {('tiny', 0.3): 12, ('tiny', 0.5): 10, ('tiny', 0.7): 7, ('tiny', 1.0): 0,
                  ('base', 0.3): 29, ('base', 0.5): 20, ('base', 0.7): 13, ('base', 1.0): 0}
    cfg = model_config('tome', 'base', reducer=dict(type='ToMeReducer', r=16))
    assert cfg['vision']['reducer']['r'] == 16 and cfg['vision']['reduction_layers'] == tuple(range(12))


@pytest.mark.parametrize("scale", ["tiny", "base"])
@pytest.mark.parametrize("keep", [0.3, 0.5, 0.7])
def test_macs_match_the_keep_and_fuse_reducers(scale, keep):
    """Pair MACs (copa.macs) of ToMe within 3% of COPA's and EViT's at the same keep ratio."""
    def build(name):
        if scale == 'base':
            with torch.device('meta'):
                return build_model(name, 'base', keep_ratio=keep)
        torch.manual_seed(0)
        return build_model(name, 'tiny', keep_ratio=keep)

    tome = pair_macs(build('tome'))['total']
    for name in ('copa', 'evit'):
        other = pair_macs(build(name))['total']
        assert abs(tome - other) / other < 0.03, (name, tome, other)


def test_analytic_macs_agree_with_fvcore():
    """fvcore (with the SDPA handle) on the tiny ToMe encoder = copa.macs + LayerNorms (5 per element), exactly:
    the attention before each merge, the MLP after it, and the bipartite similarity matmul of each merge."""
    from harness.profiling.efficiency import pair_macs as fvcore_pair_macs
    from harness.profiling.flops import count_macs

    class Tokens(torch.nn.Module):
        def __init__(self, vision):
            super().__init__()
            self.vision = vision

        def forward(self, images):
            return self.vision(images).tokens

    torch.manual_seed(0)
    model = build_model('tome', 'tiny').eval()
    vision = model.vision
    report = count_macs(Tokens(vision), (torch.randn(1, 3, 64, 64),))
    blocks = vision.block_schedule()
    norms = 5 * vision.embed_dim * (sum(a + m for a, m in blocks) + blocks[-1][1])
    assert report.total == vision_macs(vision) + norms
    parts, _ = fvcore_pair_macs(model)
    analytic = pair_macs(model)
    assert analytic['total'] <= parts['total'] <= 1.02 * analytic['total']
    assert parts['vision'] == pytest.approx(analytic['vision'], rel=0.02)
