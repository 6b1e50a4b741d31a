"""Text side of the skeleton, from ``transformers`` BERT parts: text encoder, fusion encoder, PrefixLM decoder.

transformers 5.x ``BertLayer`` refuses cross-attention unless ``is_decoder=True`` (which makes the
self-attention causal), so the bidirectional fusion layer is composed from ``BertAttention``,
``BertIntermediate`` and ``BertOutput``. Its submodule names match ``BertLayer``'s, so BERT layers can be
loaded into fusion layers (ALBEF initialises fusion from BERT-base layers 6-11).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor
from transformers import BertConfig, BertLMHeadModel, BertModel
from transformers.models.bert.modeling_bert import (
    BertAttention,
    BertIntermediate,
    BertOutput,
    BertPredictionHeadTransform,
)


def bert_config(
    vocab_size: int = 30522,
    hidden_size: int = 768,
    num_layers: int = 6,
    num_heads: int = 12,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    pad_token_id: int = 0,
    dropout: float = 0.1,
    **extra,
) -> BertConfig:
    """A ``BertConfig`` with explicit sizes and SDPA attention (modules built outside ``from_pretrained``
    would otherwise fall back to eager attention with a warning)."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        attn_implementation='sdpa',
        **extra,
    )


def derived_config(config: BertConfig, num_layers: int, **changes) -> BertConfig:
    """Copy of ``config`` (same widths and vocabulary) with another depth, for fusion and decoder stacks."""
    values = config.to_dict()
    values.update(num_hidden_layers=num_layers, **changes)
    for key in ('architectures', 'model_type', 'transformers_version', '_name_or_path'):
        values.pop(key, None)
    values['attn_implementation'] = 'sdpa'
    return BertConfig(**values)


def build_text_encoder(config: BertConfig | None = None, pretrained: str | Path | None = None) -> BertModel:
    """BERT text encoder without pooler, from a config or from a local Hugging Face directory.

    ``pretrained`` is read with ``local_files_only=True``: nothing is ever downloaded.
    """
    if pretrained is not None:
        return BertModel.from_pretrained(
            str(pretrained), local_files_only=True, add_pooling_layer=False, attn_implementation='sdpa'
        )
    if config is None:
        raise ValueError('give a config or a pretrained directory')
    return BertModel(config, add_pooling_layer=False)


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``(B, L)`` 1/0 key mask to the ``(B, 1, 1, L)`` additive form BERT attention takes."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class FusionLayer(nn.Module):
    """Bidirectional self-attention over text, cross-attention to visual tokens, feed-forward (post-LN)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config, is_causal=False)
        self.crossattention = BertAttention(config, is_causal=False, is_cross_attention=True)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, visual: Tensor) -> Tensor:
        hidden, _ = self.attention(hidden, attention_mask=attention_mask)
        hidden, _ = self.crossattention(hidden, encoder_hidden_states=visual)
        return self.output(self.intermediate(hidden), hidden)


class FusionEncoder(nn.Module):
    """Stack of :class:`FusionLayer`; text hidden states attend to the visual tokens (ALBEF's multimodal encoder)."""

    def __init__(self, config: BertConfig, num_layers: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(FusionLayer(config) for _ in range(num_layers))
        self.apply(bert_init(config.initializer_range))

    def forward(self, text_hidden: Tensor, text_mask: Tensor, visual: Tensor) -> Tensor:
        mask = additive_mask(text_mask, text_hidden.dtype)
        hidden = text_hidden
        for layer in self.layer:
            hidden = layer(hidden, mask, visual)
        return hidden


class MLMHead(nn.Module):
    """BERT's MLM head (transform + vocabulary projection); the projection can be tied to word embeddings."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding | None = None) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.apply(bert_init(config.initializer_range))
        if word_embeddings is not None:
            self.decoder.weight = word_embeddings.weight

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden))


class PrefixLMDecoder(nn.Module):
    """Causal BERT decoder (``BertLMHeadModel``) that cross-attends to the visual tokens.

    PrefixLM here treats the image as the prefix: the visual tokens are the context, and the whole caption
    is predicted left to right, token ``t+1`` from tokens ``<= t`` (the leading [CLS] acts as BOS). This is
    the same setting as captioning, where no text is given, so the decoder is fed the *text-free* visual
    tokens (see ``VLPModel``).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.model = BertLMHeadModel(
            derived_config(config, config.num_hidden_layers, is_decoder=True, add_cross_attention=True)
        )

    def forward(self, text_ids: Tensor, text_mask: Tensor, visual: Tensor) -> Tensor:
        """Next-token logits ``(B, L, V)``."""
        return self.model(
            input_ids=text_ids, attention_mask=text_mask, encoder_hidden_states=visual, use_cache=False
        ).logits

    def loss(self, text_ids: Tensor, text_mask: Tensor, visual: Tensor) -> Tensor:
        logits = self(text_ids, text_mask, visual)[:, :-1]
        labels = text_ids[:, 1:].masked_fill(text_mask[:, 1:] == 0, -100)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    @torch.no_grad()
    def generate(self, visual: Tensor, bos_token_id: int, eos_token_id: int, max_length: int = 30) -> Tensor:
        """Greedy decoding; returns ``(B, <= max_length)`` ids starting with BOS, padded after EOS with EOS."""
        ids = torch.full((visual.shape[0], 1), bos_token_id, dtype=torch.long, device=visual.device)
        done = torch.zeros(visual.shape[0], dtype=torch.bool, device=visual.device)
        for _ in range(max_length - 1):
            logits = self(ids, torch.ones_like(ids), visual)[:, -1]
            nxt = logits.argmax(dim=-1).masked_fill(done, eos_token_id)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == eos_token_id
            if bool(done.all()):
                break
        return ids


def bert_init(std: float) -> Callable[[nn.Module], None]:
    """BERT's initialisation (normal(0, std) linears, unit LayerNorms), for modules built outside BERT."""

    def init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    return init
