"""Multiply-add counts with fvcore, attention included.

fvcore counts 1 "flop" per multiply-add (so every table says GMACs). Its default handles skip
``aten::scaled_dot_product_attention``, which timm's ViT and transformers' BERT (``sdpa``) use for all
attention: ViT-B/16 at 224 px then counts 16.87 G instead of 17.58 G. ``ATTENTION_HANDLES`` counts it as
the two matmuls it is (``QK^T`` and ``AV``).

Counted: linear layers, convolutions, matmuls and einsums (attention scores of the reducers included),
attention, and normalisation layers (fvcore: 5 per element with affine, 4 without). Not counted, by
fvcore's design and ours: element-wise ops (add, mul, GELU, softmax), embedding lookups, sorting, top-k,
gather and scatter. They are cheap next to the matmuls and are listed, with how often they ran, as
``unsupported`` in every report so nothing disappears silently.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

with warnings.catch_warnings():  # fvcore scripts a function with torch.jit.script on import: a FutureWarning each run
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``scaled_dot_product_attention(q, k, v)``: ``QK^T`` is ``B*H*L*S*d`` and ``AV`` ``B*H*L*S*d_v``."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, length, head_dim = q
    source = k[-2]
    value_dim = v[-1]
    prefix = 1
    for size in batch:
        prefix *= size
    return prefix * length * source * (head_dim + value_dim)


ATTENTION_HANDLES = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::_scaled_dot_product_flash_attention_for_cpu": sdpa_flop_jit,
    "aten::_scaled_dot_product_efficient_attention": sdpa_flop_jit,
    "aten::_scaled_dot_product_flash_attention": sdpa_flop_jit,
    "aten::_scaled_dot_product_cudnn_attention": sdpa_flop_jit,
}


@dataclass
class FlopReport:
    """Multiply-adds of one traced call: total, per module (top-level parts and deeper), per operator,
    and the operators fvcore does not count with how many times each ran."""

    total: int
    by_module: dict[str, int]
    by_operator: dict[str, int]
    unsupported: dict[str, int] = field(default_factory=dict)

    def part(self, name: str) -> int:
        return self.by_module.get(name, 0)


def count_macs(module: nn.Module, inputs: tuple) -> FlopReport:
    """Trace ``module(*inputs)`` once and count its multiply-adds, attention included."""
    analysis = FlopCountAnalysis(module, inputs).set_op_handle(**ATTENTION_HANDLES)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    with torch.inference_mode(False), torch.no_grad():
        total = int(analysis.total())
    return FlopReport(
        total=total,
        by_module={k: int(v) for k, v in analysis.by_module().items()},
        by_operator={k: int(v) for k, v in analysis.by_operator().items()},
        unsupported=dict(Counter(analysis.unsupported_ops())),
    )
