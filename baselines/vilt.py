"""ViLT-style single-stream baseline over the skeleton's parts.

Text embeddings (BERT) and image patch tokens (the skeleton's ViT embedding) are concatenated, tagged
with a modality embedding, and run together through the skeleton's own ViT blocks with a padding mask.
Objectives are ITM (random negatives: ViLT has no ITC to mine hard ones) and MLM, with the skeleton's
heads and loss functions. There is no text-free image embedding, so retrieval scores every pair with ITM.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch import Tensor
from transformers.models.bert.modeling_bert import BertEmbeddings

from copa.objectives import itm_loss, mask_tokens, token_cross_entropy
from copa.registry import MODELS
from copa.text import MLMHead, additive_mask, bert_config
from copa.vision import VisionTransformer, load_timm_checkpoint
from copa.vlp import VLPModel


@MODELS.register_module()
class SingleStreamVLP(VLPModel):
    """Single-stream transformer: ``[text tokens; image CLS; patches]`` through the ViT blocks.

    Args:
        vision: keyword arguments of :class:`~copa.vision.VisionTransformer`; its blocks are the joint
            transformer (no reducer).
        vocab_size, pad/cls/sep/mask_token_id, max_text_len: the tokenizer's vocabulary and length.
        losses: subset of ``('itm', 'mlm')``.
    """

    def __init__(
        self,
        vision: dict,
        vocab_size: int = 30522,
        pad_token_id: int = 0,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
        mask_token_id: int = 103,
        max_text_len: int = 512,
        losses: tuple[str, ...] = ('itm', 'mlm'),
        loss_weights: dict | None = None,
        mlm_prob: float = 0.15,
        dropout: float = 0.1,
        vision_pretrained: str | None = None,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        BaseModel.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if set(losses) - {'itm', 'mlm'}:
            raise ValueError("the single-stream model supports only 'itm' and 'mlm'")
        if vision.get('reducer') is not None:
            raise ValueError('the single-stream model has no patch reducer')
        self.losses = tuple(losses)
        self.loss_weights = {'itm': 1.0, 'mlm': 1.0} | dict(loss_weights or {})
        self.mlm_prob = mlm_prob
        self.vision = VisionTransformer(**vision)
        if vision_pretrained is not None:
            load_timm_checkpoint(self.vision, vision_pretrained)
        dim = self.vision.embed_dim
        self.text_config = bert_config(
            vocab_size=vocab_size,
            hidden_size=dim,
            num_layers=0,
            num_heads=self.vision.blocks[0].attn.num_heads,
            max_position_embeddings=max_text_len,
            pad_token_id=pad_token_id,
            dropout=dropout,
        )
        self.vocab_size = vocab_size
        self.token_ids = dict(pad=pad_token_id, cls=cls_token_id, sep=sep_token_id, mask=mask_token_id)
        self.text_embeddings = BertEmbeddings(self.text_config)
        self.modality = nn.Embedding(2, dim)
        self.itm_head = nn.Linear(dim, 2)
        self.mlm_head = MLMHead(self.text_config, self.text_embeddings.word_embeddings)
        for emb in (self.text_embeddings.word_embeddings, self.text_embeddings.position_embeddings,
                    self.text_embeddings.token_type_embeddings, self.modality):
            nn.init.normal_(emb.weight, std=0.02)
        for linear in (self.itm_head,):
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def joint(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """Joint hidden states ``(B, L + 1 + N, D)``: text first (position 0 is the text [CLS])."""
        text = self.text_embeddings(input_ids=text_ids)
        text = text + self.modality.weight[0]
        image = self.vision.embed(images) + self.modality.weight[1]
        x = torch.cat([text, image], dim=1)
        image_mask = text_mask.new_ones(image.shape[:2])
        mask = additive_mask(torch.cat([text_mask, image_mask], dim=1), x.dtype)
        for block in self.vision.blocks:
            x = block(x, attn_mask=mask)
        return self.vision.norm(x)

    def encode_pair(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        return self.joint(images, text_ids, text_mask)[:, 0]

    def encode_pair_tokens(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hidden = self.joint(images, text_ids, text_mask)
        patches = hidden[:, text_ids.shape[1] + 1:]
        patch_ids = torch.arange(patches.shape[1], device=patches.device).expand(patches.shape[0], -1)
        return hidden[:, 0], patches, patch_ids

    def itm_logits(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        return self.itm_head(self.encode_pair(images, text_ids, text_mask))

    def image_features(self, images: Tensor) -> Tensor:
        raise NotImplementedError('single-stream: no text-independent image embedding; rank pairs by ITM')

    def text_features(self, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        raise NotImplementedError('single-stream: no image-independent text embedding; rank pairs by ITM')

    def generate(self, images: Tensor, max_length: int = 30) -> Tensor:
        raise NotImplementedError('single-stream: no PrefixLM decoder')

    def extract(self, images: Tensor, text_ids: Tensor, text_mask: Tensor) -> dict:
        hidden = self.joint(images, text_ids, text_mask)
        return dict(
            image_embed=None,
            text_embed=None,
            image_tokens=hidden[:, text_ids.shape[1]:],
            fused_cls=hidden[:, 0],
            itm_logits=self.itm_head(hidden[:, 0]),
            kept=[],
            kept_patch_ids=[],
            scores=[],
            patch_scores=None,
            token_counts=[],
        )

    def predict(
        self,
        images: Tensor,
        text_ids: Tensor,
        text_mask: Tensor,
        patch_labels: Tensor | None = None,
        image_ids: Tensor | None = None,
    ) -> list[dict]:
        itm = self.itm_logits(images, text_ids, text_mask).softmax(dim=-1)[:, 1]
        results = [dict(itm_score=m) for m in itm]
        return self._validation_extras(results, images, text_ids, text_mask, None, patch_labels, image_ids)

    def loss(
        self,
        images: Tensor,
        text_ids: Tensor,
        text_mask: Tensor,
        patch_labels: Tensor | None = None,
        pta_mask: Tensor | None = None,
        image_ids: Tensor | None = None,
    ) -> dict[str, Tensor]:
        losses = {}
        batch = images.shape[0]
        if 'itm' in self.losses:
            shift = torch.randint(1, max(batch, 2), (batch,), device=images.device) if batch > 1 else 0
            neg_image = (torch.arange(batch, device=images.device) + shift) % batch
            pair_images = torch.cat([images, images[neg_image]])
            pair_ids, pair_mask = text_ids.repeat(2, 1), text_mask.repeat(2, 1)
            logits = self.itm_logits(pair_images, pair_ids, pair_mask)
            losses['loss_itm'] = self.loss_weights['itm'] * itm_loss(logits, batch)
        if 'mlm' in self.losses:
            ids = self.token_ids
            inputs, labels = mask_tokens(
                text_ids, text_mask, self.vocab_size, ids['mask'], (ids['pad'], ids['cls'], ids['sep']),
                self.mlm_prob,
            )
            hidden = self.joint(images, inputs, text_mask)[:, : text_ids.shape[1]]
            losses['loss_mlm'] = self.loss_weights['mlm'] * token_cross_entropy(self.mlm_head(hidden), labels)
        return losses
