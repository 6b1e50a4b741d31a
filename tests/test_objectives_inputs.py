"""What each pre-training objective is allowed to see: MLM's patches are chosen from the masked caption, not
the words it must predict; PrefixLM predicts only the words after its prefix, from the prefix and the image."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_models import CLS, MASK, make, make_batch

import copa.vlp
from copa.objectives import IGNORE_INDEX
from copa.vision import VisionTransformer


def _always_mask(text_ids, text_mask, vocab_size, mask_token_id, special_ids, prob=0.15):
    """Every third word becomes [MASK] (no random or kept words), so two captions that differ only there give
    the same masked input."""
    picked = torch.zeros_like(text_ids, dtype=torch.bool)
    picked[:, 2::3] = True
    picked &= text_mask.bool()
    for special in special_ids:
        picked &= text_ids != special
    return text_ids.masked_fill(picked, mask_token_id), text_ids.masked_fill(~picked, IGNORE_INDEX)


def _mlm_view(model, batch, monkeypatch):
    """The text-aware visual tokens the MLM loss fused with, and the masked input it fused them with."""
    seen = {}
    fuse = model.fuse

    def recording(text_hidden, text_mask, image_tokens):
        out = fuse(text_hidden, text_mask, image_tokens)
        seen['mlm'] = image_tokens  # MLM's fusion is the last one of the step
        return out

    monkeypatch.setattr(copa.vlp, 'mask_tokens', _always_mask)
    monkeypatch.setattr(model, 'fuse', recording)
    with torch.no_grad():
        model(**batch, mode='loss')
    return seen['mlm']


@pytest.mark.parametrize('mode', ['masked', 'separate'])
def test_mlm_patches_are_chosen_from_the_masked_caption(mode, monkeypatch):
    model = make('copa', mlm_query=mode, losses=('itc', 'itm', 'mlm')).eval()
    batch = make_batch()
    tokens = _mlm_view(model, batch, monkeypatch)

    masked, _ = _always_mask(batch['text_ids'], batch['text_mask'], 0, MASK, (0, CLS, 2))
    with torch.no_grad():
        hidden = model.encode_text(masked, batch['text_mask'])
        expected = model.vision(batch['images'], model.text_context(hidden)).tokens
    torch.testing.assert_close(tokens, expected)

    # the masked words themselves changed: MLM sees the same patches
    other = dict(batch, text_ids=batch['text_ids'].clone())
    words = batch['text_ids'][:, 2::3]
    other['text_ids'][:, 2::3] = torch.where(masked[:, 2::3] == MASK, 10 + (words - 3) % 1990, words)
    assert not torch.equal(other['text_ids'], batch['text_ids'])
    torch.testing.assert_close(_mlm_view(model, other, monkeypatch), tokens)


def test_unmasked_query_lets_the_masked_words_choose_the_patches(monkeypatch):
    """The recipe before (kept as ``mlm_query='unmasked'``): what MLM sees depends on the words it predicts."""
    model = make('copa', mlm_query='unmasked', losses=('itc', 'itm', 'mlm')).eval()
    batch = make_batch()
    tokens = _mlm_view(model, batch, monkeypatch)
    with torch.no_grad():
        hidden = model.encode_text(batch['text_ids'], batch['text_mask'])
        expected = model.vision(batch['images'], model.text_context(hidden)).tokens
        masked, _ = _always_mask(batch['text_ids'], batch['text_mask'], 0, MASK, (0, CLS, 2))
        from_masked = model.vision(batch['images'], model.text_context(model.encode_text(masked, batch['text_mask'])))
    torch.testing.assert_close(tokens, expected)
    assert not torch.allclose(tokens, from_masked.tokens)


def test_separate_mlm_query_costs_one_more_pruned_suffix(monkeypatch):
    counts, suffix = {}, VisionTransformer.forward_suffix
    for mode in ('masked', 'separate'):
        calls = []

        model = make('copa', mlm_query=mode)

        def recording(self, tokens, text=None, qkv=None, _calls=calls, _vit=model.vision):
            if self is _vit:  # the model's own passes, not its momentum model's
                _calls.append(text is None)
            return suffix(self, tokens, text, qkv)

        monkeypatch.setattr(VisionTransformer, 'forward_suffix', recording)
        model.train()(**make_batch(), mode='loss')
        counts[mode] = (calls.count(True), calls.count(False))
    assert counts == {'masked': (1, 1), 'separate': (1, 2)}


def _prefix_lm_reference(decoder, ids, mask, visual, prefix_len):
    """Position by position: the logits that predict token t come from a causal pass over the caption whose
    first ``prefix_len + 1`` tokens may see each other; mean CE over the tokens after the prefix."""
    losses = []
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        p = int(prefix_len[b])
        allowed = torch.ones(n, n).tril().bool()
        allowed[:, : p + 1] = True
        hidden = decoder.model(input_ids=ids[b:b + 1, :n], attention_mask=allowed[None, None],
                               encoder_hidden_states=visual[b:b + 1], use_cache=False).logits[0]
        for t in range(p + 1, n):
            losses.append(F.cross_entropy(hidden[t - 1:t], ids[b, t:t + 1], reduction='sum'))
    return torch.stack(losses).sum() / len(losses)


def test_prefix_lm_predicts_the_continuation_of_its_prefix():
    model = make('copa').eval()
    batch = make_batch()
    ids, mask = batch['text_ids'], batch['text_mask']
    visual = torch.randn(ids.shape[0], 5, model.text_config.hidden_size)
    prefix_len = torch.tensor([0, 3, 5, 1])
    with torch.no_grad():
        loss = model.decoder.loss(ids, mask, visual, prefix_len)
        reference = _prefix_lm_reference(model.decoder, ids, mask, visual, prefix_len)
        captioning = model.decoder.loss(ids, mask, visual)
        zero = model.decoder.loss(ids, mask, visual, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(zero, captioning)  # a prefix of no words is captioning


def test_prefix_lengths_leave_at_least_one_word_to_predict():
    model = make('copa')
    mask = torch.zeros(6, 12, dtype=torch.long)
    for b, n in enumerate([3, 4, 6, 9, 12, 12]):
        mask[b, :n] = 1
    torch.manual_seed(0)
    draws = torch.stack([model._lm_prefix_len(mask) for _ in range(400)])
    words = mask.sum(dim=1) - 2
    assert bool((draws >= 0).all()) and bool((draws <= words - 1).all())
    assert torch.equal(draws.max(dim=0).values, words - 1)  # every length 0 .. words - 1 is drawn
    assert make('copa', lm_prefix='none')._lm_prefix_len(mask) is None


def test_unknown_objective_inputs_are_refused():
    with pytest.raises(ValueError, match='mlm_query'):
        make('copa', mlm_query='leaky')
    with pytest.raises(ValueError, match='lm_prefix'):
        make('copa', lm_prefix='half')
