"""The efficiency half of a comparison table: parameters, GMACs per image-text pair (split by part),
pairs/s, latency and peak memory, with speedups over a reference model measured in the same process.

The efficiency unit is one image-text pair: one image and ``text_len`` (40) text tokens through the
vision, text and fusion encoders along the text-aware path (``model.encode_pair``); for the
single-stream ViLT, the joint transformer. Beside it: the PrefixLM decoder over ``text_len`` tokens
(captioning), and retrieval per text query, which embeds the query once and re-ranks ``k`` shortlisted
images with ITM (``k`` pairs without re-encoding the text), each gallery image having been embedded
once on the text-free path (``gmacs_image_index``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from harness.profiling.flops import FlopReport, count_macs
from harness.profiling.speed import machine, paired_ratio, peak_memory_mb, summarize, time_interleaved

TEXT_LEN = 40


class _Call(nn.Module):
    """A traceable module around one of the model's methods."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(*inputs)


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


def pair_macs(model: nn.Module, text_len: int = TEXT_LEN) -> tuple[dict[str, int], FlopReport]:
    """Multiply-adds of one pair, total and per part (``reducer`` is inside ``vision``)."""
    report = count_macs(_Call(model, "encode_pair").eval(), pair_inputs(model, 1, text_len))
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
    images, text_ids, text_mask = pair_inputs(model, 1, text_len)
    with torch.no_grad():
        visual = model.vision_to_text(model.vision(images, None).tokens)
    return count_macs(_Call(decoder, "loss").eval(), (text_ids, text_mask, visual)).total


def image_index_macs(model: nn.Module) -> int | None:
    """Text-free image embedding for the retrieval gallery (dual-stream models only)."""
    from baselines.vilt import SingleStreamVLP

    if isinstance(model, SingleStreamVLP):
        return None
    images, _, _ = pair_inputs(model, 1)
    return count_macs(_Call(model, "image_features").eval(), (images,)).total


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
    gmacs_retrieval_query: float
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
) -> list[ProfileRow]:
    """Profile models that share one input size; speed interleaved, speedups against ``reference``."""
    if reference not in models:
        raise ValueError(f"the reference model {reference!r} must be among the profiled models")
    say = progress or (lambda message: None)
    macs, extra = {}, {}
    for name, model in models.items():
        model.eval()
        say(f"counting multiply-adds: {name} @ {image_size}px")
        macs[name], report = pair_macs(model, text_len)
        extra[name] = dict(decoder=decoder_macs(model, text_len), index=image_index_macs(model),
                           unsupported=report.unsupported)
    throughput_inputs = {name: pair_inputs(m, batch, text_len) for name, m in models.items()}
    latency_inputs = {name: pair_inputs(m, 1, text_len) for name, m in models.items()}
    with torch.inference_mode():
        memory = {name: peak_memory_mb(lambda m=model, x=throughput_inputs[name]: m.encode_pair(*x))
                  for name, model in models.items()}
    say(f"timing {len(models)} models interleaved: batch {batch} and batch 1, {repeats} rounds after {warmup} warm-up")
    calls = {}
    for name, model in models.items():
        calls[(name, "one")] = lambda m=model, x=latency_inputs[name]: m.encode_pair(*x)
        if batch > 1:
            calls[(name, "batch")] = lambda m=model, x=throughput_inputs[name]: m.encode_pair(*x)
    times = time_interleaved(calls, repeats=repeats, warmup=warmup)
    if batch == 1:
        times.update({(name, "batch"): times[(name, "one")] for name in models})
    info = machine()
    rows = []
    for name, model in models.items():
        batch_times = [t / batch for t in times[(name, "batch")]]
        throughput = summarize([1.0 / t for t in batch_times])
        latency = summarize([t * 1000 for t in times[(name, "one")]])
        ratio = paired_ratio([t / batch for t in times[(reference, "batch")]], batch_times)
        m = macs[name]
        per_pair_rerank = m["total"] - m["text"]
        rows.append(ProfileRow(
            model=name, image_size=image_size,
            params_m=sum(p.numel() for p in model.parameters()) / 1e6,
            gmacs=m["total"] / 1e9, gmacs_vision=m["vision"] / 1e9, gmacs_reducer=m["reducer"] / 1e9,
            gmacs_text=m["text"] / 1e9, gmacs_fusion=m["fusion"] / 1e9,
            gmacs_decoder=None if extra[name]["decoder"] is None else extra[name]["decoder"] / 1e9,
            gmacs_image_index=None if extra[name]["index"] is None else extra[name]["index"] / 1e9,
            gmacs_retrieval_query=(m["text"] + retrieval_k * per_pair_rerank) / 1e9, retrieval_k=retrieval_k,
            unsupported_ops=extra[name]["unsupported"],
            pairs_per_s=throughput.median, pairs_per_s_iqr=throughput.iqr,
            latency_ms=latency.median, latency_ms_iqr=latency.iqr, peak_mem_mb=memory[name],
            reference=reference, speedup_flops=macs[reference]["total"] / m["total"], speedup_time=ratio.median,
            speedup_time_iqr=ratio.iqr, batch=batch, text_len=text_len, repeats=repeats, machine=info,
        ))
    return rows


def format_table(rows: Sequence[ProfileRow]) -> str:
    """A paper-style Markdown table (GMACs = 10^9 multiply-adds per image-text pair)."""
    head = ("| model | px | params (M) | GMACs | vision | reducer | text | fusion | pairs/s | latency (ms) "
            "| peak mem (MB) | speedup (MACs) | speedup (time) |")
    lines = [head, "|" + "|".join(["---"] * 13) + "|"]
    for r in rows:
        mem = f"{r.peak_mem_mb:.0f}"
        lines.append(
            f"| {r.model} | {r.image_size} | {r.params_m:.1f} | {r.gmacs:.2f} | {r.gmacs_vision:.2f} | "
            f"{r.gmacs_reducer:.3f} | {r.gmacs_text:.2f} | {r.gmacs_fusion:.2f} | {r.pairs_per_s:.2f} ± "
            f"{r.pairs_per_s_iqr / 2:.2f} | {r.latency_ms:.0f} | {mem} | {r.speedup_flops:.2f}x | "
            f"{r.speedup_time:.2f}x ± {r.speedup_time_iqr / 2:.2f} |"
        )
    if rows:
        r = rows[0]
        lines.append("")
        lines.append(f"GMACs per image-text pair (one image, {r.text_len} text tokens; vision + text + fusion "
                     f"encoders; 1 MAC = 1 multiply-add, fvcore with attention counted). pairs/s at batch "
                     f"{r.batch}, latency at batch 1: medians of {r.repeats} interleaved rounds, ± half the IQR. "
                     f"Speedups against {r.reference}, time ratios paired round by round. "
                     f"{r.machine['device']}, {r.machine['cpu']}, {r.machine['threads']} threads, "
                     f"torch {r.machine['torch']}.")
    return "\n".join(lines)


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


def write_json(rows: Sequence[ProfileRow], path: str | os.PathLike) -> None:
    _write_atomically(path, lambda f: f.write(json.dumps([vars(r) for r in rows], indent=2) + "\n"))


def write_csv(rows: Sequence[ProfileRow], path: str | os.PathLike) -> None:
    fields = [k for k in vars(rows[0]) if k not in ("unsupported_ops", "machine")] if rows else []

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow(vars(r))

    _write_atomically(path, write)
