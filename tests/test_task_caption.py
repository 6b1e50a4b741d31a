"""Captioning task unit: beam search against greedy and against hand-computed log-probabilities, detokenisation,
the fine-tuning loss, and fine-tune-then-test on the Runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from copa.text import PrefixLMDecoder, bert_config
from harness.errors import NotApplicable
from harness.metrics.caption import java_ptb_available
from harness.tasks.caption import CaptionModel, caption_collate, detokenize, join_wordpieces
from zoo import model_config

BOS, EOS = 2, 3
SMALL = dict(vision=dict(depth=2, img_size=32), text=dict(num_layers=1), fusion_layers=1, decoder_layers=1)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "sq", "##uare", ",", "and", "two"]


def _decoder(seed: int = 0, vocab: int = 40, eos_bias: float = 0.0) -> PrefixLMDecoder:
    torch.manual_seed(seed)
    dec = PrefixLMDecoder(bert_config(vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=2,
                                      intermediate_size=64, dropout=0.0))
    with torch.no_grad():
        dec.model.cls.predictions.bias[EOS] += eos_bias
    return dec.eval()


def _visual(batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 5, 32, generator=torch.Generator().manual_seed(seed))


def _sequence_log_prob(dec: PrefixLMDecoder, ids: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """Total log-probability of each row's tokens after BOS up to and including its first EOS."""
    with torch.no_grad():
        logp = dec(ids, torch.ones_like(ids), visual)[:, :-1].log_softmax(-1)
    tok = ids[:, 1:]
    step = logp.gather(-1, tok[..., None])[..., 0]
    after_eos = (tok == EOS).long().cumsum(1) - (tok == EOS).long() > 0  # tokens after the first EOS
    return step.masked_fill(after_eos, 0.0).sum(1)


@pytest.mark.parametrize("eos_bias", [0.0, 3.0])
def test_one_beam_is_greedy(eos_bias):
    dec, visual = _decoder(eos_bias=eos_bias), _visual()
    greedy = dec.generate(visual, BOS, EOS, max_length=10)
    beam, _ = dec.beam_search(visual, BOS, EOS, num_beams=1, max_length=10)
    assert torch.equal(beam, greedy)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_score_is_the_sequence_log_prob(length_penalty):
    dec, visual = _decoder(eos_bias=2.5), _visual()
    ids, score = dec.beam_search(visual, BOS, EOS, num_beams=3, max_length=10, length_penalty=length_penalty)
    assert ids.shape[0] == 4 and ids.shape[1] <= 10 and bool((ids[:, 0] == BOS).all())
    torch.testing.assert_close(score, _sequence_log_prob(dec, ids, visual), atol=1e-4, rtol=1e-4)


def test_beam_search_is_per_image():
    dec, visual = _decoder(eos_bias=2.5), _visual()
    ids, score = dec.beam_search(visual, BOS, EOS, num_beams=3, max_length=8)
    for i in range(visual.shape[0]):
        one, one_score = dec.beam_search(visual[i:i + 1], BOS, EOS, num_beams=3, max_length=8)
        torch.testing.assert_close(one_score, score[i:i + 1], atol=1e-5, rtol=1e-5)
        pad = torch.full((1, ids.shape[1] - one.shape[1]), EOS)
        assert torch.equal(torch.cat([one, pad], 1), ids[i:i + 1])


class _TableDecoder(PrefixLMDecoder):
    """Next-token distributions from a table keyed by the tokens after BOS (tokens: 0 PAD, 1 A, 2 BOS, 3 EOS)."""

    A = 1
    TABLE = {(): {A: 0.6, 4: 0.4}, (A,): {EOS: 0.4, A: 0.3, 4: 0.3}, (4,): {EOS: 1.0}}

    def __init__(self) -> None:
        torch.nn.Module.__init__(self)

    def forward(self, text_ids, text_mask, visual):
        logits = torch.full((*text_ids.shape, 5), -1e9)
        for b, row in enumerate(text_ids.tolist()):
            probs = self.TABLE.get(tuple(row[1:]), {EOS: 1.0})
            for tok, p in probs.items():
                logits[b, -1, tok] = float(torch.tensor(p).log())
        return logits


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_beats_myopic_greedy(length_penalty):
    """Greedy takes A (0.6) and ends with 0.6 * 0.4 = 0.24; beam search keeps the second token (0.4), whose
    caption ends surely: 0.4 in total."""
    dec, visual = _TableDecoder(), torch.zeros(1, 1, 1)
    assert dec.generate(visual, BOS, EOS, max_length=6).tolist() == [[BOS, 1, EOS]]
    ids, score = dec.beam_search(visual, BOS, EOS, num_beams=2, max_length=6, length_penalty=length_penalty)
    assert ids.tolist() == [[BOS, 4, EOS]]
    torch.testing.assert_close(score, torch.tensor([0.4]).log())
    ids, score = dec.beam_search(visual, BOS, EOS, num_beams=1, max_length=6, length_penalty=length_penalty)
    assert ids.tolist() == [[BOS, 1, EOS]]
    torch.testing.assert_close(score, torch.tensor([0.24]).log())


def test_beam_search_at_max_length_returns_live_beams():
    dec, visual = _decoder(eos_bias=-20.0), _visual(2)
    ids, score = dec.beam_search(visual, BOS, EOS, num_beams=3, max_length=5)
    assert ids.shape == (2, 5) and not bool((ids[:, 1:] == EOS).any())
    torch.testing.assert_close(score, _sequence_log_prob(dec, ids, visual), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok")
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return path


def test_wordpieces_are_joined():
    assert join_wordpieces(["a", "red", "sq", "##uare", ",", "and", "two", "##s"]) == "a red square, and twos"
    assert join_wordpieces(["##uare", "a"]) == "uare a"


def test_detokenize_skips_special_tokens_and_stops_at_eos(tokenizer_dir):
    from harness.data.collate import cached_tokenizer

    tok = cached_tokenizer(str(tokenizer_dir))
    ids = tok("a red square, and two")["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[3:5] == ["sq", "##uare"]
    assert detokenize(ids + [EOS, EOS], tok, EOS) == "a red square, and two"
    assert detokenize([BOS, 5, EOS, 6, EOS], tok, EOS) == "a"


def _model(tokenizer_dir: Path, **kwargs) -> CaptionModel:
    tokens = dict(vocab_size=len(VOCAB), pad_token_id=0, cls_token_id=BOS, sep_token_id=EOS, mask_token_id=4)
    torch.manual_seed(0)
    return CaptionModel(model_config("albef", "tiny", **tokens, **SMALL), tokenizer=str(tokenizer_dir), **kwargs)


def test_caption_loss_falls_on_a_fixed_batch(tokenizer_dir):
    model = _model(tokenizer_dir)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=gen)
    text_ids = torch.tensor([[BOS, 5, 6, 7, 8, EOS], [BOS, 11, 7, 8, EOS, 0], [BOS, 5, 7, 8, 9, EOS],
                             [BOS, 10, 5, 6, EOS, 0]])
    text_mask = (text_ids != 0).long()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model(images, text_ids, text_mask, mode="loss")["loss_lm"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("num_beams", [1, 2])
def test_predict_rows(tokenizer_dir, num_beams):
    model = _model(tokenizer_dir, num_beams=num_beams, max_length=6).eval()
    samples = [{"img": torch.randn(3, 32, 32), "image_id": 7 + i, "texts": ["a red square", "two"]} for i in range(2)]
    batch = caption_collate(samples)
    assert batch["images"].shape == (2, 3, 32, 32) and batch["image_ids"].tolist() == [7, 8]
    rows = model(**batch, mode="predict")
    assert [r["image_id"] for r in rows] == [7, 8]
    assert all(isinstance(r["caption"], str) and r["references"] == ["a red square", "two"] for r in rows)


def test_models_without_a_decoder_are_not_applicable(tiny_benchmark, tmp_path):
    from harness.runner import build_config

    with pytest.raises(NotApplicable, match="no PrefixLM decoder"):
        build_config("vilt", "caption", data=tiny_benchmark, work_dir=tmp_path, checkpoint="unused.pth")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["albef", "copa"])
def test_finetune_then_test_on_the_runner(tiny_benchmark, pretrained_checkpoint, tmp_path, model):
    from harness.runner import build_config, test, train

    cfg = build_config(model, "caption", data=tiny_benchmark, work_dir=tmp_path, max_iters=3,
                       checkpoint=pretrained_checkpoint(model))
    cfg.train_dataloader.batch_size = 8
    cfg.val_dataloader.dataset.indices = 8
    train(cfg)
    finetuned = Path((tmp_path / "last_checkpoint").read_text().strip())
    for num_beams in (1, 2):
        cfg = build_config(model, "caption", data=tiny_benchmark, work_dir=tmp_path, checkpoint=finetuned,
                           testing=True)
        cfg.model.num_beams = num_beams
        cfg.test_dataloader.dataset.indices = 8
        metrics = test(cfg)
        assert {"bleu4", "cider"} <= set(metrics)
        assert 0.0 <= metrics["bleu4"] <= 100.0 and metrics["cider"] >= 0.0


# ------------------------------------------------------------------------------ tokenizer of the caption metric

CAPTION_ROWS = [
    {"image_id": 1, "caption": "A man (in red) rides a horse!!",
     "references": ["A man in red rides a horse.", "A man [riding] a brown horse", "Mr. Smith on his horse"]},
    {"image_id": 2, "caption": "Two dogs play with a ball in the U.S.",
     "references": ["Two dogs playing with a ball.", "A pair of dogs can't catch a ball", "dogs, 1,000 of them"]},
]
needs_java = pytest.mark.skipif(not java_ptb_available(),
                                reason="no java on PATH (or no Stanford CoreNLP jar in pycocoevalcap)")


@needs_java
def test_java_tokenizer_is_pycocoevalcaps():
    """ptb_tokenize gives exactly what pycocoevalcap's PTBTokenizer class gives (which writes its temporary file
    into the installed package: skipped where that directory is read-only)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from harness.metrics.caption import ptb_tokenize

    captions = [c for row in CAPTION_ROWS for c in (row["caption"], *row["references"])]
    captions += ["", "  ...  ", "café “quoted” {braces}", "It's 10:30 -- wow?!", "", "Dr. No's $5 hat (50%)", ""]
    try:
        theirs = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    except OSError as e:
        pytest.skip(f"pycocoevalcap's PTBTokenizer cannot write next to its jar: {e}")
    ours = ptb_tokenize(captions)
    assert ours == [theirs[i][0] for i in range(len(captions))]
    # where the Python stand-in differs: brackets, "!!", abbreviations
    assert ours[0] == "a man -lrb- in red -rrb- rides a horse !!" and ours[3] == "mr. smith on his horse"


@needs_java
def test_java_tokenizer_keeps_one_line_per_caption():
    from harness.metrics.caption import ptb_tokenize

    # each of these is a line break to Java: pycocoevalcap (which replaces only "\n") would shift later captions
    assert ptb_tokenize(["a\rb", "c\u2028d", "e\x0bf", "g\x0ch", "i\r\nj", "last"]) == \
        ["a b", "c d", "e f", "g h", "i j", "last"]
    assert ptb_tokenize([]) == [] and ptb_tokenize([""]) == [""]


@needs_java
def test_caption_metric_uses_java_when_present_and_says_so():
    from harness.metrics import CaptionMetric, caption

    java = CaptionMetric().compute_metrics(CAPTION_ROWS)
    assert java["cider_java_ptb"] == 1.0 and caption.last_tokenizer == "java"
    assert CaptionMetric(tokenizer="java").compute_metrics(CAPTION_ROWS) == java
    python = CaptionMetric(tokenizer="python").compute_metrics(CAPTION_ROWS)
    assert python["cider_java_ptb"] == 0.0 and caption.last_tokenizer == "python"
    assert python["cider"] != pytest.approx(java["cider"])  # "-lrb-", "!!", "mr." count as words in Java's


def test_caption_metric_without_java_falls_back_and_warns(monkeypatch, caplog):
    import logging

    from harness.metrics import CaptionMetric, caption, tokenize_caption

    monkeypatch.setenv("PATH", "")  # no java to be found
    with caplog.at_level(logging.WARNING, logger="harness.metrics.caption"):
        result = CaptionMetric().compute_metrics(CAPTION_ROWS)
    assert result["cider_java_ptb"] == 0.0 and caption.last_tokenizer == "python"
    assert "not comparable with published values" in caplog.text and "no java on PATH" in caplog.text
    assert result == CaptionMetric(tokenizer="python").compute_metrics(CAPTION_ROWS)
    with pytest.raises(RuntimeError, match="did not run"):
        CaptionMetric(tokenizer="java").compute_metrics(CAPTION_ROWS)
    assert tokenize_caption("A man (in red) rides a horse!!") == "a man in red rides a horse"


def test_caption_metric_falls_back_when_java_fails(monkeypatch, caplog):
    import logging

    from harness.metrics import CaptionMetric, caption

    def broken(captions):
        raise RuntimeError("the Java PTBTokenizer exited with status 1: OutOfMemoryError")

    monkeypatch.setattr(caption, "java_ptb_available", lambda: True)
    monkeypatch.setattr(caption, "ptb_tokenize", broken)
    with caplog.at_level(logging.WARNING, logger="harness.metrics.caption"):
        result = CaptionMetric().compute_metrics(CAPTION_ROWS)
    assert result["cider_java_ptb"] == 0.0 and "OutOfMemoryError" in caplog.text
    with pytest.raises(RuntimeError, match="OutOfMemoryError"):
        CaptionMetric(tokenizer="java").compute_metrics(CAPTION_ROWS)
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        CaptionMetric(tokenizer="nltk")
