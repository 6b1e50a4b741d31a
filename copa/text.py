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

from .objectives import token_cross_entropy


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
    """BERT decoder (``BertLMHeadModel``) that cross-attends to the visual tokens.

    PrefixLM (SimVLM's objective, which COPA pre-trains with): the caption is split after a random number of
    words; the prefix (with the leading [CLS]) is read bidirectionally, and the rest is predicted left to right
    from the prefix, the visual tokens and the tokens before it. A prefix of length 0 is captioning, which is
    how the decoder is used at test time (no text is given), so it is fed the *text-free* visual tokens (see
    ``VLPModel``).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.model = BertLMHeadModel(
            derived_config(config, config.num_hidden_layers, is_decoder=True, add_cross_attention=True)
        )

    def forward(self, text_ids: Tensor, text_mask: Tensor, visual: Tensor, prefix_len: Tensor | None = None) -> Tensor:
        """Next-token logits ``(B, L, V)``. ``prefix_len`` ``(B,)``: words after [CLS] that every position may
        attend to (the prefix); ``None``: none, a causal decoder. The mask is built here, on the device: given
        a 2D mask, transformers reads it on the host (``mask.all()``) to decide whether it can use ``is_causal``."""
        length = text_ids.shape[1]
        pos = torch.arange(length, device=text_ids.device)
        allowed = (pos[None, :] <= pos[:, None])[None]
        if prefix_len is not None:
            allowed = allowed | (pos[None, None, :] <= prefix_len[:, None, None])
        mask = allowed[:, None] & text_mask[:, None, None, :].bool()
        return self.model(input_ids=text_ids, attention_mask=mask, encoder_hidden_states=visual, use_cache=False).logits

    def loss(self, text_ids: Tensor, text_mask: Tensor, visual: Tensor, prefix_len: Tensor | None = None) -> Tensor:
        """Cross-entropy of every token after the prefix (all after [CLS] when ``prefix_len`` is ``None``)."""
        logits = self(text_ids, text_mask, visual, prefix_len)[:, :-1]
        labels = text_ids[:, 1:].masked_fill(text_mask[:, 1:] == 0, -100)
        if prefix_len is not None:
            target = torch.arange(1, text_ids.shape[1], device=text_ids.device)
            labels = labels.masked_fill(target[None, :] <= prefix_len[:, None], -100)
        return token_cross_entropy(logits, labels)

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

    @torch.no_grad()
    def beam_search(
        self,
        visual: Tensor,
        bos: int,
        eos: int,
        num_beams: int,
        max_length: int = 30,
        length_penalty: float = 1.0,
    ) -> tuple[Tensor, Tensor]:
        """Batched beam search; returns ``(ids, log_probs)``: the best hypothesis per image ``(B, <= max_length)``
        in :meth:`generate`'s format (BOS first, padded after EOS with EOS) and its total log-probability.

        Hypotheses are ranked by total log-probability / (generated tokens incl. EOS) ** ``length_penalty``
        (0: raw sums, which favour short captions). A hypothesis that emits EOS among a beam's top
        ``num_beams`` candidates leaves the beam but is kept (the best one per image), so a later, worse beam
        never pushes it out; the beam is refilled from the best ``num_beams`` non-EOS candidates of ``2 *
        num_beams``. An image is done when its best finished hypothesis beats every live beam scored at the
        current length (Hugging Face's ``early_stopping=False`` heuristic); at ``max_length`` live beams
        compete as they are. With ``num_beams=1`` this is exactly greedy decoding.
        """
        if num_beams < 1:
            raise ValueError(f'num_beams must be at least 1, got {num_beams}')
        batch, k, device = visual.shape[0], num_beams, visual.device
        if max_length < 2:
            return torch.full((batch, 1), bos, dtype=torch.long, device=device), torch.zeros(batch, device=device)
        visual = visual.repeat_interleave(k, dim=0)
        ids = torch.full((batch * k, 1), bos, dtype=torch.long, device=device)
        # only the first beam is live at the start, so the first step does not pick one token k times
        beam_scores = torch.full((batch, k), float('-inf'), device=device)
        beam_scores[:, 0] = 0.0
        best_seq = torch.full((batch, max_length), eos, dtype=torch.long, device=device)
        best_len = torch.full((batch,), max_length, dtype=torch.long, device=device)
        best_norm = torch.full((batch,), float('-inf'), device=device)
        best_raw = torch.full((batch,), float('-inf'), device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        rows = torch.arange(batch, device=device)
        for step in range(1, max_length):  # ``step`` tokens generated after this one
            logits = self(ids, torch.ones_like(ids), visual)[:, -1].float()
            log_probs = logits.log_softmax(dim=-1)
            vocab = log_probs.shape[-1]
            cand = (beam_scores.view(-1, 1) + log_probs).view(batch, k * vocab)
            values, flat = cand.topk(min(2 * k, k * vocab), dim=1)
            source, token = flat // vocab, flat % vocab
            norm = step ** length_penalty
            is_eos = token == eos
            # finished: EOS candidates ranked within the top k (a beam's own competition), best one per image
            rank_ok = torch.arange(values.shape[1], device=device) < k
            eos_values = values.masked_fill(~(is_eos & rank_ok), float('-inf'))
            eos_best, eos_at = eos_values.max(dim=1)
            better = (eos_best / norm > best_norm) & ~done & torch.isfinite(eos_best)
            if bool(better.any()):
                src = rows * k + source[rows, eos_at]
                seq = torch.cat([ids[src], torch.full((batch, 1), eos, dtype=torch.long, device=device)], dim=1)
                best_seq[better, : step + 1] = seq[better]
                best_len[better] = step + 1
                best_norm[better] = eos_best[better] / norm
                best_raw[better] = eos_best[better]
            # live: the best k non-EOS candidates (at most k of the 2k are EOS, one per beam)
            live_values, live_at = values.masked_fill(is_eos, float('-inf')).topk(k, dim=1)
            beam_scores = live_values
            src = (rows[:, None] * k + source.gather(1, live_at)).view(-1)
            ids = torch.cat([ids[src], token.gather(1, live_at).view(-1, 1)], dim=1)
            done |= best_norm >= beam_scores.max(dim=1).values / norm
            if bool(done.all()):
                break
        else:
            # max_length reached: the live beams (length max_length) compete with the finished ones
            norm = (max_length - 1) ** length_penalty
            live_best, live_at = beam_scores.max(dim=1)
            better = (live_best / norm > best_norm) & ~done
            best_seq[better] = ids.view(batch, k, -1)[rows, live_at][better]
            best_len[better] = max_length
            best_raw[better] = live_best[better]
        return best_seq[:, : int(best_len.max())], best_raw


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
