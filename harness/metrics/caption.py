"""Captioning metrics: corpus BLEU-4 and CIDEr-D from pycocoevalcap's Python scorers, after coco-caption's
tokenisation step: the Java Stanford PTBTokenizer that pycocoevalcap ships (when ``java`` is on PATH), else a
Python tokenizer standing in for it (whose scores are then not comparable with published values)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mmengine.evaluator import BaseMetric
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer import ptbtokenizer

from harness.registry import METRICS

logger = logging.getLogger(__name__)

TOKENIZERS = ("auto", "java", "python")
# which tokenizer the last CaptionMetric.compute_metrics of this process used: "java" or "python" (None: none yet)
last_tokenizer: str | None = None
# the line breaks of the Java tokenizer's lexer: with -preserveLines each would start a new output line and
# shift every later caption onto the wrong image (pycocoevalcap itself only replaces "\n")
_JAVA_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\u2028\u2029]")
JAVA_TIMEOUT_S = 900

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


def _ptb_jar() -> Path:
    return Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)


def java_ptb_available() -> bool:
    """Whether :func:`ptb_tokenize` can run: ``java`` on PATH and pycocoevalcap's Stanford CoreNLP jar present."""
    return shutil.which("java") is not None and _ptb_jar().is_file()


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """coco-caption's tokenisation of each caption, by the Java tokenizer itself: exactly what
    ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer.tokenize`` runs (Stanford CoreNLP 3.4.1's
    PTBTokenizer with ``-preserveLines -lowerCase`` over the captions one per line, then its ``PUNCTUATIONS``
    dropped), so brackets come out as ``-lrb-``/``-rrb-`` (kept: the list has them upper-case), "!!" stays a
    token, abbreviations keep their periods.

    Differences from calling pycocoevalcap's class, none of which changes a token: the captions file goes to a
    private temporary directory (not into the installed package), every line break Java knows (not only
    "\\n") becomes a space, and the output must have one line per caption (pycocoevalcap would silently shift
    captions between images otherwise). Raises ``RuntimeError`` when Java fails or the lines do not match.
    """
    if not captions:
        return []
    lines = [_JAVA_LINE_BREAKS.sub(" ", c) for c in captions]
    with tempfile.TemporaryDirectory(prefix="ptb_") as tmp:
        path = os.path.join(tmp, "captions.txt")
        with open(path, "wb") as f:
            f.write("\n".join(lines).encode("utf-8", errors="replace"))
        cmd = ["java", "-cp", str(_ptb_jar()), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
               "-lowerCase", path]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=JAVA_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"the Java PTBTokenizer did not run: {e}") from e
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", errors="replace").strip()[-500:]
        raise RuntimeError(f"the Java PTBTokenizer exited with status {proc.returncode}: {err}")
    out = proc.stdout.decode("utf-8", errors="replace").split("\n")
    if len(out) != len(lines):
        raise RuntimeError(f"the Java PTBTokenizer returned {len(out)} lines for {len(lines)} captions")
    drop = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in drop) for line in out]


def _tokenize_all(captions: list[str], tokenizer: str) -> tuple[list[str], str]:
    """(tokenised captions, "java" or "python") for a CaptionMetric's ``tokenizer`` setting."""
    if tokenizer == "python":
        return [tokenize_caption(c) for c in captions], "python"
    if tokenizer == "java" or java_ptb_available():
        try:
            return ptb_tokenize(captions), "java"
        except RuntimeError as e:
            if tokenizer == "java":
                raise
            why = str(e)
    else:
        why = "no java on PATH" if shutil.which("java") is None else f"no {_ptb_jar()}"
    logger.warning("captions tokenised by the Python stand-in for the Java PTBTokenizer (%s): BLEU-4 and CIDEr "
                   "are not comparable with published values (cider_java_ptb = 0)", why)
    return [tokenize_caption(c) for c in captions], "python"


@METRICS.register_module()
class CaptionMetric(BaseMetric):
    """Corpus ``bleu4`` and ``cider`` (CIDEr-D) over all images, both x100 as papers print them, and
    ``cider_java_ptb``: 1.0 when the Java PTBTokenizer tokenised the captions (the scores are coco-caption's),
    0.0 when the Python stand-in did (then they are not comparable with published values; a warning is logged
    and the module's ``last_tokenizer`` says "python"). A number, not a name, so that it can be stored as a
    result row (an info-only metric to the gate, ignored by the tables' headline columns).

    Row per image: ``image_id``, ``caption`` (the prediction), ``references`` (the human captions). Captions
    and references are tokenised by ``tokenizer``: "auto" (default) the Java PTBTokenizer of pycocoevalcap
    (:func:`ptb_tokenize`) when ``java`` is on PATH, else, or if Java fails, :func:`tokenize_caption`;
    "java" the Java one or an error; "python" always :func:`tokenize_caption`. Then pycocoevalcap's
    ``Bleu(4)`` and ``Cider()``.
    Both scores are corpus-level (BLEU pools n-gram counts, CIDEr's IDF comes from all references), so they
    are computed only after every process's rows are gathered. An image seen twice counts once. An empty
    prediction (or one of punctuation only) is no error: it matches no n-gram, so its image's CIDEr is 0 and
    a corpus of empty predictions scores 0 on both.
    """

    default_prefix = None

    def __init__(self, tokenizer: str = "auto", **kwargs) -> None:
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")
        super().__init__(**kwargs)
        self.tokenizer = tokenizer

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
        global last_tokenizer
        res, gts, used = _tokenised(results, self.tokenizer)
        last_tokenizer = used
        flag = 1.0 if used == "java" else 0.0
        if not res:
            return {"bleu4": float("nan"), "cider": float("nan"), "cider_java_ptb": flag}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        has_reference_words = any(ref for refs in gts.values() for ref in refs)
        cider = Cider().compute_score(gts, res)[0] if has_reference_words else 0.0
        return {"bleu4": 100.0 * float(bleu[3]), "cider": 100.0 * float(cider), "cider_java_ptb": flag}


def _tokenised(results: list[dict], tokenizer: str) -> tuple[dict[int, list[str]], dict[int, list[str]], str]:
    """(prediction, references) per image as pycocoevalcap's scorers take them, tokenised in one call (one JVM
    start), and the tokenizer used; an image seen twice counts once."""
    unique: dict[int, dict] = {}
    for row in results:
        unique.setdefault(row["image_id"], row)
    texts = [t for row in unique.values() for t in (row["caption"], *row["references"])]
    tokens, used = _tokenize_all(texts, tokenizer)
    res: dict[int, list[str]] = {}
    gts: dict[int, list[str]] = {}
    at = 0
    for image_id, row in unique.items():
        n = 1 + len(row["references"])
        res[image_id], gts[image_id] = tokens[at:at + 1], tokens[at + 1:at + n]
        at += n
    return res, gts, used


def cider_per_image(results: list[dict], tokenizer: str = "auto") -> list[float]:
    """Each image's CIDEr-D (as a fraction; the corpus score is their mean, IDF from all references), for rows
    as :class:`CaptionMetric` takes them: how much of a corpus score rests on a few images."""
    res, gts, _ = _tokenised(results, tokenizer)
    if not any(ref for refs in gts.values() for ref in refs):
        return [0.0] * len(res)
    return [float(x) for x in Cider().compute_score(gts, res)[1]]
