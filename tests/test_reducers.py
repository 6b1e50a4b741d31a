"""Patch reducers on synthetic tensors: budget, fused token, scores, determinism, text-free path.

ToMe, which merges inside every block rather than keeping and fusing at a few points, has its own tests in
tests/test_tome.py (against the official algorithm)."""
from __future__ import annotations

import math

import pytest
import torch

from baselines.reducers import CLSAttentionReducer, RandomReducer, TextAttentionReducer, ToMeReducer
from copa.patch_detector import TextAwarePatchDetector
from copa.reducers import keep_topk_and_fuse, num_kept
from copa.vision import VisionTransformer

DIM, HEADS, DEPTH, IMG, PATCH = 64, 4, 4, 32, 8
NUM_PATCHES = (IMG // PATCH) ** 2
REDUCERS = {
    'copa': dict(type='TextAwarePatchDetector'),
    'trips': dict(type='TextAttentionReducer'),
    'evit': dict(type='CLSAttentionReducer'),
    'random': dict(type='RandomReducer'),
}


def make_vision(reducer: str | None, keep_ratio: float = 0.5, layers=(1, 2, 3),
                text_free: str = 'image_query') -> VisionTransformer:
    import baselines  # noqa: F401

    torch.manual_seed(0)
    cfg = None if reducer is None else dict(REDUCERS[reducer], keep_ratio=keep_ratio)
    return VisionTransformer(
        img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
        reduction_layers=layers if cfg else (), reducer=cfg, text_free=text_free,
    ).eval()


def test_num_kept_is_ceil():
    assert num_kept(196, 0.5) == 98
    assert num_kept(99, 0.5) == 50
    assert num_kept(64, 0.7) == 45
    assert num_kept(10, 1.0) == 10
    with pytest.raises(ValueError):
        num_kept(10, 0.0)


def test_fused_token_is_score_weighted_sum_of_dropped():
    torch.manual_seed(1)
    batch, num, dim, keep = 3, 10, 5, 4
    tokens, scores = torch.randn(batch, 1 + num, dim), torch.randn(batch, num)
    out, kept = keep_topk_and_fuse(tokens, scores, keep)
    assert out.shape == (batch, keep + 2, dim)
    for b in range(batch):
        ranked = sorted(range(num), key=lambda j: -scores[b, j].item())
        top, rest = sorted(ranked[:keep]), ranked[keep:]
        assert kept[b].tolist() == top
        exp = [math.exp(scores[b, j].item()) for j in rest]
        expected = sum(w / sum(exp) * tokens[b, 1 + j] for w, j in zip(exp, rest, strict=True))
        torch.testing.assert_close(out[b, -1], expected)
        torch.testing.assert_close(out[b, 0], tokens[b, 0])
        torch.testing.assert_close(out[b, 1:-1], tokens[b, [1 + j for j in top]])


def test_nothing_dropped_is_identity():
    tokens, scores = torch.randn(2, 7, 4), torch.randn(2, 6)
    out, kept = keep_topk_and_fuse(tokens, scores, 6)
    assert out is tokens
    assert kept.tolist() == [list(range(6))] * 2


@pytest.mark.parametrize('name', sorted(REDUCERS))
@pytest.mark.parametrize('keep_ratio', [0.3, 0.5, 0.7])
def test_token_count_after_each_reduction(name, keep_ratio):
    vision = make_vision(name, keep_ratio)
    text = torch.randn(2, DIM)
    out = vision(torch.randn(2, 3, IMG, IMG), text)
    n_in = NUM_PATCHES
    assert len(out.token_counts) == 3
    for count, scores, scored_ids in zip(out.token_counts, out.scores, out.scored_patch_ids, strict=True):
        assert scores.shape == (2, n_in) and scored_ids.shape == (2, n_in)
        assert count == math.ceil(keep_ratio * n_in) + 2
        n_in = count - 1
    assert out.tokens.shape == (2, out.token_counts[-1], DIM)
    assert vision.token_schedule()[-1] == out.token_counts[-1]


@pytest.mark.parametrize('name', ['copa', 'trips', 'evit', 'random'])
def test_kept_patch_ids_follow_the_original_grid(name):
    vision = make_vision(name, 0.5)
    out = vision(torch.randn(2, 3, IMG, IMG), torch.randn(2, DIM))
    assert torch.equal(out.kept_patch_ids[0], out.kept[0])
    for later, earlier in zip(out.kept_patch_ids[1:], out.kept_patch_ids[:-1], strict=False):
        for b in range(2):
            allowed = set(earlier[b].tolist()) | {-1}
            assert set(later[b].tolist()) <= allowed


@pytest.mark.parametrize('name', ['copa', 'trips'])
def test_text_aware_reducers_are_skipped_without_text_when_unreduced(name):
    vision = make_vision(name, text_free='unreduced')
    images = torch.randn(2, 3, IMG, IMG)
    reference = make_vision(None)
    reference.load_state_dict(vision.state_dict(), strict=False)
    out = vision(images, None)
    assert out.token_counts == [] and out.tokens.shape[1] == NUM_PATCHES + 1
    torch.testing.assert_close(out.tokens, reference(images).tokens)


@pytest.mark.parametrize('name', ['copa', 'trips'])
def test_text_free_path_is_pruned_against_the_image_cls(name):
    """The default text-free path keeps the text-aware path's budget, and scores with the image [CLS] where the
    text [CLS] would be: the TPD's own MLP with ``t`` = the [CLS] token, TRIPS's attention = EViT's."""
    vision = make_vision(name)
    images, text = torch.randn(2, 3, IMG, IMG), torch.randn(2, DIM)
    free, aware = vision(images, None), vision(images, text)
    assert free.token_counts == aware.token_counts == [10, 7, 5]
    assert not torch.allclose(free.tokens, aware.tokens)
    x = vision.blocks[0](vision.embed(images))
    qkv = vision.blocks[0].attn.qkv(vision.blocks[0].norm1(vision.embed(images)))
    reducer = vision.reducers['1']
    expected = (reducer.score(x, x[:, 0], qkv, vision.blocks[0]) if name == 'copa'
                else CLSAttentionReducer(0.5).score(x, None, qkv, vision.blocks[0]))
    torch.testing.assert_close(reducer.score(x, None, qkv, vision.blocks[0]), expected)
    torch.testing.assert_close(free.scores[0], expected)


def test_prefix_is_shared_by_both_paths():
    vision = make_vision('copa', layers=(2, 3))
    images, text = torch.randn(2, 3, IMG, IMG), torch.randn(2, DIM)
    prefix, qkv = vision.forward_prefix(images)
    assert vision.shared_depth == 2
    torch.testing.assert_close(vision.forward_suffix(prefix, text, qkv).tokens, vision(images, text).tokens)
    torch.testing.assert_close(vision.forward_suffix(prefix, None, qkv).tokens, vision(images, None).tokens)


def _block_attention(block, x):
    """Head-averaged softmax attention of a block on its input, computed from its weights."""
    attn = block.attn
    b, n, d = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    return q, k, ((q @ k.transpose(-1, -2)) * attn.scale)


def test_evit_scores_are_cls_attention_of_preceding_block():
    vision = make_vision('evit', layers=(2,))
    images = torch.randn(2, 3, IMG, IMG)
    x = vision.embed(images)
    x = vision.blocks[0](x)
    _, _, logits = _block_attention(vision.blocks[1], x)
    expected = logits.softmax(-1).mean(1)[:, 0, 1:]
    out = vision(images)
    torch.testing.assert_close(out.scores[0].exp(), expected)


def test_trips_scores_use_block_query_projection_of_text():
    vision = make_vision('trips', layers=(2,))
    images, text = torch.randn(2, 3, IMG, IMG), torch.randn(2, DIM)
    x = vision.blocks[0](vision.embed(images))
    block = vision.blocks[1]
    _, k, _ = _block_attention(block, x)
    q_text = block.attn.qkv(block.norm1(text))[:, :DIM].reshape(2, HEADS, 1, -1)
    expected = ((q_text @ k.transpose(-1, -2)) * block.attn.scale).softmax(-1).mean(1)[:, 0, 1:]
    torch.testing.assert_close(vision(images, text).scores[0].exp(), expected)
    assert sum(p.numel() for p in vision.reducers.parameters()) == 0


def test_random_reducer_is_seeded():
    vision = make_vision('random')
    images = torch.randn(2, 3, IMG, IMG)
    torch.manual_seed(5)
    first = vision(images).kept
    torch.manual_seed(5)
    second = vision(images).kept
    torch.manual_seed(6)
    third = vision(images).kept
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, third, strict=True))


def test_reducers_with_keep_ratio_one_are_identity():
    block = make_vision(None).blocks[0]
    tokens = torch.randn(2, 17, DIM)
    qkv = block.attn.qkv(block.norm1(tokens))
    text = torch.randn(2, DIM)
    for reducer in (TextAwarePatchDetector(DIM, 1.0), TextAttentionReducer(1.0), CLSAttentionReducer(1.0),
                    RandomReducer(1.0), ToMeReducer(r=0)):
        assert reducer(tokens, text=text, qkv=qkv, block=block).tokens is tokens


def test_detector_scores_depend_on_text():
    detector = TextAwarePatchDetector(DIM, 0.5)
    tokens = torch.randn(2, 17, DIM)
    a = detector(tokens, text=torch.randn(2, DIM)).scores
    b = detector(tokens, text=torch.randn(2, DIM)).scores
    assert a.shape == (2, 16) and not torch.allclose(a, b)
