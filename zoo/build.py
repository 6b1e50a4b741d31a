"""Named models over one skeleton: scales and methods as data, :func:`build_model` to combine them.

``SCALES`` fixes the network sizes; ``METHODS`` says, per method, which reducer sits where and which
losses are on. Every method is also registered in ``copa.registry.MODELS`` under its name, so an mmengine
config can say ``model = dict(type='copa', scale='tiny')`` once this module is imported (``harness`` does;
a plain mmengine config adds ``custom_imports=dict(imports=['zoo'])``).

This module sits above ``copa`` (the method) and ``baselines`` (the comparison models) and imports both;
neither imports it (tests/test_layering.py), so the method package stays usable on its own.

COPA's default TPD placement. Budget from the issue: at base scale, 224 px and 40 text tokens, COPA's
multiply-adds per image-text pair (vision + text + fusion encoders) are at most ALBEF's / 1.88. Counts from
``copa.macs.pair_macs`` (tested in tests/test_models.py):

    albef, no reduction                          22.74 GMACs  (vision 17.56, text 1.71, fusion 3.46)
    copa, TPDs before blocks 2, 5, 8, keep 0.5   11.08 GMACs  ->  albef / copa = 2.05
    same points, keep 0.6                        12.66 GMACs  ->  1.80  (misses)
    TPDs before blocks 3, 6, 9, keep 0.5         12.33 GMACs  ->  1.84  (misses)
    one TPD before block 2 would need keep 0.3   11.59 GMACs  ->  1.96
    TRIPS's schedule (blocks 5, 10, keep 0.7)    18.39 GMACs  ->  1.24

The text encoder costs 1.71 G whatever the reducer, so the saving has to come from the ViT and, through
fewer visual tokens, from the fusion encoder's cross-attention keys and values (1.4 G of ALBEF's 3.46 G).
Three TPDs that each halve their input (197 -> 100 -> 52 -> 28 tokens) meet the budget with margin while
the first one has two blocks of context; a single TPD would have to drop 70% of the patches at once on
the strength of two blocks, which bets everything on one early decision. At 384 px the same defaults give
25.87 vs 63.49 GMACs (2.45x).

Tiny-scale training choices (``SCALES['tiny']``), measured on the generated benchmark with ALBEF, 500
pre-training iterations from the vision pre-training's ViT: its captions are generic ("a red square and a
green star"), so the negatives ITC similarity mines are mostly true of the image too. With ALBEF's hard
negatives ITM learns the 1:2 prior and nothing else (val ITM AUC 0.51 at ``itm_hardness`` 0.5, loss flat
at 0.637); with random negatives it starts to separate pairs (AUC 0.63), and weighted 4x against MLM and
PrefixLM, which share the fusion encoder and fall faster, it reaches AUC 0.75. Base scale keeps ALBEF's
hard negatives and unit weights.
"""
from __future__ import annotations

import copy
from typing import Any

from mmengine.model import BaseModel

import baselines  # noqa: F401  (registers the baseline reducers and the single-stream model)
from copa.macs import tome_budget_r
from copa.patch_detector import TextAwarePatchDetector
from copa.registry import MODELS
from copa.vlp import VLPModel

SCALES: dict[str, dict[str, Any]] = {
    'tiny': dict(
        vision=dict(img_size=64, patch_size=8, embed_dim=128, depth=6, num_heads=4, mlp_ratio=4.0),
        text=dict(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512),
        fusion_layers=2,
        decoder_layers=2,
        embed_dim=128,
        vocab_size=2000,
        max_text_len=64,
        itm_hardness=0.0,
        loss_weights=dict(itm=4.0),
    ),
    'base': dict(
        vision=dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
        text=dict(hidden_size=768, num_layers=6, num_heads=12, intermediate_size=3072),
        fusion_layers=6,
        decoder_layers=6,
        embed_dim=256,
        vocab_size=30522,
        max_text_len=512,
    ),
}

DUAL_STREAM_LOSSES = ('itc', 'itm', 'mlm', 'lm')
_REDUCED = {'tiny': (2, 3, 4), 'base': (2, 5, 8)}
SHARED_PASSES = dict(text_free='image_query', itm_negatives='reuse')
"""The pre-training recipe of the text-aware models: the text-free path pruned against the image [CLS] and ITM
negatives reusing each image's own text-aware tokens (``copa.vlp``), so one step runs no unpruned ViT pass."""
SEPARATE_PASSES = dict(text_free='unreduced', itm_negatives='rerun')
"""The recipe before it (an unpruned text-free pass and a text-aware pass per ITM negative), kept for the
ablation: suites name it as the variant ``separate_passes``."""

MOMENTUM_DISTILLATION = dict(momentum={'tiny': None, 'base': 0.995}, distill_alpha=0.4,
                             queue_size={'tiny': 4096, 'base': 65536})
"""ALBEF's momentum model, ITC queue and distillation (salesforce/ALBEF ``configs/Pretrain.yaml``: momentum 0.995,
alpha 0.4, queue 65,536 for a batch of 512, i.e. 128 batches). Every dual-stream model pre-trains with them at
base scale: the reducers are ALBEF with a reducer, as TRIPS and COPA build on ALBEF's code.

Tiny scale pre-trains without them (``momentum=None``; the paper suite's ``momentum`` variant runs ALBEF's
constants there, a queue of 128 batches of 32). ALBEF's constants are set for a run of ~230k steps, where the
moving average's horizon (1 / (1 - 0.995) = 200 steps) and the queue's age (128 steps) are under 0.1% of it; in
tiny's 500 steps they are 40% and 25%, so the soft targets and queued negatives come from a model barely past
its initialisation. Scaled to the run's length both vanish. Measured on COPA from the box-free ViT
initialisation, 500 iterations (results/README.md): val ITM AUC 0.52 with them (seeds 0-2: 0.52, 0.50, 0.50:
chance) and 0.67 without; ITC R@1 0.003 against 0.012. In the paper suite's 1,000 iterations (3 seeds) ITM
leaves chance with them too, but zero-shot retrieval R-mean falls from 6.50 to 3.07 for COPA and from 5.53 to 3.95
for ALBEF, grounding unchanged."""

METHODS: dict[str, dict[str, Any]] = {
    'albef': dict(reducer=None, losses=DUAL_STREAM_LOSSES, **MOMENTUM_DISTILLATION),
    'copa': dict(
        reducer=dict(type='TextAwarePatchDetector'),
        reduction_layers=_REDUCED,
        keep_ratio=0.5,
        losses=DUAL_STREAM_LOSSES + ('pta',),
        **SHARED_PASSES,
        **MOMENTUM_DISTILLATION,
    ),
    'trips': dict(reducer=dict(type='TextAttentionReducer'), reduction_layers=_REDUCED, keep_ratio=0.5,
                  losses=DUAL_STREAM_LOSSES, **SHARED_PASSES, **MOMENTUM_DISTILLATION),
    'evit': dict(reducer=dict(type='CLSAttentionReducer'), reduction_layers=_REDUCED, keep_ratio=0.5,
                 losses=DUAL_STREAM_LOSSES, **MOMENTUM_DISTILLATION),
    'random': dict(reducer=dict(type='RandomReducer'), reduction_layers=_REDUCED, keep_ratio=0.5,
                   losses=DUAL_STREAM_LOSSES, **MOMENTUM_DISTILLATION),
    'tome': dict(reducer=dict(type='ToMeReducer', prop_attn=True),
                 reduction_layers={scale: tuple(range(s['vision']['depth'])) for scale, s in SCALES.items()},
                 budget_layers=_REDUCED, keep_ratio=0.5, losses=DUAL_STREAM_LOSSES, **MOMENTUM_DISTILLATION),
    # ViLT as published: ViT-B/32 at base scale (ViLT-B/32); the tiny ViT keeps the scale's patch 8
    'vilt': dict(type='SingleStreamVLP', losses=('itm', 'mlm'), vision=dict(base=dict(patch_size=32))),
}
"""Reducer baselines share COPA's budget (same points, same keep ratio), so they differ from COPA only in
how patches are scored and in PTA. TRIPS's published schedule is ``reduction_layers=(5, 10),
keep_ratio=0.7`` at base scale (pass them as overrides).

ToMe runs as published instead: it merges ``r`` tokens inside *every* block (``reduction_layers``: all of them),
with sizes carried through the forward and proportional attention (``prop_attn``, the official timm patch's
default). ``keep_ratio`` stays its knob: ``model_config`` turns it into the constant ``r`` whose MACs per pair
(224 px base / 64 px tiny, 40 text tokens) come closest to the keep-and-fuse reducers' at that ratio before
``budget_layers`` (COPA's points; ``copa.macs.tome_budget_r``). At keep 0.5: r = 20 at base, 10.88 GMACs per pair
against COPA's 11.08 and EViT's 11.03 (197 tokens fall to 4 after 12 blocks, r capped at half in the last ones);
r = 10 at tiny, 80.7 against 81.7 and 81.2 MMACs. An explicit ``reducer=dict(type='ToMeReducer', r=...)`` wins
(ToMe's published operating points, e.g. r = 16 for ViT-B/16)."""


def model_config(name: str, scale: str = 'tiny', **overrides: Any) -> dict[str, Any]:
    """The mmengine config dict of a named model at a scale.

    ``overrides`` are top-level ``VLPModel`` arguments (``vocab_size``, ``losses``, ``pad_token_id`` ...) or
    method knobs: ``reducer``, ``reduction_layers``, ``keep_ratio``, ``text_free`` (see
    :class:`~copa.vision.VisionTransformer`), ``budget_layers`` (ToMe: the keep-and-fuse points whose MACs its
    ``r`` matches) and ``image_size`` (ViT input size; position embeddings follow).
    ``vision``/``text`` dicts are merged key by key, over a method's own vision settings per scale (ViLT's
    patch 32 at base).
    """
    if name not in METHODS:
        raise KeyError(f'unknown model {name!r}; choose from {sorted(METHODS)}')
    if scale not in SCALES:
        raise KeyError(f'unknown scale {scale!r}; choose from {sorted(SCALES)}')
    method = copy.deepcopy(METHODS[name])
    cfg = copy.deepcopy(SCALES[scale])
    overrides = dict(overrides)
    vision = cfg.pop('vision') | method.pop('vision', {}).get(scale, {}) | overrides.pop('vision', {})
    cfg['text'] = cfg['text'] | overrides.pop('text', {})
    if 'image_size' in overrides:
        vision['img_size'] = overrides.pop('image_size')

    cfg['type'] = method.pop('type', 'VLPModel')
    reducer = overrides.pop('reducer', method.pop('reducer', None))
    layers = overrides.pop('reduction_layers', method.pop('reduction_layers', ()))
    layers = layers[scale] if isinstance(layers, dict) else layers
    keep_ratio = overrides.pop('keep_ratio', method.pop('keep_ratio', 1.0))
    text_free = overrides.pop('text_free', method.pop('text_free', None))
    budget_layers = overrides.pop('budget_layers', method.pop('budget_layers', None))
    budget_layers = budget_layers[scale] if isinstance(budget_layers, dict) else budget_layers
    if reducer is not None:
        vision['reducer'] = dict(reducer, keep_ratio=keep_ratio)
        if budget_layers is not None and reducer.get('type') == 'ToMeReducer' and 'r' not in reducer:
            # keep_ratio -> r at the same MACs per pair
            budget_cfg = dict(vision=vision, text=cfg['text'], fusion_layers=cfg['fusion_layers'])
            vision['reducer']['r'] = tome_budget_r(budget_cfg, keep_ratio, budget_layers, layers)
        vision['reduction_layers'] = tuple(layers)
        if text_free is not None:
            vision['text_free'] = text_free
    cfg['vision'] = vision
    for key in ('momentum', 'queue_size'):
        if isinstance(method.get(key), dict):
            method[key] = method[key][scale]
    if overrides.get('momentum', method.get('momentum')) is None:  # no momentum model: no queue either
        method.pop('queue_size', None)
        overrides.pop('queue_size', None)
    cfg.update(method)
    if cfg['type'] == 'SingleStreamVLP':
        for key in ('text', 'fusion_layers', 'decoder_layers', 'embed_dim', 'itm_hardness'):
            cfg.pop(key, None)
    cfg.update(overrides)
    return cfg


def build_model(name: str, scale: str = 'tiny', **overrides: Any) -> BaseModel:
    """Build a named model ('albef', 'copa', 'trips', 'evit', 'random', 'tome', 'vilt') at a scale."""
    return MODELS.build(model_config(name, scale, **overrides))


def _register(name: str) -> None:
    def builder(scale: str = 'tiny', **overrides: Any) -> BaseModel:
        return build_model(name, scale, **overrides)

    builder.__name__ = builder.__qualname__ = f'build_{name}'
    builder.__doc__ = f'Build the {name!r} model; see :func:`build_model`.'
    MODELS.register_module(name=name, module=builder)


for _name in METHODS:
    _register(_name)

__all__ = [
    'DUAL_STREAM_LOSSES', 'METHODS', 'MODELS', 'MOMENTUM_DISTILLATION', 'SCALES', 'SEPARATE_PASSES', 'SHARED_PASSES',
    'TextAwarePatchDetector', 'VLPModel', 'build_model', 'model_config',
]
