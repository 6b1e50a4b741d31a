"""Image captioning: fine-tune the backbone's PrefixLM decoder on the training captions, then caption each test
image (greedy or beam search) and score against its reference captions (BLEU-4, CIDEr-D).

Captioning has no text input, so the decoder reads the *text-free* visual tokens, the same path it was
pre-trained on (``VLPModel.loss``'s PrefixLM term): fine-tuning continues that objective rather than adding a
head. Only models with a decoder apply (``harness.task_spec.requires = ['decoder']``: not the single-stream ViLT).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from copa.registry import MODELS
from harness.data.collate import cached_tokenizer
from harness.registry import FUNCTIONS
from harness.tasks.base import TaskModel

_ATTACHED = frozenset(".,;:!?")


def join_wordpieces(tokens: Sequence[str]) -> str:
    """WordPiece tokens → text: ``##`` pieces join the word before them, and closing punctuation
    attaches to the previous word (``['a', 'sq', '##uare', ',']`` → ``'a square,'``)."""
    words: list[str] = []
    for tok in tokens:
        if tok.startswith("##") and words:
            words[-1] += tok[2:]
        elif tok in _ATTACHED and words:
            words[-1] += tok
        else:
            words.append(tok[2:] if tok.startswith("##") else tok)
    return " ".join(words)


def detokenize(ids: Sequence[int], tokenizer, eos_token_id: int | None = None) -> str:
    """A generated id sequence → caption: cut at the first EOS after the leading BOS, special tokens skipped,
    WordPiece pieces joined."""
    ids = [int(i) for i in ids]
    if eos_token_id is not None and eos_token_id in ids[1:]:
        ids = ids[: ids.index(eos_token_id, 1)]
    special = set(tokenizer.all_special_ids)
    return join_wordpieces(tokenizer.convert_ids_to_tokens([i for i in ids if i not in special]))


@FUNCTIONS.register_module()
def caption_collate(samples: Sequence[dict]) -> dict:
    """Test samples of :class:`~harness.data.datasets.RetrievalDataset` (one per image with all its captions)
    → ``images``, ``image_ids`` and ``references`` (the captions of each image, as text)."""
    return {"images": torch.stack([s["img"] for s in samples]),
            "image_ids": torch.tensor([int(s["image_id"]) for s in samples]),
            "references": [list(s["texts"]) for s in samples]}


@MODELS.register_module()
class CaptionModel(TaskModel):
    """Captioning with the backbone's PrefixLM decoder (no modules of its own, so a pre-training checkpoint
    can also be tested zero-shot).

    Args:
        tokenizer: the tokenizer directory (the runner fills it in) to turn generated ids into text.
        num_beams: 1 decodes greedily, more runs :meth:`~copa.text.PrefixLMDecoder.beam_search`.
        max_length: most tokens per caption, BOS and EOS included.
        length_penalty: beam search ranks hypotheses by log-probability / length ** ``length_penalty``.
    """

    def __init__(self, backbone: dict, checkpoint: str | None = None, require_head: bool = False,
                 tokenizer: str | None = None, num_beams: int = 1, max_length: int = 20, length_penalty: float = 1.0,
                 data_preprocessor: dict | None = None) -> None:
        super().__init__(backbone, checkpoint, require_head, data_preprocessor)
        if getattr(self.backbone, "decoder", None) is None:
            raise ValueError(f"{type(self.backbone).__name__} has no PrefixLM decoder: captioning does not apply")
        if num_beams < 1 or max_length < 2:
            raise ValueError(f"need num_beams >= 1 and max_length >= 2, got {num_beams} and {max_length}")
        self.tokenizer = tokenizer
        self.num_beams = num_beams
        self.max_length = max_length
        self.length_penalty = length_penalty

    def visual(self, images: Tensor) -> Tensor:
        """The decoder's context: text-free visual tokens at text width."""
        return self.backbone.vision_to_text(self.backbone.vision(images, None).tokens)

    @torch.no_grad()
    def generate(self, images: Tensor) -> Tensor:
        """Caption ids ``(B, <= max_length)``, [CLS] first, padded after [SEP] with [SEP]."""
        decoder, ids = self.backbone.decoder, self.backbone.token_ids
        visual = self.visual(images)
        if self.num_beams == 1:
            return decoder.generate(visual, ids["cls"], ids["sep"], self.max_length)
        return decoder.beam_search(visual, ids["cls"], ids["sep"], self.num_beams, self.max_length,
                                   self.length_penalty)[0]

    def forward(self, images: Tensor, text_ids: Tensor | None = None, text_mask: Tensor | None = None,
                image_ids: Tensor | None = None, references: list[list[str]] | None = None, mode: str = "tensor",
                **unused):
        if mode == "loss":
            return {"loss_lm": self.backbone.decoder.loss(text_ids, text_mask, self.visual(images))}
        ids = self.generate(images)
        if mode == "tensor":
            return ids
        if mode != "predict":
            raise ValueError(f"unknown mode {mode!r}")
        if self.tokenizer is None:
            raise ValueError("CaptionModel needs its tokenizer to predict text")
        tok = cached_tokenizer(str(self.tokenizer))
        eos = self.backbone.token_ids["sep"]
        image_ids = [None] * len(ids) if image_ids is None else image_ids.tolist()
        references = references or [[] for _ in ids]
        return [{"image_id": i, "caption": detokenize(seq.tolist(), tok, eos), "references": refs}
                for i, seq, refs in zip(image_ids, ids, references, strict=True)]
