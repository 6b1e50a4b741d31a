"""The model zoo: every named model (COPA and its baselines) over the one skeleton, and the registry it fills.

It sits above ``copa`` (the method) and ``baselines`` (the comparison models), so the method package never has to
know its baselines: importing ``zoo`` registers the baseline reducers, the single-stream model and a builder per
name in ``copa.registry.MODELS``. ``harness`` imports it; nothing below it does (tests/test_layering.py).
"""
from .build import (
    DUAL_STREAM_LOSSES,
    METHODS,
    MODELS,
    MOMENTUM_DISTILLATION,
    SCALES,
    SEPARATE_PASSES,
    SHARED_PASSES,
    build_model,
    model_config,
)

__all__ = [
    'DUAL_STREAM_LOSSES', 'METHODS', 'MODELS', 'MOMENTUM_DISTILLATION', 'SCALES', 'SEPARATE_PASSES', 'SHARED_PASSES',
    'build_model', 'model_config',
]
