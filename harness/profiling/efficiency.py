"""Efficiency: what a model costs, per image-text pair (the paper-style table) and per task and phase.

**The pair table** (:func:`profile_models`, ``copa-bench profile`` with the default ``--tasks pair``): parameters,
GMACs per image-text pair (split by part), pairs/s, latency and peak memory, with speedups over a reference
model measured in the same process. The unit is one image and ``text_len`` (40) text tokens through the
vision, text and fusion encoders along the text-aware path (``model.encode_pair``); for the single-stream
ViLT, the joint transformer. Beside it: the PrefixLM decoder over ``text_len`` tokens (``gmacs_decoder``),
the retrieval index per gallery image (``gmacs_image_index``: ``gallery_cache`` + ``image_features``, what
the retrieval task computes once per image) and retrieval per text query (``gmacs_retrieval_query``: the
query's text embedding, ITC against ``gallery`` image embeddings and ``k`` ITM re-ranks through
``itm_logits_cached``, counted on that call: the cached vision prefix, or for text-agnostic reducers the
cached visual tokens, is not charged again per pair).

**The task-cost table** (:func:`profile_tasks`, ``copa-bench profile --tasks ...``): for every model, task
and phase, multiply-adds per sample counted by fvcore over the call the task really makes, and measured
samples/s, interleaved across models in one process, speedups against the reference as paired per-round
ratios. Tasks and phases (``TASKS``; ``--tasks`` takes ``task[:phase][@batch]``, comma-separated):

==========  =====  ====================  ==============================================================
task        phase  per (sample)          the call
==========  =====  ====================  ==============================================================
pretrain    train  image-text pair       ``model(..., mode='loss')``: every pre-training loss with its
                                         in-batch negatives (MACs counted at the timed batch)
retrieval   train  image-text pair       ``RetrievalModel(..., mode='loss')`` (ITC + ITM fine-tuning)
retrieval   infer  text query            ``text_features`` of the query, ITC against ``gallery`` image
                                         embeddings, ``k`` re-ranks with ``itm_logits_cached``
vqa         train  question              ``VQAModel(..., mode='loss')`` (3129 answers)
vqa         infer  question              ``VQAModel`` logits
nlvr2       train  statement, 2 images   ``NLVR2Model(..., mode='loss')``
nlvr2       infer  statement, 2 images   ``NLVR2Model`` logits
caption     train  image-caption pair    ``CaptionModel(..., mode='loss')`` (PrefixLM)
caption     infer  image                 ``CaptionModel.generate``: the task config's beams and length
grounding   train  expression            ``GroundingModel(..., mode='loss')``
grounding   infer  expression            ``GroundingModel`` boxes
index       infer  gallery image         ``gallery_cache`` + ``image_features`` (retrieval's per-image
                                         work, done once per gallery image)
pair        infer  image-text pair       ``encode_pair`` (the pair table's unit)
==========  =====  ====================  ==============================================================

Task models are the harness's own (``harness/tasks``, built from ``configs/tasks/<task>.py``'s ``task_model``)
around the profiled backbone, heads at their initial weights (weights do not change the cost). Inference is
timed under ``torch.inference_mode()`` and autocast for the precision; a training step is forward, backward
and an AdamW step. Training MACs are the forward's (fvcore over the loss forward); the step estimate is the
convention forward + backward = 3 x forward, and every table says which it shows. Achieved TFLOP/s is
2 x MACs x samples/s (the step estimate for training), beside the device's dense peak where known.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import gc
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.device import autocast, to_device
from harness.profiling.flops import FlopReport, count_macs
from harness.profiling.speed import (
    machine,
    paired_ratio,
    peak_memory_mb,
    peak_tflops,
    summarize,
    time_interleaved,
)

TEXT_LEN = 40
GALLERY = 5000  # COCO's Karpathy test split: 5,000 images
VQA_ANSWERS = 3129  # VQA v2's answer vocabulary at ViLT's threshold (configs/tasks/vqa.py)
COMPILE_WARMUP = 2  # with torch.compile: the first round compiles, the second meets any recompilation
TRAIN_FACTOR = 3  # forward + backward ~ 3 x forward (the backward computes gradients of inputs and weights)
TASKS: dict[str, tuple[str, ...]] = {
    "pretrain": ("train",),
    "retrieval": ("train", "infer"),
    "vqa": ("train", "infer"),
    "nlvr2": ("train", "infer"),
    "caption": ("train", "infer"),
    "grounding": ("train", "infer"),
    "index": ("infer",),
    "pair": ("infer",),
}
UNITS = {
    ("pretrain", "train"): "image-text pair",
    ("retrieval", "train"): "image-text pair",
    ("retrieval", "infer"): "text query",
    ("vqa", "train"): "question",
    ("vqa", "infer"): "question",
    ("nlvr2", "train"): "statement + 2 images",
    ("nlvr2", "infer"): "statement + 2 images",
    ("caption", "train"): "image-caption pair",
    ("caption", "infer"): "image",
    ("grounding", "train"): "expression",
    ("grounding", "infer"): "expression",
    ("index", "infer"): "gallery image",
    ("pair", "infer"): "image-text pair",
}
_PREBUILT = "ProfiledBackbone"


class _Call(nn.Module):
    """A traceable module around one of the model's methods."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(*inputs)


class _Fn(nn.Module):
    """A traceable module around ``fn(model, *inputs)`` (fvcore traces modules; the model is its child, so
    per-module counts read ``model.<part>``)."""

    def __init__(self, model: nn.Module, fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *inputs: torch.Tensor):
        return self.fn(self.model, *inputs)


def pair_inputs(model: nn.Module, batch: int = 1, text_len: int = TEXT_LEN, seed: int = 0) -> tuple:
    """Random images and token ids (no padding) of the sizes the model expects."""
    gen = torch.Generator().manual_seed(seed)
    size = model.vision.patch_embed.img_size
    images = torch.randn(batch, 3, *size, generator=gen)
    vocab = model.vocab_size
    text_ids = torch.randint(5, vocab, (batch, text_len), generator=gen)
    text_ids[:, 0] = model.token_ids["cls"]
    text_ids[:, -1] = model.token_ids["sep"]
    return images, text_ids, torch.ones(batch, text_len, dtype=torch.long)


def _sum_under(report: FlopReport, prefix: str) -> int:
    return report.part(f"model.{prefix}")


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def pair_macs(model: nn.Module, text_len: int = TEXT_LEN) -> tuple[dict[str, int], FlopReport]:
    """Multiply-adds of one pair, total and per part (``reducer`` is inside ``vision``)."""
    inputs = to_device(pair_inputs(model, 1, text_len), _device_of(model))
    report = count_macs(_Call(model, "encode_pair").eval(), inputs)
    parts = {
        "vision": _sum_under(report, "vision"),
        "reducer": _sum_under(report, "vision.reducers"),
        "text": _sum_under(report, "text_encoder") + _sum_under(report, "text_embeddings"),
        "fusion": _sum_under(report, "fusion") + _sum_under(report, "vision_to_text")
        + _sum_under(report, "text_to_vision"),
    }
    parts["total"] = report.total
    return parts, report


def decoder_macs(model: nn.Module, text_len: int = TEXT_LEN) -> int | None:
    """PrefixLM decoder over ``text_len`` caption tokens given the text-free visual tokens."""
    decoder = getattr(model, "decoder", None)
    if decoder is None:
        return None
    images, text_ids, text_mask = to_device(pair_inputs(model, 1, text_len), _device_of(model))
    with torch.no_grad():
        visual = model.vision_to_text(model.vision(images, None).tokens)
    return count_macs(_Call(decoder, "loss").eval(), (text_ids, text_mask, visual)).total


def _single_stream(model: nn.Module) -> bool:
    from baselines.vilt import SingleStreamVLP

    return isinstance(model, SingleStreamVLP)


def _has_itc(model: nn.Module) -> bool:
    return not _single_stream(model) and "itc" in getattr(model, "losses", ())


def _cache_fn(keys: Sequence[str], empty: Sequence[str]) -> Callable:
    """``fn(model, image_idx, text_ids, text_mask, *cache_tensors)``: ``itm_logits_cached`` with the cache
    rebuilt from traced tensors (the keys that hold ``None`` stay ``None``)."""

    def rerank(model, image_idx, text_ids, text_mask, *values):
        cache = dict.fromkeys(empty) | dict(zip(keys, values, strict=True))
        return model.itm_logits_cached(cache, image_idx, text_ids, text_mask)

    return rerank


def _split_cache(cache: dict) -> tuple[list[str], list[str], list[torch.Tensor]]:
    keys = [k for k, v in cache.items() if v is not None]
    return keys, [k for k, v in cache.items() if v is None], [cache[k] for k in keys]


def image_index_counts(model: nn.Module) -> dict[str, FlopReport] | None:
    """fvcore reports of what retrieval computes once per gallery image: ``gallery_cache`` (what ITM
    re-ranking reuses) and ``image_features`` (the ITC embedding); None without an ITC embedding."""
    if not _has_itc(model):
        return None
    images = to_device(pair_inputs(model, 1)[0], _device_of(model))

    def cache(m, x):
        return tuple(v for v in m.gallery_cache(x).values() if v is not None)

    return {"gallery_cache": count_macs(_Fn(model, cache).eval(), (images,)),
            "image_features": count_macs(_Call(model, "image_features").eval(), (images,))}


def image_index_macs(model: nn.Module) -> int | None:
    """Multiply-adds per gallery image of the retrieval index (see :func:`image_index_counts`)."""
    counts = image_index_counts(model)
    return None if counts is None else sum(r.total for r in counts.values())


def retrieval_query_counts(model: nn.Module, k: int = 16, gallery: int = GALLERY,
                           text_len: int = TEXT_LEN) -> dict[str, FlopReport] | None:
    """fvcore reports of one text query of retrieval: ``query_text`` (its ITC embedding), ``itc_gallery`` (its
    similarity to ``gallery`` image embeddings) and ``rerank`` (``itm_logits_cached`` over ``k`` shortlisted
    images, from their ``gallery_cache``: the per-image work is the index's, not the query's)."""
    if not _has_itc(model):
        return None
    device = _device_of(model)
    images, ids, mask = to_device(pair_inputs(model, k, text_len), device)
    q_ids, q_mask = ids[:1], mask[:1]
    with torch.no_grad():
        cache = model.gallery_cache(images)
        feat = model.text_features(q_ids, q_mask)
    keys, empty, values = _split_cache(cache)
    embed = torch.zeros(gallery, feat.shape[-1], device=device)
    return {
        "query_text": count_macs(_Call(model, "text_features").eval(), (q_ids, q_mask)),
        "itc_gallery": count_macs(_Fn(model, lambda m, g, t: g @ t.t()).eval(), (embed, feat)),
        "rerank": count_macs(_Fn(model, _cache_fn(keys, empty)).eval(),
                             (torch.arange(k, device=device), q_ids.expand(k, -1), q_mask.expand(k, -1), *values)),
    }


@dataclass
class ProfileRow:
    model: str
    image_size: int
    params_m: float
    gmacs: float
    gmacs_vision: float
    gmacs_reducer: float
    gmacs_text: float
    gmacs_fusion: float
    gmacs_decoder: float | None
    gmacs_image_index: float | None
    gmacs_retrieval_query: float | None
    retrieval_k: int
    unsupported_ops: dict
    pairs_per_s: float
    pairs_per_s_iqr: float
    latency_ms: float
    latency_ms_iqr: float
    peak_mem_mb: float
    reference: str
    speedup_flops: float
    speedup_time: float
    speedup_time_iqr: float
    batch: int
    text_len: int
    repeats: int
    machine: dict
    realised: float = math.nan  # speedup_time / speedup_flops: the share of the MAC saving that the clock sees
    retrieval_gallery: int = GALLERY
    device: str = "cpu"
    precision: str = "fp32"
    compiled: bool = False
    # the per-round ratios whose median is speedup_time: the gate's Mann-Whitney test compares them (harness/gate.py)
    speedup_time_samples: list[float] | None = None


def profile_models(
    models: dict[str, nn.Module],
    image_size: int,
    batch: int = 4,
    repeats: int = 5,
    warmup: int = 1,
    reference: str = "albef",
    retrieval_k: int = 16,
    text_len: int = TEXT_LEN,
    progress=None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    gallery: int = GALLERY,
) -> list[ProfileRow]:
    """Profile models that share one input size; speed interleaved, speedups against ``reference``.

    The models are moved to ``device``; MACs are counted there in fp32 (shapes decide them), speed is timed
    under autocast for ``precision`` (``compile``: through ``torch.compile``, after at least
    ``COMPILE_WARMUP`` warm-up rounds)."""
    if reference not in models:
        raise ValueError(f"the reference model {reference!r} must be among the profiled models")
    say = progress or (lambda message: None)
    device = torch.device(device)
    warmup = max(warmup, COMPILE_WARMUP) if compile else warmup
    macs, extra = {}, {}
    for name, model in models.items():
        model.to(device).eval()
        say(f"counting multiply-adds: {name} @ {image_size}px")
        macs[name], report = pair_macs(model, text_len)
        query = retrieval_query_counts(model, retrieval_k, gallery, text_len)
        extra[name] = dict(decoder=decoder_macs(model, text_len), index=image_index_macs(model),
                           query=None if query is None else sum(r.total for r in query.values()),
                           unsupported=report.unsupported)
    throughput_inputs = {name: to_device(pair_inputs(m, batch, text_len), device) for name, m in models.items()}
    latency_inputs = {name: to_device(pair_inputs(m, 1, text_len), device) for name, m in models.items()}
    forward = {name: torch.compile(m.encode_pair) if compile else m.encode_pair for name, m in models.items()}

    def call(name: str, inputs: tuple) -> Callable[[], object]:
        def run():
            with autocast(device, precision):
                return forward[name](*inputs)
        return run

    say(f"timing {len(models)} models interleaved: batch {batch} and batch 1, {repeats} rounds after {warmup} warm-up")
    calls = {}
    for name in models:
        calls[(name, "one")] = call(name, latency_inputs[name])
        if batch > 1:
            calls[(name, "batch")] = call(name, throughput_inputs[name])
    times = time_interleaved(calls, repeats=repeats, warmup=warmup, device=device)
    if batch == 1:
        times.update({(name, "batch"): times[(name, "one")] for name in models})
    with torch.inference_mode():
        memory = {name: peak_memory_mb(call(name, throughput_inputs[name]), device) for name in models}
    info = machine(device)
    rows = []
    for name, model in models.items():
        batch_times = [t / batch for t in times[(name, "batch")]]
        throughput = summarize([1.0 / t for t in batch_times])
        latency = summarize([t * 1000 for t in times[(name, "one")]])
        reference_times = [t / batch for t in times[(reference, "batch")]]
        ratio = paired_ratio(reference_times, batch_times)
        m = macs[name]
        speedup_flops = macs[reference]["total"] / m["total"]
        rows.append(ProfileRow(
            model=name, image_size=image_size,
            params_m=parameter_count(model) / 1e6,
            gmacs=m["total"] / 1e9, gmacs_vision=m["vision"] / 1e9, gmacs_reducer=m["reducer"] / 1e9,
            gmacs_text=m["text"] / 1e9, gmacs_fusion=m["fusion"] / 1e9,
            gmacs_decoder=None if extra[name]["decoder"] is None else extra[name]["decoder"] / 1e9,
            gmacs_image_index=None if extra[name]["index"] is None else extra[name]["index"] / 1e9,
            gmacs_retrieval_query=None if extra[name]["query"] is None else extra[name]["query"] / 1e9,
            retrieval_k=retrieval_k, unsupported_ops=extra[name]["unsupported"],
            pairs_per_s=throughput.median, pairs_per_s_iqr=throughput.iqr,
            latency_ms=latency.median, latency_ms_iqr=latency.iqr, peak_mem_mb=memory[name],
            reference=reference, speedup_flops=speedup_flops, speedup_time=ratio.median,
            speedup_time_iqr=ratio.iqr, batch=batch, text_len=text_len, repeats=repeats, machine=info,
            realised=ratio.median / speedup_flops, retrieval_gallery=gallery, device=info["device"],
            precision=precision, compiled=compile,
            speedup_time_samples=[r / t for r, t in zip(reference_times, batch_times, strict=True)],
        ))
    return rows


def format_table(rows: Sequence[ProfileRow]) -> str:
    """A paper-style Markdown table (GMACs = 10^9 multiply-adds per image-text pair)."""
    head = ("| model | px | params (M) | GMACs | vision | reducer | text | fusion | pairs/s | latency (ms) "
            "| peak mem (MB) | speedup (MACs) | speedup (time) | realised |")
    lines = [head, "|" + "|".join(["---"] * 14) + "|"]
    for r in rows:
        mem = f"{r.peak_mem_mb:.0f}"
        lines.append(
            f"| {r.model} | {r.image_size} | {r.params_m:.1f} | {r.gmacs:.2f} | {r.gmacs_vision:.2f} | "
            f"{r.gmacs_reducer:.3f} | {r.gmacs_text:.2f} | {r.gmacs_fusion:.2f} | {r.pairs_per_s:.2f} ± "
            f"{r.pairs_per_s_iqr / 2:.2f} | {r.latency_ms:.0f} | {mem} | {r.speedup_flops:.2f}x | "
            f"{r.speedup_time:.2f}x ± {r.speedup_time_iqr / 2:.2f} | {r.realised:.2f} |"
        )
    if rows:
        r = rows[0]
        lines.append("")
        lines.append(f"GMACs per image-text pair (one image, {r.text_len} text tokens; vision + text + fusion "
                     f"encoders; 1 MAC = 1 multiply-add, fvcore with attention counted). pairs/s at batch "
                     f"{r.batch}, latency at batch 1: medians of {r.repeats} interleaved rounds, ± half the IQR. "
                     f"Speedups against {r.reference}, time ratios paired round by round; realised = speedup "
                     f"(time) / speedup (MACs). {r.machine['device']}, {r.precision}"
                     f"{', torch.compile' if r.compiled else ''}, {r.machine['cpu']}, {r.machine['threads']} "
                     f"threads, torch {r.machine['torch']}.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- task costs


@dataclass(frozen=True)
class TaskSpec:
    """One (task, phase) to profile and, when given, its own batch (else the profile's)."""

    task: str
    phase: str
    batch: int | None = None

    @property
    def name(self) -> str:
        return f"{self.task}:{self.phase}"


def parse_tasks(text: str | Sequence[str]) -> list[TaskSpec]:
    """``"pretrain@32,vqa:infer,pair"`` -> specs: ``task[:phase][@batch]``; a task without a phase means every
    phase it has (``TASKS``). Raises ValueError naming what is wrong."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    specs: list[TaskSpec] = []
    for item in items:
        if not item:
            continue
        head, _, batch_text = item.partition("@")
        task, _, phase = head.partition(":")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
        if phase and phase not in TASKS[task]:
            raise ValueError(f"task {task!r} has no phase {phase!r} (it has {', '.join(TASKS[task])})")
        batch = None
        if batch_text:
            if not batch_text.isdigit() or int(batch_text) < 1:
                raise ValueError(f"{item!r}: the batch after '@' must be a positive integer")
            batch = int(batch_text)
        for p in ([phase] if phase else TASKS[task]):
            spec = TaskSpec(task, p, batch)
            if any(s.name == spec.name for s in specs):
                raise ValueError(f"{spec.name} is given twice")
            specs.append(spec)
    if not specs:
        raise ValueError("no task given")
    return specs


def is_pair_only(specs: Sequence[TaskSpec]) -> bool:
    """Only the pair task at the profile's batch: the pair table (today's ``copa-bench profile``)."""
    return [(s.task, s.batch) for s in specs] == [("pair", None)]


def not_applicable(model: nn.Module, task: str) -> str | None:
    """Why ``task`` does not apply to ``model`` (as ``harness.tasks.base.check_applicable`` says), or None."""
    if task in ("retrieval", "index") and not _has_itc(model):
        return "no text-free ITC embedding to shortlist with"
    if task == "caption" and getattr(model, "decoder", None) is None:
        return "no PrefixLM decoder"
    return None


def _register_prebuilt() -> None:
    from copa.registry import MODELS

    if MODELS.get(_PREBUILT) is None:
        def prebuilt(module: nn.Module) -> nn.Module:
            return module

        MODELS.register_module(name=_PREBUILT, module=prebuilt)


def task_model(model: nn.Module, task: str, **overrides) -> nn.Module:
    """The harness's task model of ``task`` (``configs/tasks/<task>.py``'s ``harness.task_model``, with ``overrides``)
    around ``model``: a shallow copy of it, so the weights are shared and a task's own settings (retrieval
    trains only ITC and ITM) do not leak into the model or the other tasks."""
    import harness.tasks  # noqa: F401  (registers the task models)
    from copa.registry import MODELS
    from harness.runner import load_task_config

    _register_prebuilt()
    cfg = dict(load_task_config(task).harness.task_model)
    cfg.update(overrides)
    cfg["backbone"] = dict(type=_PREBUILT, module=copy.copy(model))
    return MODELS.build(cfg).to(_device_of(model)).train(model.training)


def _vqa_model(model: nn.Module, answers: int) -> nn.Module:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "answers.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"annotations": [{"multiple_choice_answer": f"answer{i}"} for i in range(answers)]}, f)
        task = task_model(model, "vqa", answers_file=path, data_root=None, min_count=1, max_answers=answers)
    if len(task.answers) != answers:
        raise RuntimeError(f"the VQA head has {len(task.answers)} answers, not {answers}")
    return task


def _total(losses: dict) -> torch.Tensor:
    return sum(losses.values())


@contextlib.contextmanager
def without_eos(model: nn.Module):
    """Generation with the end-of-sequence logit held at -10^4, so that an untrained decoder writes every
    caption to ``max_length``: every model then decodes the same number of steps (the worst case)."""
    head = model.decoder.model.get_output_embeddings()
    eos = model.token_ids["sep"]

    def hook(_module, _inputs, output):
        return output.index_fill(-1, torch.tensor([eos], device=output.device), -1e4)

    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class _Context:
    batch: int
    text_len: int
    device: torch.device
    precision: str
    k: int
    gallery: int
    answers: int
    seed: int

    def pair(self, model: nn.Module, batch: int) -> tuple:
        return to_device(pair_inputs(model, batch, self.text_len, self.seed), self.device)

    def images(self, model: nn.Module, batch: int) -> torch.Tensor:
        return to_device(pair_inputs(model, batch, self.text_len, self.seed + 1)[0], self.device)


@dataclass
class _Plan:
    """How one model runs one (task, phase): the calls whose MACs are counted (label, the traceable module and
    its inputs, or the ``FlopReport`` of a call counted already, and the samples in that call), the timed call
    (inference: its output; training: the loss) and its samples, and the module that trains or is set to eval."""

    counts: list[tuple[str, nn.Module | FlopReport, tuple | None, int]]
    call: Callable[[], object]
    samples: int
    module: nn.Module
    info: dict = field(default_factory=dict)


def _loss_plan(module: nn.Module, fn: Callable, inputs: tuple, samples: int, **info) -> _Plan:
    return _Plan([("loss", _Fn(module, fn), inputs, samples)], lambda: fn(module, *inputs), samples, module, info)


def _infer_plan(module: nn.Module, fn: Callable, count_inputs: tuple, inputs: tuple, samples: int, **info) -> _Plan:
    return _Plan([("forward", _Fn(module, fn), count_inputs, 1)], lambda: fn(module, *inputs), samples, module,
                 info)


def _plan_pretrain(model: nn.Module, c: _Context) -> _Plan:
    b = c.batch
    images, ids, mask = c.pair(model, b)
    gen = torch.Generator().manual_seed(c.seed + 2)
    labels = (torch.rand(b, model.vision.num_patches, generator=gen) < 0.2).float().to(c.device)
    with_boxes = (torch.arange(b) < max(1, math.ceil(0.05 * b))).to(c.device)  # COPA: 5% of images have boxes

    def loss(m, images, ids, mask, labels, with_boxes, image_ids):
        return _total(m(images, ids, mask, patch_labels=labels, pta_mask=with_boxes, image_ids=image_ids, mode="loss"))

    return _loss_plan(model, loss, (images, ids, mask, labels, with_boxes, torch.arange(b, device=c.device)), b)


def _plan_retrieval_train(model: nn.Module, c: _Context) -> _Plan:
    task = task_model(model, "retrieval")
    images, ids, mask = c.pair(model, c.batch)

    def loss(m, images, ids, mask, image_ids):
        return _total(m(images, ids, mask, mode="loss", image_ids=image_ids))

    return _loss_plan(task, loss, (images, ids, mask, torch.arange(c.batch, device=c.device)), c.batch)


def _plan_retrieval_infer(model: nn.Module, c: _Context) -> _Plan:
    task = task_model(model, "retrieval", k=c.k)
    k, queries = c.k, c.batch
    counts = retrieval_query_counts(model, k, c.gallery, c.text_len)
    _, ids, mask = c.pair(model, queries)
    cache_images = c.images(model, k)
    embed = F.normalize(torch.randn(c.gallery, model.vision_proj.out_features,
                                    generator=torch.Generator().manual_seed(c.seed + 3)), dim=-1).to(c.device)
    with torch.inference_mode(), autocast(c.device, c.precision):
        cache = model.gallery_cache(cache_images)  # the index's work, done before any query
    pair_ids, pair_mask = ids.repeat_interleave(k, dim=0), mask.repeat_interleave(k, dim=0)

    def query():
        feat = model.text_features(ids, mask)
        sim = embed @ feat.t()  # (gallery, queries), as RetrievalTestLoop ranks
        top = (sim.topk(k, dim=0).indices.t() % k).reshape(-1)  # the shortlist; the cache holds k images
        scores = []
        for start in range(0, len(top), task.itm_batch):
            stop = start + task.itm_batch
            logits = model.itm_logits_cached(cache, top[start:stop], pair_ids[start:stop], pair_mask[start:stop])
            scores.append(logits.softmax(dim=-1)[:, 1])
        return torch.cat(scores)

    plan = _Plan([], query, queries, task, dict(k=k, gallery=c.gallery, itm_batch=task.itm_batch))
    plan.counts = [(label, report, None, 1) for label, report in counts.items()]  # counted already
    return plan


def _plan_vqa(model: nn.Module, c: _Context, phase: str) -> _Plan:
    task = _vqa_model(model, c.answers)
    images, ids, mask = c.pair(model, c.batch)
    if phase == "train":
        answers = [[task.answers[(7 * i + j) % len(task.answers)] for j in range(10)] for i in range(c.batch)]
        return _loss_plan(task, lambda m, i, t, k: _total(m(i, t, k, answers=answers, mode="loss")),
                          (images, ids, mask), c.batch, answers=len(task.answers))
    one = tuple(x[:1] for x in (images, ids, mask))
    return _infer_plan(task, lambda m, i, t, k: m(i, t, k), one, (images, ids, mask), c.batch,
                       answers=len(task.answers))


def _plan_nlvr2(model: nn.Module, c: _Context, phase: str) -> _Plan:
    task = task_model(model, "nlvr2")
    images = c.images(model, 2 * c.batch).reshape(c.batch, 2, 3, *model.vision.patch_embed.img_size)
    _, ids, mask = c.pair(model, c.batch)
    if phase == "train":
        labels = (torch.arange(c.batch) % 2).to(c.device)
        return _loss_plan(task, lambda m, i, t, k, y: _total(m(i, t, k, labels=y, mode="loss")),
                          (images, ids, mask, labels), c.batch)
    one = tuple(x[:1] for x in (images, ids, mask))
    return _infer_plan(task, lambda m, i, t, k: m(i, t, k), one, (images, ids, mask), c.batch)


def _plan_caption(model: nn.Module, c: _Context, phase: str) -> _Plan:
    task = task_model(model, "caption")
    images, ids, mask = c.pair(model, c.batch)
    if phase == "train":
        return _loss_plan(task, lambda m, i, t, k: _total(m(i, t, k, mode="loss")), (images, ids, mask), c.batch)

    def generate(m, images):
        with without_eos(m.backbone):
            return m.generate(images)

    with torch.inference_mode():
        steps = generate(task, images[:1]).shape[1]
    if steps != task.max_length:
        raise RuntimeError(f"captioning stopped at {steps} of {task.max_length} tokens with EOS held down")
    return _infer_plan(task, generate, (images[:1],), (images,), c.batch, beams=task.num_beams,
                       max_length=task.max_length)


def _plan_grounding(model: nn.Module, c: _Context, phase: str) -> _Plan:
    task = task_model(model, "grounding")
    images, ids, mask = c.pair(model, c.batch)
    if phase == "train":
        h, w = model.vision.patch_embed.img_size
        gen = torch.Generator().manual_seed(c.seed + 4)
        corner = torch.rand(c.batch, 2, generator=gen) * torch.tensor([w / 2, h / 2])
        boxes = torch.cat([corner, torch.tensor([w / 4, h / 4]).expand(c.batch, 2)], dim=1).to(c.device)
        sizes = torch.tensor([[h, w]] * c.batch, device=c.device)
        return _loss_plan(task, lambda m, i, t, k, b, s: _total(m(i, t, k, boxes=b, image_sizes=s, mode="loss")),
                          (images, ids, mask, boxes, sizes), c.batch)
    one = tuple(x[:1] for x in (images, ids, mask))
    return _infer_plan(task, lambda m, i, t, k: m(i, t, k), one, (images, ids, mask), c.batch)


def _plan_index(model: nn.Module, c: _Context) -> _Plan:
    images = c.images(model, c.batch)

    def index():
        return model.gallery_cache(images), model.image_features(images)

    counts = [(label, report, None, 1) for label, report in image_index_counts(model).items()]
    return _Plan(counts, index, c.batch, model)


def _plan_pair(model: nn.Module, c: _Context) -> _Plan:
    images, ids, mask = c.pair(model, c.batch)
    one = tuple(x[:1] for x in (images, ids, mask))
    return _infer_plan(model, lambda m, i, t, k: m.encode_pair(i, t, k), one, (images, ids, mask), c.batch)


PLANS: dict[tuple[str, str], Callable[[nn.Module, _Context], _Plan]] = {
    ("pretrain", "train"): _plan_pretrain,
    ("retrieval", "train"): _plan_retrieval_train,
    ("retrieval", "infer"): _plan_retrieval_infer,
    ("vqa", "train"): lambda m, c: _plan_vqa(m, c, "train"),
    ("vqa", "infer"): lambda m, c: _plan_vqa(m, c, "infer"),
    ("nlvr2", "train"): lambda m, c: _plan_nlvr2(m, c, "train"),
    ("nlvr2", "infer"): lambda m, c: _plan_nlvr2(m, c, "infer"),
    ("caption", "train"): lambda m, c: _plan_caption(m, c, "train"),
    ("caption", "infer"): lambda m, c: _plan_caption(m, c, "infer"),
    ("grounding", "train"): lambda m, c: _plan_grounding(m, c, "train"),
    ("grounding", "infer"): lambda m, c: _plan_grounding(m, c, "infer"),
    ("index", "infer"): _plan_index,
    ("pair", "infer"): _plan_pair,
}


def _parts(report: FlopReport, samples: int) -> dict[str, float]:
    """GMACs per sample of the traced model's parts (a task model's backbone split one level further)."""
    parts = {}
    for name, value in report.by_module.items():
        bits = name.split(".")
        if not value or bits[0] != "model" or len(bits) < 2:
            continue
        if (len(bits) == 2 and bits[1] != "backbone") or (len(bits) == 3 and bits[1] == "backbone"):
            parts[".".join(bits[1:])] = value / samples / 1e9
    return parts


NO_BACKWARD_MODULES = ("momentum_model",)
"""Modules a training step runs forward only (ALBEF's momentum model): a step costs them once, not
``TRAIN_FACTOR`` times."""


def parameter_count(model: torch.nn.Module) -> int:
    """The model's parameters, each once, without the copies :data:`NO_BACKWARD_MODULES` hold (a momentum model
    is a training device, not part of the model that is deployed)."""
    frozen = {id(p) for name, module in model.named_modules() if name.split(".")[-1] in NO_BACKWARD_MODULES
              for p in module.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in frozen)


def count_plan(plan: _Plan, train: bool) -> tuple[int, dict[str, float], dict[str, int]]:
    """MACs per sample of a plan (fvcore, fp32), its parts in GMACs per sample, and the uncounted operators. The
    share of the MACs spent in :data:`NO_BACKWARD_MODULES` goes to ``plan.info['no_backward_macs']``."""
    total, parts, unsupported = 0.0, {}, Counter()
    no_backward = 0.0
    for label, module, inputs, samples in plan.counts:
        if isinstance(module, FlopReport):
            report = module
        else:
            module.train(train)
            report = count_macs(module, inputs)
        total += report.total / samples
        no_backward += sum(v for k, v in report.by_module.items() if k.split(".")[-1] in NO_BACKWARD_MODULES) / samples
        unsupported.update(report.unsupported)
        if len(plan.counts) > 1:
            parts[label] = report.total / samples / 1e9
        else:
            parts.update(_parts(report, samples))
    plan.info["no_backward_macs"] = round(no_backward)
    return round(total), parts, dict(unsupported)


def step_macs(forward: int, no_backward: int, train: bool) -> int:
    """What one step costs per sample: inference its forward; training ``TRAIN_FACTOR`` x the forward of what gets
    gradients (forward + backward) plus, once, the forward-only part (a momentum model)."""
    return TRAIN_FACTOR * (forward - no_backward) + no_backward if train else forward


@dataclass
class TaskCostRow:
    """One model's cost of one task phase. GMACs are per sample (``unit``): ``gmacs`` the forward's,
    ``gmacs_step`` what a step costs (training: the forward + backward estimate ``TRAIN_FACTOR`` x forward;
    inference: the forward). ``achieved_tflops`` = 2 x ``gmacs_step`` x ``samples_per_s`` / 1000."""

    model: str
    task: str
    phase: str
    unit: str
    image_size: int
    text_len: int
    batch: int
    params_m: float
    gmacs: float
    gmacs_step: float
    macs_basis: str
    gmacs_parts: dict
    unsupported_ops: dict
    samples_per_s: float
    samples_per_s_iqr: float
    ms_per_call: float
    achieved_tflops: float
    peak_tflops: float | None
    peak_fraction: float | None
    peak_mem_mb: float | None
    reference: str
    speedup_macs: float | None
    speedup_time: float | None
    speedup_time_iqr: float | None
    realised: float | None
    device: str
    precision: str
    compiled: bool
    threads: int
    repeats: int
    warmup: int
    retrieval_k: int | None
    gallery: int | None
    beams: int | None
    max_length: int | None
    optimizer: str | None
    machine: dict
    speedup_time_samples: list[float] | None = None  # per-round ratios (median: speedup_time), for the gate's test


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _trainable_bytes(modules: Sequence[nn.Module]) -> int:
    seen, total = set(), 0
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                total += p.numel() * p.element_size()
    return total


def _train_step(plan: _Plan, device: torch.device, precision: str, keep_state: bool, compiled: bool) -> Callable:
    params = [p for p in plan.module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.02)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    loss_fn = torch.compile(plan.call) if compiled else plan.call

    def step():
        with autocast(device, precision):
            loss = loss_fn()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if not keep_state:
            optimizer.state.clear()
        return loss

    return step


def _infer_call(plan: _Plan, device: torch.device, precision: str, compiled: bool) -> Callable:
    fn = torch.compile(plan.call) if compiled else plan.call

    def run():
        with torch.inference_mode(), autocast(device, precision):
            return fn()

    return run


def profile_tasks(
    models: dict[str, nn.Module],
    image_size: int,
    tasks: str | Sequence[TaskSpec],
    batch: int = 8,
    repeats: int = 5,
    warmup: int = 1,
    reference: str = "albef",
    retrieval_k: int = 16,
    gallery: int = GALLERY,
    text_len: int = TEXT_LEN,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    vqa_answers: int = VQA_ANSWERS,
    memory: bool = True,
    seed: int = 0,
    progress=None,
) -> list[TaskCostRow]:
    """Cost per (model, task, phase) of models that share one input size (see the module docstring).

    Each (task, phase) is one group: its MACs counted per model, then its calls timed interleaved across the
    models (``warmup`` rounds, then ``repeats``), speedups against ``reference`` as paired per-round ratios,
    then one more call per model for peak memory (``memory``). Models are moved to ``device``. A training
    step keeps each model's AdamW state between steps when every model's state and gradients fit in half the
    device's free memory; otherwise the state is re-created each step (each row says which). With ``compile``
    the timed calls go through ``torch.compile`` after at least ``COMPILE_WARMUP`` warm-up rounds."""
    if reference not in models:
        raise ValueError(f"the reference model {reference!r} must be among the profiled models")
    warmup = max(warmup, COMPILE_WARMUP) if compile else warmup
    specs = parse_tasks(tasks) if isinstance(tasks, str) else list(tasks)
    say = progress or (lambda message: None)
    device = torch.device(device)
    for model in models.values():
        model.to(device)
    info = machine(device)
    peak = peak_tflops(info["device"], precision)
    rows: list[TaskCostRow] = []
    for spec in specs:
        b = spec.batch or batch
        context = _Context(b, text_len, device, precision, retrieval_k, gallery, vqa_answers, seed)
        train = spec.phase == "train"
        plans, macs, parts, unsupported = {}, {}, {}, {}
        for name, model in models.items():
            if not_applicable(model, spec.task):
                continue
            say(f"{spec.name} @ {image_size}px, batch {b}: counting multiply-adds of {name}")
            model.train(train)
            plans[name] = PLANS[(spec.task, spec.phase)](model, context)
            plans[name].module.train(train)
            macs[name], parts[name], unsupported[name] = count_plan(plans[name], train)
        if not plans:
            continue
        keep_state = None
        if train:
            need = 3 * _trainable_bytes([p.module for p in plans.values()])  # two AdamW moments + gradients
            free = _available_bytes(device)
            keep_state = free is None or 2 * need < free
        calls = {name: _train_step(p, device, precision, keep_state, compile) if train
                 else _infer_call(p, device, precision, compile) for name, p in plans.items()}
        say(f"{spec.name}: timing {len(calls)} models interleaved, batch {b}, {repeats} rounds after {warmup} warm-up")
        times = time_interleaved(calls, repeats=repeats, warmup=warmup, inference=False, device=device)
        peaks = {name: peak_memory_mb(call, device) if memory else None for name, call in calls.items()}
        steps = {name: step_macs(macs[name], plan.info.get("no_backward_macs", 0), train)
                 for name, plan in plans.items()}
        for name, plan in plans.items():
            per_sample = [t / plan.samples for t in times[name]]
            speed = summarize([1.0 / t for t in per_sample])
            ratio = ratio_samples = None
            if reference in plans:
                reference_times = [t / plans[reference].samples for t in times[reference]]
                ratio = paired_ratio(reference_times, per_sample)
                ratio_samples = [r / t for r, t in zip(reference_times, per_sample, strict=True)]
            no_backward = plan.info.get("no_backward_macs", 0)
            step = steps[name]
            achieved = 2 * step * speed.median / 1e12
            speedup_macs = steps[reference] / step if reference in plans and step else None
            rows.append(TaskCostRow(
                model=name, task=spec.task, phase=spec.phase, unit=UNITS[(spec.task, spec.phase)],
                image_size=image_size, text_len=text_len, batch=b,
                params_m=parameter_count(plan.module) / 1e6,
                gmacs=macs[name] / 1e9, gmacs_step=step / 1e9,
                macs_basis="forward" if not train else f"{TRAIN_FACTOR} x forward (forward + backward)" + (
                    f", the momentum model's {no_backward / 1e9:.3g} G once (no backward)" if no_backward else ""),
                gmacs_parts=parts[name], unsupported_ops=unsupported[name],
                samples_per_s=speed.median, samples_per_s_iqr=speed.iqr,
                ms_per_call=summarize(times[name]).median * 1000,
                achieved_tflops=achieved, peak_tflops=peak, peak_fraction=None if peak is None else achieved / peak,
                peak_mem_mb=peaks[name], reference=reference, speedup_macs=speedup_macs,
                speedup_time=None if ratio is None else ratio.median,
                speedup_time_iqr=None if ratio is None else ratio.iqr,
                realised=None if ratio is None or not speedup_macs else ratio.median / speedup_macs,
                device=info["device"], precision=precision, compiled=compile, threads=info["threads"],
                repeats=repeats, warmup=warmup, retrieval_k=plan.info.get("k"), gallery=plan.info.get("gallery"),
                beams=plan.info.get("beams"), max_length=plan.info.get("max_length"),
                optimizer=None if not train else "AdamW, state kept" if keep_state
                else "AdamW, state re-created each step (memory)",
                machine=info, speedup_time_samples=ratio_samples,
            ))
        del plans, calls
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for model in models.values():
        model.eval()
    return rows


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:{spec}}{suffix}"


def skipped_tasks(models: dict[str, nn.Module], specs: Sequence[TaskSpec]) -> list[str]:
    """'model task: reason' for each requested task that does not apply to a model."""
    out = []
    for task in dict.fromkeys(s.task for s in specs):
        for name, model in models.items():
            reason = not_applicable(model, task)
            if reason:
                out.append(f"{name} {task}: {reason}")
    return out


def format_task_table(rows: Sequence[TaskCostRow], skipped: Sequence[str] = ()) -> str:
    """Markdown: one line per (task, phase, model), the conventions below it, then each model's speedups."""
    head = ("| model | task | phase | per | px | batch | GMACs fwd | GMACs step | samples/s | ms/call | TFLOP/s "
            "| peak mem (MB) | speedup (MACs) | speedup (time) | realised |")
    lines = [head, "|" + "|".join(["---"] * 15) + "|"]
    for r in rows:
        tflops = _fmt(r.achieved_tflops, ".3g")
        if r.peak_tflops is not None:
            tflops += f" / {r.peak_tflops:.0f} ({100 * r.peak_fraction:.1f}%)"
        time = _fmt(r.speedup_time, ".2f", "x")
        if r.speedup_time_iqr is not None:
            time += f" ± {r.speedup_time_iqr / 2:.2f}"
        lines.append(
            f"| {r.model} | {r.task} | {r.phase} | {r.unit} | {r.image_size} | {r.batch} | {r.gmacs:.3g} | "
            f"{r.gmacs_step:.3g} | "
            f"{r.samples_per_s:.3g} ± {r.samples_per_s_iqr / 2:.2g} | {r.ms_per_call:.0f} | {tflops} | "
            f"{_fmt(r.peak_mem_mb, '.0f')} | {_fmt(r.speedup_macs, '.2f', 'x')} | {time} | "
            f"{_fmt(r.realised, '.2f')} |")
    if not rows:
        return "\n".join(lines)
    r = rows[0]
    notes = [
        f"GMACs per sample (the 'per' column), 1 MAC = 1 multiply-add (fvcore, attention counted), over the call "
        f"the task makes, with {r.text_len} text tokens. 'fwd' = that forward; 'step' = one "
        f"step's estimate: train rows {TRAIN_FACTOR} x fwd (forward + backward), infer rows = fwd. train rows "
        f"time forward + backward + AdamW step; infer rows time under inference_mode. TFLOP/s = 2 x step GMACs x "
        f"samples/s / 1000" + (f", beside the device's dense peak for {r.precision}." if r.peak_tflops else
                               " (peak unknown for this device)."),
        f"Medians of {r.repeats} rounds after {r.warmup} warm-up, models interleaved, ± half the IQR; speedups "
        f"against {r.reference}, time ratios paired round by round; realised = speedup (time) / speedup (MACs). "
        f"{r.device}, {r.precision}{', torch.compile' if r.compiled else ''}, {r.threads} threads, "
        f"{r.machine['cpu']}, torch {r.machine['torch']}.",
    ]
    for row in rows:
        if row.task == "retrieval" and row.phase == "infer":
            notes.append(f"retrieval infer, per text query: its text embedding, ITC against G = {row.gallery} "
                         f"gallery embeddings, then k = {row.retrieval_k} ITM re-ranks by itm_logits_cached from "
                         f"the gallery cache (the per-image work is on the index row, once per image).")
            break
    for row in rows:
        if row.task == "caption" and row.phase == "infer":
            notes.append(f"caption infer: {row.beams} beams, {row.max_length} tokens (EOS held down, so every "
                         f"model decodes {row.max_length - 1} steps; the decoder re-reads the prefix each step).")
            break
    optimizers = sorted({row.optimizer for row in rows if row.optimizer})
    if optimizers:
        notes.append(f"train: {'; '.join(optimizers)}.")
    notes += [f"n/a: {s}" for s in skipped]
    lines += [""] + notes + [""] + speedup_summary(rows)
    return "\n".join(lines)


def speedup_summary(rows: Sequence[TaskCostRow]) -> list[str]:
    """One line per non-reference model: its speedups per task phase (time, MACs, realised)."""
    out, sizes = [], {r.image_size for r in rows}
    for model in dict.fromkeys(r.model for r in rows):
        parts = [f"{r.task} {r.phase}{f' {r.image_size}px' if len(sizes) > 1 else ''} {r.speedup_time:.2f}x "
                 f"(MACs {r.speedup_macs:.2f}x, realised {r.realised:.2f})" for r in rows
                 if r.model == model and r.model != r.reference and r.speedup_time is not None and r.speedup_macs]
        if parts:
            reference = next(r.reference for r in rows if r.model == model)
            out.append(f"{model} / {reference}: " + "; ".join(parts))
    return out


def _write_atomically(path: str | os.PathLike, write) -> None:
    """Write through a temporary file renamed into place, so a failure leaves no half-written output."""
    tmp = f"{os.fspath(path)}.partial-{os.getpid()}"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(rows: Sequence[ProfileRow | TaskCostRow], path: str | os.PathLike) -> None:
    _write_atomically(path, lambda f: f.write(json.dumps([vars(r) for r in rows], indent=2) + "\n"))


def write_csv(rows: Sequence[ProfileRow | TaskCostRow], path: str | os.PathLike) -> None:
    fields = [k for k, v in vars(rows[0]).items() if not isinstance(v, dict)] if rows else []

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow(vars(r))

    _write_atomically(path, write)
