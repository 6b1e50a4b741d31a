"""Captioning metrics: corpus BLEU-4 and CIDEr-D from pycocoevalcap's Python scorers, with a Python tokenizer
standing in for the coco-caption Java PTBTokenizer (no Java at evaluation time)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from mmengine.evaluator import BaseMetric
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from harness.registry import METRICS

# pycocoevalcap/tokenizer/ptbtokenizer.py: tokens its caller drops after Stanford's PTBTokenizer ran
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m")
SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"], "wanna": ["wan", "na"],
               "gimme": ["gim", "me"], "lemme": ["lem", "me"]}
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": " ... "})
_DROPPED = re.compile(r"[\"()\[\]{}]")
_ALWAYS_SPLIT = re.compile(r"(\.\.\.|--|[;?!])")
_SPLIT_OUTSIDE_NUMBERS = re.compile(r"[,:](?!\d)|(?<!\d)[,:]")
_ABBREVIATION = re.compile(r"(?:[a-z]\.)+[a-z]\.")
_CLITIC = re.compile(r"(.+?)(" + "|".join(CLITICS) + r")")


def _split_chunk(chunk: str) -> list[str]:
    """PTB tokens of one whitespace-free chunk whose separable punctuation is already spaced out."""
    if chunk in CLITICS:
        return [chunk]
    head: list[str] = []
    tail: list[str] = []
    previous = None
    while chunk != previous:
        previous = chunk
        chunk = chunk.strip("'`")
        if chunk.endswith(".") and not _ABBREVIATION.fullmatch(chunk):
            chunk = chunk.rstrip(".")
        if chunk[:1] in ("$", "#"):
            head.append(chunk[0])
            chunk = chunk[1:]
        if chunk.endswith("%") and len(chunk) > 1:
            tail.insert(0, "%")
            chunk = chunk[:-1]
    if chunk in SPLIT_WORDS:
        return head + SPLIT_WORDS[chunk] + tail
    clitic = _CLITIC.fullmatch(chunk)
    body = [clitic.group(1), clitic.group(2)] if clitic else [chunk]
    return head + body + tail


def tokenize_caption(caption: str) -> str:
    """Lowercased, space-joined tokens of a caption as coco-caption's PTBTokenizer step leaves them.

    Like Stanford's PTBTokenizer (``-lowerCase``) followed by coco-caption's removal of ``PUNCTUATIONS``:
    clitics split off ("dog's" -> "dog 's", "don't" -> "do n't", "cannot" -> "can not"), quotes, brackets
    and the punctuation marks dropped, "$"/"#"/"%" split off, commas and colons kept inside numbers
    ("1,000", "10:30"), periods kept inside numbers and abbreviations ("3.5", "u.s."), hyphenated words
    kept whole. Brackets of every kind are dropped, where Java would keep "[" as "-LSB-"; captions hardly
    ever have them.
    """
    text = caption.replace("\n", " ").lower().translate(_QUOTES)
    text = _DROPPED.sub(" ", text)
    text = _ALWAYS_SPLIT.sub(r" \1 ", text)
    text = _SPLIT_OUTSIDE_NUMBERS.sub(lambda m: f" {m.group(0)} ", text)
    tokens = [t for chunk in text.split() for t in _split_chunk(chunk)]
    return " ".join(t for t in tokens if t and t not in PUNCTUATIONS)


@METRICS.register_module()
class CaptionMetric(BaseMetric):
    """Corpus ``bleu4`` and ``cider`` (CIDEr-D) over all images, both x100 as papers print them.

    Row per image: ``image_id``, ``caption`` (the prediction), ``references`` (the human captions). Captions
    and references go through :func:`tokenize_caption`, then pycocoevalcap's ``Bleu(4)`` and ``Cider()``.
    Both scores are corpus-level (BLEU pools n-gram counts, CIDEr's IDF comes from all references), so they
    are computed only after every process's rows are gathered. An image seen twice counts once. An empty
    prediction (or one of punctuation only) is no error: it matches no n-gram, so its image's CIDEr is 0 and
    a corpus of empty predictions scores 0 on both.
    """

    default_prefix = None

    def process(self, data_batch: dict | None, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            references = [str(r) for r in sample["references"]]
            if not references:
                raise ValueError(f"image {sample['image_id']} has no reference caption")
            caption = sample["caption"]
            self.results.append({
                "image_id": int(sample["image_id"]),
                "caption": "" if caption is None else str(caption),
                "references": references,
            })

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        res: dict[int, list[str]] = {}
        gts: dict[int, list[str]] = {}
        for row in results:
            if row["image_id"] not in res:
                res[row["image_id"]] = [tokenize_caption(row["caption"])]
                gts[row["image_id"]] = [tokenize_caption(r) for r in row["references"]]
        if not res:
            return {"bleu4": float("nan"), "cider": float("nan")}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        has_reference_words = any(ref for refs in gts.values() for ref in refs)
        cider = Cider().compute_score(gts, res)[0] if has_reference_words else 0.0
        return {"bleu4": 100.0 * float(bleu[3]), "cider": 100.0 * float(cider)}
