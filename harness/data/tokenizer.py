"""The text tokenizer: a BERT WordPiece vocabulary trained offline on the benchmark's training text,
or a local pretrained BERT directory. Nothing is fetched from a hub."""

from __future__ import annotations

import os
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from harness.errors import InputError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 4000) -> Path:
    """Build a lower-casing BERT WordPiece vocabulary from ``texts`` and save it as ``vocab.txt``.

    The vocabulary is whole words by frequency (ties alphabetical) plus every character alone and as a
    ``##`` continuation, so any word still tokenizes. The ``tokenizers`` BPE-style trainer is not
    used because it breaks ties between merges differently from run to run, and the benchmark must be
    byte-identical for a seed. Text is split exactly as BERT's tokenizer splits it.
    """
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer = BertNormalizer(lowercase=True)
    pre = BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w} | set(string.ascii_lowercase + string.digits + string.punctuation))
    budget = max(0, vocab_size - len(SPECIAL_TOKENS) - 2 * len(chars))
    common = sorted(words.items(), key=lambda wc: (-wc[1], wc[0]))[:budget]
    vocab = SPECIAL_TOKENS + chars + [f"##{c}" for c in chars]
    vocab += sorted(w for w, _ in common if len(w) > 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def load_tokenizer(path: str | os.PathLike):
    """A ``BertTokenizerFast`` from a local directory with a ``vocab.txt`` (ours, or a pretrained
    BERT's, whose ``tokenizer_config.json`` is honoured) or from a ``vocab.txt`` file."""
    from transformers import BertTokenizerFast

    path = Path(path)
    vocab = path / "vocab.txt" if path.is_dir() else path
    if not vocab.is_file():
        raise InputError(vocab, None, "tokenizer vocabulary not found (expected a vocab.txt)")
    check_vocab(vocab)
    try:
        if path.is_dir():
            tokenizer = BertTokenizerFast.from_pretrained(str(path), local_files_only=True)
        else:
            tokenizer = BertTokenizerFast(vocab=str(vocab))
    except Exception as e:  # noqa: BLE001  (the tokenizers library raises a bare Exception)
        raise InputError(path, None, f"cannot load the tokenizer: {str(e)[:200]}") from None
    known = tokenizer.get_vocab()
    for token in tokenizer.all_special_tokens:  # a pretrained directory's config may name other ones
        if token not in known:
            raise InputError(vocab, token, "special token missing from the vocabulary")
    return tokenizer


def check_vocab(path: Path) -> None:
    """Refuse an empty ``vocab.txt``, one without BERT's special tokens or one that repeats a token: the tokenizers
    library fails on a missing ``[UNK]`` with a bare exception, a missing ``[MASK]`` or ``[PAD]`` only shows later as
    a None id, and a repeated token makes the vocabulary smaller than its ids (an index error in the embedding)."""
    try:
        lines = [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise InputError(path, None, f"not UTF-8 text: {e.reason}") from None
    except OSError as e:
        raise InputError(path, None, f"cannot be read: {e.strerror}") from None
    tokens = set(lines)
    tokens.discard("")
    seen: set[str] = set()
    for number, token in enumerate(lines, 1):
        if token and token in seen:  # ids are line numbers: a repeat leaves ids past the embedding table
            raise InputError(path, f"line {number}", f"token {token!r} appears twice in the vocabulary")
        seen.add(token)
    if not tokens:
        raise InputError(path, None, "empty tokenizer vocabulary")
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise InputError(path, missing[0], f"special token missing from the vocabulary (missing: {', '.join(missing)})")
