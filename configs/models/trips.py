"""TRIPS-style text-attention patch selection (no extra parameters, no PTA), at COPA's token budget.

TRIPS's published schedule at base scale: ``reduction_layers=(5, 10), keep_ratio=0.7``.
"""
model = dict(type='trips', scale='tiny')
