"""Image-text retrieval: ITC shortlist of the top-k, then ITM re-ranking along the text-aware path.

Fine-tuning continues the backbone's ITC and ITM objectives on the training captions. Testing ranks the
whole test gallery in both directions: text-free image embeddings against text embeddings give every
similarity; each query's k most similar candidates are then re-scored by ITM, so text-aware reducers
(COPA, TRIPS) see the query text when they choose patches. In a distributed run every process embeds its
shard, the embeddings are gathered so each process holds the whole gallery, and the queries (not the
gallery) are split among processes: the ranks are the same as in one process. Embedding and ITM re-ranking run
on the model's device in the job's precision; the gathered rows and the ITC similarities stay on the CPU in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.runner import TestLoop
from torch import Tensor

from copa.registry import MODELS
from harness.data.collate import cached_tokenizer
from harness.device import model_device, to_device
from harness.registry import FUNCTIONS, LOOPS
from harness.tasks.base import TaskModel, evaluation_context, unwrap

RERANKED = 2.0  # added to P(match) of re-ranked candidates: they rank above every cosine in [-1, 1]


@FUNCTIONS.register_module()
def retrieval_collate(samples: Sequence[dict], tokenizer: str, max_length: int = 40) -> dict:
    """Images of a Karpathy split with all their captions → ``images``, ``image_index``, every caption's
    ``caption_ids``/``caption_mask``/``caption_index``/``caption_image`` and, for the efficiency hook, the
    first caption of each image as ``text_ids``/``text_mask``."""
    tok = cached_tokenizer(str(tokenizer))
    texts = [t for s in samples for t in s["texts"]]
    enc = tok(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    first = [0]
    for s in samples[:-1]:
        first.append(first[-1] + len(s["texts"]))
    return {
        "images": torch.stack([s["img"] for s in samples]),
        "image_index": torch.tensor([s["index"] for s in samples]),
        "caption_ids": enc["input_ids"], "caption_mask": enc["attention_mask"],
        "caption_image": torch.tensor([s["index"] for s in samples for _ in s["texts"]]),
        "text_ids": enc["input_ids"][first], "text_mask": enc["attention_mask"][first],
    }


@MODELS.register_module()
class RetrievalModel(TaskModel):
    """A VLP backbone fine-tuned with its ITC and ITM losses; ``predict`` embeds a batch of gallery images and
    their captions for :class:`RetrievalTestLoop`, and :meth:`itm_scores` re-ranks shortlists."""

    def __init__(self, backbone: dict, k: int = 16, itm_batch: int = 128, **kwargs) -> None:
        super().__init__(backbone, **kwargs)
        self.k = k
        self.itm_batch = itm_batch
        self.backbone.losses = tuple(name for name in self.backbone.losses if name in ("itc", "itm"))

    def forward(self, images: Tensor, text_ids: Tensor | None = None, text_mask: Tensor | None = None,
                mode: str = "tensor", **batch):
        if mode == "loss":
            return self.backbone.loss(images, text_ids, text_mask, image_ids=batch.get("image_ids"))
        if mode == "predict":
            return self.embed(images, batch["image_index"], batch["caption_ids"], batch["caption_mask"],
                              batch["caption_image"])
        return self.backbone.image_features(images)

    @torch.no_grad()
    def embed(self, images: Tensor, image_index: Tensor, caption_ids: Tensor, caption_mask: Tensor,
              caption_image: Tensor) -> list[dict]:
        """One row per image (its embedding and pixels) and one per caption (embedding and token ids)."""
        image_feat = self.backbone.image_features(images)
        text_feat = self.backbone.text_features(caption_ids, caption_mask)
        rows = [dict(kind="image", index=int(i), embed=e, image=img)
                for i, e, img in zip(image_index, image_feat, images, strict=True)]
        for j, (e, ids, mask, img) in enumerate(zip(text_feat, caption_ids, caption_mask, caption_image,
                                                    strict=True)):
            rows.append(dict(kind="text", order=j, image=int(img), embed=e, ids=ids[mask.bool()]))
        return rows

    @torch.no_grad()
    def itm_scores(self, gallery: Tensor, image_idx: list[int], text_ids: list[Tensor], pad_id: int) -> Tensor:
        """P(match) of the pairs (gallery[image_idx[i]], text_ids[i]), in batches of ``itm_batch``; the vision
        work shared by an image's pairs is done once per gallery image. Runs on the gallery's device."""
        cache = self.backbone.gallery_cache(gallery)
        image_idx = torch.as_tensor(image_idx, dtype=torch.long, device=gallery.device)
        out = []
        for start in range(0, len(text_ids), self.itm_batch):
            chunk = text_ids[start:start + self.itm_batch]
            length = max(len(t) for t in chunk)
            ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, t in enumerate(chunk):
                ids[row, :len(t)], mask[row, :len(t)] = t, 1
            ids, mask = to_device((ids, mask), gallery.device)  # padded here, moved once per chunk
            logits = self.backbone.itm_logits_cached(cache, image_idx[start:start + self.itm_batch], ids, mask)
            out.append(logits.float().softmax(dim=-1)[:, 1])
        return torch.cat(out) if out else torch.empty(0, device=gallery.device)


@LOOPS.register_module()
class RetrievalTestLoop(TestLoop):
    """Ranks the whole gallery (see the module docstring) and feeds one row per query to the evaluator
    (``RetrievalMetric``: scores over the gallery, targets, k)."""

    def run(self) -> dict:
        self.runner.call_hook("before_test")
        self.runner.call_hook("before_test_epoch")
        model = unwrap(self.runner.model)
        model.eval()
        rows: list[dict] = []
        for idx, data_batch in enumerate(self.dataloader):
            self.runner.call_hook("before_test_iter", batch_idx=idx, data_batch=data_batch)
            with torch.no_grad(), evaluation_context(self.runner):
                rows += to_device(self.runner.model.test_step(data_batch), "cpu")  # gathered below: on the CPU
            self.runner.call_hook("after_test_iter", batch_idx=idx, data_batch=data_batch, outputs=[])
        queries = self._rank(model, [r for part in all_gather_object(rows) for r in part])
        per_rank = max(len(part) for part in all_gather_object(queries))
        queries += [queries[-1]] * (per_rank - len(queries))  # equal shares: gathering interleaves them
        self.evaluator.process(data_samples=queries, data_batch=None)
        metrics = self.evaluator.evaluate(per_rank * get_world_size())
        self.runner.call_hook("after_test_epoch", metrics=metrics)
        self.runner.call_hook("after_test")
        return metrics

    def _rank(self, model: RetrievalModel, rows: list[dict]) -> list[dict]:
        images = {r["index"]: r for r in rows if r["kind"] == "image"}
        order = sorted(images)
        position = {index: p for p, index in enumerate(order)}
        texts = sorted({(r["image"], r["order"]): r for r in rows if r["kind"] == "text"}.items())
        texts = [r for _, r in texts]
        image_feat = torch.stack([images[i]["embed"] for i in order]).float()
        pixels = torch.stack([images[i]["image"] for i in order]).to(model_device(model))
        text_feat = torch.stack([t["embed"] for t in texts]).float()
        text_image = [position[t["image"]] for t in texts]
        sim = image_feat @ text_feat.t()  # (images, texts)
        k_img, k_txt = min(model.k, len(order)), min(model.k, len(texts))
        pad_id = model.backbone.token_ids["pad"]
        rank, world = get_rank(), get_world_size()
        queries = []
        for t in range(rank, len(texts), world):
            scores = sim[:, t].clone()
            queries.append(dict(query="text", index=t, scores=scores, targets=[text_image[t]], k=model.k,
                                top=scores.topk(k_img).indices))
        captions_of: dict[int, list[int]] = {}
        for j, p in enumerate(text_image):
            captions_of.setdefault(p, []).append(j)
        for i in range(rank, len(order), world):
            scores = sim[i].clone()
            targets = captions_of[i]
            queries.append(dict(query="image", index=i, scores=scores, targets=targets, k=model.k,
                                top=scores.topk(k_txt).indices))
        pair_images, pair_texts = [], []
        for q in queries:
            top = q["top"].tolist()
            if q["query"] == "text":
                pair_images += top
                pair_texts += [texts[q["index"]]["ids"]] * len(top)
            else:
                pair_images += [q["index"]] * len(top)
                pair_texts += [texts[j]["ids"] for j in top]
        with evaluation_context(self.runner):
            itm = model.itm_scores(pixels, pair_images, pair_texts, pad_id).cpu()
        start = 0
        for q in queries:
            top = q.pop("top")
            q["scores"][top] = RERANKED + itm[start:start + len(top)]
            start += len(top)
        return queries
