"""Baselines over the copa skeleton: patch reducers (EViT, TRIPS-style, random, ToMe) and ViLT-style
single stream. ALBEF is the skeleton with no reducer (``zoo.build.METHODS['albef']``)."""
from .reducers import CLSAttentionReducer, RandomReducer, TextAttentionReducer, ToMeReducer
from .vilt import SingleStreamVLP

__all__ = ['CLSAttentionReducer', 'RandomReducer', 'SingleStreamVLP', 'TextAttentionReducer', 'ToMeReducer']
