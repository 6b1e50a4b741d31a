"""The shared VLP model skeleton: ViT (with patch-reduction points) + BERT text encoder + fusion encoder
+ PrefixLM decoder, with ITC / ITM / MLM / PrefixLM / PTA heads.

COPA and the dual-stream baselines are this one class with a different ``vision.reducer`` and ``losses``
(see ``zoo.build``). Which image tokens feed which objective:

* ITC and PrefixLM use the *text-free* path: the image embedding must not depend on the caption (retrieval
  shortlists with it; captioning has no text; the caption PrefixLM continues must not choose the patches).
  A text-aware reducer there scores patches against the image's own [CLS] (``vision.text_free=
  'image_query'``, the default), so that path is pruned as much as the text-aware one; with ``'unreduced'``
  it is skipped and the path runs the whole ViT. Reducers that ignore text (EViT, random, ToMe) reduce the
  same way on both paths, which are then one pass.
* ITM, MLM and PTA use the *text-aware* path. What queries it (``mlm_query``): ``'masked'`` (default) the
  text [CLS] of the MLM-masked caption, one pass shared by the three, so the masked words cannot choose the
  patches MLM sees; ``'separate'``: ITM and PTA query with the unmasked caption and MLM gets its own
  text-aware suffix from the masked one (one more pruned suffix per pair); ``'unmasked'``: all three use
  the unmasked caption's pass (the recipe before: the masked words leak into which patches are kept).
* The blocks before the first text-aware reduction point are shared by both paths.
* ITM negatives (``itm_negatives``): ``'reuse'`` (default) pairs each negative with the visual tokens its
  image got from its own caption, as ALBEF's code pairs a negative with ``image_embeds[neg_idx]``;
  ``'rerun'`` re-runs the text-aware ViT suffix of each negative image with the negative's text, at the
  cost of two more pruned ViT suffixes per pair.

* Momentum distillation (ALBEF, ``momentum``): an exponential moving average of the encoders, heads and
  projections (salesforce/ALBEF ``models/model_pretrain.py``) gives ITC its contrast set (the batch's momentum
  features and a queue of earlier batches' features) and soft targets (``distill_alpha`` of the momentum
  model's similarities), and MLM soft targets (its predictions for the masked caption). The momentum model
  takes the same paths as the model: text-free for ITC, text-aware (queried by the masked caption) for MLM.

One pre-training step of COPA therefore runs the shared prefix once and two pruned suffixes (text-free and
text-aware), against ALBEF's one unpruned ViT pass. The recipe before that (``text_free='unreduced'``,
``itm_negatives='rerun'``) ran an unpruned pass *and* three pruned suffixes, and pre-trained slower than
ALBEF; it is kept as a variant for the ablation.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.model.weight_init import initialize
from torch import Tensor

from .objectives import (
    itc_loss,
    itc_loss_gathered,
    itc_loss_momentum,
    itm_loss,
    mask_tokens,
    positive_pairs,
    pta_loss,
    sample_hard_negatives,
    soft_token_cross_entropy,
    token_cross_entropy,
    world_size,
)
from .registry import MODELS
from .text import (
    FusionEncoder,
    MLMHead,
    PrefixLMDecoder,
    bert_config,
    bert_init,
    build_text_encoder,
    derived_config,
)
from .vision import VisionOutput, VisionTransformer, load_timm_checkpoint

LOSSES = ('itc', 'itm', 'mlm', 'lm', 'pta')
ITM_NEGATIVES = ('reuse', 'rerun')
MLM_QUERIES = ('masked', 'separate', 'unmasked')
LM_PREFIXES = ('random', 'none')
MOMENTUM_MODULES = ('vision', 'text_encoder', 'text_to_vision', 'vision_to_text', 'fusion', 'vision_proj',
                    'text_proj', 'mlm_head')


@MODELS.register_module()
class VLPModel(BaseModel):
    """Dual-stream VLP model with a pluggable patch reducer.

    Args:
        vision: keyword arguments of :class:`~copa.vision.VisionTransformer` (incl. ``reducer`` and
            ``reduction_layers``).
        text: keyword arguments of :func:`~copa.text.bert_config` for the text encoder (``hidden_size``,
            ``num_layers``, ``num_heads``, ``intermediate_size``); vocabulary and pad id come from below.
        fusion_layers, decoder_layers: depths of the fusion encoder and of the PrefixLM decoder (same widths
            as the text encoder).
        embed_dim: ITC embedding size.
        vocab_size, pad_token_id, cls_token_id, sep_token_id, mask_token_id: the tokenizer's vocabulary.
        losses: enabled objectives, a subset of ``('itc', 'itm', 'mlm', 'lm', 'pta')``.
        loss_weights: per-objective weights (default 1).
        mlm_prob: fraction of tokens masked for MLM.
        temperature: initial ITC temperature (learnable, clamped to [0.001, 0.5] as in ALBEF).
        itm_hardness: share of ITM negatives mined from ITC similarity, the rest drawn uniformly
            (see :func:`~copa.objectives.sample_hard_negatives`; ALBEF: 1).
        itm_negatives: ``'reuse'`` the text-aware visual tokens each negative image got with its own caption,
            or ``'rerun'`` its text-aware ViT suffix with the negative's text (only differs for text-aware
            reducers; see the module docstring).
        mlm_query: which caption queries the text-aware pass that MLM sees (see the module docstring).
        lm_prefix: ``'random'``: PrefixLM continues each caption after a uniformly drawn number of its words
            (0 to all but one); ``'none'``: it predicts the whole caption (image-only captioning).
        momentum: ALBEF's momentum distillation: the moving-average coefficient of the momentum model (ALBEF:
            0.995), or None for none.
        queue_size: ITC's queue of the momentum model's features from earlier batches (ALBEF: 65,536 for a
            batch of 512, 128 batches' worth); queued features of the same image id are positives, not negatives.
        distill_alpha: weight of the momentum model's soft targets in ITC and MLM (ALBEF: 0.4); ramped up from 0
            by :class:`~harness.hooks.DistillationWarmupHook` (``distill_ramp``).
        vision_pretrained: timm checkpoint file for the vision encoder.
        text_pretrained: local Hugging Face BERT directory for the text encoder (its config wins over
            ``text`` and ``vocab_size``).
    """

    def __init__(
        self,
        vision: dict,
        text: dict,
        fusion_layers: int = 6,
        decoder_layers: int = 6,
        embed_dim: int = 256,
        vocab_size: int = 30522,
        pad_token_id: int = 0,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
        mask_token_id: int = 103,
        max_text_len: int = 512,
        losses: Sequence[str] = ('itc', 'itm', 'mlm', 'lm'),
        loss_weights: dict | None = None,
        mlm_prob: float = 0.15,
        temperature: float = 0.07,
        itm_hardness: float = 1.0,
        itm_negatives: str = 'reuse',
        mlm_query: str = 'masked',
        lm_prefix: str = 'random',
        momentum: float | None = None,
        queue_size: int = 0,
        distill_alpha: float = 0.4,
        dropout: float = 0.1,
        vision_pretrained: str | None = None,
        text_pretrained: str | None = None,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        unknown = set(losses) - set(LOSSES)
        if unknown:
            raise ValueError(f'unknown losses {sorted(unknown)}; choose from {LOSSES}')
        self.losses = tuple(losses)
        self.loss_weights = {name: 1.0 for name in LOSSES} | dict(loss_weights or {})
        self.mlm_prob = mlm_prob
        self.itm_hardness = itm_hardness
        if itm_negatives not in ITM_NEGATIVES:
            raise ValueError(f'itm_negatives must be one of {ITM_NEGATIVES}, got {itm_negatives!r}')
        self.itm_negatives = itm_negatives
        if mlm_query not in MLM_QUERIES:
            raise ValueError(f'mlm_query must be one of {MLM_QUERIES}, got {mlm_query!r}')
        self.mlm_query = mlm_query
        if lm_prefix not in LM_PREFIXES:
            raise ValueError(f'lm_prefix must be one of {LM_PREFIXES}, got {lm_prefix!r}')
        self.lm_prefix = lm_prefix

        self.vision = VisionTransformer(**vision)
        if vision_pretrained is not None:
            load_timm_checkpoint(self.vision, vision_pretrained)
        if text_pretrained is not None:
            self.text_encoder = build_text_encoder(pretrained=text_pretrained)
        else:
            cfg = bert_config(
                vocab_size=vocab_size,
                pad_token_id=pad_token_id,
                max_position_embeddings=max_text_len,
                dropout=dropout,
                **text,
            )
            self.text_encoder = build_text_encoder(cfg)
        self.text_config = self.text_encoder.config
        self.vocab_size = self.text_config.vocab_size
        self.token_ids = dict(pad=pad_token_id, cls=cls_token_id, sep=sep_token_id, mask=mask_token_id)
        if 'pta' in self.losses and not self.vision.text_aware:
            raise ValueError('PTA needs a text-aware reducer (TextAwarePatchDetector)')

        v_dim, t_dim = self.vision.embed_dim, self.text_config.hidden_size
        self.text_to_vision = nn.Linear(t_dim, v_dim) if self.vision.text_aware else None
        self.vision_to_text = nn.Linear(v_dim, t_dim) if v_dim != t_dim else nn.Identity()
        self.fusion = FusionEncoder(derived_config(self.text_config, fusion_layers), fusion_layers)
        self.itm_head = nn.Linear(t_dim, 2)
        self.vision_proj = nn.Linear(v_dim, embed_dim)
        self.text_proj = nn.Linear(t_dim, embed_dim)
        self.temp = nn.Parameter(torch.tensor(float(temperature)))
        init = bert_init(self.text_config.initializer_range)
        for module in (self.text_to_vision, self.vision_to_text, self.itm_head, self.vision_proj, self.text_proj):
            if module is not None:
                module.apply(init)
        word_embeddings = self.text_encoder.embeddings.word_embeddings
        self.mlm_head = MLMHead(self.text_config, word_embeddings) if 'mlm' in self.losses else None
        self.decoder = None
        if 'lm' in self.losses and decoder_layers > 0:
            self.decoder = PrefixLMDecoder(derived_config(self.text_config, decoder_layers))
        self._build_momentum(momentum, queue_size, distill_alpha, embed_dim)

    def _build_momentum(self, momentum: float | None, queue_size: int, alpha: float, embed_dim: int) -> None:
        """The momentum model (one deep copy of :data:`MOMENTUM_MODULES`, so the MLM head's tied word embeddings
        stay tied in the copy) and the ITC queue, as ALBEF initialises them (random unit features)."""
        self.momentum, self.distill_alpha, self.distill_ramp = momentum, alpha, 1.0
        self.momentum_model = None
        if momentum is None:
            if queue_size:
                raise ValueError('queue_size needs momentum (the queue holds its features): '
                                 'give queue_size=0 with momentum=None')
            return
        if not 0.0 < momentum < 1.0:
            raise ValueError(f'momentum must be in (0, 1), got {momentum}')
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'distill_alpha must be in [0, 1], got {alpha}')
        if not isinstance(queue_size, int) or queue_size < 0:
            raise ValueError(f'queue_size must be an integer >= 0, got {queue_size!r}')
        self.momentum_model = copy.deepcopy(nn.ModuleDict(
            {name: getattr(self, name) for name in MOMENTUM_MODULES if getattr(self, name, None) is not None}))
        self.momentum_model.requires_grad_(False)
        self.register_buffer('image_queue', F.normalize(torch.randn(queue_size, embed_dim), dim=1))
        self.register_buffer('text_queue', F.normalize(torch.randn(queue_size, embed_dim), dim=1))
        self.register_buffer('id_queue', torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer('queue_ptr', torch.zeros((), dtype=torch.long))

    def init_weights(self) -> None:
        """Parameters are initialised when built (timm's ViT init, BERT's init) and pretrained files are
        loaded there. mmengine's default would call every child's own ``init_weights`` again (timm's and
        transformers' included) and overwrite loaded weights, so only an explicit ``init_cfg`` is applied."""
        if self.init_cfg:
            initialize(self, self.init_cfg)
        self._is_init = True

    # ----------------------------------------------------------------------------------- encoders
    def encode_text(self, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """Text encoder hidden states ``(B, L, D_text)``."""
        # a (B, 1, 1, L) mask is used as given; a 2D one makes transformers read ``mask.all()`` on the host
        mask = text_mask[:, None, None, :].bool()
        return self.text_encoder(input_ids=text_ids, attention_mask=mask).last_hidden_state

    def text_context(self, text_hidden: Tensor) -> Tensor | None:
        """What text-aware reducers see: the text [CLS] projected to vision width (``None`` if unused)."""
        return None if self.text_to_vision is None else self.text_to_vision(text_hidden[:, 0])

    def encode_image(self, images: Tensor, text_hidden: Tensor | None = None) -> VisionOutput:
        """Vision encoder output; text-aware when ``text_hidden`` is given, text-free otherwise."""
        ctx = None if text_hidden is None else self.text_context(text_hidden)
        return self.vision(images, ctx)

    def image_features(self, images: Tensor) -> Tensor:
        """L2-normalised, text-independent ITC image embeddings ``(B, E)`` (retrieval shortlist)."""
        return self._image_feat(self.vision(images, None).tokens)

    def text_features(self, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """L2-normalised ITC text embeddings ``(B, E)``."""
        return self._text_feat(self.encode_text(text_ids, text_mask))

    def fuse(self, text_hidden: Tensor, text_mask: Tensor, image_tokens: Tensor) -> Tensor:
        """Fusion encoder output ``(B, L, D_text)``; position 0 is the fused [CLS]."""
        return self.fusion(text_hidden, text_mask, self.vision_to_text(image_tokens))

    def encode_pair(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """Fused [CLS] ``(B, D_text)`` of the pairs (images[i], text[i]) along the text-aware path: the
        efficiency unit (vision + text + fusion encoders) that FLOP and speed tables measure."""
        return self._fused_pair(images, text_ids, text_mask)[0][:, 0]

    def encode_pair_tokens(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`encode_pair` plus where to look: the fused [CLS] ``(B, D_text)``, the text-aware visual tokens
        without [CLS] at text width ``(B, T, D_text)``, and each one's original-grid patch id ``(B, T)``
        (``-1``: a fused token). Grounding scores these tokens against the fused [CLS]."""
        fused, vision = self._fused_pair(images, text_ids, text_mask)
        return fused[:, 0], self.vision_to_text(vision.tokens[:, 1:]), vision.token_patch_ids

    def _fused_pair(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> tuple[Tensor, VisionOutput]:
        text_hidden = self.encode_text(text_ids, text_mask)
        vision = self.encode_image(images, text_hidden)
        return self.fuse(text_hidden, text_mask, vision.tokens), vision

    def itm_logits(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """ITM logits ``(B, 2)`` of the pairs (images[i], text[i]) (retrieval re-ranking)."""
        return self.itm_head(self.encode_pair(images, text_ids, text_mask))

    def gallery_cache(self, images: Tensor) -> dict[str, Tensor | None]:
        """What ITM re-ranking can reuse across the texts paired with one image: the vision prefix shared by
        every text (and, for reducers that ignore the text, the finished visual tokens)."""
        prefix, qkv = self.vision.forward_prefix(images)
        tokens = None if self.vision.text_aware else self.vision.forward_suffix(prefix, None, qkv).tokens
        return dict(prefix=prefix, qkv=qkv, tokens=tokens)

    def itm_logits_cached(self, cache: dict, image_idx: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """:meth:`itm_logits` of the pairs (gallery image ``image_idx[i]``, text ``i``) from :meth:`gallery_cache`."""
        text_hidden = self.encode_text(text_ids, text_mask)
        if cache['tokens'] is not None:
            tokens = cache['tokens'][image_idx]
        else:
            qkv = None if cache['qkv'] is None else cache['qkv'][image_idx]
            tokens = self.vision.forward_suffix(cache['prefix'][image_idx], self.text_context(text_hidden), qkv).tokens
        return self.itm_head(self.fuse(text_hidden, text_mask, tokens)[:, 0])

    @torch.no_grad()
    def generate(self, images: Tensor, max_length: int = 30) -> Tensor:
        """Greedy captions ``(B, <= max_length)`` from the text-free visual tokens, starting with [CLS]."""
        if self.decoder is None:
            raise RuntimeError("this model has no PrefixLM decoder ('lm' not in losses)")
        visual = self.vision_to_text(self.vision(images, None).tokens)
        return self.decoder.generate(visual, self.token_ids['cls'], self.token_ids['sep'], max_length)

    # ----------------------------------------------------------------------------------- forward
    def forward(
        self,
        images: Tensor,
        text_ids: Tensor,
        text_mask: Tensor,
        patch_labels: Tensor | None = None,
        pta_mask: Tensor | None = None,
        image_ids: Tensor | None = None,
        data_samples=None,
        mode: str = 'tensor',
        **unused,
    ):
        """mmengine entry point. ``mode='loss'``: dict of weighted losses ``loss_<name>`` for the enabled
        objectives; ``'tensor'``: dict of embeddings, fused [CLS], kept indices and scores;
        ``'predict'``: one dict per pair with ``itm_score`` (P(match)) and ``itc_score`` (cosine).

        Batch: ``images`` (B,3,H,W) float; ``text_ids``/``text_mask`` (B,L) long; optional ``patch_labels``
        (B, N_patches) 0/1; ``pta_mask`` (B,) bool; ``image_ids`` (B,) long marks captions of the same image
        as positives of each other. Other batch keys are ignored.
        """
        if mode == 'loss':
            return self.loss(images, text_ids, text_mask, patch_labels, pta_mask, image_ids)
        if mode == 'tensor':
            return self.extract(images, text_ids, text_mask)
        if mode == 'predict':
            return self.predict(images, text_ids, text_mask, patch_labels, image_ids)
        raise ValueError(f'unknown mode {mode!r}')

    def extract(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> dict:
        text_hidden = self.encode_text(text_ids, text_mask)
        prefix, qkv = self.vision.forward_prefix(images)
        free, aware = self._both_paths(prefix, qkv, text_hidden)
        fused = self.fuse(text_hidden, text_mask, aware.tokens)
        return dict(
            image_embed=self._image_feat(free.tokens),
            text_embed=self._text_feat(text_hidden),
            image_tokens=aware.tokens,
            text_hidden=text_hidden,
            fused_cls=fused[:, 0],
            itm_logits=self.itm_head(fused[:, 0]),
            kept=aware.kept,
            kept_patch_ids=aware.kept_patch_ids,
            scores=aware.scores,
            patch_scores=aware.scores[0] if aware.scores else None,
            token_counts=aware.token_counts,
        )

    def predict(
        self,
        images: Tensor,
        text_ids: Tensor,
        text_mask: Tensor,
        patch_labels: Tensor | None = None,
        image_ids: Tensor | None = None,
    ) -> list[dict]:
        out = self.extract(images, text_ids, text_mask)
        itm = out['itm_logits'].softmax(dim=-1)[:, 1]
        itc = (out['image_embed'] * out['text_embed']).sum(dim=-1)
        results = [
            dict(itm_score=m, itc_score=c, image_embed=i, text_embed=t)
            for m, c, i, t in zip(itm, itc, out['image_embed'], out['text_embed'], strict=True)
        ]
        return self._validation_extras(results, images, text_ids, text_mask, out['patch_scores'], patch_labels,
                                       image_ids)

    def _validation_extras(
        self,
        results: list[dict],
        images: Tensor,
        text_ids: Tensor,
        text_mask: Tensor,
        patch_scores: Tensor | None,
        patch_labels: Tensor | None,
        image_ids: Tensor | None,
    ) -> list[dict]:
        """What validation reads besides the pair scores: with ``image_ids``, the ITM score of each image
        with a caption of another image of the batch (``itm_neg_score``; captions are paired half a batch
        apart, and pairs that still share an image are left out); with ``patch_labels``, the first
        reduction point's patch scores beside the labels."""
        if image_ids is not None and len(results) > 1:
            perm = torch.roll(torch.arange(len(results), device=images.device), len(results) // 2)
            neg = self.itm_logits(images, text_ids[perm], text_mask[perm]).softmax(dim=-1)[:, 1]
            for r, score, valid in zip(results, neg, image_ids[perm] != image_ids, strict=True):
                if valid:
                    r['itm_neg_score'] = score
        if patch_labels is not None and patch_scores is not None:
            for r, scores, labels in zip(results, patch_scores, patch_labels, strict=True):
                r['patch_scores'], r['patch_labels'] = scores, labels
        return results

    def loss(
        self,
        images: Tensor,
        text_ids: Tensor,
        text_mask: Tensor,
        patch_labels: Tensor | None = None,
        pta_mask: Tensor | None = None,
        image_ids: Tensor | None = None,
    ) -> dict[str, Tensor]:
        text_hidden = self.encode_text(text_ids, text_mask)
        masked = self._masked_caption(text_ids, text_mask) if 'mlm' in self.losses else None
        query = masked[0] if masked is not None and self.mlm_query == 'masked' else text_hidden
        prefix, qkv = self.vision.forward_prefix(images)
        need_free = bool({'itc', 'itm', 'lm'} & set(self.losses))
        free, aware = self._both_paths(prefix, qkv, query, need_free)
        positives = positive_pairs(images.shape[0], image_ids, images.device)
        teacher = None
        if self.momentum_model is not None:
            teacher = self._momentum_outputs(images, text_ids, text_mask, None if masked is None else masked[2])
        alpha = self.distill_alpha * self.distill_ramp
        losses: dict[str, Tensor] = {}

        sim = None
        if 'itc' in self.losses or 'itm' in self.losses:
            with torch.set_grad_enabled(torch.is_grad_enabled() and 'itc' in self.losses):
                temp = self.temp.clamp(0.001, 0.5)
                image_feat, text_feat = self._image_feat(free.tokens), self._text_feat(text_hidden)
                if teacher is not None:
                    loss, sim = itc_loss_momentum(image_feat, text_feat, teacher['image_feat'], teacher['text_feat'],
                                                  self.image_queue, self.text_queue, self.id_queue, image_ids, temp,
                                                  alpha)
                elif world_size() > 1 and self.training:
                    loss, sim = itc_loss_gathered(image_feat, text_feat, temp, image_ids)
                else:
                    loss, sim = itc_loss(image_feat, text_feat, temp, positives)
            if 'itc' in self.losses:
                losses['loss_itc'] = loss
            if teacher is not None and self.training:
                self._enqueue(teacher['image_feat'], teacher['text_feat'], image_ids)
        if 'itm' in self.losses:
            losses['loss_itm'] = self._itm(prefix, qkv, aware.tokens, text_hidden, text_mask, sim, positives)
        if masked is not None:
            masked_hidden, labels, _ = masked
            tokens = aware.tokens
            if self.vision.text_aware and self.mlm_query == 'separate':
                tokens = self.vision.forward_suffix(prefix, self.text_context(masked_hidden), qkv).tokens
            logits = self.mlm_head(self.fuse(masked_hidden, text_mask, tokens))
            losses['loss_mlm'] = token_cross_entropy(logits, labels)
            if teacher is not None:
                distill = soft_token_cross_entropy(logits, teacher['mlm_logits'].softmax(dim=-1), labels)
                losses['loss_mlm'] = (1 - alpha) * losses['loss_mlm'] + alpha * distill
        if 'lm' in self.losses and self.decoder is not None:
            losses['loss_lm'] = self.decoder.loss(text_ids, text_mask, self.vision_to_text(free.tokens),
                                                  self._lm_prefix_len(text_mask))
        if 'pta' in self.losses:
            losses['loss_pta'] = self._pta(aware, patch_labels, pta_mask)
        return {name: self.loss_weights[name[5:]] * value for name, value in losses.items()}

    # ----------------------------------------------------------------------------------- pieces
    def _image_feat(self, image_tokens: Tensor) -> Tensor:
        return F.normalize(self.vision_proj(image_tokens[:, 0]), dim=-1)

    def _text_feat(self, text_hidden: Tensor) -> Tensor:
        return F.normalize(self.text_proj(text_hidden[:, 0]), dim=-1)

    def _both_paths(
        self, prefix: Tensor, qkv: Tensor | None, text_hidden: Tensor, need_free: bool = True
    ) -> tuple[VisionOutput | None, VisionOutput]:
        """(text-free, text-aware) vision outputs; one pass when no reducer reads the text."""
        if not self.vision.text_aware:
            free = self.vision.forward_suffix(prefix, None, qkv)
            return free, free
        free = self.vision.forward_suffix(prefix, None, qkv) if need_free else None
        return free, self.vision.forward_suffix(prefix, self.text_context(text_hidden), qkv)

    def _itm(
        self,
        prefix: Tensor,
        qkv: Tensor | None,
        image_tokens: Tensor,
        text_hidden: Tensor,
        text_mask: Tensor,
        sim: Tensor,
        positives: Tensor,
    ) -> Tensor:
        """ITM on B matched pairs and 2B hard negatives mined from ITC similarity (ALBEF); the negatives'
        visual tokens per ``itm_negatives``."""
        batch = text_hidden.shape[0]
        neg_text = sample_hard_negatives(sim, positives, self.itm_hardness)
        neg_image = sample_hard_negatives(sim.t(), positives.t(), self.itm_hardness)
        image_idx = torch.cat([torch.arange(batch, device=sim.device), neg_image])
        text_idx = torch.cat([neg_text, torch.arange(batch, device=sim.device)])
        neg_hidden, neg_mask = text_hidden[text_idx], text_mask[text_idx]
        if self.vision.text_aware and self.itm_negatives == 'rerun':
            neg_qkv = None if qkv is None else qkv[image_idx]
            neg_tokens = self.vision.forward_suffix(prefix[image_idx], self.text_context(neg_hidden), neg_qkv).tokens
        else:
            neg_tokens = image_tokens[image_idx]
        pos_cls = self.fuse(text_hidden, text_mask, image_tokens)[:, 0]
        neg_cls = self.fuse(neg_hidden, neg_mask, neg_tokens)[:, 0]
        return itm_loss(self.itm_head(torch.cat([pos_cls, neg_cls])), batch)

    def _masked_caption(self, text_ids: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The MLM-masked caption's text encoder states, the MLM labels and the masked token ids."""
        ids = self.token_ids
        inputs, labels = mask_tokens(
            text_ids, text_mask, self.vocab_size, ids['mask'], (ids['pad'], ids['cls'], ids['sep']), self.mlm_prob
        )
        return self.encode_text(inputs, text_mask), labels, inputs

    # ----------------------------------------------------------------------------------- momentum distillation
    @torch.no_grad()
    def _momentum_update(self) -> None:
        """``p_m <- m * p_m + (1 - m) * p`` over every parameter of the momentum model once (the MLM head's tied
        word embeddings are one parameter, not two)."""
        pairs: dict[int, tuple[Tensor, Tensor]] = {}
        for name, module_m in self.momentum_model.items():
            for p, p_m in zip(getattr(self, name).parameters(), module_m.parameters(), strict=True):
                pairs.setdefault(id(p_m), (p_m, p))
        targets = [p_m for p_m, _ in pairs.values()]
        torch._foreach_lerp_(targets, [p.detach().to(p_m.dtype) for p_m, p in pairs.values()], 1.0 - self.momentum)

    @torch.no_grad()
    def _momentum_outputs(self, images: Tensor, text_ids: Tensor, text_mask: Tensor,
                          masked_ids: Tensor | None) -> dict[str, Tensor]:
        """The momentum model's ITC features (text-free image path, caption [CLS]) and, with ``masked_ids``, its
        MLM logits for the masked caption along the text-aware path the model's MLM takes. Updates the momentum
        model first when training, as ALBEF does."""
        if self.training:
            self._momentum_update()
        m = self.momentum_model

        def encode(ids: Tensor) -> Tensor:
            return m['text_encoder'](input_ids=ids, attention_mask=text_mask[:, None, None, :].bool()).last_hidden_state

        text_hidden = encode(text_ids)
        prefix, qkv = m['vision'].forward_prefix(images)
        free = m['vision'].forward_suffix(prefix, None, qkv)
        out = dict(image_feat=F.normalize(m['vision_proj'](free.tokens[:, 0]), dim=-1),
                   text_feat=F.normalize(m['text_proj'](text_hidden[:, 0]), dim=-1))
        if masked_ids is not None and 'mlm_head' in m:
            masked_hidden = encode(masked_ids)
            tokens = free.tokens
            if m['vision'].text_aware:
                query = text_hidden if self.mlm_query == 'unmasked' else masked_hidden
                tokens = m['vision'].forward_suffix(prefix, m['text_to_vision'](query[:, 0]), qkv).tokens
            out['mlm_logits'] = m['mlm_head'](m['fusion'](masked_hidden, text_mask, m['vision_to_text'](tokens)))
        return out

    @torch.no_grad()
    def _enqueue(self, image_feat: Tensor, text_feat: Tensor, image_ids: Tensor | None) -> None:
        """Write the batch's momentum features (every process's, in a distributed run) over the oldest in the
        queue; a batch without ``image_ids`` queues ids that match nothing."""
        size = self.image_queue.shape[0]
        if size == 0:
            return
        ids = image_ids if image_ids is not None else torch.full(image_feat.shape[:1], -1, device=image_feat.device)
        if world_size() > 1:
            image_feat, text_feat, ids = (_all_gather(t) for t in (image_feat, text_feat, ids))
        n = min(image_feat.shape[0], size)
        slots = (self.queue_ptr + torch.arange(n, device=self.queue_ptr.device)) % size
        self.image_queue[slots] = image_feat[-n:].to(self.image_queue.dtype)
        self.text_queue[slots] = text_feat[-n:].to(self.text_queue.dtype)
        self.id_queue[slots] = ids[-n:].to(self.id_queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def _lm_prefix_len(self, text_mask: Tensor) -> Tensor | None:
        """PrefixLM's prefix per caption: 0 to all but one of its words ([CLS] and [SEP] excluded)."""
        if self.lm_prefix == 'none':
            return None
        words = (text_mask.sum(dim=1) - 2).clamp_min(1)
        return (torch.rand(words.shape, device=words.device) * words).long()

    def _pta(self, aware: VisionOutput, patch_labels: Tensor | None, pta_mask: Tensor | None) -> Tensor:
        """PTA at every reduction point: each scored token takes the label of its original patch; a fused
        token (id -1) has none. Zero (with gradient) when the batch has no labelled sample."""
        if patch_labels is None:
            return sum(s.sum() * 0.0 for s in aware.scores)
        if patch_labels.shape[1] != self.vision.num_patches:
            raise ValueError(
                f'patch_labels has {patch_labels.shape[1]} patches, the model grid {self.vision.num_patches}'
            )
        terms = []
        for scores, ids in zip(aware.scores, aware.scored_patch_ids, strict=True):
            labels = patch_labels.gather(1, ids.clamp_min(0))
            terms.append(pta_loss(scores, labels, pta_mask, valid=ids >= 0))
        return torch.stack(terms).mean()


def _all_gather(tensor: Tensor) -> Tensor:
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)
